//! A directory of backups: listing those of one card, and retention.
//!
//! Listing reads only each zip's manifest (cheap); [`super::Backup::open`] verifies the one
//! about to be used. Retention never deletes silently: [`prune`] returns what it would delete,
//! and deletes only with [`PruneMode::Delete`]; the command layer prints the list either way.
//! Backups pifw cannot read are reported, never deleted.

use super::read::read_manifest_only;
use super::{BackupError, CardIdentity, FILE_PREFIX, FILE_SUFFIX, Manifest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A backup found in a directory (manifest read, members not verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub path: PathBuf,
    pub manifest: Manifest,
}

/// What [`list`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Backups of the card, newest first.
    pub backups: Vec<Summary>,
    /// Files named like backups that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneMode {
    /// Only say what would be deleted.
    DryRun,
    Delete,
}

/// The backups in `dir` that may belong to `card` ([`CardIdentity::same_card`]), newest
/// first. A missing directory has none.
pub fn list(dir: &Path, card: &CardIdentity) -> Result<Listing, BackupError> {
    let mut all = scan(dir)?;
    all.backups.retain(|s| s.manifest.card.same_card(card));
    Ok(all)
}

/// Retention: for each card (grouped by its recorded identifiers), keeps the `keep` newest
/// backups and returns the others, oldest first; deletes them only in [`PruneMode::Delete`].
/// `keep` below 1 is taken as 1: the newest backup is what undoes the latest change.
pub fn prune(dir: &Path, keep: usize, mode: PruneMode) -> Result<Vec<PathBuf>, BackupError> {
    let keep = keep.max(1);
    let mut groups: BTreeMap<String, Vec<Summary>> = BTreeMap::new();
    for s in scan(dir)?.backups {
        groups.entry(s.manifest.card.key()).or_default().push(s);
    }
    let mut doomed: Vec<Summary> = groups
        .into_values()
        .flat_map(|group| group.into_iter().skip(keep))
        .collect();
    doomed.sort_by(|a, b| newest_first(b, a));
    if mode == PruneMode::Delete {
        for s in &doomed {
            std::fs::remove_file(&s.path).map_err(|source| BackupError::Io {
                path: s.path.clone(),
                source,
            })?;
        }
    }
    Ok(doomed.into_iter().map(|s| s.path).collect())
}

/// Every readable backup in `dir`, newest first.
fn scan(dir: &Path) -> Result<Listing, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(source) => {
            return Err(BackupError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut listing = Listing::default();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX)) {
            continue;
        }
        let path = entry.path();
        match read_manifest_only(&path) {
            Ok(manifest) => listing.backups.push(Summary { path, manifest }),
            Err(e) => listing.unreadable.push((path, e.to_string())),
        }
    }
    listing.backups.sort_by(newest_first);
    listing.unreadable.sort();
    Ok(listing)
}

fn newest_first(a: &Summary, b: &Summary) -> std::cmp::Ordering {
    (&b.manifest.id, &b.path).cmp(&(&a.manifest.id, &a.path))
}
