//! Opening a target for writing, and only one writer at a time.
//!
//! Owns the write side of [`super::target`]: a [`WriteTarget`] is the only handle through which
//! pifw changes a card. Writing goes in two steps:
//!
//! 1. [`Preflight::check`] (read-only, no side effects) finds what writing the target involves
//!    and refuses what can never be written safely: a partition given instead of the whole
//!    disk; an image file behind a loop device (the loop device keeps its own cache of the
//!    image); a loop device stacked on the target or a second loop device over the same file;
//!    device-mapper/md holders; a firmware partition a process uses (named from `/proc`). All of
//!    it by identity (device and inode numbers), never by path, so hard links, bind mounts and
//!    symlinks change nothing. It lists what will happen: a mounted firmware partition is
//!    unmounted for the change and mounted back afterwards; other mounted partitions (the root
//!    of a running Pi) stay mounted, since pifw writes none of their sectors. The plan shows
//!    [`Preflight::notes`], and `--dry-run` hits the same refusals.
//! 2. [`WriteTarget::open_prepared`] does it, in this order:
//!    - an exclusive, non-blocking `flock` on the image file or device node, through a
//!      read-only handle kept for the life of the [`WriteTarget`]. Two pifw processes (or two
//!      handles in one process) therefore never write the same card at once; the loser gets
//!      [`LockError::Locked`], naming the holder's pid from `/proc/locks` when it can be found.
//!      The lock comes first so that a second pifw hears "another pifw", not "device busy";
//!    - the check again, under the lock; if the mounts changed since the plan, it stops;
//!    - unmounting the firmware partition's mounts ([`super::live::unmount`]); they are mounted
//!      back when the [`WriteTarget`] is dropped, on success and on every error path;
//!    - exclusive opens (`O_EXCL`, which Linux refuses with `EBUSY` while a filesystem,
//!      device-mapper, md or another `O_EXCL` opener holds the device): of the whole disk when
//!      none of it is in use, else (or when the kernel refuses it: a swap partition does not
//!      show in the mount table) of the firmware partition's device node only (the kernel
//!      refuses `O_EXCL` on a disk while a partition of it is mounted). Held until the
//!      [`WriteTarget`] is dropped, this closes the window between the check and the first
//!      write: nothing can mount the firmware partition meanwhile;
//!    - the whole disk opened read-write; all writes go through it.
//!
//! Cache coherence ([`super::live`]): every write goes through the one whole-disk handle, so its
//! page cache is never stale; the whole disk's cache is dropped right after the exclusive open
//! (what the plan read may predate the unmount's writeback), and the firmware partition's
//! cache after every [`WriteTarget::sync`], so a mount through the partition afterwards reads
//! what pifw wrote. pifw never asks the kernel to re-read the partition table (`BLKRRPART`
//! fails on a busy disk and would drop the mounted root's partition): `partition hybrid|mbr`
//! keep every partition's extents, so the kernel's view stays valid, and the new table is
//! what the Pi reads at the next boot.
//!
//! `flock` is advisory: it stops other pifw processes, not `dd`. `O_EXCL` is what stops the
//! kernel's own users, and only for block devices (Linux ignores `O_EXCL` without `O_CREAT`
//! on regular files, so an image file relies on the lock and the loop-device check).
//!
//! Must not: decide what to write. Durability points are explicit calls to
//! [`WriteTarget::sync`]; nothing here syncs behind the caller's back.

use super::live::{self, Holder, LiveError, Remount, Unmounted};
use super::mounts::{self, Mount, MountError, Partition, SystemView, Use};
use super::target::{TargetError, TargetKind};
use crate::status::{MountedPartition, MountsReport};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A target opened for writing, locked against other pifw processes.
#[derive(Debug)]
pub struct WriteTarget {
    pub path: PathBuf,
    pub kind: TargetKind,
    /// Size in bytes (the file length, or the device size).
    pub size_bytes: u64,
    // Drop order matters: the whole-disk handle and the partition's exclusive handle close
    // before the firmware partition is mounted back (a mount needs the exclusive claim), and
    // the lock goes last, so no other pifw starts before the mounts are back.
    file: File,
    /// The firmware partition's node: opened `O_EXCL` when the whole disk could not be, else
    /// plainly (the whole disk's claim covers it); kept to drop its page cache at each sync.
    partition: Option<File>,
    /// Mounts to put back.
    unmounted: Option<Unmounted>,
    /// Holds the `flock`; closing it (on drop) releases the lock.
    lock: Option<File>,
}

/// Which device node is held exclusively while writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusive {
    /// An image file: `O_EXCL` means nothing for regular files.
    NotADevice,
    /// The whole disk: nothing of it is in use.
    WholeDisk,
    /// Only the firmware partition's node: other partitions are mounted.
    Partition(PathBuf),
    /// Neither: other partitions are mounted and the kernel has no node for the firmware
    /// partition (so nothing can mount it through one).
    Nothing,
}

/// What writing a target involves, found without changing anything.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub path: PathBuf,
    pub kind: TargetKind,
    /// The firmware partition as the kernel sees it, for a block device.
    pub firmware: Option<Partition>,
    /// Mounts of the firmware partition to unmount and mount back, in mount order.
    pub remounts: Vec<Remount>,
    /// Other partitions that are mounted and stay mounted: `(device, mount point, fstype)`.
    pub stays_mounted: Vec<(String, PathBuf, String)>,
    pub exclusive: Exclusive,
    pub table_change: bool,
    firmware_range: Option<(u64, u64)>,
    /// Every mounted partition as the kernel sees it: `(name, mount point, start, sectors)`.
    mounted_extents: Vec<(String, PathBuf, u64, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(
        "another pifw is changing {path}{}; wait for it to finish (nothing was written)",
        holder_text(*.pid)
    )]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error(
        "{path} is busy: the kernel refused exclusive access (EBUSY), so it is mounted or held by another program (device-mapper, md, another pifw); unmount it first, e.g. `umount /boot/firmware` (nothing was written)"
    )]
    Busy { path: PathBuf },
    #[error(
        "{path} is read-only (the kernel's read-only flag is set: a write-protected card, `losetup -r`, or `blockdev --setro`); make it writable first, e.g. `blockdev --setrw {path}` or slide the card's lock switch (nothing was written)"
    )]
    ReadOnly { path: PathBuf },
    #[error(
        "{what} is in use, so pifw cannot unmount it for the change; pifw changed nothing:{}\nclose those files or leave that directory (e.g. `cd /`), then run pifw again",
        holder_list(holders)
    )]
    UsedBy { what: String, holders: Vec<Holder> },
    #[error(
        "{device} is mounted on {mount_point} only as a bind mount of its directory {root}; pifw cannot mount it back the same way: unmount it by hand first (nothing was written)"
    )]
    BindOnly {
        device: String,
        mount_point: PathBuf,
        root: String,
    },
    #[error(
        "the mounts of {path} changed since the plan (was: {before}; now: {now}); run pifw again (nothing was written)"
    )]
    Changed {
        path: PathBuf,
        before: String,
        now: String,
    },
    #[error(
        "the new partition table changes the extent of {device} (now sectors {start}+{sectors}), which is mounted on {mount_point}; pifw changes the table of a running disk only when every mounted partition keeps its extent: do it from another machine (nothing was written)"
    )]
    MountedPartitionMoves {
        device: String,
        mount_point: PathBuf,
        start: u64,
        sectors: u64,
    },
    #[error(transparent)]
    InUse(#[from] MountError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

fn holder_list(holders: &[Holder]) -> String {
    holders.iter().map(|h| format!("\n  - {h}")).collect()
}

impl Preflight {
    /// Checks writing `target` on the running system. `firmware` is the firmware partition's
    /// byte range `(start, end)`; `None` finds it from the card's own table. `table_change`
    /// says the change also writes partition-table sectors (which lie outside every partition).
    pub fn check(
        target: &Path,
        firmware: Option<(u64, u64)>,
        table_change: bool,
    ) -> Result<Preflight, LockError> {
        Self::check_with(target, firmware, table_change, &SystemView::system())
    }

    /// As [`Preflight::check`], with the mount table and sysfs read from `view` (tests).
    pub fn check_with(
        target: &Path,
        firmware: Option<(u64, u64)>,
        table_change: bool,
        view: &SystemView,
    ) -> Result<Preflight, LockError> {
        let kind = kind_of(target)?;
        // Refusals the write open would meet, found without opening for writing: the kernel's
        // read-only flag (Linux lets root open a read-only block device, a locked SD card or
        // `losetup -r`, for writing and fails each write with EPERM), and the permission to
        // write at all.
        if kind == TargetKind::BlockDevice && block_read_only(target) {
            return Err(LockError::ReadOnly {
                path: target.to_path_buf(),
            });
        }
        nix::unistd::access(target, nix::unistd::AccessFlags::W_OK).map_err(|e| LockError::Io {
            path: target.to_path_buf(),
            what: "opening for writing",
            source: io::Error::from_raw_os_error(e as i32),
        })?;
        let mounts = mounts::read_mountinfo(&view.mountinfo)?;
        let (uses, disk) = mounts::whole_target_uses(target, view, &mounts)?;
        mounts::refuse(target, uses)?;
        let mut pre = Preflight {
            path: target.to_path_buf(),
            kind,
            firmware: None,
            remounts: Vec::new(),
            stays_mounted: Vec::new(),
            exclusive: Exclusive::NotADevice,
            table_change,
            firmware_range: firmware,
            mounted_extents: Vec::new(),
        };
        let Some(disk) = disk else {
            if kind == TargetKind::BlockDevice {
                // Not in sysfs: only the exclusive open can tell.
                pre.exclusive = Exclusive::WholeDisk;
            }
            return Ok(pre);
        };
        let range = match firmware {
            Some(r) => Some(r),
            None => locate_firmware(target),
        };
        let fw = range.and_then(|(start, _)| {
            disk.partitions
                .iter()
                .find(|p| p.start.checked_mul(512) == Some(start))
                .cloned()
        });
        let mut uses = Vec::new();
        let mut other_in_use = false;
        for p in &disk.partitions {
            if Some(&p.name) == fw.as_ref().map(|f| &f.name) {
                continue;
            }
            other_in_use |= !p.mounts.is_empty();
            if range.is_none() {
                // No firmware partition known: pifw cannot tell which mount matters.
                uses.extend(p.mounts.iter().map(|m| Use::Mounted {
                    device: p.name.clone(),
                    mount_point: m.mount_point.clone(),
                    fstype: m.fstype.clone(),
                }));
            }
            pre.stays_mounted.extend(
                p.mounts
                    .iter()
                    .map(|m| (p.name.clone(), m.mount_point.clone(), m.fstype.clone())),
            );
        }
        mounts::refuse(target, uses)?;
        if let Some(fw) = &fw {
            pre.remounts = plan_remounts(fw, &mounts)?;
        }
        for p in &disk.partitions {
            let fw_mount = fw.as_ref().is_some_and(|f| f.name == p.name);
            let mp = match p.mounts.first() {
                Some(m) => m.mount_point.clone(),
                None if fw_mount && !pre.remounts.is_empty() => {
                    pre.remounts[0].mount().mount_point.clone()
                }
                None => continue,
            };
            pre.mounted_extents
                .push((p.name.clone(), mp, p.start, p.sectors));
        }
        pre.exclusive = match &fw {
            _ if !other_in_use => Exclusive::WholeDisk,
            Some(fw) => Exclusive::Partition(fw.node()),
            None => Exclusive::Nothing,
        };
        pre.firmware = fw;
        Ok(pre)
    }

    /// What writing will do beyond the writes themselves, one line each, for the plan.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.remounts {
            let m = r.mount();
            let dev = self
                .firmware
                .as_ref()
                .map_or_else(|| m.source.clone(), |f| f.node().display().to_string());
            out.push(format!(
                "unmounts {} ({dev}, {}) for the change and mounts it back afterwards",
                m.mount_point.display(),
                m.fstype
            ));
        }
        for (dev, mp, _) in &self.stays_mounted {
            out.push(format!(
                "/dev/{dev} stays mounted on {}: pifw writes none of its sectors",
                mp.display()
            ));
        }
        if self.table_change && !self.stays_mounted.is_empty() {
            out.push(
                "the kernel keeps its view of the partitions until the next boot (no partition extent changes, so it stays valid)"
                    .to_string(),
            );
        }
        out
    }

    /// Refuses a new partition table that moves or resizes a mounted partition: the kernel
    /// keeps using its old extents until the next boot (pifw never asks it to re-read a busy
    /// disk), so the two would disagree under a live filesystem. `planned` lists the new
    /// table's partitions as `(first LBA, last LBA)`, 512-byte sectors.
    pub fn refuse_moved_partitions(&self, planned: &[(u64, u64)]) -> Result<(), LockError> {
        for (name, mp, start, sectors) in &self.mounted_extents {
            let kept = planned
                .iter()
                .any(|(first, last)| first == start && last + 1 == start + sectors);
            if !kept {
                return Err(LockError::MountedPartitionMoves {
                    device: format!("/dev/{name}"),
                    mount_point: mp.clone(),
                    start: *start,
                    sectors: *sectors,
                });
            }
        }
        Ok(())
    }

    /// The mount points to unmount, for comparing two checks.
    fn unmount_points(&self) -> Vec<PathBuf> {
        self.remounts
            .iter()
            .map(|r| r.mount().mount_point.clone())
            .collect()
    }
}

/// The firmware partition's byte range per the card's own table, if it can be read.
fn locate_firmware(target: &Path) -> Option<(u64, u64)> {
    let mut t = super::target::Target::open_read(target).ok()?;
    let layout = super::table::read_layout(&mut t.file, t.size_bytes).ok()?;
    let fw = super::table::locate_firmware(&layout, &mut Vec::new())?;
    Some((fw.offset_bytes, fw.offset_bytes + fw.size_bytes))
}

/// How to put back every mount of the firmware partition `fw`, and refusal when a process
/// uses it. Mounts are found by device number or source node (kernel filesystems) and, for
/// FUSE, by the daemon that has the partition's node open.
fn plan_remounts(fw: &Partition, mounts: &[Mount]) -> Result<Vec<Remount>, LockError> {
    let proc = Path::new("/proc");
    let node = fw.node();
    let node_holders = live::processes_using(&[], Some(fw.dev), proc, &[]);
    // A FUSE mount has no device number of its own: its daemon is the process that has the
    // partition's node open and names the mount point on its command line (or, failing that,
    // the only mount of type `fuse.<its name>`).
    let fuse: Vec<&Mount> = mounts
        .iter()
        .filter(|m| m.fstype == "fuse" || m.fstype.starts_with("fuse."))
        .collect();
    let mut daemons: Vec<(u32, Mount)> = Vec::new();
    for h in &node_holders {
        let cmdline =
            std::fs::read(proc.join(h.pid.to_string()).join("cmdline")).unwrap_or_default();
        let args: Vec<&Path> = cmdline
            .split(|b| *b == 0)
            .map(|a| Path::new(std::ffi::OsStr::from_bytes(a)))
            .collect();
        let by_arg = fuse
            .iter()
            .find(|m| args.contains(&m.mount_point.as_path()));
        let by_type: Vec<&&Mount> = fuse
            .iter()
            .filter(|m| m.fstype == format!("fuse.{}", h.comm))
            .collect();
        let served = by_arg.or(match by_type.as_slice() {
            [only] => Some(*only),
            _ => None,
        });
        if let Some(m) = served
            && !daemons.iter().any(|(p, _)| *p == h.pid)
        {
            daemons.push((h.pid, (*m).clone()));
        }
    }
    let mut ours: Vec<Mount> = Vec::new();
    for m in mounts {
        if fw.mounts.contains(m) || daemons.iter().any(|(_, d)| d == m) {
            ours.push(m.clone());
        }
    }
    let daemon_pids: Vec<u32> = daemons.iter().map(|(p, _)| *p).collect();
    let mut fs_devs: Vec<(u32, u32)> = ours.iter().map(|m| m.dev).collect();
    fs_devs.dedup();
    let holders = live::processes_using(&fs_devs, Some(fw.dev), proc, &daemon_pids);
    if !holders.is_empty() {
        let what = match ours.first() {
            Some(m) => format!(
                "{} (mounted on {})",
                node.display(),
                m.mount_point.display()
            ),
            None => node.display().to_string(),
        };
        return Err(LockError::UsedBy { what, holders });
    }
    let Some(primary) = ours.iter().find(|m| m.root == "/") else {
        return match ours.first() {
            None => Ok(Vec::new()),
            Some(m) => Err(LockError::BindOnly {
                device: node.display().to_string(),
                mount_point: m.mount_point.clone(),
                root: m.root.clone(),
            }),
        };
    };
    let mut plan = Vec::new();
    for m in &ours {
        if m == primary {
            let fuse = daemons.iter().find(|(_, d)| d == m);
            plan.push(match fuse {
                Some((pid, _)) => {
                    let (program, args) =
                        live::fuse_command(*pid, m, &node).ok_or_else(|| LockError::Io {
                            path: node.clone(),
                            what: "reading the FUSE daemon's command line",
                            source: io::Error::other(format!("pid {pid}")),
                        })?;
                    Remount::Fuse {
                        mount: m.clone(),
                        pid: *pid,
                        program,
                        args,
                    }
                }
                None => Remount::Mount {
                    mount: m.clone(),
                    source: if m.source.starts_with("/dev/") {
                        m.source.clone()
                    } else {
                        node.display().to_string()
                    },
                    options: live::remount_options(m),
                },
            });
        } else {
            let from = primary.mount_point.join(m.root.trim_start_matches('/'));
            plan.push(Remount::Bind {
                mount: m.clone(),
                from,
            });
        }
    }
    // The primary first, so the bind mounts have something to bind.
    plan.sort_by_key(|r| !matches!(r, Remount::Mount { .. } | Remount::Fuse { .. }));
    Ok(plan)
}

/// What `status` reports about the mounts of `target`: the mounted partitions and what a
/// change of the firmware partition `firmware` (byte range) would do or why it would be
/// refused. `None` for an image file nothing uses.
pub fn mounts_report(target: &Path, firmware: Option<(u64, u64)>) -> Option<MountsReport> {
    match Preflight::check(target, firmware, false) {
        Err(e) => Some(MountsReport {
            mounted: Vec::new(),
            change_unmounts: Vec::new(),
            change_refused: Some(e.to_string()),
        }),
        Ok(p) if p.kind == TargetKind::Image => None,
        Ok(p) => {
            let fw_node = p.firmware.as_ref().map(|f| f.node().display().to_string());
            let mut mounted: Vec<MountedPartition> = p
                .remounts
                .iter()
                .map(|r| MountedPartition {
                    device: fw_node.clone().unwrap_or_default(),
                    mount_point: r.mount().mount_point.display().to_string(),
                    fstype: r.mount().fstype.clone(),
                    firmware: true,
                })
                .collect();
            mounted.extend(
                p.stays_mounted
                    .iter()
                    .map(|(dev, mp, fstype)| MountedPartition {
                        device: format!("/dev/{dev}"),
                        mount_point: mp.display().to_string(),
                        fstype: fstype.clone(),
                        firmware: false,
                    }),
            );
            Some(MountsReport {
                mounted,
                change_unmounts: p
                    .unmount_points()
                    .iter()
                    .map(|m| m.display().to_string())
                    .collect(),
                change_refused: None,
            })
        }
    }
}

/// The exclusive, non-blocking `flock` on an image file or device node that every pifw takes
/// before it plans a change, held until the change is written (or the dry run is shown).
#[derive(Debug)]
pub struct CardLock {
    file: File,
}

impl CardLock {
    /// Takes the lock on `path`, or says which pifw holds it.
    pub fn acquire(path: &Path) -> Result<CardLock, LockError> {
        let io_err = |what| {
            move |source| LockError::Io {
                path: path.to_path_buf(),
                what,
                source,
            }
        };
        let file = File::open(path).map_err(io_err("opening to lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(CardLock { file }),
            Err(TryLockError::WouldBlock) => {
                let pid = file
                    .metadata()
                    .ok()
                    .and_then(|m| flock_holder(Path::new("/proc/locks"), m.dev(), m.ino()));
                Err(LockError::Locked {
                    path: path.to_path_buf(),
                    pid,
                })
            }
            Err(TryLockError::Error(e)) => Err(io_err("locking")(e)),
        }
    }
}

impl WriteTarget {
    /// Opens `path` for writing on the running system: [`Preflight::check`] (the firmware
    /// partition found from the card's table), then [`WriteTarget::open_prepared`].
    pub fn open(path: &Path) -> Result<WriteTarget, LockError> {
        Self::open_prepared(Preflight::check(path, None, false)?)
    }

    /// As [`WriteTarget::open`], with the mount table and sysfs read from `view` (tests).
    pub fn open_with(path: &Path, view: &SystemView) -> Result<WriteTarget, LockError> {
        Self::open_in(Preflight::check_with(path, None, false, view)?, view)
    }

    /// Lock, check again, unmount, exclusive opens: see the module docs.
    pub fn open_prepared(pre: Preflight) -> Result<WriteTarget, LockError> {
        Self::open_in(pre, &SystemView::system())
    }

    fn open_in(pre: Preflight, view: &SystemView) -> Result<WriteTarget, LockError> {
        let lock = CardLock::acquire(&pre.path)?;
        Self::open_locked_in(pre, lock, view)
    }

    /// As [`WriteTarget::open_prepared`], under a lock taken earlier (before the plan, so
    /// that what the user confirms is planned on a card no other pifw changes meanwhile).
    pub fn open_locked(pre: Preflight, lock: CardLock) -> Result<WriteTarget, LockError> {
        Self::open_locked_in(pre, lock, &SystemView::system())
    }

    fn open_locked_in(
        pre: Preflight,
        lock: CardLock,
        view: &SystemView,
    ) -> Result<WriteTarget, LockError> {
        let path = pre.path.as_path();
        let io_err = |what| {
            move |source| LockError::Io {
                path: path.to_path_buf(),
                what,
                source,
            }
        };
        let lock = lock.file;

        // Under the lock, nothing pifw does can change the answer; anything else may have.
        let now = Preflight::check_with(path, pre.firmware_range, pre.table_change, view)?;
        if now.unmount_points() != pre.unmount_points() || now.exclusive != pre.exclusive {
            let show = |p: &Preflight| {
                let notes = p.notes();
                if notes.is_empty() {
                    "nothing mounted".to_string()
                } else {
                    notes.join("; ")
                }
            };
            return Err(LockError::Changed {
                path: path.to_path_buf(),
                before: show(&pre),
                now: show(&now),
            });
        }

        let unmounted = if now.remounts.is_empty() {
            None
        } else {
            Some(live::unmount(&now.remounts)?)
        };

        let excl = |node: &Path, write: bool| -> Result<File, LockError> {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(nix::fcntl::OFlag::O_EXCL.bits())
                .open(node)
                .map_err(|e| {
                    if e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) {
                        LockError::Busy {
                            path: node.to_path_buf(),
                        }
                    } else {
                        LockError::Io {
                            path: node.to_path_buf(),
                            what: "opening exclusively",
                            source: e,
                        }
                    }
                })
        };
        // If anything below fails, `unmounted` mounts back as it drops.
        let plain = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io_err("opening for writing"))
        };
        let (partition, mut file) = match (&now.exclusive, &now.firmware) {
            (Exclusive::Partition(node), _) => (Some(excl(node, false)?), plain()?),
            (Exclusive::WholeDisk, fw) => match (excl(path, true), fw) {
                // With the whole disk claimed, the partition's node is opened after the
                // claim and without O_EXCL (the kernel refuses to claim a partition of a disk
                // someone else claimed): only to drop the partition's own cache, which a
                // reader (blkid, a mount helper) may fill while pifw writes through the disk.
                (Ok(file), Some(fw)) => {
                    let part = File::open(fw.node()).map_err(|source| LockError::Io {
                        path: fw.node(),
                        what: "opening the firmware partition",
                        source,
                    })?;
                    (Some(part), file)
                }
                (Ok(file), None) => (None, file),
                // Something mountinfo does not show holds another partition (swap, a
                // kernel user): claiming the firmware partition alone is what matters.
                (Err(LockError::Busy { .. }), Some(fw)) => {
                    (Some(excl(&fw.node(), false)?), plain()?)
                }
                (Err(e), _) => return Err(e),
            },
            _ => (None, plain()?),
        };
        if now.kind == TargetKind::BlockDevice {
            live::drop_cache(&file).map_err(io_err("dropping the disk's cached sectors"))?;
        }
        // A block device's metadata length is 0; seeking to the end asks the driver.
        let size_bytes = file
            .seek(SeekFrom::End(0))
            .map_err(io_err("finding the size"))?;
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("seeking to the start"))?;
        Ok(WriteTarget {
            path: path.to_path_buf(),
            kind: now.kind,
            size_bytes,
            file,
            partition,
            unmounted,
            lock: Some(lock),
        })
    }

    /// Syncs, closes the device and mounts back what was unmounted, reporting a failure to
    /// mount back (dropping does the same, printing such a failure instead). The lock is
    /// released last.
    pub fn finish(mut self) -> Result<(), LockError> {
        self.sync()?;
        let unmounted = self.unmounted.take();
        let lock = self.lock.take();
        self.partition.take();
        // Every handle on the card closes first: a mount needs the exclusive claim.
        drop(self);
        if let Some(mut u) = unmounted {
            u.restore()?;
        }
        drop(lock);
        Ok(())
    }

    /// Mount points unmounted for this change, to be mounted back.
    pub fn unmounted(&self) -> Vec<PathBuf> {
        self.unmounted
            .as_ref()
            .map(Unmounted::pending)
            .unwrap_or_default()
    }

    /// A durability point: everything written so far is on the medium when this returns
    /// (`fsync`; for a block device this also flushes the device's write cache). The firmware
    /// partition's own page cache is then dropped, so a later read or mount through its node
    /// sees what was written through the whole disk.
    pub fn sync(&self) -> Result<(), LockError> {
        let io_err = |what| {
            move |source| LockError::Io {
                path: self.path.clone(),
                what,
                source,
            }
        };
        // A simulated power cut for the tests of the binary (PIFW_TEST_CUT_AFTER_WRITES).
        crate::device::env_cut::before_sync()
            .and_then(|()| self.file.sync_all())
            .map_err(io_err("syncing"))?;
        if let Some(p) = &self.partition {
            live::drop_cache(p).map_err(io_err("dropping the partition's cached sectors"))?;
        }
        Ok(())
    }

    /// Sets the length of an image file (growing appends zeros without allocating them) and
    /// syncs it. A block device cannot change size: that is an error, and nothing happens.
    pub fn set_len(&mut self, len: u64) -> Result<(), LockError> {
        let io_err = |what| {
            let path = self.path.clone();
            move |source| LockError::Io { path, what, source }
        };
        if self.kind != TargetKind::Image {
            return Err(io_err("resizing")(io::Error::new(
                io::ErrorKind::Unsupported,
                "a block device cannot change size",
            )));
        }
        crate::device::env_cut::before_sync().map_err(io_err("resizing"))?;
        self.file.set_len(len).map_err(io_err("resizing"))?;
        self.file.sync_all().map_err(io_err("syncing"))?;
        self.size_bytes = len;
        Ok(())
    }
}

impl Read for WriteTarget {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for WriteTarget {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let at = self.file.stream_position()?;
        crate::device::env_cut::before_write(&self.path, &self.file, at, buf.len())?;
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for WriteTarget {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// The kernel's read-only flag of the block device at `path` (`/sys/dev/block/M:m/ro`);
/// false when it cannot be read (the write then fails with the kernel's own error).
fn block_read_only(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let rdev = meta.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/ro"))
        .is_ok_and(|t| t.trim() == "1")
}

/// What `path` is, with the same answers and errors as [`super::target::Target::open_read`].
fn kind_of(path: &Path) -> Result<TargetKind, TargetError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => TargetError::NotFound {
            path: path.to_path_buf(),
        },
        _ => TargetError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let ft = meta.file_type();
    if ft.is_block_device() {
        Ok(TargetKind::BlockDevice)
    } else if ft.is_file() {
        Ok(TargetKind::Image)
    } else {
        Err(TargetError::Unsupported {
            path: path.to_path_buf(),
            what: if ft.is_dir() {
                "a directory"
            } else {
                "neither a regular file nor a block device"
            },
        })
    }
}

/// The pid holding a `flock` on the inode `(dev, ino)`, from a `/proc/locks`-format file.
///
/// Lines read `1: FLOCK  ADVISORY  WRITE 27487 fe:00:5595874 0 EOF`: the pid, then the
/// filesystem's device as hex `major:minor` and the inode in decimal (fs/locks.c,
/// `lock_get_status`). Blocked waiters (`->` lines) are skipped. The pid is the process that
/// took the lock; it may have exited if the lock was inherited.
fn flock_holder(locks: &Path, dev: u64, ino: u64) -> Option<u32> {
    let text = std::fs::read_to_string(locks).ok()?;
    let (major, minor) = (
        nix::sys::stat::major(dev as nix::libc::dev_t),
        nix::sys::stat::minor(dev as nix::libc::dev_t),
    );
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, "WRITE", pid, id, ..] if *id == want => pid.parse().ok(),
            _ => None,
        }
    })
}

impl crate::device::Durable for WriteTarget {
    fn sync(&mut self) -> io::Result<()> {
        WriteTarget::sync(self).map_err(io::Error::other)
    }
}

impl Drop for WriteTarget {
    fn drop(&mut self) {
        // The fields then close in order: disk, partition, mounts back, lock.
        if self.partition.is_some()
            && let Err(e) = self.sync()
        {
            eprintln!("pifw: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path) -> PathBuf {
        let path = dir.join("card.img");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        path
    }

    #[test]
    fn second_writer_is_refused_with_the_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path());
        let mut first = WriteTarget::open(&path).expect("first writer");
        assert_eq!(first.kind, TargetKind::Image);
        assert_eq!(first.size_bytes, 4096);

        let err = WriteTarget::open(&path).expect_err("second writer must be refused");
        match &err {
            LockError::Locked { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("another pifw is changing {}", path.display())),
            "{text}"
        );
        assert!(
            text.contains(&format!("(pid {})", std::process::id())),
            "{text}"
        );

        first.write_all(b"pifw").unwrap();
        first.sync().unwrap();
        drop(first);
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"pifw");
        WriteTarget::open(&path).expect("the lock is released on drop");
    }

    #[test]
    fn a_reader_does_not_block_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path());
        let _reader = super::super::target::Target::open_read(&path).unwrap();
        WriteTarget::open(&path).expect("status may run alongside");
    }

    #[test]
    fn parses_proc_locks() {
        let dir = tempfile::tempdir().unwrap();
        let locks = dir.path().join("locks");
        std::fs::write(
            &locks,
            "1: POSIX  ADVISORY  WRITE 10 08:01:77 0 EOF\n\
             2: FLOCK  ADVISORY  READ 11 08:01:77 0 EOF\n\
             3: FLOCK  ADVISORY  WRITE 4242 08:01:77 0 EOF\n\
             3: -> FLOCK  ADVISORY  WRITE 4243 08:01:77 0 EOF\n\
             4: FLOCK  ADVISORY  WRITE 99 fe:00:77 0 EOF\n",
        )
        .unwrap();
        let dev = nix::sys::stat::makedev(8, 1);
        assert_eq!(flock_holder(&locks, dev, 77), Some(4242));
        assert_eq!(flock_holder(&locks, dev, 78), None);
        let dev = nix::sys::stat::makedev(0xfe, 0);
        assert_eq!(flock_holder(&locks, dev, 77), Some(99));
    }

    #[test]
    fn refuses_what_it_cannot_write() {
        assert!(matches!(
            WriteTarget::open(Path::new("/nonexistent/pifw.img")),
            Err(LockError::Target(TargetError::NotFound { .. }))
        ));
        assert!(matches!(
            WriteTarget::open(Path::new("/")),
            Err(LockError::Target(TargetError::Unsupported { .. }))
        ));
    }
}
