//! File inventory and small-file reads, through the `fatfs` crate.
//!
//! Owns turning the volume into a list of paths, sizes and hashes, and fetching one small file
//! by a case-insensitive path. `fatfs` only ever sees the partition through [`ReadOnly`], so
//! nothing here can write, not even `fatfs`'s unmount on drop.
//!
//! Names are what `fatfs` 0.3.6 returns from `DirEntry::file_name()`: the long (VFAT) name when
//! one is stored, else the 8.3 name with the Windows NT lower-case flags applied. That matches
//! `mdir`: mtools stores `bootcode.bin` as the 8.3 name `BOOTCODE.BIN` with both lower-case
//! flags and no long name, and both `mdir` and `fatfs` show `bootcode.bin`; `Config.TXT` gets
//! a long name and both show `Config.TXT`.
//!
//! The walk is bounded (depth, entries per directory) so that a directory cycle cannot hang it
//! even when [`super::check`] was not called first; file reads stop at the size in the
//! directory entry, so a looping file chain cannot hang it either.

use super::FatError;
use super::FileEntry;
use super::Inventory;
use super::readonly::ReadOnly;
use std::cell::Cell;
use std::io::{self, Read, Seek, SeekFrom};
use std::rc::Rc;

const MAX_DEPTH: usize = 32;
/// fatgen103 section 6: a directory holds at most 65536 entries.
const MAX_DIR_ENTRIES: usize = 65536;

type Fs<'a, R> = fatfs::FileSystem<ReadOnly<&'a mut R>>;

/// Opens `part` with `fatfs` behind the read-only adapter. Also returns the adapter's count of
/// refused writes, which stays readable after `fatfs` has dropped the adapter.
fn open<R: Read + Seek>(part: &mut R) -> Result<(Fs<'_, R>, Rc<Cell<u64>>), FatError> {
    part.seek(SeekFrom::Start(0))?;
    let ro = ReadOnly::new(part)?;
    let writes = ro.write_attempts();
    // `fatfs` asserts the stream starts at position 0; the adapter's 0 is the partition start.
    let fs = fatfs::FileSystem::new(ro, fatfs::FsOptions::new()).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::Other => FatError::NotFat {
            reason: e.to_string(),
        },
        _ => FatError::Io(e),
    })?;
    Ok((fs, writes))
}

fn damaged(reason: String) -> FatError {
    FatError::Damaged { reason }
}

/// Entries of `dir` except `.` and `..`, refusing directories larger than FAT allows.
fn entries<'f, T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'f, T>,
    path: &str,
) -> Result<Vec<fatfs::DirEntry<'f, T>>, FatError> {
    let mut out = Vec::new();
    for (i, e) in dir.iter().enumerate() {
        if i >= MAX_DIR_ENTRIES {
            return Err(damaged(format!(
                "directory {path} has more than {MAX_DIR_ENTRIES} entries (looping chain?)"
            )));
        }
        let e = e?;
        let name = e.file_name();
        if name != "." && name != ".." {
            out.push(e);
        }
    }
    Ok(out)
}

/// Hashes a file, insisting that exactly `size` bytes come back.
fn hash<T: Read>(file: T, path: &str, size: u64) -> Result<String, FatError> {
    let (sha, total) = crate::digest::Hashing::new(file).drain()?;
    if total != size {
        return Err(damaged(format!(
            "{path}: read {total} bytes, the directory entry says {size}"
        )));
    }
    Ok(sha)
}

pub(crate) fn inventory<R: Read + Seek>(part: &mut R) -> Result<Inventory, FatError> {
    inventory_counting_writes(part).map(|(inv, _)| inv)
}

/// The inventory, plus how many writes `fatfs` attempted (all refused), including those on
/// unmount when the file system is dropped.
pub(crate) fn inventory_counting_writes<R: Read + Seek>(
    part: &mut R,
) -> Result<(Inventory, u64), FatError> {
    let (fs, writes) = open(part)?;
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut queue = vec![(String::new(), fs.root_dir(), 0usize)];
    while let Some((path, dir, depth)) = queue.pop() {
        for e in entries(&dir, &path)? {
            let child = if path.is_empty() {
                e.file_name()
            } else {
                format!("{path}/{}", e.file_name())
            };
            if e.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    return Err(damaged(format!(
                        "{child}: directories nested deeper than {MAX_DEPTH} levels"
                    )));
                }
                dirs.push(child.clone());
                queue.push((child, e.to_dir(), depth + 1));
            } else if e.is_file() {
                let size = e.len();
                let sha256 = hash(e.to_file(), &child, size)?;
                files.push(FileEntry {
                    path: child,
                    size,
                    sha256,
                });
            }
        }
    }
    drop(queue);
    // Dropping the file system runs fatfs's unmount, the place where it would write.
    drop(fs);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    dirs.sort();
    Ok((Inventory { files, dirs }, writes.get()))
}

/// Finds `path` (case-insensitively) and hands `f` the file's entry. `Ok(None)` if absent.
fn with_entry<R: Read + Seek, T>(
    part: &mut R,
    path: &str,
    f: impl FnOnce(&fatfs::DirEntry<'_, ReadOnly<&mut R>>) -> Result<T, FatError>,
) -> Result<Option<T>, FatError> {
    let (fs, _) = open(part)?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some((leaf, parents)) = parts.split_last() else {
        return Ok(None);
    };
    let mut dir = fs.root_dir();
    let mut walked = String::new();
    for name in parents {
        let found = entries(&dir, &walked)?
            .into_iter()
            .find(|e| e.is_dir() && matches_name(e, name));
        match found {
            Some(e) => dir = e.to_dir(),
            None => return Ok(None),
        }
        walked = if walked.is_empty() {
            name.to_string()
        } else {
            format!("{walked}/{name}")
        };
    }
    let Some(e) = entries(&dir, &walked)?
        .into_iter()
        .find(|e| e.is_file() && matches_name(e, leaf))
    else {
        return Ok(None);
    };
    f(&e).map(Some)
}

pub(crate) fn read_small_file<R: Read + Seek>(
    part: &mut R,
    path: &str,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, FatError> {
    with_entry(part, path, |e| {
        let size = e.len();
        if size > max_bytes {
            return Err(FatError::TooLarge {
                path: path.to_string(),
                size,
                max_bytes,
            });
        }
        let mut data = Vec::with_capacity(size as usize);
        e.to_file().take(size + 1).read_to_end(&mut data)?;
        if data.len() as u64 != size {
            return Err(damaged(format!(
                "{path}: read {} bytes, the directory entry says {size}",
                data.len()
            )));
        }
        Ok(data)
    })
}

/// Streams one file's content (at most its recorded size) through `f`.
pub(crate) fn with_file<R: Read + Seek, T>(
    part: &mut R,
    path: &str,
    f: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> Result<Option<T>, FatError> {
    with_entry(part, path, |e| {
        let size = e.len();
        let mut file = e.to_file().take(size);
        Ok(f(&mut file)?)
    })
}

/// FAT names compare case-insensitively; match the long name or the 8.3 alias.
fn matches_name<T: fatfs::ReadWriteSeek>(e: &fatfs::DirEntry<'_, T>, name: &str) -> bool {
    let lower = name.to_lowercase();
    e.file_name().to_lowercase() == lower || e.short_file_name().to_lowercase() == lower
}
