//! `--from PATH`: artifacts the user already has, identified by hash against every pin.
//!
//! Owns turning a file, a directory (its regular files, not recursive), a zip or a Debian
//! package (the files of its data.tar) into a list of artifacts, each with its sha256, size and
//! the pins it matches. A plain file is hashed where it is and used from there: the change
//! that writes it hashes it again on its way to the card and refuses it, before that batch's
//! first write, should its bytes have changed, so a copy would only cost a write of every byte
//! (on a Pi, to the card it runs from). An archive member matching a pin is copied into the
//! cache (hashed while copied, so the cached bytes are the hashed bytes) and is from then on
//! as good as a download. A file or archive whose own sha256 is a release's source pin is
//! cached too, so a later [`obtain`](super::obtain) finds it without the network. Unpinned
//! members are copied to a scratch directory that lives as long as the returned
//! [`LocalArtifacts`]; whether to use them is the command layer's decision (an explicit flag),
//! never this module's.

use super::archive::{self, Flow};
use super::cache::{Cache, Staged};
use super::image;
use super::{FetchError, FetchOptions};
use crate::manifest::{Manifests, ReleaseKind};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A release file whose pin an artifact matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMatch {
    pub kind: ReleaseKind,
    /// The release's label, e.g. `u-boot debian 2023.01+dfsg-2+deb12u3`.
    pub release: String,
    pub version: String,
    /// The file's name on the firmware partition.
    pub dest: String,
}

/// One file found under `--from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalArtifact {
    /// What the user handed over: the file's path, or `<archive path>:<member>`.
    pub name: String,
    /// Where the bytes are now: the cache entry when pinned; otherwise the original file, or
    /// for an archive member a copy in the scratch directory of [`LocalArtifacts`].
    pub path: PathBuf,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
    /// Every pin with these bytes (several releases or names may pin the same bytes); empty
    /// when unpinned.
    pub matches: Vec<PinMatch>,
    /// Labels of the releases whose archive source has these bytes.
    pub archive_of: Vec<String>,
}

impl LocalArtifact {
    pub fn is_pinned(&self) -> bool {
        !self.matches.is_empty()
    }

    /// The file's own name: the last component of the path or of the archive member.
    pub fn file_name(&self) -> &str {
        self.name.rsplit(['/', ':']).next().unwrap_or(&self.name)
    }
}

/// The artifacts of one `--from`; keeps the scratch copies of unpinned members alive.
#[derive(Debug, Default)]
pub struct LocalArtifacts {
    pub artifacts: Vec<LocalArtifact>,
    _scratch: Option<TempDir>,
}

impl LocalArtifacts {
    /// The artifact with these bytes, if the source holds them.
    pub fn find(&self, sha256: &str) -> Option<&LocalArtifact> {
        self.artifacts.iter().find(|a| a.sha256 == sha256)
    }

    /// What the source holds, for an error that says what it lacks: the pinned files with
    /// what they were identified as, then how many files match no pin. At most `max` files
    /// are named.
    pub fn describe_contents(&self, max: usize) -> String {
        let pinned: Vec<String> = self
            .artifacts
            .iter()
            .filter(|a| a.is_pinned())
            .map(|a| {
                let m = &a.matches[0];
                let short = a.name.rsplit(['/', ':']).next().unwrap_or(&a.name);
                format!("{short} ({} {})", m.release, m.dest)
            })
            .collect();
        let unpinned = self.artifacts.iter().filter(|a| !a.is_pinned()).count();
        let mut parts: Vec<String> = pinned.iter().take(max).cloned().collect();
        if pinned.len() > max {
            parts.push(format!("{} more pinned files", pinned.len() - max));
        }
        if unpinned > 0 {
            parts.push(format!(
                "{unpinned} file{} no manifest pins",
                if unpinned == 1 { "" } else { "s" }
            ));
        }
        if parts.is_empty() {
            "no files".into()
        } else {
            parts.join(", ")
        }
    }
}

struct Collector<'a> {
    manifests: &'a Manifests,
    opts: &'a FetchOptions,
    cache: Cache,
    scratch: Option<TempDir>,
    artifacts: Vec<LocalArtifact>,
}

/// Hashes what `path` holds and matches it against the pins of `manifests`.
///
/// `path` must be a regular file or a directory (its regular files are read, not recursively):
/// a FIFO, socket or device is refused before it is opened, so a pipe with no writer cannot
/// hang the command. A plain file larger than [`Limits::max_member`](super::Limits) is refused
/// before its first byte is read; an archive may be larger (up to
/// [`Limits::max_total`](super::Limits)), and a disk image of any size is read as a stream.
pub fn from_path(
    path: &Path,
    manifests: &Manifests,
    opts: &FetchOptions,
) -> Result<LocalArtifacts, FetchError> {
    let mut collector = Collector {
        manifests,
        opts,
        cache: Cache::open(&opts.cache_dir)?,
        scratch: None,
        artifacts: Vec::new(),
    };
    let meta =
        std::fs::metadata(path).map_err(FetchError::io(format!("reading {}", path.display())))?;
    if meta.is_dir() {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(path)
            .map_err(FetchError::io(format!("listing {}", path.display())))?;
        for entry in entries {
            let entry = entry.map_err(FetchError::io(format!("listing {}", path.display())))?;
            let file = entry.path();
            if std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
                files.push(file);
            }
            if files.len() > opts.limits.max_members {
                return Err(FetchError::ArchiveLimit {
                    archive: path.display().to_string(),
                    what: "the number of files".into(),
                    limit: opts.limits.max_members as u64,
                });
            }
        }
        files.sort();
        for file in files {
            collector.add_file(&file)?;
        }
    } else if meta.is_file() {
        collector.add_file(path)?;
    } else {
        return Err(not_regular(path, &meta));
    }
    Ok(LocalArtifacts {
        artifacts: collector.artifacts,
        _scratch: collector.scratch,
    })
}

fn not_regular(path: &Path, meta: &std::fs::Metadata) -> FetchError {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    };
    FetchError::NotRegular {
        path: path.display().to_string(),
        kind: kind.to_string(),
    }
}

/// Opens a `--from` file that is read whole by the caller (a release zip), with the same
/// guards as [`from_path`]: a regular file (a FIFO or device is refused without blocking), at
/// most [`Limits::max_total`](super::Limits) bytes, the cap said in the error.
pub fn open_source(path: &Path, limits: &super::Limits) -> Result<File, FetchError> {
    let meta =
        std::fs::metadata(path).map_err(FetchError::io(format!("reading {}", path.display())))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    let (file, len) = open_regular(path)?;
    let cap = limits.max_total;
    if len > cap {
        return Err(FetchError::TooLarge {
            path: path.display().to_string(),
            what: "archive",
            size: len,
            limit: cap,
        });
    }
    Ok(file)
}

/// Opens a file that [`std::fs::metadata`] said is regular, without blocking should it have
/// been replaced by a FIFO since (`O_NONBLOCK` makes opening a FIFO return at once), and
/// checks the opened file itself.
fn open_regular(path: &Path) -> Result<(File, u64), FetchError> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(FetchError::io(format!("opening {name}")))?;
    let meta = file
        .metadata()
        .map_err(FetchError::io(format!("reading {name}")))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok((file, meta.len()))
}

impl Collector<'_> {
    fn add_file(&mut self, path: &Path) -> Result<(), FetchError> {
        let name = path.display().to_string();
        let (mut file, len) = open_regular(path)?;
        let limits = self.opts.limits;
        let read_err = || FetchError::io(format!("reading {name}"));

        // A disk image is never staged whole: only its firmware partition's files are.
        if let Some(image) = image::detect(&mut file).map_err(read_err())? {
            let tmp = self.cache.tmp_dir();
            return image::walk(
                path,
                &image,
                &name,
                &limits,
                &tmp,
                &mut |member, _, reader| self.add_member(&name, member, reader),
            )
            .map_err(|e| match e {
                FetchError::Archive { archive, message } => FetchError::Archive {
                    archive,
                    message: format!("{} ({message})", image.describe()),
                },
                other => other,
            });
        }

        let format = archive::sniff(path).map_err(read_err())?;
        // An archive may be as large as everything it can unpack; any other file is one
        // firmware file at most.
        let (cap, what) = match format {
            Some(_) => (limits.max_total, "archive"),
            None => (limits.max_member, "file"),
        };
        if len > cap {
            return Err(FetchError::TooLarge {
                path: name,
                what,
                size: len,
                limit: cap,
            });
        }
        file.seek(SeekFrom::Start(0)).map_err(read_err())?;
        // The length can grow while we read (a file being written): the cap holds anyway.
        let mut capped = BufReader::with_capacity(256 << 10, file).take(cap + 1);
        if format.is_none() {
            // A plain file is hashed where it is, not copied: the user holds it, the change
            // hashes it again on its way to the card (refusing it before that batch's first
            // write should it differ), and a copy would cost the write of every byte (and an
            // fsync) on the very card the Pi runs from.
            let (sha256, size) = super::cache::hash_reader(&mut capped).map_err(read_err())?;
            if size > cap {
                return Err(FetchError::TooLarge {
                    path: name,
                    what,
                    size,
                    limit: cap,
                });
            }
            return self.add_in_place(name, path, sha256, size);
        }
        let staged = self
            .cache
            .stage(&mut capped, &mut |_| {})
            .map_err(|(e, _)| read_err()(e))?;
        if staged.size > cap {
            return Err(FetchError::TooLarge {
                path: name,
                what,
                size: staged.size,
                limit: cap,
            });
        }
        self.add(name.clone(), staged, Some(path))?;

        if let Some(format) = format {
            archive::walk(
                path,
                format,
                &name,
                &limits,
                &mut |member, _size, reader| self.add_member(&name, member, reader),
            )?;
        }
        Ok(())
    }

    /// Stages one member of an archive or image (its reader is already capped).
    fn add_member(
        &mut self,
        archive: &str,
        member: &str,
        reader: &mut dyn std::io::Read,
    ) -> Result<Flow, FetchError> {
        let staged = self
            .cache
            .stage(reader, &mut |_| {})
            .map_err(|(e, _)| archive::read_error(archive, member, e))?;
        self.add(format!("{archive}:{member}"), staged, None)?;
        Ok(Flow::Continue)
    }

    /// Records a plain file, hashed where it is. Only a file that is a release's download
    /// (its source pin) is copied into the cache, so a later run finds that release offline.
    fn add_in_place(
        &mut self,
        name: String,
        path: &Path,
        sha256: String,
        size: u64,
    ) -> Result<(), FetchError> {
        let (matches, archive_of) = self.identify(&sha256);
        if !archive_of.is_empty() {
            let (file, _) = open_regular(path)?;
            let mut capped = BufReader::new(file).take(size + 1);
            let staged = self
                .cache
                .stage(&mut capped, &mut |_| {})
                .map_err(|(e, _)| FetchError::io(format!("reading {name}"))(e))?;
            if staged.sha256 != sha256 || staged.size != size {
                return Err(FetchError::io(format!("reading {name}"))(
                    std::io::Error::other("the file changed while pifw was reading it"),
                ));
            }
            self.cache.promote(staged)?;
        }
        self.artifacts.push(LocalArtifact {
            name,
            path: path.to_path_buf(),
            sha256,
            size,
            matches,
            archive_of,
        });
        Ok(())
    }

    /// The pins with these bytes, and the releases whose download they are.
    fn identify(&self, sha256: &str) -> (Vec<PinMatch>, Vec<String>) {
        let matches: Vec<PinMatch> = self
            .manifests
            .identify(sha256)
            .into_iter()
            .map(|m| PinMatch {
                kind: m.release.kind,
                release: m.release.label(),
                version: m.release.version.clone(),
                dest: m.file.dest.clone(),
            })
            .collect();
        let archive_of: Vec<String> = self
            .manifests
            .releases
            .iter()
            .filter(|r| {
                r.sources
                    .iter()
                    .any(|s| s.sha256.as_deref() == Some(sha256))
            })
            .map(|r| r.label())
            .collect();
        (matches, archive_of)
    }

    /// Records staged bytes: into the cache when pinned; else `original`, or a scratch copy.
    fn add(
        &mut self,
        name: String,
        staged: Staged,
        original: Option<&Path>,
    ) -> Result<(), FetchError> {
        let (matches, archive_of) = self.identify(&staged.sha256);
        let (sha256, size) = (staged.sha256.clone(), staged.size);
        let path = if !matches.is_empty() || !archive_of.is_empty() {
            // The bytes equal a pin: they are verified by definition.
            self.cache.promote(staged)?.path
        } else if let Some(original) = original {
            original.to_path_buf()
        } else {
            let scratch = match &mut self.scratch {
                Some(dir) => dir,
                none => none.insert(
                    tempfile::Builder::new()
                        .prefix("from-")
                        .tempdir_in(self.cache.tmp_dir())
                        .map_err(FetchError::io("creating a scratch directory"))?,
                ),
            };
            let base = name.rsplit(['/', ':']).next().unwrap_or("member");
            let copy = scratch
                .path()
                .join(format!("{}-{base}", self.artifacts.len()));
            staged
                .file
                .persist(&copy)
                .map_err(|e| FetchError::io(format!("writing {}", copy.display()))(e.error))?;
            copy
        };
        self.artifacts.push(LocalArtifact {
            name,
            path,
            sha256,
            size,
            matches,
            archive_of,
        });
        Ok(())
    }
}
