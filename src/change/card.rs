//! The files pifw keeps on the card for itself, each written as a transaction of its own:
//! the backup's copy, for changes whose backup must travel with the card (the partition table)
//! and removed once a rollback has no more use for it; and the card's identity
//! ([`crate::backup::card_id`]), created before the first other write of the first change.
//! Prints nothing.

use super::{MARGIN, firmware_range};
use crate::backup::card_id;
use crate::disk::lock::WriteTarget;
use crate::disk::target::Target;
use crate::fat;
use crate::status::Report;
use crate::txn::{self, FileChange, Slice};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// What a change does about the card's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardIdPlan {
    /// The card carries this id; the backup records it.
    Has(String),
    /// The card has none: this id is written first (before any other write of the change)
    /// and the backup records it.
    Create(String),
    /// A file of the identity's name is there but is not pifw's: left alone, no id.
    Foreign,
}

impl CardIdPlan {
    /// Decides from the report, generating a fresh id for a card that has none.
    pub fn of(report: &Report) -> anyhow::Result<CardIdPlan> {
        let fw = report.firmware.as_ref();
        if let Some(id) = fw.and_then(|f| f.card_id.clone()) {
            return Ok(CardIdPlan::Has(id));
        }
        if report.card_file(card_id::FILE_NAME).is_some() {
            return Ok(CardIdPlan::Foreign);
        }
        let id = card_id::generate()
            .map_err(|e| anyhow::anyhow!("reading /dev/urandom for the card's id: {e}"))?;
        Ok(CardIdPlan::Create(id))
    }

    /// The id the change's backup records.
    pub fn id(&self) -> Option<&str> {
        match self {
            CardIdPlan::Has(id) | CardIdPlan::Create(id) => Some(id),
            CardIdPlan::Foreign => None,
        }
    }

    /// The id to write first, when the card has none.
    pub fn to_create(&self) -> Option<&str> {
        match self {
            CardIdPlan::Create(id) => Some(id),
            _ => None,
        }
    }
}

/// Writes the identity file with `id` on the firmware partition `part`, as a transaction of
/// its own (a cut leaves it whole or absent). Refuses to replace a file that is there.
pub fn write_card_id<P: Read + Write + Seek + txn::Durable>(
    part: &mut P,
    id: &str,
) -> anyhow::Result<txn::Applied> {
    let bytes = card_id::render(id, chrono::Utc::now());
    let change = FileChange {
        path: card_id::FILE_NAME.to_string(),
        sha256: crate::digest::sha256_hex(&bytes),
        size: bytes.len() as u64,
        content: txn::NewContent::Bytes(bytes),
    };
    let changes = [change];
    let plan = txn::plan(part, &changes)?;
    if plan.items.iter().any(|i| i.old.is_some()) {
        anyhow::bail!(
            "{} appeared on the card since the plan; nothing of the change was written",
            card_id::FILE_NAME
        );
    }
    Ok(txn::apply(
        part,
        &plan,
        &changes,
        &txn::ApplyOptions::default(),
    )?)
}

/// What a table change does about the card's identity, decided from `disk` as it is now:
/// keeps the id it carries; else, when its firmware partition has a free cluster for it, gives
/// it one (or leaves a foreign `PIFW-ID.TXT` alone); else nothing (the backup is then bound by
/// the disk identifiers alone). The one decision `plan_hybrid` shows and `apply_hybrid` makes:
/// the card is read again at apply time because an earlier step of the same run
/// (`switch uefi --hybrid`'s files) may have given it its id since the report.
pub fn table_id_plan<D: Read + Seek>(
    disk: &mut D,
    report: &Report,
) -> anyhow::Result<Option<CardIdPlan>> {
    if let Some(id) = card_id_now(disk, report) {
        return Ok(Some(CardIdPlan::Has(id)));
    }
    if !card_id_room(disk, report) {
        return Ok(None);
    }
    CardIdPlan::of(report).map(Some)
}

/// Whether the firmware partition of `disk` has a free cluster (and room to spare) for the
/// identity file.
fn card_id_room<D: Read + Seek>(disk: &mut D, report: &Report) -> bool {
    let Ok((start, end)) = firmware_range(report) else {
        return false;
    };
    let Ok(mut part) = Slice::new(disk, start, end) else {
        return false;
    };
    fat::check(&mut part).is_ok_and(|(info, _)| info.free_bytes >= info.cluster_bytes + MARGIN)
}

/// The card id on the firmware partition of `disk` (the whole disk, as `report` places the
/// partition), read now: for a change whose report was made before an earlier step of the
/// same run gave the card its id.
pub fn card_id_now<D: Read + Seek>(disk: &mut D, report: &Report) -> Option<String> {
    let (start, end) = firmware_range(report).ok()?;
    let mut part = Slice::new(disk, start, end).ok()?;
    let bytes = fat::read_small_file(&mut part, card_id::FILE_NAME, card_id::MAX_BYTES)
        .ok()
        .flatten()?;
    card_id::parse(&bytes)
}

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
