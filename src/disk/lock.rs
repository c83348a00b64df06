//! Opening a target for writing, and only one writer at a time.
//!
//! Owns the write side of [`super::target`]: a [`WriteTarget`] is the only handle through which
//! pifw changes a card. Opening one does three things, in this order:
//!
//! 1. Takes an exclusive, non-blocking `flock` on the image file or device node, through a
//!    read-only handle kept for the life of the [`WriteTarget`]. Two pifw processes (or two
//!    handles in one process) therefore never write the same card at once; the loser gets
//!    [`LockError::Locked`], naming the holder's pid from `/proc/locks` when it can be found.
//!    The lock comes first so that a second pifw hears "another pifw", not the less helpful
//!    "device busy" of step 3.
//! 2. Refuses a target that is mounted or in use ([`super::mounts`]): a mounted firmware
//!    partition has its own cached copy of the FAT, and writing under it corrupts both.
//! 3. Opens the target read-write; a block device with `O_EXCL`, which Linux refuses with
//!    `EBUSY` while the device or any of its partitions is mounted or held open exclusively by
//!    someone else (another pifw, a filesystem, device-mapper, md). This closes the window
//!    between the check of step 2 and the first write.
//!
//! `flock` is advisory: it stops other pifw processes, not `dd`. `O_EXCL` is what stops the
//! kernel's own users, and only for block devices (Linux ignores `O_EXCL` without `O_CREAT`
//! on regular files, so an image file relies on the lock and the loop-device check).
//!
//! Must not: decide what to write. Durability points are explicit calls to
//! [`WriteTarget::sync`]; nothing here syncs behind the caller's back.

use super::mounts::{self, MountError, SystemView};
use super::target::{TargetError, TargetKind};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A target opened for writing, locked against other pifw processes.
#[derive(Debug)]
pub struct WriteTarget {
    pub path: PathBuf,
    pub kind: TargetKind,
    /// Size in bytes (the file length, or the device size).
    pub size_bytes: u64,
    file: File,
    /// Holds the `flock`; closing it (on drop) releases the lock.
    _lock: File,
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
        "{path} is busy: the kernel refused exclusive access (EBUSY), so it or one of its partitions is mounted or held by another program (device-mapper, md, another pifw); unmount its partitions first, e.g. `umount /boot/firmware` (nothing was written)"
    )]
    Busy { path: PathBuf },
    #[error(transparent)]
    InUse(#[from] MountError),
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

impl WriteTarget {
    /// Opens `path` for writing on the running system: lock, mount check, exclusive open.
    pub fn open(path: &Path) -> Result<WriteTarget, LockError> {
        Self::open_with(path, &SystemView::system())
    }

    /// As [`WriteTarget::open`], with the mount table and sysfs read from `view` (tests).
    pub fn open_with(path: &Path, view: &SystemView) -> Result<WriteTarget, LockError> {
        let kind = kind_of(path)?;
        let io_err = |what| {
            move |source| LockError::Io {
                path: path.to_path_buf(),
                what,
                source,
            }
        };

        let lock = File::open(path).map_err(io_err("opening to lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = lock
                    .metadata()
                    .ok()
                    .and_then(|m| flock_holder(Path::new("/proc/locks"), m.dev(), m.ino()));
                return Err(LockError::Locked {
                    path: path.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err("locking")(e)),
        }

        mounts::refuse_in_use(path, view)?;

        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if kind == TargetKind::BlockDevice {
            options.custom_flags(nix::fcntl::OFlag::O_EXCL.bits());
        }
        let mut file = options.open(path).map_err(|e| {
            if e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) {
                LockError::Busy {
                    path: path.to_path_buf(),
                }
            } else {
                io_err("opening for writing")(e)
            }
        })?;
        // A block device's metadata length is 0; seeking to the end asks the driver.
        let size_bytes = file
            .seek(SeekFrom::End(0))
            .map_err(io_err("finding the size"))?;
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("seeking to the start"))?;
        Ok(WriteTarget {
            path: path.to_path_buf(),
            kind,
            size_bytes,
            file,
            _lock: lock,
        })
    }

    /// A durability point: everything written so far is on the medium when this returns
    /// (`fsync`; for a block device this also flushes the device's write cache).
    pub fn sync(&self) -> Result<(), LockError> {
        crate::txn::env_cut::before_sync()
            .and_then(|()| self.file.sync_all())
            .map_err(|source| LockError::Io {
                path: self.path.clone(),
                what: "syncing",
                source,
            })
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
        crate::txn::env_cut::before_sync().map_err(io_err("resizing"))?;
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
        crate::txn::env_cut::before_write(&self.path, &self.file, at, buf.len())?;
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

impl crate::txn::Durable for WriteTarget {
    fn sync(&mut self) -> io::Result<()> {
        crate::txn::env_cut::before_sync()?;
        self.file.sync_all()
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
