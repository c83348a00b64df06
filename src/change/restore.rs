//! Rolling files back: a verified backup's restore plan made into the file changes the
//! executor applies, with what the card holds now compared against what the change left.

use super::card::card_backup_name;
use crate::backup::{Backup, RestoreAction};
use crate::status::Report;
use crate::txn::{FileChange, NewContent};
use anyhow::Context;
use std::path::Path;

/// A backup's files as changes, and what stands in their way.
pub struct Restore {
    /// The old contents (unpacked into the scratch directory) and the removals of files the
    /// change added. The backup's own copy on the card is not among them: it stays until the
    /// restore is committed and verified.
    pub changes: Vec<FileChange>,
    /// Paths whose content on the card is no longer what the change left there.
    pub drift: Vec<String>,
    /// Directories the change created, deepest first, removed once empty.
    pub dirs: Vec<String>,
}

/// The changes that put `backup`'s files back on the card `report` shows, the old contents
/// unpacked into `tmp`.
pub fn files_from_backup(backup: &Backup, report: &Report, tmp: &Path) -> anyhow::Result<Restore> {
    let id = &backup.manifest.id;
    let now_of = |p: &str| report.card_file(p);
    let own = card_backup_name(id);
    let mut changes = Vec::new();
    let mut drift = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    for step in backup.restore_plan() {
        if let Some(expected) = &step.expected_now {
            let same = now_of(&step.path).is_some_and(|n| n.sha256 == expected.sha256);
            if !same {
                drift.push(step.path.clone());
            }
        }
        match step.action {
            RestoreAction::Write(content) => {
                let dest = tmp.join(format!("restore-{}", changes.len()));
                content
                    .read_with(|r| {
                        let mut f = std::fs::File::create(&dest)?;
                        std::io::copy(r, &mut f)
                    })
                    .with_context(|| format!("reading {} from the backup", step.path))?;
                changes.push(FileChange {
                    path: step.path,
                    content: NewContent::Path(dest),
                    sha256: content.state.sha256,
                    size: content.state.size,
                });
            }
            RestoreAction::Remove => {
                // The backup's own copy on the card stays until the restore is committed and
                // verified (removed below, in a transaction of its own).
                if now_of(&step.path).is_some() && !step.path.eq_ignore_ascii_case(&own) {
                    changes.push(FileChange {
                        path: step.path,
                        content: NewContent::Remove,
                        sha256: String::new(),
                        size: 0,
                    });
                }
            }
            RestoreAction::RemoveDir => dirs.push(step.path.clone()),
        }
    }
    Ok(Restore {
        changes,
        drift,
        dirs,
    })
}
