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
    /// Backups left out although the disk identifiers agree: they name another card's id
    /// (cards flashed from one image).
    pub other_cards: usize,
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
    let (mine, others): (Vec<Summary>, Vec<Summary>) = std::mem::take(&mut all.backups)
        .into_iter()
        .partition(|s| s.manifest.card.same_card(card));
    all.backups = mine;
    // Only those that share the disk identifiers count as another card's: the rest were
    // never candidates.
    all.other_cards = others
        .iter()
        .filter(|s| s.manifest.card.disk_ids_match(card))
        .count();
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

/// Which backups are this card's own history, from what they recorded the change leaving.
///
/// The disk signature and FAT volume id are the same on every card flashed from one image, so
/// they only pre-select candidates. A backup belongs to the card when every file its change
/// left (`after`) is what the card holds now, or, for an older backup, what the card held
/// before the newer backups of this card: walking newest first, each member's `before` states
/// become the card's state for the next. A card copy of a backup (`pifw-backup-*.zip`) is not
/// compared (it comes and goes in transactions of its own). Partition-table backups record no
/// files and are kept as the identifiers matched them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    /// Indexes into the candidates, newest first: this card's backups.
    pub members: Vec<usize>,
    /// Candidates that matched the card equally at the step after the last member (two cards
    /// made from one image and changed alike, sharing a backup directory): the chain stops
    /// there, and none of them is chosen without the user naming it.
    pub tied: Vec<usize>,
}

/// The [`Chain`] of `candidates` (newest first; `true` = its copy is on this card) against
/// `now`, the sha256 of a path on the card now (`None`: absent). Among candidates that tie,
/// the one whose copy is on the card wins when it is the only one.
pub fn chain(candidates: &[(&Manifest, bool)], now: &dyn Fn(&str) -> Option<String>) -> Chain {
    let mut state: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut used = vec![false; candidates.len()];
    let mut out = Chain::default();
    loop {
        let look = |p: &str| match state.get(&p.to_ascii_lowercase()) {
            Some(v) => v.clone(),
            None => now(p),
        };
        let matching: Vec<usize> = (0..candidates.len())
            .filter(|&i| !used[i])
            .filter(|&i| matches(candidates[i].0, &look))
            .collect();
        // Only the newest matching backup can be the next step back; older ones that match
        // too are either ties (same content left) or older steps matched again later.
        let Some(&first) = matching.first() else {
            return out;
        };
        let m = candidates[first].0;
        let tied: Vec<usize> = matching
            .iter()
            .copied()
            .filter(|&i| i != first && m.tables.is_none() && same_change(candidates[i].0, m))
            .collect();
        let pick = if tied.is_empty() {
            first
        } else {
            let group: Vec<usize> = std::iter::once(first).chain(tied.iter().copied()).collect();
            let on_card: Vec<usize> = group.iter().copied().filter(|&i| candidates[i].1).collect();
            if on_card.len() == 1 {
                for &i in &group {
                    used[i] = true;
                }
                on_card[0]
            } else {
                out.tied = group;
                return out;
            }
        };
        used[pick] = true;
        out.members.push(pick);
        for f in &candidates[pick].0.files {
            if !is_card_copy(&f.path) {
                state.insert(
                    f.path.to_ascii_lowercase(),
                    f.before.as_ref().map(|b| b.sha256.clone()),
                );
            }
        }
    }
}

fn is_card_copy(path: &str) -> bool {
    let l = path.to_ascii_lowercase();
    l.starts_with("pifw-backup-") && l.ends_with(".zip")
}

/// Whether the card (as `look` sees it) holds what the backup's change left.
fn matches(m: &Manifest, look: &dyn Fn(&str) -> Option<String>) -> bool {
    m.files
        .iter()
        .filter(|f| !is_card_copy(&f.path))
        .all(|f| match &f.after {
            Some(a) => look(&f.path).is_some_and(|now| now.eq_ignore_ascii_case(&a.sha256)),
            // A file the change removed must be absent.
            None => f.before.is_none() || look(&f.path).is_none(),
        })
}

/// Whether two backups record the same change (same paths, same before and after).
fn same_change(a: &Manifest, b: &Manifest) -> bool {
    let key = |m: &Manifest| {
        let mut v: Vec<_> = m
            .files
            .iter()
            .filter(|f| !is_card_copy(&f.path))
            .map(|f| {
                (
                    f.path.to_ascii_lowercase(),
                    f.before.clone(),
                    f.after.clone(),
                )
            })
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    key(a) == key(b)
}
