//! The content-addressed cache: `<root>/sha256/<hex>` holds exactly the bytes whose sha256 is
//! `<hex>`, and `<root>/tmp` holds files being written.
//!
//! Owns staging (streaming bytes into a temporary file while hashing them) and promotion (the
//! rename into place once the caller has checked the pin). It never decides whether bytes are
//! acceptable: callers compare against pins before calling [`Cache::store`]. An entry found on
//! disk is hashed again before use; one that no longer matches its name is deleted.

use super::{FetchError, Verified};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// What the bytes must be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pin<'a> {
    pub sha256: &'a str,
    pub size: Option<u64>,
}

pub(crate) struct Cache {
    root: PathBuf,
}

/// Bytes written to a temporary file in the cache, with their hash. Dropping it deletes the
/// file.
pub(crate) struct Staged {
    pub file: NamedTempFile,
    pub sha256: String,
    pub size: u64,
}

impl Cache {
    pub fn open(root: &Path) -> Result<Cache, FetchError> {
        for dir in [root.join("sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&dir)
                .map_err(FetchError::io(format!("creating {}", dir.display())))?;
        }
        Ok(Cache {
            root: root.to_path_buf(),
        })
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn entry(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    /// The entry for `sha256`, re-hashed; `None` when absent. An entry whose bytes no longer
    /// match (a damaged disk, a hand edit) is removed and reported as absent.
    pub fn lookup(&self, sha256: &str, size: Option<u64>) -> Result<Option<Verified>, FetchError> {
        let path = self.entry(sha256);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FetchError::io(format!("opening {}", path.display()))(e)),
        };
        let (actual, len) = hash_reader(&mut BufReader::with_capacity(1 << 20, file))
            .map_err(FetchError::io(format!("reading {}", path.display())))?;
        if actual != sha256 || size.is_some_and(|s| s != len) {
            std::fs::remove_file(&path)
                .map_err(FetchError::io(format!("removing {}", path.display())))?;
            return Ok(None);
        }
        Ok(Some(Verified {
            path,
            sha256: actual,
            size: len,
        }))
    }

    /// Streams `reader` into a temporary file, hashing as it goes; `on_progress` sees the
    /// running byte count. On a read error, returns it with the bytes copied so far (the
    /// temporary file is already gone).
    pub fn stage(
        &self,
        reader: &mut dyn Read,
        on_progress: &mut dyn FnMut(u64),
    ) -> Result<Staged, (io::Error, u64)> {
        let mut file = NamedTempFile::new_in(self.tmp_dir()).map_err(|e| (e, 0))?;
        let mut hashing = crate::digest::Hashing::new(reader);
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match hashing.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err((e, size)),
            };
            file.write_all(&buf[..n]).map_err(|e| (e, size))?;
            size += n as u64;
            on_progress(size);
        }
        file.flush().map_err(|e| (e, size))?;
        let (sha256, _) = hashing.finish();
        Ok(Staged { file, sha256, size })
    }

    /// Checks `staged` against `pin`; on a match moves it to its entry. `what` and `origin` name
    /// the artifact and where it came from in the error.
    pub fn store(
        &self,
        staged: Staged,
        pin: Pin<'_>,
        what: &str,
        origin: &str,
    ) -> Result<Verified, FetchError> {
        if let Some(expected) = pin.size
            && expected != staged.size
        {
            return Err(FetchError::SizeMismatch {
                what: what.to_string(),
                origin: origin.to_string(),
                expected,
                actual: staged.size,
            });
        }
        if staged.sha256 != pin.sha256 {
            return Err(FetchError::HashMismatch {
                what: what.to_string(),
                origin: origin.to_string(),
                expected: pin.sha256.to_string(),
                actual: staged.sha256,
            });
        }
        self.promote(staged)
    }

    /// Moves staged bytes to the entry named by their own hash.
    pub fn promote(&self, staged: Staged) -> Result<Verified, FetchError> {
        let path = self.entry(&staged.sha256);
        // Synced before the rename so a crash never leaves an entry named for bytes that did
        // not reach the disk.
        staged
            .file
            .as_file()
            .sync_all()
            .map_err(FetchError::io("syncing a cache file"))?;
        staged
            .file
            .persist(&path)
            .map_err(|e| FetchError::io(format!("renaming into {}", path.display()))(e.error))?;
        Ok(Verified {
            path,
            sha256: staged.sha256,
            size: staged.size,
        })
    }
}

pub use crate::digest::hash_reader;

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn cache() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::open(dir.path()).expect("cache");
        (dir, cache)
    }

    fn tmp_files(cache: &Cache) -> usize {
        std::fs::read_dir(cache.tmp_dir()).expect("tmp").count()
    }

    #[test]
    fn staged_bytes_are_stored_under_their_hash() {
        let (_dir, cache) = cache();
        let staged = cache.stage(&mut &b"abc"[..], &mut |_| {}).expect("stage");
        assert_eq!(staged.sha256, ABC);
        let pin = Pin {
            sha256: ABC,
            size: Some(3),
        };
        let v = cache.store(staged, pin, "abc", "test").expect("store");
        assert_eq!(std::fs::read(&v.path).expect("entry"), b"abc");
        assert!(v.path.ends_with(format!("sha256/{ABC}")));
        assert_eq!(tmp_files(&cache), 0);
        assert_eq!(cache.lookup(ABC, Some(3)).expect("lookup"), Some(v));
    }

    #[test]
    fn a_wrong_hash_or_size_is_not_stored() {
        let (_dir, cache) = cache();
        let wrong = "0".repeat(64);
        let staged = cache.stage(&mut &b"abc"[..], &mut |_| {}).expect("stage");
        let pin = Pin {
            sha256: &wrong,
            size: Some(3),
        };
        match cache.store(staged, pin, "abc", "test") {
            Err(FetchError::HashMismatch {
                expected, actual, ..
            }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, ABC);
            }
            other => panic!("expected a hash mismatch, got {other:?}"),
        }
        let staged = cache.stage(&mut &b"abc"[..], &mut |_| {}).expect("stage");
        let pin = Pin {
            sha256: ABC,
            size: Some(4),
        };
        assert!(matches!(
            cache.store(staged, pin, "abc", "test"),
            Err(FetchError::SizeMismatch {
                expected: 4,
                actual: 3,
                ..
            })
        ));
        assert_eq!(tmp_files(&cache), 0);
        assert_eq!(cache.lookup(ABC, None).expect("lookup"), None);
        assert_eq!(cache.lookup(&wrong, None).expect("lookup"), None);
    }

    #[test]
    fn a_damaged_entry_is_removed_on_lookup() {
        let (_dir, cache) = cache();
        let path = cache.entry(ABC);
        std::fs::write(&path, b"abd").expect("write");
        assert_eq!(cache.lookup(ABC, None).expect("lookup"), None);
        assert!(!path.exists());
    }

    #[test]
    fn a_read_error_drops_the_temporary_file_and_reports_progress() {
        struct Failing(u8);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("boom"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let (_dir, cache) = cache();
        let mut seen = Vec::new();
        let err = cache
            .stage(&mut Failing(2), &mut |n| seen.push(n))
            .err()
            .expect("fails");
        assert_eq!(err.1, 2);
        assert_eq!(seen, [1, 2]);
        assert_eq!(tmp_files(&cache), 0);
    }
}
