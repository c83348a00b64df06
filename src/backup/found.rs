//! Finding this card's backups: this machine's backup directory, the copies on the card's
//! firmware partition (`pifw-backup-<id>.zip`), and the Pi's backup directory in the card's
//! own root filesystem ([`super::rescue`]). The disk identifiers pre-select; what each change
//! left decides ([`super::chain`]), so a card flashed from the same image never takes
//! another's backups. Prints nothing: notes and warnings come back in [`Discovered`].

use super::{Backup, CardIdentity, Manifest, Summary};
use crate::disk::target::Target;
use crate::status::Report;
use crate::txn::Slice;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// Largest backup zip read from the card.
const CARD_BACKUP_CAP: u64 = 256 * 1024 * 1024;

/// Backups found, and what the search has to say (`note: ...`, `warning: ...`).
pub struct Discovered {
    pub found: Vec<Found>,
    pub notes: Vec<String>,
    /// Backups set aside although the disk identifiers agree, because they name another
    /// card's id ([`super::card_id`]).
    pub other_cards: usize,
}

/// Backups on the card: the `pifw-backup-*.zip` files in the firmware partition's root,
/// copied to `dir` (a temporary directory) so they can be opened as zips.
fn card_backups(path: &Path, report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let Some(fw) = report.firmware.as_ref() else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = fw
        .files
        .iter()
        .filter(|f| !f.path.contains('/'))
        .map(|f| f.path.clone())
        .filter(|n| {
            let l = n.to_ascii_lowercase();
            l.starts_with("pifw-backup-") && l.ends_with(".zip")
        })
        .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let (start, end) = (fw.offset_bytes, fw.offset_bytes + fw.size_bytes);
    let mut t = Target::open_read(path)?;
    let mut part = Slice::new(&mut t.file, start, end)?;
    let mut out = Vec::new();
    for name in names {
        let dest = dir.join(&name);
        let copied = crate::fat::with_file(&mut part, &name, |r| {
            let mut f = std::fs::File::create(&dest)?;
            std::io::copy(&mut std::io::Read::take(r, CARD_BACKUP_CAP), &mut f)
        })?;
        if copied.is_some() {
            out.push(dest);
        }
    }
    Ok(out)
}

/// A backup of this card and where it was found.
pub struct Found {
    pub summary: Summary,
    /// In the backup directory of this machine (`summary.path` is there).
    pub local: bool,
    /// Its copy is on the card's firmware partition.
    pub card: bool,
    /// Where it was found in the card's own root filesystem (e.g. `partition 2:
    /// /var/lib/pifw/backups/pifw-ID.zip`), when it was.
    pub root: Option<String>,
}

impl Found {
    /// Where it is kept, in words (`this machine`, `card`, `card root filesystem (...)`).
    pub fn places(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.local {
            v.push("this machine".to_string());
        }
        if self.card {
            v.push("card".to_string());
        }
        if let Some(r) = &self.root {
            v.push(format!("card root filesystem ({r})"));
        }
        v
    }
}

/// This card's backups, newest first. The disk identifiers pre-select; what each change left
/// decides ([`crate::backup::chain`]), so a card cloned from the same image never takes
/// another's backups. Backups that match this card equally (clones changed alike, no copy on
/// the card or in its root filesystem to tell them apart) are refused with their ids, for
/// `--to`.
pub fn of_card(
    path: &Path,
    report: &Report,
    backup_dir: &Path,
    tmp: &Path,
) -> anyhow::Result<Discovered> {
    let Discovered {
        found: mut all,
        notes,
        other_cards,
    } = candidates(path, report, backup_dir, tmp)?;
    // A copy kept on the card itself (firmware partition or root filesystem) tells tied
    // candidates apart: the card carries its own history.
    let refs: Vec<(&Manifest, bool)> = all
        .iter()
        .map(|f| (&f.summary.manifest, f.card || f.root.is_some()))
        .collect();
    let now = |p: &str| report.card_file(p).map(|f| f.sha256.clone());
    let chain = super::chain(&refs, &now);
    if chain.members.is_empty() && !chain.tied.is_empty() {
        let ids: Vec<String> = chain
            .tied
            .iter()
            .map(|&i| {
                format!(
                    "{} ({})",
                    all[i].summary.manifest.id,
                    all[i].places().join(", ")
                )
            })
            .collect();
        bail!(
            "{} backups record exactly this card's current files (cards flashed from one image and changed alike?), and nothing on the card tells which is this card's: {}. Choose one with pifw rollback --to ID {} (nothing was written)",
            ids.len(),
            ids.join(", "),
            path.display()
        );
    }
    let keep: Vec<usize> = chain.members;
    let mut out = Vec::new();
    for (i, b) in all.drain(..).enumerate() {
        if let Some(pos) = keep.iter().position(|&k| k == i) {
            out.push((pos, b));
        }
    }
    out.sort_by_key(|(pos, _)| *pos);
    Ok(Discovered {
        found: out.into_iter().map(|(_, b)| b).collect(),
        notes,
        other_cards,
    })
}

/// Every backup whose disk identifiers match this card, newest first, from the three places:
/// this machine's backup directory, the card's firmware partition, and the backup directory
/// of the Pi in the card's own root filesystem ([`crate::backup::rescue`]). Copies from the
/// card are made in `tmp` and verified in full ([`Backup::open`]) before they count. Alone,
/// only for an explicit `--to ID`.
pub fn candidates(
    path: &Path,
    report: &Report,
    backup_dir: &Path,
    tmp: &Path,
) -> anyhow::Result<Discovered> {
    let card = CardIdentity::of_report(report);
    let mut notes = Vec::new();
    let local = super::list(backup_dir, &card)
        .with_context(|| format!("listing backups in {}", backup_dir.display()))?;
    for (p, why) in &local.unreadable {
        notes.push(format!(
            "warning: cannot read backup {}: {why}",
            p.display()
        ));
    }
    let mut other_cards = local.other_cards;
    let mut out: Vec<Found> = local
        .backups
        .into_iter()
        .map(|summary| Found {
            summary,
            local: true,
            card: false,
            root: None,
        })
        .collect();
    let mut add = |zip: PathBuf, root: Option<String>, what: &str| {
        let manifest = match Backup::open(&zip) {
            Ok(b) => b.manifest,
            Err(e) => {
                notes.push(format!(
                    "warning: the backup {what} is unreadable or damaged: {e}"
                ));
                return;
            }
        };
        if !manifest.card.same_card(&card) {
            if manifest.card.disk_ids_match(&card) {
                other_cards += 1;
            }
            return;
        }
        let on_card = root.is_none();
        match out
            .iter_mut()
            .find(|f| f.summary.manifest.id == manifest.id)
        {
            Some(f) => {
                f.card |= on_card;
                if f.root.is_none() {
                    f.root = root;
                }
            }
            None => out.push(Found {
                summary: Summary {
                    path: zip,
                    manifest,
                },
                local: false,
                card: on_card,
                root,
            }),
        }
    };
    for zip in card_backups(path, report, tmp)? {
        let what = format!(
            "{} on the card",
            zip.file_name().unwrap_or_default().to_string_lossy()
        );
        add(zip, None, &what);
    }
    let mounted =
        crate::disk::mounts::mounted_partitions(path, &crate::disk::mounts::SystemView::system());
    let scan = super::rescue::scan(path, tmp, &mounted);
    let scan_notes: Vec<String> = scan.notes.iter().map(|n| format!("note: {n}")).collect();
    for c in scan.found {
        let place = format!("{}: {}", c.partition, c.path_in_root);
        let what = format!("{place} in the card's root filesystem");
        add(c.copy, Some(place), &what);
    }
    notes.extend(scan_notes);
    out.sort_by(|a, b| b.summary.manifest.id.cmp(&a.summary.manifest.id));
    Ok(Discovered {
        found: out,
        notes,
        other_cards,
    })
}
