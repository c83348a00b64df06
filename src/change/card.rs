//! The backup's copy on the card: one file change as a transaction of its own, for changes
//! whose backup must travel with the card (the partition table) and for removing a copy once
//! a rollback has no more use for it. Prints nothing.

use super::{MARGIN, firmware_range};
use crate::disk::lock::WriteTarget;
use crate::disk::target::Target;
use crate::fat;
use crate::status::Report;
use crate::txn::{self, FileChange, Slice};
use std::path::Path;

/// Puts the backup zip at `backup` onto the card as `pifw-backup-<id>.zip`, as one
/// transaction of its own, printing nothing. For changes that are not file changes (the
/// partition table), whose backup must still travel with the card. Returns false, changing
/// nothing, when it does not fit with room to spare.
pub fn copy_backup_to_card(
    target: &Path,
    report: &Report,
    id: &str,
    backup: &Path,
) -> anyhow::Result<bool> {
    let (sha256, size) = crate::fetch::hash_reader(&mut std::fs::File::open(backup)?)?;
    let change = FileChange {
        path: card_backup_name(id),
        content: txn::NewContent::Path(backup.to_path_buf()),
        sha256,
        size,
    };
    apply_alone(target, report, change, size + 2 * MARGIN)
}

/// Removes the card's copy of backup `id`, if there is one, as one transaction of its own,
/// printing nothing. Returns whether it was there.
pub fn remove_card_copy(target: &Path, report: &Report, id: &str) -> anyhow::Result<bool> {
    let change = FileChange {
        path: card_backup_name(id),
        content: txn::NewContent::Remove,
        sha256: String::new(),
        size: 0,
    };
    apply_alone(target, report, change, 0)
}

/// One file change as a transaction of its own, printing nothing: false, writing nothing,
/// when it changes nothing or the partition has less than `need` bytes free.
fn apply_alone(
    target: &Path,
    report: &Report,
    change: FileChange,
    need: u64,
) -> anyhow::Result<bool> {
    let (start, end) = firmware_range(report)?;
    let changes = [change];
    let mut wt = WriteTarget::open(target)?;
    let mut part = Slice::new(&mut wt, start, end)?;
    if need > 0 && need > fat::check(&mut part)?.0.free_bytes {
        return Ok(false);
    }
    let plan = txn::plan(&mut part, &changes)?;
    if plan.is_noop() {
        return Ok(false);
    }
    txn::apply(&mut part, &plan, &changes, &txn::ApplyOptions::default())?;
    Ok(true)
}

/// One file of the firmware partition, read-only, at most `max` bytes (`None`: absent).
pub fn read_card_file(
    target: &Path,
    report: &Report,
    name: &str,
    max: u64,
) -> anyhow::Result<Option<Vec<u8>>> {
    let (start, end) = firmware_range(report)?;
    let mut t = Target::open_read(target)?;
    let mut part = Slice::new(&mut t.file, start, end)?;
    Ok(fat::read_small_file(&mut part, name, max)?)
}

/// Name of a backup's copy on the card.
pub fn card_backup_name(id: &str) -> String {
    format!("pifw-backup-{id}.zip")
}
