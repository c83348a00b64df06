//! The way back as plans: which backup `rollback` uses (`--to ID`, the newest, or every
//! backup of the newest run), the refusal when there is none (with what the search set aside),
//! whether it goes back through the table writer or the file executor, the file restore with
//! its drift check (`--force`), what follows a restore (the card's copy of the backup, the
//! directories the change made), which local backups `backups --prune` deletes, and what
//! `recover` finds and does about an interrupted change.
//!
//! Must not print, prompt or read argv: notes come back as data for the command layer.

use super::card::card_backup_name;
use super::restore::{Restore, files_from_backup};
use crate::backup::Backup;
use crate::backup::found::Found;
use crate::disk::lock::WriteTarget;
use crate::status::Report;
use crate::txn::{self, FileChange, Slice};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// Which backups a `rollback` undoes.
pub enum Choice {
    /// One backup.
    One(Box<Found>),
    /// One pifw run that made several backups (`switch uefi --hybrid`: the files, then the
    /// table), undone whole, newest first: their ids in that order.
    Run(Vec<String>),
}

/// The backup `id` among `all` (every candidate with the card's disk identifiers), for
/// `--to`.
pub fn find(all: Vec<Found>, id: &str, backup_dir: &Path) -> anyhow::Result<Found> {
    match all.into_iter().find(|f| f.summary.manifest.id == id) {
        Some(f) => Ok(f),
        None => bail!(
            "no backup {id} of this card in {}, on the card or in its root filesystem; pifw backups lists them (nothing was written)",
            backup_dir.display()
        ),
    }
}

/// Chooses from `all` (this card's backups, newest first; for `to`, every candidate with the
/// card's disk identifiers): the backup named `to`, else the newest change. None at all is a
/// refusal that says what the search set aside (another search of `path`, scratch in `tmp`).
pub fn choose(
    all: Vec<Found>,
    to: Option<&str>,
    path: &Path,
    report: &Report,
    backup_dir: &Path,
    tmp: &Path,
) -> anyhow::Result<Choice> {
    if let Some(id) = to {
        return find(all, id, backup_dir).map(|f| Choice::One(Box::new(f)));
    }
    if let Some(b) = all.first()
        && b.summary.manifest.run.is_some()
        && all
            .get(1)
            .is_some_and(|n| n.summary.manifest.same_run(&b.summary.manifest))
    {
        let ids = all
            .iter()
            .take_while(|n| n.summary.manifest.same_run(&b.summary.manifest))
            .map(|n| n.summary.manifest.id.clone())
            .collect();
        return Ok(Choice::Run(ids));
    }
    match all.into_iter().next() {
        Some(b) => Ok(Choice::One(Box::new(b))),
        None => Err(nothing_to_roll_back(path, report, backup_dir, tmp)),
    }
}

/// The refusal when this card has no backups. Same disk identifiers, other files: another
/// card flashed from the same image, or this card changed since. Neither is guessed; the ids
/// stay in the directory.
fn nothing_to_roll_back(
    path: &Path,
    report: &Report,
    backup_dir: &Path,
    tmp: &Path,
) -> anyhow::Error {
    let seen = match crate::backup::found::candidates(path, report, backup_dir, tmp) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let others = seen.found.len();
    let mut hint = if others > 0 {
        format!(
            "; {others} backups have this card's disk identifiers but record files this card does not hold (another card flashed from the same image, or this card changed since). If one of them is this card's, name it: pifw rollback --to ID (pifw backups on that card lists ids; the file names in {} carry them)",
            backup_dir.display()
        )
    } else {
        String::new()
    };
    if seen.other_cards > 0 {
        let this = match report.firmware.as_ref().and_then(|f| f.card_id.as_deref()) {
            Some(id) => format!("this card's is {id}"),
            None => "this card has none".to_string(),
        };
        hint.push_str(&format!(
            "; {} backups have this card's disk identifiers but were made on another card: they record another card id ({this}; {}), and pifw never applies them",
            seen.other_cards,
            crate::backup::card_id::FILE_NAME
        ));
    }
    anyhow::anyhow!(
        "no backups of this card in {}, on the card or in its root filesystem, so there is nothing to roll back to{hint} (nothing was written)",
        backup_dir.display()
    )
}

/// The note for a [`Choice::Run`]: every backup of the run is undone.
pub fn run_note(ids: &[String]) -> String {
    format!(
        "note: the newest change made {} backups in one run ({}); all of them are undone, newest first",
        ids.len(),
        ids.join(", ")
    )
}

/// The note for a backup that came from the card's root filesystem, if `f` did.
pub fn root_note(f: &Found) -> Option<String> {
    f.root.as_ref().map(|r| {
        format!(
            "note: using backup {} from the card's root filesystem ({r}), copied to this machine and verified",
            f.summary.manifest.id
        )
    })
}

/// How one backup goes back.
pub enum Plan {
    /// Partition-table sectors: through the table writer, not the FAT engine.
    Tables(Box<Backup>),
    /// Files: through the file executor.
    Files(FilesPlan),
}

/// A file restore: the changes for the executor and what follows it.
pub struct FilesPlan {
    pub id: String,
    pub changes: Vec<FileChange>,
    /// Directories the change created, deepest first, removed once empty after the restore.
    pub dirs: Vec<String>,
    /// The card holds its copy of this backup: removed once the restore is verified.
    pub card_copy: bool,
    /// What the plan has to say before it is shown (without `note: `).
    pub notes: Vec<String>,
}

/// Opens and verifies `chosen`, and plans putting it back on the card `report` shows (old
/// contents unpacked into `tmp`). A card that no longer holds what the change left is refused
/// unless `force`.
pub fn plan(chosen: &Found, report: &Report, tmp: &Path, force: bool) -> anyhow::Result<Plan> {
    let backup = Backup::open(&chosen.summary.path)
        .with_context(|| format!("verifying the backup {}", chosen.summary.path.display()))?;
    if backup.manifest.tables.is_some() {
        return Ok(Plan::Tables(Box::new(backup)));
    }
    let id = backup.manifest.id.clone();
    let own = card_backup_name(&id);
    let Restore {
        changes,
        drift,
        dirs,
    } = files_from_backup(&backup, report, tmp)?;
    if !drift.is_empty() && !force {
        bail!(
            "the card no longer holds what backup {id} recorded the change leaving in {}: it changed since, or this is another card with the same identifiers. Check with pifw status; pass --force to restore anyway (nothing was written)",
            drift.join(", ")
        );
    }
    let card_copy = report.card_file(&own).is_some();
    let mut notes = Vec::new();
    if !dirs.is_empty() {
        notes.push(format!(
            "the directories the change created are removed once empty: {}",
            dirs.join(", ")
        ));
    }
    if card_copy {
        notes.push(format!(
            "the card's copy of the backup ({own}) stays until the restored files are verified, then goes in a transaction of its own"
        ));
    }
    Ok(Plan::Files(FilesPlan {
        id,
        changes,
        dirs,
        card_copy,
        notes,
    }))
}

/// After the files of `plan` are back and verified on `path`: the card's copy of the backup
/// goes, in a transaction of its own, then the directories the change made, when nothing else
/// is in them.
///
/// Why a later transaction of its own: until the restore is committed and read back, the
/// card's copy of this backup is the only way back on a machine without the local one; a cut
/// at any write leaves either the old files or this copy. The restored card then carries no
/// copy of a backup of a state it has left.
pub fn finish(path: &Path, report: &Report, plan: &FilesPlan) -> anyhow::Result<()> {
    if plan.card_copy {
        super::card::remove_card_copy(path, report, &plan.id)
            .context("removing the card's copy of the backup after the restore")?;
    }
    if plan.dirs.is_empty() {
        return Ok(());
    }
    // restore_plan lists them deepest first.
    let (start, end) = super::firmware_range(report)?;
    let mut wt = WriteTarget::open(path)?;
    let mut part = Slice::new(&mut wt, start, end)?;
    txn::remove_empty_dirs(&mut part, &plan.dirs)
        .context("removing the directories the change created")?;
    Ok(())
}

/// Several backups undone in order (newest first), each planned on the card as the step
/// before left it.
pub struct Undo {
    pub ids: Vec<String>,
}

impl Undo {
    /// Whether to go on after a step: only after one that succeeded for real (a dry run shows
    /// the first step only).
    pub fn go_on(ok: bool, dry_run: bool) -> bool {
        ok && !dry_run
    }

    /// What a dry run that stopped after the first step says, when there were more.
    pub fn dry_run_note(&self, dry_run: bool) -> Option<&'static str> {
        (dry_run && self.ids.len() > 1).then_some(
            "note: dry run shows the first step only; each later step is planned on the card as the step before leaves it",
        )
    }
}

/// `backups --prune`: only this card's backups count, and only copies on this machine are
/// deleted; the newest `keep` (at least one) stay. Returns the files to delete, in order.
pub fn prune(all: &[Found], keep: usize) -> Vec<PathBuf> {
    all.iter()
        .skip(keep.max(1))
        .filter(|f| f.local)
        .map(|f| f.summary.path.clone())
        .collect()
}

/// `all` as it is once [`prune`]'s files are gone: beyond the newest `keep`, no local copy,
/// and a backup with no copy left is dropped.
pub fn after_prune(all: &mut Vec<Found>, keep: usize) {
    let keep = keep.max(1);
    let mut i = 0;
    all.retain_mut(|f| {
        i += 1;
        if i > keep {
            f.local = false;
        }
        f.local || f.card || f.root.is_some()
    });
}

/// How many of this card's backups stay in `backup_dir` after a change that left `after` (the
/// files it verified) and, when it gave the card one, the id `card_id`: counted by
/// [`crate::backup::chain`] against the card as the change left it. `None` when the directory
/// cannot be listed.
pub fn kept_backups(
    backup_dir: &Path,
    report: &Report,
    card_id: Option<String>,
    after: &[(String, Option<txn::FileState>)],
) -> Option<usize> {
    // The card's id as it is after the change (a first change gave it one).
    let mut card = super::identity(report);
    card.card_id = card_id.or(card.card_id);
    let listing = crate::backup::list(backup_dir, &card).ok()?;
    let refs: Vec<(&crate::backup::Manifest, bool)> = listing
        .backups
        .iter()
        .map(|s| (&s.manifest, false))
        .collect();
    let now = |p: &str| match after.iter().find(|(q, _)| q.eq_ignore_ascii_case(p)) {
        Some((_, state)) => state.as_ref().map(|s| s.sha256.clone()),
        None => report.card_file(p).map(|f| f.sha256.clone()),
    };
    Some(crate::backup::chain(&refs, &now).members.len())
}

/// What an interrupted change left on the firmware partition, read without writing.
pub struct Interrupted {
    /// The live journal, when there is one.
    pub pending: Option<txn::JournalSummary>,
    /// What recovery would do, when it has anything to do: a live journal, or leftovers
    /// without one (a change cut before its journal went live, or while removing it).
    pub needed: Option<txn::RecoverOutcome>,
}

impl Interrupted {
    /// Recovery would undo the interrupted change (rather than finish it).
    pub fn undoes(would: &txn::RecoverOutcome) -> bool {
        matches!(
            would,
            txn::RecoverOutcome::RolledBack | txn::RecoverOutcome::DiscardedTorn
        )
    }
}

/// Reads the change journal on the card `report` shows at `path`, read-only. A card changed
/// under the journal is refused here.
pub fn interrupted(path: &Path, report: &Report) -> anyhow::Result<Interrupted> {
    let (start, end) = super::firmware_range(report)?;
    let mut ro = crate::disk::target::Target::open_read(path)?;
    let mut part = Slice::new(&mut ro.file, start, end)?;
    let pending = txn::pending(&mut part).context("reading the change journal")?;
    let needed = txn::recovery_needed(&mut part)?;
    Ok(Interrupted { pending, needed })
}

/// Finishes or undoes the interrupted change on `path` (cleaning leftovers without a live
/// journal too), then syncs.
pub fn recover(path: &Path, report: &Report) -> anyhow::Result<txn::RecoverOutcome> {
    let (start, end) = super::firmware_range(report)?;
    let mut wt = WriteTarget::open(path)?;
    let mut part = Slice::new(&mut wt, start, end)?;
    let outcome = txn::recover(&mut part).context("recovering the interrupted change")?;
    txn::Durable::sync(&mut part)?;
    Ok(outcome)
}
