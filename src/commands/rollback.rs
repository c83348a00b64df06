//! `pifw backups`, `pifw rollback` and `pifw recover`: the ways back.
//!
//! Backups live in two places (see [`crate::backup`]): the backup directory of the machine
//! running pifw, and the card's own firmware partition (`pifw-backup-<id>.zip` in its root),
//! so a card can be rolled back from any machine. Only this card's backups count (see
//! [`super::change::all_backups`]). Which backup `rollback` uses, the checks that the card
//! still holds what the change left (else, for a backup named with `--to`, it wants
//! `--force`), and whether it goes back through the table writer are the domain's
//! ([`crate::change::rollback`]); the restore runs through the same change path as every
//! update ([`super::change::put_back`]): plan, confirm, back up the current state (a rollback
//! can itself be rolled back), apply, verify.

use super::Exit;
use super::change::{self, all_backups, candidates};
use super::{config, prepare};
use crate::change::rollback::{self as plan, Choice, Undo};
use crate::cli::{Cli, WriteArgs};
use crate::manifest::Manifests;
use crate::ui;
use anyhow::Context;
use std::path::Path;

pub fn backups(
    cli: &Cli,
    manifests: &Manifests,
    prune: bool,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, false)?;
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let mut all = all_backups(&path, &report, &cfg, tmp.path())?;
    if prune {
        let doomed = plan::prune(&all, cfg.keep_backups);
        for p in &doomed {
            std::fs::remove_file(p).with_context(|| format!("deleting {}", p.display()))?;
            ui::backups::deleted(p, &cfg);
        }
        if doomed.is_empty() {
            ui::backups::nothing_to_prune(&cfg);
        }
        plan::after_prune(&mut all, cfg.keep_backups);
    }
    ui::backups::listing(cli.json, &all, &path, &cfg)?;
    Ok(Exit::Ok)
}

pub fn rollback(
    cli: &Cli,
    manifests: &Manifests,
    to: Option<&str>,
    force: bool,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, true)?;
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let all = match to {
        Some(_) => candidates(&path, &report, &cfg, tmp.path())?,
        None => all_backups(&path, &report, &cfg, tmp.path())?,
    };
    match plan::choose(all, to, &path, &report, &cfg.backup_dir, tmp.path())? {
        Choice::Run(ids) => {
            crate::ui::output::note(plan::run_note(&ids));
            drop(tmp);
            change::undo(cli, manifests, &Undo { ids }, force, wargs, &path)
        }
        Choice::One(chosen) => change::put_back(
            cli,
            manifests,
            &path,
            &report,
            &chosen,
            force,
            wargs,
            &cfg,
            tmp.path(),
        ),
    }
}

pub fn recover(
    cli: &Cli,
    manifests: &Manifests,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    // No structural refusal here: a card with an interrupted change is what this command is for.
    let (path, report) = prepare(cli, manifests, target, false)?;
    let found = plan::interrupted(&path, &report)?;
    let out = ui::backups::recover_plan(cli.json, &path, &found, wargs.dry_run)?;
    if found.needed.is_none() || wargs.dry_run {
        ui::backups::recover_ends(cli.json, &out, found.needed.is_none())?;
        return Ok(Exit::Ok);
    }
    ui::prompt::confirm(wargs, &path)?;
    let outcome = plan::recover(&path, &report)?;
    ui::backups::recovered(cli.json, out, outcome)?;
    Ok(Exit::Ok)
}
