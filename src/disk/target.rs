//! Opening a target: a whole-disk image file or a block device.
//!
//! Owns the decision of what a path is and how it is opened. Reading opens with `O_RDONLY` and
//! wraps the file in [`ReadOnly`], whose writes fail, so no code path of a read command can
//! change the card, and a write-protected card works.

use serde::Serialize;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Image,
    BlockDevice,
}

/// An opened target.
#[derive(Debug)]
pub struct Target {
    pub path: PathBuf,
    pub kind: TargetKind,
    /// Size in bytes (the file length, or the device size).
    pub size_bytes: u64,
    pub file: ReadOnly<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{path}: no such file or device")]
    NotFound { path: PathBuf },
    #[error("{path}: {what}; pifw works on whole-disk image files and block devices")]
    Unsupported { path: PathBuf, what: &'static str },
    #[error(
        "{path} is the partition /dev/{partition}; give the whole disk, e.g. /dev/{disk} (nothing was written)"
    )]
    NotWholeDisk {
        path: PathBuf,
        partition: String,
        disk: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Target {
    /// Opens `path` read-only.
    pub fn open_read(path: &Path) -> Result<Target, TargetError> {
        let io_err = |source| TargetError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TargetError::NotFound {
                path: path.to_path_buf(),
            },
            _ => io_err(e),
        })?;
        let ft = meta.file_type();
        let kind = if ft.is_block_device() {
            refuse_partition(path, meta.rdev())?;
            TargetKind::BlockDevice
        } else if ft.is_file() {
            TargetKind::Image
        } else if ft.is_dir() {
            return Err(TargetError::Unsupported {
                path: path.to_path_buf(),
                what: "a directory",
            });
        } else {
            return Err(TargetError::Unsupported {
                path: path.to_path_buf(),
                what: "neither a regular file nor a block device",
            });
        };
        let mut file = File::open(path).map_err(io_err)?;
        // A block device's metadata length is 0; seeking to the end asks the driver.
        let size_bytes = file.seek(SeekFrom::End(0)).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        Ok(Target {
            path: path.to_path_buf(),
            kind,
            size_bytes,
            file: ReadOnly(file),
        })
    }
}

/// Refuses a block device that is a partition (sysfs `/sys/dev/block/MAJ:MIN/partition`):
/// pifw reads partition tables, so it needs the whole disk.
fn refuse_partition(path: &Path, rdev: u64) -> Result<(), TargetError> {
    let (major, minor) = super::mounts::split_dev(rdev);
    let sysfs = super::mounts::SystemView::system().sysfs;
    let dir = sysfs.join(format!("dev/block/{major}:{minor}"));
    if !dir.join("partition").is_file() {
        return Ok(());
    }
    let Ok(real) = std::fs::canonicalize(&dir) else {
        return Ok(());
    };
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Err(TargetError::NotWholeDisk {
        path: path.to_path_buf(),
        partition: name(Some(&real)),
        disk: name(real.parent()),
    })
}

/// A reader whose writes fail. Some crates (fatfs, fscommon) want `Read + Write + Seek` even
/// to read; this makes sure such a crate can never change the card behind a read command.
#[derive(Debug)]
pub struct ReadOnly<T>(pub T);

impl<T: Read> Read for ReadOnly<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<T: Seek> Seek for ReadOnly<T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl<T> Write for ReadOnly<T> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "pifw opened this target read-only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn read_only_refuses_writes() {
        let mut r = ReadOnly(Cursor::new(vec![1u8, 2, 3]));
        let mut b = [0u8; 2];
        assert_eq!(r.read(&mut b).unwrap(), 2);
        let err = r.write(&[9]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(r.0.into_inner(), vec![1, 2, 3]);
    }

    #[test]
    fn open_missing_and_directory() {
        let missing = Path::new("/nonexistent/pifw-test.img");
        assert!(matches!(
            Target::open_read(missing),
            Err(TargetError::NotFound { .. })
        ));
        assert!(matches!(
            Target::open_read(Path::new("/")),
            Err(TargetError::Unsupported { .. })
        ));
    }
}
