//! Is the target in use? Mounted partitions, holders, and loop devices over an image file.
//!
//! A mounted firmware partition has the kernel's cached copy of its FAT and directories;
//! writing the card underneath it corrupts both, and the kernel may write its stale copy back
//! later. So pifw refuses to write a target when:
//!
//! - the block device, or any of its partitions, appears in the mount table
//!   (`/proc/self/mountinfo`, matched by `major:minor`, which sysfs gives for the device and
//!   for each partition: `/sys/class/block/<dev>/dev`, `/sys/class/block/<dev>/<part>/dev`);
//! - the device or a partition has holders (`/sys/class/block/<dev>/holders/`: device-mapper,
//!   md, bcache);
//! - an image file backs a loop device (`/sys/block/loop*/loop/backing_file`). Even an
//!   unmounted loop device has its own page cache of the image, so a later mount through it
//!   could read stale sectors: pifw asks for `losetup -d` first, and reports the loop device's
//!   mounts and holders too.
//!
//! The mount table and sysfs root come from a [`SystemView`], redirected in tests with the
//! `PIFW_MOUNTINFO` and `PIFW_SYSFS` environment variables (the latter shared with
//! [`super::host`]) or built directly.
//!
//! Must not: unmount or detach anything. It reports what holds the target and how to release it.

use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where the mount table and sysfs are read from.
#[derive(Debug, Clone)]
pub struct SystemView {
    pub mountinfo: PathBuf,
    pub sysfs: PathBuf,
}

impl SystemView {
    /// The running system, honouring `PIFW_MOUNTINFO` and `PIFW_SYSFS`.
    pub fn system() -> SystemView {
        let env_or = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        SystemView {
            mountinfo: env_or("PIFW_MOUNTINFO", "/proc/self/mountinfo"),
            sysfs: env_or("PIFW_SYSFS", "/sys"),
        }
    }
}

/// One line of `mountinfo` (proc(5)): the fields pifw uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted device (field 3).
    pub dev: (u32, u32),
    /// The directory of the filesystem mounted here (field 4): `/` unless a bind mount.
    pub root: String,
    /// Where it is mounted (field 5), octal escapes decoded.
    pub mount_point: PathBuf,
    /// Per-mount options (field 6), e.g. `rw,nosuid,relatime`.
    pub options: String,
    /// Filesystem type (first field after ` - `).
    pub fstype: String,
    /// Mount source, e.g. `/dev/sdb1` (second field after ` - `).
    pub source: String,
    /// Per-superblock options (third field after ` - `), e.g. `rw,fmask=0022`.
    pub super_options: String,
}

/// Something that keeps pifw from writing the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Use {
    /// `device` (kernel name, e.g. `sdb1`) is mounted at `mount_point`.
    Mounted {
        device: String,
        mount_point: PathBuf,
        fstype: String,
    },
    /// `device` is held by `holder` (e.g. `dm-0`).
    Held { device: String, holder: String },
    /// The image file backs the loop device `/dev/<device>`.
    LoopBacked { device: String },
    /// The loop device `/dev/<device>` is backed by the target or its partition `/dev/<on>`.
    Stacked { device: String, on: String },
    /// The target is a loop device, and `/dev/<device>` is a second loop device over the same
    /// image file.
    SameBacking {
        device: String,
        target: String,
        file: String,
    },
}

impl fmt::Display for Use {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Use::Mounted {
                device,
                mount_point,
                fstype,
            } => {
                let mp = mount_point.display();
                write!(
                    f,
                    "/dev/{device} is mounted on {mp} ({fstype}); unmount it: `umount {mp}`"
                )?;
                if mount_point == Path::new("/boot/firmware") {
                    write!(
                        f,
                        " (on NixOS /boot/firmware is `noauto`: it is mounted only when someone mounted it by hand)"
                    )?;
                }
                Ok(())
            }
            Use::Held { device, holder } => write!(
                f,
                "/dev/{device} is held by /dev/{holder} (device-mapper, md or similar); stop that first (e.g. `dmsetup remove {holder}`)"
            ),
            Use::LoopBacked { device } => write!(
                f,
                "the image backs loop device /dev/{device}, which keeps its own cache of it; write /dev/{device} instead, or detach it: `losetup -d /dev/{device}`"
            ),
            Use::Stacked { device, on } => write!(
                f,
                "loop device /dev/{device} is stacked on /dev/{on}; detach it: `losetup -d /dev/{device}`"
            ),
            Use::SameBacking {
                device,
                target,
                file,
            } => write!(
                f,
                "/dev/{device} is a second loop device over {file}, the file behind /dev/{target}; detach it: `losetup -d /dev/{device}`"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{target} is in use; pifw changed nothing:{}", bullet_list(uses))]
    InUse { target: PathBuf, uses: Vec<Use> },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{target} is the partition /dev/{partition}; give the whole disk, e.g. /dev/{disk} (nothing was written)"
    )]
    NotWholeDisk {
        target: PathBuf,
        partition: String,
        disk: String,
    },
    #[error("{path} line {line}: not a mountinfo line: `{text}`")]
    BadMountinfo {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

fn bullet_list(uses: &[Use]) -> String {
    uses.iter().map(|u| format!("\n  - {u}")).collect()
}

/// Fails with [`MountError::InUse`] when `uses` is not empty.
pub fn refuse(target: &Path, uses: Vec<Use>) -> Result<(), MountError> {
    if uses.is_empty() {
        Ok(())
    } else {
        Err(MountError::InUse {
            target: target.to_path_buf(),
            uses,
        })
    }
}

/// What [`whole_target_uses`] finds for `target` on the system `view`.
pub fn usage(target: &Path, view: &SystemView) -> Result<Vec<Use>, MountError> {
    let mounts = read_mountinfo(&view.mountinfo)?;
    Ok(whole_target_uses(target, view, &mounts)?.0)
}

/// Identity of a file: the filesystem's device and the inode, as `stat(2)` gives them; and for
/// a block device node, the device it names. Paths lie (hard links, bind mounts, symlinks);
/// these numbers do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    /// `st_rdev` when the file is a block device node.
    pub rdev: Option<(u32, u32)>,
}

impl FileId {
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        let meta = fs::metadata(path)?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            rdev: meta
                .file_type()
                .is_block_device()
                .then(|| split_dev(meta.rdev())),
        })
    }
}

/// `(major, minor)` of a `dev_t`.
pub fn split_dev(dev: u64) -> (u32, u32) {
    let dev = dev as nix::libc::dev_t;
    (
        nix::sys::stat::major(dev) as u32,
        nix::sys::stat::minor(dev) as u32,
    )
}

/// One partition of a disk as the kernel sees it (`/sys/class/block/<disk>/<part>/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Kernel name, e.g. `mmcblk0p1`; its node is `/dev/<name>`.
    pub name: String,
    pub dev: (u32, u32),
    /// First sector and length in 512-byte units (sysfs `start`, `size`).
    pub start: u64,
    pub sectors: u64,
    /// Where it is mounted (by device number or by a source naming its node).
    pub mounts: Vec<Mount>,
    /// Kernel holders (`holders/`: device-mapper, md, bcache).
    pub holders: Vec<String>,
}

impl Partition {
    pub fn node(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }
}

/// A whole disk and its partitions, from sysfs and the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    pub dev: (u32, u32),
    /// Mounts of the whole device itself (a filesystem without a partition table).
    pub mounts: Vec<Mount>,
    pub holders: Vec<String>,
    pub partitions: Vec<Partition>,
}

/// What a block device number is, by sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockNode {
    Disk(Disk),
    /// A partition of the disk `/dev/<disk>`.
    Partition {
        name: String,
        disk: String,
    },
    /// Not in sysfs (a fake tree, or a device that vanished).
    Unknown,
}

/// Looks up the block device numbered `dev` in sysfs and the mount table.
pub fn block_node(dev: (u32, u32), view: &SystemView, mounts: &[Mount]) -> BlockNode {
    let class = view.sysfs.join("class/block");
    let Some(name) = name_of(&class, dev) else {
        return BlockNode::Unknown;
    };
    let dir = class.join(&name);
    if dir.join("partition").is_file() {
        // `/sys/class/block/<part>` links into its disk's directory: the parent is the disk.
        let disk = fs::canonicalize(&dir)
            .ok()
            .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_owned()))
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "the disk".to_string());
        return BlockNode::Partition { name, disk };
    }
    let mounted = |dev: (u32, u32), name: &str| -> Vec<Mount> {
        let node = format!("/dev/{name}");
        mounts
            .iter()
            .filter(|m| {
                m.dev == dev
                    || m.source == node
                    || (m.source.starts_with('/')
                        && FileId::of(Path::new(&m.source)).is_ok_and(|id| id.rdev == Some(dev)))
            })
            .cloned()
            .collect()
    };
    let partitions = sorted_names(&dir)
        .into_iter()
        .filter(|n| dir.join(n).join("partition").is_file())
        .filter_map(|n| {
            let pdir = dir.join(&n);
            let pdev = read_dev(&pdir.join("dev"))?;
            let num = |f: &str| -> Option<u64> {
                fs::read_to_string(pdir.join(f)).ok()?.trim().parse().ok()
            };
            Some(Partition {
                mounts: mounted(pdev, &n),
                holders: sorted_names(&pdir.join("holders")),
                start: num("start").unwrap_or(0),
                sectors: num("size").unwrap_or(0),
                name: n,
                dev: pdev,
            })
        })
        .collect();
    BlockNode::Disk(Disk {
        mounts: mounted(dev, &name),
        holders: sorted_names(&dir.join("holders")),
        name,
        dev,
        partitions,
    })
}

/// A loop device and the file behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    pub name: String,
    pub dev: (u32, u32),
    /// `loop/backing_file` as sysfs prints it (may end in ` (deleted)`).
    pub backing_path: String,
    /// The backing file's identity: from `LOOP_GET_STATUS64` on the real system (device and
    /// inode the kernel holds, right even when the path was unlinked or renamed), else from
    /// `stat` of `backing_path`.
    pub backing: Option<FileId>,
}

/// Every bound loop device (those with a `loop/backing_file`).
pub fn loop_devices(view: &SystemView) -> Vec<LoopDevice> {
    let block = view.sysfs.join("block");
    let real = view.sysfs == Path::new("/sys");
    sorted_names(&block)
        .into_iter()
        .filter(|n| n.starts_with("loop"))
        .filter_map(|n| {
            let dir = block.join(&n);
            let backing = fs::read_to_string(dir.join("loop/backing_file")).ok()?;
            let backing_path = backing.trim_end_matches('\n').to_string();
            let dev = read_dev(&dir.join("dev"))?;
            let from_kernel = if real {
                super::live::loop_backing(&Path::new("/dev").join(&n))
            } else {
                None
            };
            let backing = from_kernel.or_else(|| FileId::of(Path::new(&backing_path)).ok());
            Some(LoopDevice {
                name: n,
                dev,
                backing_path,
                backing,
            })
        })
        .collect()
}

/// What keeps pifw from writing `target` whatever partition it writes: for an image file, the
/// loop devices over it (same device and inode, whatever the path) and their mounts; for a
/// block device, holders, a mount of the whole device, loop devices stacked on it or its
/// partitions, and a second loop device over the same file as a loop target. Mounted
/// partitions are not listed here: which of them matter depends on what the change writes
/// (see [`super::lock::Preflight`]).
pub fn whole_target_uses(
    target: &Path,
    view: &SystemView,
    mounts: &[Mount],
) -> Result<(Vec<Use>, Option<Disk>), MountError> {
    let id = FileId::of(target).map_err(|source| MountError::Io {
        path: target.to_path_buf(),
        source,
    })?;
    let loops = loop_devices(view);
    let mut uses = Vec::new();
    let Some(dev) = id.rdev else {
        for l in loops.iter().filter(|l| {
            l.backing
                .is_some_and(|b| b.rdev.is_none() && (b.dev, b.ino) == (id.dev, id.ino))
        }) {
            uses.push(Use::LoopBacked {
                device: l.name.clone(),
            });
            if let BlockNode::Disk(disk) = block_node(l.dev, view, mounts) {
                uses.extend(disk_uses(&disk, true));
            }
        }
        return Ok((uses, None));
    };
    let disk = match block_node(dev, view, mounts) {
        BlockNode::Partition { name, disk } => {
            return Err(MountError::NotWholeDisk {
                target: target.to_path_buf(),
                partition: name,
                disk,
            });
        }
        BlockNode::Unknown => {
            // The mount table still counts.
            uses.extend(
                mounts
                    .iter()
                    .filter(|m| m.dev == dev)
                    .map(|m| Use::Mounted {
                        device: format!("{}:{}", dev.0, dev.1),
                        mount_point: m.mount_point.clone(),
                        fstype: m.fstype.clone(),
                    }),
            );
            return Ok((uses, None));
        }
        BlockNode::Disk(disk) => disk,
    };
    uses.extend(disk_uses(&disk, false));
    let ours: Vec<((u32, u32), &str)> = std::iter::once((disk.dev, disk.name.as_str()))
        .chain(disk.partitions.iter().map(|p| (p.dev, p.name.as_str())))
        .collect();
    for l in &loops {
        if let Some((_, on)) = ours
            .iter()
            .find(|(d, _)| l.backing.is_some_and(|b| b.rdev == Some(*d)))
        {
            uses.push(Use::Stacked {
                device: l.name.clone(),
                on: on.to_string(),
            });
        }
    }
    if let Some(me) = loops.iter().find(|l| l.dev == disk.dev)
        && let Some(mine) = me.backing
    {
        for other in loops.iter().filter(|l| {
            l.dev != disk.dev
                && l.backing
                    .is_some_and(|b| (b.dev, b.ino) == (mine.dev, mine.ino))
        }) {
            uses.push(Use::SameBacking {
                device: other.name.clone(),
                target: disk.name.clone(),
                file: me.backing_path.clone(),
            });
        }
    }
    Ok((uses, Some(disk)))
}

/// The partition of `target` (kernel name, e.g. `mmcblk0p2`, `loop0p2`) whose filesystem
/// holds `dir`, or its nearest existing ancestor: the directory's `st_dev` against the device
/// numbers of the target's partitions (sysfs) and of their mounts (the mount table). For an
/// image file, the partitions of the loop devices over it count. `None` when `dir` lies
/// elsewhere, or what holds it cannot be told.
pub fn partition_holding(dir: &Path, target: &Path, view: &SystemView) -> Option<String> {
    let mut d = dir;
    let dev = loop {
        match fs::metadata(d) {
            Ok(m) => break split_dev(m.dev()),
            Err(_) => d = d.parent()?,
        }
    };
    let mounts = read_mountinfo(&view.mountinfo).ok()?;
    target_disks(target, view, &mounts)
        .iter()
        .flat_map(|disk| disk.partitions.iter())
        .find(|p| p.dev == dev || p.mounts.iter().any(|m| m.dev == dev))
        .map(|p| p.name.clone())
}

/// The target as the kernel sees it: the disk itself for a block device, the loop devices
/// over it for an image file (same device and inode, whatever the path).
fn target_disks(target: &Path, view: &SystemView, mounts: &[Mount]) -> Vec<Disk> {
    let Ok(id) = FileId::of(target) else {
        return Vec::new();
    };
    match id.rdev {
        Some(rdev) => match block_node(rdev, view, mounts) {
            BlockNode::Disk(disk) => vec![disk],
            _ => Vec::new(),
        },
        None => loop_devices(view)
            .into_iter()
            .filter(|l| {
                l.backing
                    .is_some_and(|b| b.rdev.is_none() && (b.dev, b.ino) == (id.dev, id.ino))
            })
            .filter_map(|l| match block_node(l.dev, view, mounts) {
                BlockNode::Disk(disk) => Some(disk),
                _ => None,
            })
            .collect(),
    }
}

/// Partitions of `target` mounted on this machine as a whole (mount root `/`), as (first
/// byte on the target, mount point). Empty when nothing is mounted or it cannot be told.
pub fn mounted_partitions(target: &Path, view: &SystemView) -> Vec<(u64, PathBuf)> {
    let Ok(mounts) = read_mountinfo(&view.mountinfo) else {
        return Vec::new();
    };
    target_disks(target, view, &mounts)
        .iter()
        .flat_map(|disk| disk.partitions.iter())
        .filter_map(|p| {
            p.mounts
                .iter()
                .find(|m| m.root == "/")
                .map(|m| (p.start * 512, m.mount_point.clone()))
        })
        .collect()
}

/// Mounts and holders of a disk: the whole device's always; its partitions' mounts only when
/// `partitions_too` (a loop device over an image file, where any mount means a second cache
/// of the image); partition holders always.
fn disk_uses(disk: &Disk, partitions_too: bool) -> Vec<Use> {
    let mut uses = Vec::new();
    let mut add = |name: &str, mounts: &[Mount], holders: &[String], with_mounts: bool| {
        if with_mounts {
            uses.extend(mounts.iter().map(|m| Use::Mounted {
                device: name.to_string(),
                mount_point: m.mount_point.clone(),
                fstype: m.fstype.clone(),
            }));
        }
        uses.extend(holders.iter().map(|h| Use::Held {
            device: name.to_string(),
            holder: h.clone(),
        }));
    };
    add(&disk.name, &disk.mounts, &disk.holders, true);
    for p in &disk.partitions {
        add(&p.name, &p.mounts, &p.holders, partitions_too);
    }
    uses
}

/// The kernel name of the block device numbered `dev`, found by its `dev` file in
/// `/sys/class/block/*/dev`.
fn name_of(class: &Path, dev: (u32, u32)) -> Option<String> {
    sorted_names(class)
        .into_iter()
        .find(|name| read_dev(&class.join(name).join("dev")) == Some(dev))
}

/// Entry names of a directory, sorted; empty when it cannot be read.
fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A sysfs `dev` file: `major:minor\n`.
fn read_dev(path: &Path) -> Option<(u32, u32)> {
    parse_dev(fs::read_to_string(path).ok()?.trim())
}

fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

pub fn read_mountinfo(path: &Path) -> Result<Vec<Mount>, MountError> {
    let text = fs::read_to_string(path).map_err(|source| MountError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_mountinfo(&text).map_err(|(line, text)| MountError::BadMountinfo {
        path: path.to_path_buf(),
        line,
        text,
    })
}

/// Parses `mountinfo` (proc(5)): `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root
/// rw,errors=continue`. Optional fields sit between the options and the ` - ` separator.
/// Errors carry the 1-based line number and text of the first line that does not parse.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, (usize, String)> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || (index + 1, line.to_string());
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-").ok_or_else(bad)?;
        if sep < 6 || fields.len() < sep + 3 {
            return Err(bad());
        }
        out.push(Mount {
            dev: parse_dev(fields[2]).ok_or_else(bad)?,
            root: unescape(fields[3]),
            mount_point: PathBuf::from(unescape(fields[4])),
            options: fields[5].to_string(),
            fstype: fields[sep + 1].to_string(),
            source: unescape(fields[sep + 2]),
            super_options: fields
                .get(sep + 3)
                .map_or_else(String::new, |o| unescape(o)),
        });
    }
    Ok(out)
}

/// Decodes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash) in mountinfo fields.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && oct.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(oct.iter().fold(0u8, |acc, b| (acc << 3) | (b - b'0')));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 8:17 / /boot/firmware rw,relatime shared:20 - vfat /dev/sdb1 rw,fmask=0022
41 22 8:18 / /mnt/nixos\\040root rw,relatime - ext4 /dev/sdb2 rw
42 22 7:0 / /mnt/loop rw shared:30 master:2 - vfat /dev/loop0 rw
";

    /// A fake sysfs: sdb with partitions sdb1 (mounted), sdb2 (mounted), sdb3 (held by dm-0);
    /// sdc with nothing; loop0 backed by `image`.
    fn fake_sysfs(root: &Path, image: &Path) -> SystemView {
        let dev = |dir: &Path, d: &str| {
            fs::create_dir_all(dir).unwrap();
            fs::write(dir.join("dev"), format!("{d}\n")).unwrap();
        };
        let class = root.join("class/block");
        dev(&class.join("sdb"), "8:16");
        for (i, (p, d)) in [("sdb1", "8:17"), ("sdb2", "8:18"), ("sdb3", "8:19")]
            .into_iter()
            .enumerate()
        {
            let pdir = class.join("sdb").join(p);
            dev(&pdir, d);
            fs::write(pdir.join("partition"), format!("{}\n", i + 1)).unwrap();
            fs::write(pdir.join("start"), format!("{}\n", 8192 * (i + 1))).unwrap();
            fs::write(pdir.join("size"), "8192\n").unwrap();
        }
        // As in the real sysfs, the class entry of a partition links into its disk.
        std::os::unix::fs::symlink(class.join("sdb/sdb1"), class.join("sdb1")).unwrap();
        fs::create_dir_all(class.join("sdb/holders")).unwrap();
        fs::create_dir_all(class.join("sdb/sdb3/holders/dm-0")).unwrap();
        dev(&class.join("sdc"), "8:32");
        dev(&class.join("loop0"), "7:0");
        dev(&root.join("block/loop0"), "7:0");
        fs::create_dir_all(root.join("block/loop0/loop")).unwrap();
        fs::write(
            root.join("block/loop0/loop/backing_file"),
            format!("{}\n", image.display()),
        )
        .unwrap();
        dev(&root.join("block/loop1"), "7:1");
        fs::create_dir_all(root.join("block/loop1/loop")).unwrap();
        fs::write(
            root.join("block/loop1/loop/backing_file"),
            "/elsewhere/other.img\n",
        )
        .unwrap();
        let mountinfo = root.join("mountinfo");
        fs::write(&mountinfo, MOUNTINFO).unwrap();
        SystemView {
            mountinfo,
            sysfs: root.to_path_buf(),
        }
    }

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let m = parse_mountinfo(MOUNTINFO).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].dev, (8, 17));
        assert_eq!(m[1].mount_point, PathBuf::from("/boot/firmware"));
        assert_eq!(m[1].fstype, "vfat");
        assert_eq!(m[1].source, "/dev/sdb1");
        assert_eq!(m[2].mount_point, PathBuf::from("/mnt/nixos root"));
        assert_eq!(m[3].fstype, "vfat");
        assert_eq!(
            parse_mountinfo("22 1 254:1 / / rw\n"),
            Err((1, "22 1 254:1 / / rw".to_string()))
        );
        assert_eq!(
            parse_mountinfo("\n22 1 x / / rw - ext4 /dev/x rw\n"),
            Err((2, "22 1 x / / rw - ext4 /dev/x rw".to_string()))
        );
    }

    #[test]
    fn finds_mounted_and_held_partitions_of_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let view = fake_sysfs(dir.path(), Path::new("/img/card.img"));
        let mounts = read_mountinfo(&view.mountinfo).unwrap();
        let BlockNode::Disk(disk) = block_node((8, 16), &view, &mounts) else {
            panic!("sdb is a disk");
        };
        assert_eq!(disk.name, "sdb");
        let summary: Vec<(&str, u64, Vec<&Path>, &[String])> = disk
            .partitions
            .iter()
            .map(|p| {
                let mps = p.mounts.iter().map(|m| m.mount_point.as_path()).collect();
                (p.name.as_str(), p.start, mps, p.holders.as_slice())
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("sdb1", 8192, vec![Path::new("/boot/firmware")], &[][..]),
                ("sdb2", 16384, vec![Path::new("/mnt/nixos root")], &[][..]),
                ("sdb3", 24576, vec![], &["dm-0".to_string()][..]),
            ]
        );
        // Mounted partitions are the caller's business; holders never are allowed.
        let uses = disk_uses(&disk, false);
        assert_eq!(
            uses,
            vec![Use::Held {
                device: "sdb3".into(),
                holder: "dm-0".into()
            }]
        );
        assert_eq!(
            block_node((8, 17), &view, &mounts),
            BlockNode::Partition {
                name: "sdb1".into(),
                disk: "sdb".into()
            }
        );
        let BlockNode::Disk(empty) = block_node((8, 32), &view, &mounts) else {
            panic!("sdc is a disk");
        };
        assert_eq!(disk_uses(&empty, true), vec![]);
        let text = MountError::InUse {
            target: "/dev/sdb".into(),
            uses: disk_uses(&disk, true),
        }
        .to_string();
        assert!(text.contains("/dev/sdb3 is held by /dev/dm-0"), "{text}");
    }

    #[test]
    fn finds_the_loop_device_over_an_image_by_identity_and_its_mount() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("card.img");
        fs::write(&image, b"x").unwrap();
        let view = fake_sysfs(&dir.path().join("sys"), &image);
        let mounts = read_mountinfo(&view.mountinfo).unwrap();
        let want = vec![
            Use::LoopBacked {
                device: "loop0".into(),
            },
            Use::Mounted {
                device: "loop0".into(),
                mount_point: "/mnt/loop".into(),
                fstype: "vfat".into(),
            },
        ];
        let (uses, disk) = whole_target_uses(&image, &view, &mounts).unwrap();
        assert_eq!(uses, want);
        assert_eq!(disk, None);
        // A hard link is the same file under another name.
        let link = dir.path().join("link.img");
        fs::hard_link(&image, &link).unwrap();
        assert_eq!(whole_target_uses(&link, &view, &mounts).unwrap().0, want);
        let err = refuse(&link, want).unwrap_err().to_string();
        assert!(err.contains("`losetup -d /dev/loop0`"), "{err}");

        // A copy is not.
        let other = dir.path().join("other.img");
        fs::write(&other, b"x").unwrap();
        assert_eq!(whole_target_uses(&other, &view, &mounts).unwrap().0, vec![]);
    }

    /// A loop device over `image` whose partition 2 carries the device number of the
    /// filesystem holding `on`, mounted at `mp`: what a Pi's mounted root looks like.
    fn fake_loop_card(root: &Path, image: &Path, on: &Path, mp: &str) -> SystemView {
        let (major, minor) = split_dev(fs::metadata(on).unwrap().dev());
        let dev = |dir: &Path, d: &str| {
            fs::create_dir_all(dir).unwrap();
            fs::write(dir.join("dev"), format!("{d}\n")).unwrap();
        };
        let class = root.join("class/block");
        dev(&class.join("loop0"), "7:0");
        let p2 = class.join("loop0/loop0p2");
        dev(&p2, &format!("{major}:{minor}"));
        fs::write(p2.join("partition"), "2\n").unwrap();
        fs::write(p2.join("start"), "77824\n").unwrap();
        fs::write(p2.join("size"), "184320\n").unwrap();
        dev(&root.join("block/loop0"), "7:0");
        fs::create_dir_all(root.join("block/loop0/loop")).unwrap();
        fs::write(
            root.join("block/loop0/loop/backing_file"),
            format!("{}\n", image.display()),
        )
        .unwrap();
        let mountinfo = root.join("mountinfo");
        fs::write(
            &mountinfo,
            format!("50 22 {major}:{minor} / {mp} rw,relatime - ext4 /dev/loop0p2 rw\n"),
        )
        .unwrap();
        SystemView {
            mountinfo,
            sysfs: root.to_path_buf(),
        }
    }

    #[test]
    fn a_backup_dir_on_the_cards_own_partition_is_recognised_by_device_number() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("card.img");
        fs::write(&image, b"x").unwrap();
        let view = fake_loop_card(&dir.path().join("sys"), &image, dir.path(), "/mnt/pi");
        // The directory need not exist yet: its nearest existing ancestor decides.
        let backups = dir.path().join("var/lib/pifw/backups");
        assert_eq!(
            partition_holding(&backups, &image, &view),
            Some("loop0p2".to_string())
        );
        assert_eq!(
            mounted_partitions(&image, &view),
            vec![(77824 * 512, PathBuf::from("/mnt/pi"))]
        );
        // Another image: not this card, whatever the directory.
        let other = dir.path().join("other.img");
        fs::write(&other, b"x").unwrap();
        assert_eq!(partition_holding(&backups, &other, &view), None);
        assert_eq!(mounted_partitions(&other, &view), vec![]);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/a\040b\011c\134d\012"), "/a b\tc\\d\n");
        assert_eq!(unescape(r"/a\04"), r"/a\04");
        assert_eq!(unescape(r"/a\089"), r"/a\089");
    }
}
