//! The one path every file change takes: lock → plan → show → confirm → revalidate → back up
//! → apply → verify → report.
//!
//! Commands build a [`Request`] (the file changes they want) and hand it here. The executor
//! is the domain's ([`crate::change::exec`]: `prepare` takes the lock and plans with every
//! refusal, `apply` writes under that lock and returns a typed outcome); this module runs
//! them in order, with the plan, the confirmation, the progress and the result shown by
//! [`crate::ui::change`].
//! It also sequences the way back that `rollback` and `switch uboot` share: this card's
//! backups (their notes printed) and a [`crate::change::rollback`] plan run through the
//! executor ([`undo`], [`put_back`]); which backup and how is the domain's.
//! Refusals (a mounted or read-only target, another pifw, too little space, a damaged volume,
//! a changed card, an unverifiable backup) all happen before the first write to the card.

use super::Exit;
use crate::backup::ChangeKind;
use crate::backup::found::Found;
use crate::change;
use crate::change::rollback::Undo;
use crate::cli::{Cli, WriteArgs};
use crate::config::Config;
use crate::manifest::Manifests;
use crate::status::Report;
use crate::txn::Plan;
use crate::ui::{self, change::Terminal, output};
use anyhow::Context;
use std::path::Path;

pub use crate::change::exec::Request;

/// Plans ([`change::exec::prepare`]), shows, and (unless `--dry-run` or declined) applies
/// ([`change::exec::apply`]) `req` to `target`, then reports.
pub fn execute(
    json: bool,
    target: &Path,
    report: &Report,
    mut req: Request,
    args: &WriteArgs,
    cfg: &Config,
) -> anyhow::Result<Exit> {
    ui::change::reading(report);
    let prepared = change::exec::prepare(target, report, &mut req, cfg)?;
    // The batches the plan shows are what `apply` writes; the rendering keeps its own copy.
    let batches: Vec<Plan> = prepared.plan.plans.clone();
    let out = ui::change::plan(json, &req, target, &prepared, &batches, cfg, args.dry_run)?;
    if out.ends_here() {
        ui::change::planned(json, &out)?;
        return Ok(Exit::Ok);
    }
    ui::prompt::confirm(args, target)?;
    let card_id = prepared
        .card_id
        .as_ref()
        .and_then(|c| c.id())
        .map(str::to_string);
    let done = change::exec::apply(prepared, target, report, &req, cfg, &Terminal::new(json))?;
    ui::change::done(json, out, &done, card_id.clone(), target)?;
    let kept = change::rollback::kept_backups(&cfg.backup_dir, report, card_id, &done.verified);
    ui::change::prune_note(cfg, kept);
    Ok(Exit::Ok)
}

/// This card's backups, newest first ([`crate::backup::found::of_card`]); its notes and
/// warnings go to stderr.
pub(in crate::commands) fn all_backups(
    path: &Path,
    report: &Report,
    cfg: &Config,
    tmp: &Path,
) -> anyhow::Result<Vec<Found>> {
    let d = crate::backup::found::of_card(path, report, &cfg.backup_dir, tmp)?;
    ui::backups::notes(&d.notes);
    Ok(d.found)
}

/// Every backup with this card's disk identifiers ([`crate::backup::found::candidates`]).
pub(in crate::commands) fn candidates(
    path: &Path,
    report: &Report,
    cfg: &Config,
    tmp: &Path,
) -> anyhow::Result<Vec<Found>> {
    let d = crate::backup::found::candidates(path, report, &cfg.backup_dir, tmp)?;
    ui::backups::notes(&d.notes);
    Ok(d.found)
}

/// Runs `undo`'s steps in order, each planned on the card as the step before left it: a
/// dry run shows the first step only.
pub(in crate::commands) fn undo(
    cli: &Cli,
    manifests: &Manifests,
    undo: &Undo,
    force: bool,
    wargs: &WriteArgs,
    path: &Path,
) -> anyhow::Result<Exit> {
    for id in &undo.ids {
        let code = undo_step(cli, manifests, id, force, wargs, path)?;
        if !Undo::go_on(code == Exit::Ok, wargs.dry_run) {
            if let Some(n) = undo.dry_run_note(wargs.dry_run) {
                output::note(n);
            }
            return Ok(code);
        }
    }
    Ok(Exit::Ok)
}

/// One step of [`undo`]: the card read again, backup `id` found among its candidates, put back.
fn undo_step(
    cli: &Cli,
    manifests: &Manifests,
    id: &str,
    force: bool,
    wargs: &WriteArgs,
    target: &Path,
) -> anyhow::Result<Exit> {
    let cfg = super::config()?;
    let (path, report) = super::prepare(cli, manifests, Some(target), true)?;
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let all = candidates(&path, &report, &cfg, tmp.path())?;
    let chosen = change::rollback::find(all, id, &cfg.backup_dir)?;
    put_back(
        cli,
        manifests,
        &path,
        &report,
        &chosen,
        force,
        wargs,
        &cfg,
        tmp.path(),
    )
}

/// Puts the backup `chosen` back on `path` ([`change::rollback::plan`]): table sectors through
/// the table writer's rendering, files through [`execute`], then what follows a file restore
/// ([`change::rollback::finish`]). Old contents are unpacked into `tmp`.
#[allow(clippy::too_many_arguments)]
pub(in crate::commands) fn put_back(
    cli: &Cli,
    manifests: &Manifests,
    path: &Path,
    report: &Report,
    chosen: &Found,
    force: bool,
    wargs: &WriteArgs,
    cfg: &Config,
    tmp: &Path,
) -> anyhow::Result<Exit> {
    if let Some(n) = change::rollback::root_note(chosen) {
        output::note(n);
    }
    let files = match change::rollback::plan(chosen, report, tmp, force)? {
        change::rollback::Plan::Tables(backup) => {
            return super::partition::rollback_tables(
                cli.json, path, report, &backup, force, wargs, cfg,
            );
        }
        change::rollback::Plan::Files(files) => files,
    };
    let mut files = files;
    for n in &files.notes {
        output::note(format_args!("note: {n}"));
    }
    let req = Request {
        title: format!("Roll back to before {}", files.id),
        kind: ChangeKind::Rollback,
        changes: std::mem::take(&mut files.changes),
        boot_critical: change::BootSet::of_card(report, manifests),
        backup: true,
        card_copy: false,
        provenance: None,
    };
    let code = execute(cli.json, path, report, req, wargs, cfg)?;
    if code != Exit::Ok || wargs.dry_run {
        return Ok(code);
    }
    change::rollback::finish(path, report, &files)?;
    Ok(Exit::Ok)
}
