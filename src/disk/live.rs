//! Changing the card of the running system: who uses a filesystem, unmounting the firmware
//! partition for a change and mounting it back, and keeping the kernel's block caches honest.
//!
//! On a running Pi the root partition is always mounted and the firmware partition often is
//! (`/boot/firmware` on Raspberry Pi OS, `/boot` on NixOS with systemd-boot). pifw writes only
//! the firmware partition (and, for `partition hybrid|mbr`, table sectors outside every
//! partition), so other mounted partitions are no obstacle. A mounted firmware partition is:
//! its filesystem caches the FAT and directories, and writing under it corrupts both. So it is
//! unmounted for the change ([`unmount`]) and mounted back afterwards at the same place with
//! the same type, source and options ([`Unmounted`], which also mounts back when dropped on an
//! error path). If a process uses it (an open file, its working or root directory, a mapping,
//! or the device node itself), pifw refuses before any write and names the processes
//! ([`processes_using`], from `/proc`).
//!
//! # Page caches
//!
//! Linux keeps one page cache per block-device inode: the whole disk and each partition have
//! their own. pifw reads and writes through the whole-disk device, so after a change the
//! partition device may still cache the old sectors, and a mount through it would read them.
//! [`drop_cache`] (`BLKFLSBUF`: write back dirty pages, then drop the clean ones) is applied to
//! the whole disk right after the exclusive open (what the plan read while the filesystem was
//! still mounted may be stale) and to the firmware partition after every sync, while pifw holds
//! the partition exclusively, so no one can have dirtied it in between.
//!
//! Must not: decide whether a change may go ahead (that is [`super::lock`]), or unmount
//! anything but what a [`super::lock::Preflight`] listed.

use super::mounts::{FileId, Mount, split_dev};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A process that uses a filesystem or a device, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/<pid>/comm`: the program name, at most 15 bytes.
    pub comm: String,
    /// e.g. `has /boot/firmware/config.txt open`, `has its working directory there`.
    pub how: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({}) {}", self.pid, self.comm, self.how)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("unmounting {mount_point}: {source}")]
    Unmount {
        mount_point: PathBuf,
        source: io::Error,
    },
    #[error(
        "{mount_point} was unmounted, but its FUSE daemon (pid {pid}) did not exit within {secs} s; it may still be writing the partition"
    )]
    DaemonStays {
        mount_point: PathBuf,
        pid: u32,
        secs: u64,
    },
    #[error(
        "mounting {source_dev} back on {mount_point} failed: {reason}; mount it by hand: `{command}`"
    )]
    Remount {
        source_dev: String,
        mount_point: PathBuf,
        reason: String,
        command: String,
    },
}

/// Processes that use a filesystem whose device number is in `fs_devs` (working or root
/// directory, an open file, a mapped file), or have the block device `node` open, read from
/// `proc` (normally `/proc`). Processes in `except` (a FUSE daemon serving the mount) are
/// skipped. Each process is listed once per kind of use.
///
/// Processes that exit while being read, or whose entries cannot be read, are skipped: this is
/// a best effort to name the culprits, and the kernel's `EBUSY` on unmount stays the last word.
pub fn processes_using(
    fs_devs: &[(u32, u32)],
    node: Option<(u32, u32)>,
    proc: &Path,
    except: &[u32],
) -> Vec<Holder> {
    let mut pids: Vec<u32> = fs::read_dir(proc)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| !except.contains(pid))
        .collect();
    pids.sort_unstable();
    let on_fs = |meta: &fs::Metadata| fs_devs.contains(&split_dev(meta.dev()));
    let mut out = Vec::new();
    for pid in pids {
        let dir = proc.join(pid.to_string());
        let comm = fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_else(|_| "?".to_string());
        let mut add = |how: String| {
            out.push(Holder {
                pid,
                comm: comm.clone(),
                how,
            })
        };
        if fs::metadata(dir.join("cwd")).is_ok_and(|m| on_fs(&m)) {
            add("has its working directory there".to_string());
        }
        if fs::metadata(dir.join("root")).is_ok_and(|m| on_fs(&m)) {
            add("has its root directory there".to_string());
        }
        let mut fds: Vec<PathBuf> = fs::read_dir(dir.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        fds.sort();
        for fd in fds {
            let Ok(meta) = fs::metadata(&fd) else {
                continue;
            };
            let name = fs::read_link(&fd).unwrap_or(fd.clone());
            let device = node
                .is_some_and(|n| meta.file_type().is_block_device() && split_dev(meta.rdev()) == n);
            if device || on_fs(&meta) {
                add(format!("has {} open", name.display()));
                break;
            }
        }
        if let Ok(maps) = fs::read_to_string(dir.join("maps")) {
            let mapped = maps.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (major, minor) = fields.get(3)?.split_once(':')?;
                let dev = (
                    u32::from_str_radix(major, 16).ok()?,
                    u32::from_str_radix(minor, 16).ok()?,
                );
                let inode: u64 = fields.get(4)?.parse().ok()?;
                (inode != 0 && fs_devs.contains(&dev)).then(|| fields[5..].join(" "))
            });
            if let Some(path) = mapped {
                add(format!("maps {path}"));
            }
        }
    }
    out
}

/// How one mount is put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remount {
    /// `mount -t FSTYPE -o OPTIONS SOURCE MOUNT_POINT` (a kernel filesystem, e.g. vfat).
    Mount {
        mount: Mount,
        source: String,
        options: String,
    },
    /// `mount --bind FROM MOUNT_POINT`: a second mount of the same filesystem.
    Bind { mount: Mount, from: PathBuf },
    /// Run the FUSE daemon again (it was pid `pid`).
    Fuse {
        mount: Mount,
        pid: u32,
        program: PathBuf,
        args: Vec<OsString>,
    },
}

impl Remount {
    pub fn mount(&self) -> &Mount {
        match self {
            Remount::Mount { mount, .. }
            | Remount::Bind { mount, .. }
            | Remount::Fuse { mount, .. } => mount,
        }
    }

    fn command(&self) -> (PathBuf, Vec<OsString>) {
        match self {
            Remount::Mount {
                mount,
                source,
                options,
            } => (
                PathBuf::from("mount"),
                vec![
                    "-t".into(),
                    mount.fstype.clone().into(),
                    "-o".into(),
                    options.into(),
                    source.into(),
                    mount.mount_point.clone().into(),
                ],
            ),
            Remount::Bind { mount, from } => (
                PathBuf::from("mount"),
                vec![
                    "--bind".into(),
                    from.clone().into(),
                    mount.mount_point.clone().into(),
                ],
            ),
            Remount::Fuse { program, args, .. } => (program.clone(), args.clone()),
        }
    }

    /// The command line, for messages.
    pub fn command_text(&self) -> String {
        let (program, args) = self.command();
        std::iter::once(program.into_os_string())
            .chain(args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The options to mount `m` again with: its per-mount options, then its filesystem options
/// except the `rw`/`ro` the per-mount ones already give.
pub fn remount_options(m: &Mount) -> String {
    let mut opts: Vec<&str> = m.options.split(',').filter(|o| !o.is_empty()).collect();
    for o in m.super_options.split(',') {
        if !o.is_empty() && o != "rw" && o != "ro" && !opts.contains(&o) {
            opts.push(o);
        }
    }
    opts.join(",")
}

/// The command line a FUSE daemon was started with: `/proc/<pid>/exe` and the arguments of
/// `/proc/<pid>/cmdline`.
///
/// `fusefat` rewrites its own argv (its `rw+` option reads `rw` afterwards, which would mount
/// read-only), so its two modes are rebuilt from the mount's own `rw`/`ro` flag instead.
pub fn fuse_command(pid: u32, m: &Mount, device: &Path) -> Option<(PathBuf, Vec<OsString>)> {
    let dir = Path::new("/proc").join(pid.to_string());
    let program = fs::read_link(dir.join("exe")).ok()?;
    let raw = fs::read(dir.join("cmdline")).ok()?;
    let mut args: Vec<OsString> = raw
        .split(|b| *b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    if args.last().is_some_and(|a| a.is_empty()) {
        args.pop();
    }
    if args.is_empty() {
        return None;
    }
    args.remove(0);
    if program.file_name().is_some_and(|n| n == "fusefat") {
        let rw = m.options.split(',').any(|o| o == "rw");
        args = Vec::new();
        if rw {
            args.extend(["-o".into(), "rw+".into()]);
        }
        args.push(device.as_os_str().to_owned());
        args.push(m.mount_point.clone().into_os_string());
    }
    Some((program, args))
}

/// Mounts that were unmounted for a change; they are mounted back by [`Unmounted::restore`]
/// or, failing an explicit call, when this is dropped.
///
/// While any is unmounted, `SIGINT`, `SIGTERM`, `SIGHUP` and `SIGQUIT` are blocked: Ctrl-C or
/// a dropped SSH connection would otherwise kill pifw with the firmware partition unmounted.
/// They are delivered once everything is mounted back (the change itself is crash-safe, so
/// finishing it is the safe way to stop). The mask is the calling thread's: a process-wide
/// signal still kills pifw if another of its threads is alive and does not block it.
#[derive(Debug)]
pub struct Unmounted {
    /// In mount order; those not yet mounted back.
    pending: Vec<Remount>,
    /// The signal mask to restore, once signals were blocked.
    old_mask: Option<nix::sys::signal::SigSet>,
}

/// Blocks the signals that would end pifw; returns the mask to restore.
fn block_stop_signals() -> Option<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(sig);
    }
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).ok()?;
    Some(old)
}

/// Unmounts every mount in `plan` (last first, so nested mounts go before their parents) and
/// waits for each FUSE daemon to exit, since it may still be writing the partition. On
/// failure, what was already unmounted is mounted back before returning.
pub fn unmount(plan: &[Remount]) -> Result<Unmounted, LiveError> {
    let mut done = Unmounted {
        pending: Vec::new(),
        old_mask: block_stop_signals(),
    };
    for r in plan.iter().rev() {
        let mp = &r.mount().mount_point;
        if let Err(e) = nix::mount::umount2(mp.as_path(), nix::mount::MntFlags::empty()) {
            let err = LiveError::Unmount {
                mount_point: mp.clone(),
                source: io::Error::from_raw_os_error(e as i32),
            };
            // `done` mounts back on drop; say so in the error only if it fails.
            if let Err(again) = done.restore() {
                eprintln!("pifw: {again}");
            }
            return Err(err);
        }
        done.pending.insert(0, r.clone());
        if let Remount::Fuse { pid, .. } = r {
            const WAIT: Duration = Duration::from_secs(10);
            let start = Instant::now();
            let proc = Path::new("/proc").join(pid.to_string());
            // A zombie has no fds left; it counts as gone.
            let alive = || {
                fs::read_to_string(proc.join("stat")).is_ok_and(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
                })
            };
            while alive() {
                if start.elapsed() > WAIT {
                    return Err(LiveError::DaemonStays {
                        mount_point: mp.clone(),
                        pid: *pid,
                        secs: WAIT.as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Ok(done)
}

impl Unmounted {
    /// Mounts everything back, in the original order; the first failure is returned (later
    /// mounts are still attempted, and failures are printed).
    pub fn restore(&mut self) -> Result<(), LiveError> {
        let mut first = None;
        for r in std::mem::take(&mut self.pending) {
            if let Err(e) = mount_back(&r) {
                if first.is_some() {
                    eprintln!("pifw: {e}");
                } else {
                    first = Some(e);
                }
            }
        }
        if let Some(old) = self.old_mask.take() {
            // A signal that arrived meanwhile is delivered here, with the mounts back.
            let _ = nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&old),
                None,
            );
        }
        first.map_or(Ok(()), Err)
    }

    /// Mount points still to be mounted back.
    pub fn pending(&self) -> Vec<PathBuf> {
        self.pending
            .iter()
            .map(|r| r.mount().mount_point.clone())
            .collect()
    }
}

impl Drop for Unmounted {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("pifw: {e}");
        }
    }
}

fn mount_back(r: &Remount) -> Result<(), LiveError> {
    let m = r.mount();
    let fail = |reason: String| LiveError::Remount {
        source_dev: m.source.clone(),
        mount_point: m.mount_point.clone(),
        reason,
        command: r.command_text(),
    };
    let (program, args) = r.command();
    let out = std::process::Command::new(&program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(format!("running {}: {e}", program.display())))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{} ({})",
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        )));
    }
    // A FUSE daemon may return before its mount is visible; give it a moment, then check.
    let start = Instant::now();
    loop {
        let mounts = super::mounts::read_mountinfo(Path::new("/proc/self/mountinfo"))
            .map_err(|e| fail(e.to_string()))?;
        if mounts
            .iter()
            .any(|x| x.mount_point == m.mount_point && x.fstype == m.fstype)
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err(fail(
                "the mount did not appear in /proc/self/mountinfo".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

nix::ioctl_none_bad!(blkflsbuf, nix::request_code_none!(0x12, 97));

/// Writes back and drops the page cache of the block device open as `file` (`BLKFLSBUF`,
/// which needs `CAP_SYS_ADMIN`). Without that capability, falls back to
/// `posix_fadvise(DONTNEED)` after an `fsync`, which drops the clean pages just the same for
/// an unmounted device nobody else writes.
pub fn drop_cache(file: &File) -> io::Result<()> {
    // SAFETY: BLKFLSBUF takes no argument; the fd is a valid open block device.
    match unsafe { blkflsbuf(file.as_raw_fd()) } {
        Ok(_) => Ok(()),
        Err(nix::errno::Errno::EPERM | nix::errno::Errno::EACCES) => {
            file.sync_all()?;
            nix::fcntl::posix_fadvise(
                file,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            )
            .map_err(|e| io::Error::from_raw_os_error(e as i32))
        }
        Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// `struct loop_info64` (include/uapi/linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);

/// The identity of the file behind the loop device `node`, as the kernel holds it
/// (`LOOP_GET_STATUS64`): right even when the backing file was renamed or unlinked.
pub fn loop_backing(node: &Path) -> Option<FileId> {
    let file = File::open(node).ok()?;
    // SAFETY: LoopInfo64 is plain old data; all-zero is a valid value.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel fills `info`, whose layout matches struct loop_info64.
    unsafe { loop_get_status64(file.as_raw_fd(), &mut info) }.ok()?;
    // A block device behind the loop: its number is lo_rdevice (huge_encode_dev).
    let rdev = (info.lo_rdevice != 0).then(|| split_dev(info.lo_rdevice));
    Some(FileId {
        dev: info.lo_device,
        ino: info.lo_inode,
        rdev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(options: &str, super_options: &str) -> Mount {
        Mount {
            dev: (179, 1),
            root: "/".into(),
            mount_point: "/boot/firmware".into(),
            options: options.into(),
            fstype: "vfat".into(),
            source: "/dev/mmcblk0p1".into(),
            super_options: super_options.into(),
        }
    }

    #[test]
    fn remount_options_merge_without_duplicates() {
        let m = mount(
            "rw,relatime",
            "rw,fmask=0022,dmask=0022,codepage=437,iocharset=ascii,shortname=mixed,errors=remount-ro",
        );
        assert_eq!(
            remount_options(&m),
            "rw,relatime,fmask=0022,dmask=0022,codepage=437,iocharset=ascii,shortname=mixed,errors=remount-ro"
        );
        let r = Remount::Mount {
            options: remount_options(&m),
            source: m.source.clone(),
            mount: m,
        };
        assert!(
            r.command_text()
                .starts_with("mount -t vfat -o rw,relatime,fmask=0022")
        );
        assert!(r.command_text().ends_with(" /dev/mmcblk0p1 /boot/firmware"));
    }

    #[test]
    fn finds_a_process_by_its_working_directory_and_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let fs_dev = split_dev(fs::metadata(dir.path()).unwrap().dev());
        let file = dir.path().join("held");
        fs::write(&file, b"x").unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        let _open = File::open(&file).unwrap();
        let found = processes_using(&[fs_dev], None, Path::new("/proc"), &[]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            found.iter().any(|h| h.pid == child.id()
                && h.comm == "sleep"
                && h.how == "has its working directory there"),
            "{found:?}"
        );
        let me = std::process::id();
        assert!(
            found
                .iter()
                .any(|h| h.pid == me && h.how.starts_with("has ")),
            "{found:?}"
        );
    }
}
