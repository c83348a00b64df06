//! `--from PATH`: artifacts the user already has, identified by hash against every pin.
//!
//! Owns turning a file, a directory (its regular files, not recursive), a zip or a Debian
//! package (the files of its data.tar) into a list of artifacts, each with its sha256, size and
//! the pins it matches. A file that matches a pin is copied into the cache (hashed while
//! copied, so the cached bytes are the hashed bytes) and is from then on as good as a
//! download. An archive whose own sha256 is a release's source pin is cached too, so a later
//! [`obtain`](super::obtain) finds it without the network. Unpinned members are copied to a
//! scratch directory that lives as long as the returned [`LocalArtifacts`]; whether to use
//! them is the command layer's decision (an explicit flag), never this module's.

use super::archive::{self, Flow};
use super::cache::{Cache, Staged};
use super::{FetchError, FetchOptions};
use crate::manifest::{Manifests, ReleaseKind};
use std::fs::File;
use std::io::BufReader;
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
}

/// The artifacts of one `--from`; keeps the scratch copies of unpinned members alive.
#[derive(Debug)]
pub struct LocalArtifacts {
    pub artifacts: Vec<LocalArtifact>,
    _scratch: Option<TempDir>,
}

struct Collector<'a> {
    manifests: &'a Manifests,
    opts: &'a FetchOptions,
    cache: Cache,
    scratch: Option<TempDir>,
    artifacts: Vec<LocalArtifact>,
}

/// Hashes what `path` holds and matches it against the pins of `manifests`.
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
    } else {
        collector.add_file(path)?;
    }
    Ok(LocalArtifacts {
        artifacts: collector.artifacts,
        _scratch: collector.scratch,
    })
}

impl Collector<'_> {
    fn add_file(&mut self, path: &Path) -> Result<(), FetchError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(FetchError::io(format!("opening {name}")))?;
        let staged = self
            .cache
            .stage(&mut BufReader::new(file), &mut |_| {})
            .map_err(|(e, _)| FetchError::io(format!("reading {name}"))(e))?;
        let format = archive::sniff(path).map_err(FetchError::io(format!("reading {name}")))?;
        self.add(name.clone(), staged, Some(path))?;

        if let Some(format) = format {
            let limits = self.opts.limits;
            archive::walk(
                path,
                format,
                &name,
                &limits,
                &mut |member, _size, reader| {
                    let staged = self
                        .cache
                        .stage(reader, &mut |_| {})
                        .map_err(|(e, _)| archive::read_error(&name, member, e))?;
                    self.add(format!("{name}:{member}"), staged, None)?;
                    Ok(Flow::Continue)
                },
            )?;
        }
        Ok(())
    }

    /// Records staged bytes: into the cache when pinned; else `original`, or a scratch copy.
    fn add(
        &mut self,
        name: String,
        staged: Staged,
        original: Option<&Path>,
    ) -> Result<(), FetchError> {
        let matches: Vec<PinMatch> = self
            .manifests
            .identify(&staged.sha256)
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
                    .any(|s| s.sha256.as_deref() == Some(staged.sha256.as_str()))
            })
            .map(|r| r.label())
            .collect();
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
