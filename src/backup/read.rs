//! Reading a backup: the manifest, every member checked against it, and the restore plan.

use super::{
    BackupError, FORMAT, FileState, Hashing, MANIFEST_CAP, MANIFEST_NAME, Manifest, TableRegion,
    check_fat_path, drained,
};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use zip::ZipArchive;

/// A backup whose members all match its manifest.
#[derive(Debug, Clone)]
pub struct Backup {
    pub path: PathBuf,
    pub manifest: Manifest,
}

/// One step of undoing a change, for the transaction engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreStep {
    /// FAT path (file or directory).
    pub path: String,
    pub action: RestoreAction,
    /// What the change left at `path`, when recorded: if the card holds something else, the
    /// card changed since (or is another card with the same identifiers).
    pub expected_now: Option<FileState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum RestoreAction {
    /// Put the old content back.
    Write(Content),
    /// The file did not exist before the change: remove it.
    Remove,
    /// The directory did not exist before the change: remove it if empty.
    RemoveDir,
}

/// A file's old content inside a backup zip. Holds no open file: [`Content::read_with`] opens
/// the zip when the engine needs the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Content {
    pub backup: PathBuf,
    pub member: String,
    pub state: FileState,
}

impl Content {
    /// Hands `f` a reader of the content. The bytes are hashed as they pass; if they do not
    /// match the manifest (the zip changed since it was opened), this returns
    /// [`BackupError::HashMismatch`] after `f` ran, so the engine must not commit what `f`
    /// wrote until this returns `Ok`.
    pub fn read_with<T>(
        &self,
        f: impl FnOnce(&mut dyn Read) -> io::Result<T>,
    ) -> Result<T, BackupError> {
        read_member(&self.backup, &self.member, &self.state, f)
    }
}

/// A saved partition-table region and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableContent {
    pub region: TableRegion,
    pub content: Content,
}

/// How [`Backup::open_checked`] checks each member's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberCheck {
    /// Against the manifest's sha256: every backup pifw opens to use.
    Sha256,
    /// Against the zip's own CRC-32 (checked by the zip reader at each member's end) and the
    /// manifest's size: the read-back of a backup this process has just written, whose sha256
    /// values were taken from the very bytes its CRCs were. It proves what reached the disk
    /// equals what was written, without hashing every old byte a second time.
    Crc32,
}

impl Backup {
    /// Opens `path`, reads its manifest and checks every member: each listed file and table
    /// region is present with the recorded size and sha256, and nothing unlisted is there.
    pub fn open(path: &Path) -> Result<Backup, BackupError> {
        Self::open_checked(path, MemberCheck::Sha256)
    }

    /// [`Backup::open`], with each member's bytes checked as `check` says.
    pub fn open_checked(path: &Path, check: MemberCheck) -> Result<Backup, BackupError> {
        let mut zip = open_zip(path)?;
        let manifest = read_manifest(path, &mut zip)?;

        let mut expected: HashMap<String, FileState> = HashMap::new();
        let mut seen = HashSet::new();
        for record in &manifest.files {
            check_fat_path(&record.path).map_err(|reason| BackupError::BadPath {
                path: path.to_path_buf(),
                name: record.path.clone(),
                reason,
            })?;
            if !seen.insert(record.path.to_ascii_lowercase()) {
                return Err(BackupError::DuplicatePath {
                    path: path.to_path_buf(),
                    name: record.path.clone(),
                });
            }
            if let Some(before) = &record.before {
                expected.insert(record.path.clone(), before.clone());
            }
        }
        for dir in &manifest.dirs_absent_before {
            check_fat_path(dir).map_err(|reason| BackupError::BadPath {
                path: path.to_path_buf(),
                name: dir.clone(),
                reason,
            })?;
        }
        for region in manifest.tables.iter().flat_map(|t| &t.regions) {
            expected.insert(
                region.member(),
                FileState {
                    size: region.size,
                    sha256: region.sha256.clone(),
                },
            );
        }

        let zip_err = |source| BackupError::Zip {
            path: path.to_path_buf(),
            source,
        };
        for index in 0..zip.len() {
            let mut member = zip.by_index(index).map_err(zip_err)?;
            let name = member.name().map_err(zip_err)?.into_owned();
            if name == MANIFEST_NAME {
                continue;
            }
            let Some(want) = expected.remove(&name) else {
                return Err(BackupError::UnexpectedMember {
                    path: path.to_path_buf(),
                    member: name,
                });
            };
            if member.enclosed_name().is_none() {
                return Err(BackupError::BadPath {
                    path: path.to_path_buf(),
                    name,
                    reason: "escapes the extraction directory",
                });
            }
            let io_err = |source: io::Error| BackupError::Io {
                path: path.to_path_buf(),
                source: io::Error::new(source.kind(), format!("member {name}: {source}")),
            };
            let got = match check {
                MemberCheck::Sha256 => drained(Hashing::new(&mut member)).map_err(io_err)?,
                MemberCheck::Crc32 => FileState {
                    size: io::copy(&mut member, &mut io::sink()).map_err(io_err)?,
                    sha256: want.sha256.clone(),
                },
            };
            check_state(path, &name, &want, &got)?;
        }
        if let Some(member) = expected.into_keys().min() {
            return Err(BackupError::MissingMember {
                path: path.to_path_buf(),
                member,
            });
        }
        Ok(Backup {
            path: path.to_path_buf(),
            manifest,
        })
    }

    /// The steps that undo the change: every recorded file put back or removed, in the order
    /// recorded, then the directories the change created, deepest first.
    pub fn restore_plan(&self) -> Vec<RestoreStep> {
        let mut steps: Vec<RestoreStep> = self
            .manifest
            .files
            .iter()
            .map(|r| RestoreStep {
                path: r.path.clone(),
                action: match &r.before {
                    Some(state) => RestoreAction::Write(Content {
                        backup: self.path.clone(),
                        member: r.path.clone(),
                        state: state.clone(),
                    }),
                    None => RestoreAction::Remove,
                },
                expected_now: r.after.clone(),
            })
            .collect();
        steps.extend(
            self.manifest
                .dirs_absent_before
                .iter()
                .rev()
                .map(|d| RestoreStep {
                    path: d.clone(),
                    action: RestoreAction::RemoveDir,
                    expected_now: None,
                }),
        );
        steps
    }

    /// The saved partition-table regions, if the backup has any.
    pub fn tables(&self) -> Vec<TableContent> {
        self.manifest
            .tables
            .iter()
            .flat_map(|t| &t.regions)
            .map(|region| TableContent {
                content: Content {
                    backup: self.path.clone(),
                    member: region.member(),
                    state: FileState {
                        size: region.size,
                        sha256: region.sha256.clone(),
                    },
                },
                region: region.clone(),
            })
            .collect()
    }
}

fn open_zip(path: &Path) -> Result<ZipArchive<File>, BackupError> {
    let file = File::open(path).map_err(|source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ZipArchive::new(file).map_err(|source| BackupError::Zip {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and checks the manifest only (no member hashing): for listings.
pub(super) fn read_manifest_only(path: &Path) -> Result<Manifest, BackupError> {
    read_manifest(path, &mut open_zip(path)?)
}

fn read_manifest(path: &Path, zip: &mut ZipArchive<File>) -> Result<Manifest, BackupError> {
    let member = match zip.by_name(MANIFEST_NAME) {
        Ok(m) => m,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(BackupError::NoManifest {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(BackupError::Zip {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut text = Vec::new();
    member
        .take(MANIFEST_CAP + 1)
        .read_to_end(&mut text)
        .map_err(|source| BackupError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let bad = |reason: String| BackupError::BadManifest {
        path: path.to_path_buf(),
        reason,
    };
    if text.len() as u64 > MANIFEST_CAP {
        return Err(bad(format!("larger than {MANIFEST_CAP} bytes")));
    }
    // The format number first, so a newer backup says "newer" rather than "missing field".
    let format = serde_json::from_slice::<serde_json::Value>(&text)
        .map_err(|e| bad(e.to_string()))?
        .get("format")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| bad("no `format` number".to_string()))?;
    if format > u64::from(FORMAT) {
        return Err(BackupError::NewerFormat {
            path: path.to_path_buf(),
            found: u32::try_from(format).unwrap_or(u32::MAX),
        });
    }
    serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))
}

fn read_member<T>(
    path: &Path,
    member: &str,
    want: &FileState,
    f: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> Result<T, BackupError> {
    let mut zip = open_zip(path)?;
    let entry = match zip.by_name(member) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(BackupError::MissingMember {
                path: path.to_path_buf(),
                member: member.to_string(),
            });
        }
        Err(source) => {
            return Err(BackupError::Zip {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let io_err = |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut hashing = Hashing::new(entry);
    let out = f(&mut hashing).map_err(io_err)?;
    let got = drained(hashing).map_err(io_err)?;
    check_state(path, member, want, &got)?;
    Ok(out)
}

fn check_state(
    path: &Path,
    member: &str,
    want: &FileState,
    got: &FileState,
) -> Result<(), BackupError> {
    if want == got {
        return Ok(());
    }
    Err(BackupError::HashMismatch {
        path: path.to_path_buf(),
        member: member.to_string(),
        expected: want.sha256.clone(),
        expected_size: want.size,
        actual: got.sha256.clone(),
        actual_size: got.size,
    })
}
