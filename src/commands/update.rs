//! `pifw update-firmware` and `pifw update-uboot`.

use super::change::{self, Request};
use super::status::{inspect_path, pick_target};
use super::{Exit, UsageError};
use crate::backup::ChangeKind;
use crate::cli::{Cli, FetchArgs, WriteArgs};
use crate::config::{Config, Env};
use crate::disk::host::Host;
use crate::fetch::{self, FetchOptions};
use crate::finding::Severity;
use crate::manifest::{Board, Manifests, Release, ReleaseKind};
use crate::status::Report;
use crate::txn::{FileChange, NewContent};
use crate::update::{self, Install};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// Finding codes that mean the card's structure cannot be trusted for writing.
const STRUCTURAL: [&str; 9] = [
    "mbr-",
    "gpt-",
    "protective-",
    "hybrid-drift",
    "fat-",
    "firmware-fat",
    "firmware-unreadable",
    "no-partition",
    "no-firmware",
];

/// `--backup-dir` for this run, set once by [`super::run`] before any command reads the
/// configuration.
static BACKUP_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `dir` (absolute from here) the backup directory of this run, over the
/// configuration's `backup_dir`.
pub fn set_backup_dir(dir: &Path) -> anyhow::Result<()> {
    let abs =
        std::path::absolute(dir).with_context(|| format!("--backup-dir {}", dir.display()))?;
    let _ = BACKUP_DIR.set(abs);
    Ok(())
}

/// The configuration, with `--backup-dir` (this run only) over the file's `backup_dir`.
pub fn config() -> anyhow::Result<Config> {
    let mut cfg = Config::load(&Env::from_process()).context("reading the configuration file")?;
    if let Some(dir) = BACKUP_DIR.get() {
        cfg.backup_dir = dir.clone();
    }
    Ok(cfg)
}

/// The target to change and what is on it; refuses a card whose structure is damaged.
pub fn prepare(
    cli: &Cli,
    manifests: &Manifests,
    target: Option<&Path>,
    strict: bool,
) -> anyhow::Result<(PathBuf, Report)> {
    let host = Host::system();
    let path = match target {
        Some(p) => p.to_path_buf(),
        None => pick_target(&host, manifests)?,
    };
    let report = inspect_path(&path, manifests, &host, cli.board.as_deref())?;
    let broken: Vec<String> = report
        .findings
        .iter()
        .filter(|_| strict)
        .filter(|f| f.severity == Severity::Error)
        .filter(|f| STRUCTURAL.iter().any(|p| f.code.starts_with(p)))
        .map(|f| format!("{} ({})", f.message, f.code))
        .collect();
    if !broken.is_empty() {
        bail!(
            "refusing to change {}: {}. Nothing was written; see pifw status",
            path.display(),
            broken.join("; ")
        );
    }
    Ok((path, report))
}

pub(super) fn fetch_options(cfg: &Config, args: &FetchArgs) -> FetchOptions {
    let mut opts = FetchOptions::new(&cfg.cache_dir);
    opts.offline = args.offline;
    opts.debian_mirror = args
        .debian_mirror
        .clone()
        .or_else(|| cfg.debian_mirror.clone())
        .or_else(|| fetch::debian_mirror_from_apt(Path::new("/")));
    opts
}

/// Where the files of an update come from when not from the manifests' own sources.
struct Sourced {
    local: fetch::LocalArtifacts,
    /// How errors name it: `--from PATH`, `the Debian archive (trixie)`.
    label: String,
    /// `--from-debian`: the release resolved, the manifests extended by it, and how it was
    /// verified.
    archive: Option<crate::debian_source::ArchiveSource>,
}

impl Sourced {
    fn local(&self) -> &fetch::LocalArtifacts {
        match &self.archive {
            Some(a) => &a.local,
            None => &self.local,
        }
    }
}

/// Reads `--from` once, when given, or resolves `--from-debian` (the newest release of `kind`
/// in that suite of the Debian archive, verified with the keyring).
fn read_from(
    cfg: &Config,
    args: &FetchArgs,
    manifests: &Manifests,
    kind: ReleaseKind,
) -> anyhow::Result<Option<Sourced>> {
    let opts = fetch_options(cfg, args);
    if let Some(suite) = &args.from_debian {
        let Some(mirror) = opts.debian_mirror.clone() else {
            bail!(
                "--from-debian needs a Debian mirror: pass --mirror URL (the directory that holds dists/ and pool/), set debian_mirror in the config file, or add a Debian archive to the apt sources; nothing was written"
            );
        };
        let keyring = args.keyring.clone().unwrap_or_else(|| cfg.keyring.clone());
        let req = crate::debian_source::ArchiveRequest {
            mirror: &mirror,
            suite,
            keyring: &keyring,
        };
        let got = crate::debian_source::resolve(
            &opts,
            manifests,
            kind,
            &req,
            &mut super::progress::Download::new(),
        )
        .with_context(|| {
            format!(
                "resolving {} from the Debian archive {mirror} ({suite}, keyring {}); nothing was written",
                kind.as_str(),
                keyring.display()
            )
        })?;
        super::output::note(got.provenance.describe());
        return Ok(Some(Sourced {
            local: fetch::LocalArtifacts::default(),
            label: format!(
                "the Debian archive's {} {} ({suite})",
                got.provenance.package, got.provenance.version
            ),
            archive: Some(got),
        }));
    }
    let Some(from) = &args.from else {
        return Ok(None);
    };
    let local = fetch::from_path(from, manifests, &opts)
        .with_context(|| format!("reading --from {}", from.display()))?;
    Ok(Some(Sourced {
        local,
        label: format!("--from {}", from.display()),
        archive: None,
    }))
}

/// The version `--from-debian` resolved; a VERSION given as well must name the same release.
fn archive_version(src: &Sourced, asked: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(a) = &src.archive else {
        return Ok(None);
    };
    match a.version_for(asked) {
        Ok(v) => Ok(Some(v)),
        Err(e) => bail!("{}: {e}; nothing was written", src.label),
    }
}

/// The version to install when none was given but `--from` was: the newest release of `kind`
/// whose pins the `--from` files match.
fn version_from(local: &fetch::LocalArtifacts, kind: ReleaseKind) -> Option<String> {
    local
        .artifacts
        .iter()
        .flat_map(|a| a.matches.iter())
        .filter(|m| m.kind == kind)
        .map(|m| m.version.clone())
        .max_by(|a, b| {
            match (
                crate::manifest::version_key(a),
                crate::manifest::version_key(b),
            ) {
                (Ok(a), Ok(b)) => a.cmp_precedence(&b),
                _ => a.cmp(b),
            }
        })
}

/// Local, verified copies of the files `installs` need: from `--from`, else the cache or the
/// release's sources.
fn obtain(
    cfg: &Config,
    args: &FetchArgs,
    src: Option<&Sourced>,
    release: &Release,
    installs: &[Install],
) -> anyhow::Result<Vec<PathBuf>> {
    if let Some(src) = src {
        let local = src.local();
        let mut paths = Vec::new();
        for i in installs {
            let Some(a) = local.find(&i.file.sha256) else {
                bail!(
                    "{} has no file with the pinned content of {} ({}, sha256 {}); it holds: {}. Nothing was written",
                    src.label,
                    i.dest,
                    release.label(),
                    i.file.sha256,
                    local.describe_contents(6)
                );
            };
            paths.push(a.path.clone());
        }
        return Ok(paths);
    }
    let opts = fetch_options(cfg, args);
    let files: Vec<&crate::manifest::ReleaseFile> = installs.iter().map(|i| &i.file).collect();
    let got = fetch::obtain(
        &opts,
        release,
        &files,
        &mut super::progress::Download::new(),
    )
    .with_context(|| format!("obtaining {}", release.label()))?;
    Ok(got.into_iter().map(|(_, v)| v.path).collect())
}

/// The file changes that install `installs`: refused as a downgrade unless allowed; files the
/// card already has are left out; the rest obtained (from `--from`, the cache, or the
/// release's sources) and verified.
fn install_changes(
    cfg: &Config,
    fargs: &FetchArgs,
    local: Option<&Sourced>,
    release: &Release,
    installs: &[Install],
) -> anyhow::Result<Vec<FileChange>> {
    update::check_downgrade(installs, release, fargs.allow_downgrade)?;
    let pending: Vec<Install> = installs
        .iter()
        .filter(|i| !i.unchanged())
        .cloned()
        .collect();
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let paths = obtain(cfg, fargs, local, release, &pending)?;
    Ok(changes(&pending, paths))
}

fn changes(installs: &[Install], paths: Vec<PathBuf>) -> Vec<FileChange> {
    installs
        .iter()
        .zip(paths)
        .map(|(i, p)| FileChange {
            path: i.dest.clone(),
            content: NewContent::Path(p),
            sha256: i.file.sha256.clone(),
            size: i.file.size,
        })
        .collect()
}

/// The card's boot set ([`crate::change::BootSet::of_card`]).
pub(super) fn boot_set(report: &Report, manifests: &Manifests) -> crate::change::BootSet {
    crate::change::BootSet::of_card(report, manifests)
}

fn versions_now(installs: &[Install]) -> String {
    let mut v: Vec<String> = installs
        .iter()
        .map(|i| {
            i.current
                .as_ref()
                .map(|c| c.version.clone().unwrap_or_else(|| "unknown".into()))
                .unwrap_or_else(|| "absent".into())
        })
        .collect();
    v.sort();
    v.dedup();
    v.join("/")
}

pub fn firmware(
    cli: &Cli,
    manifests: &Manifests,
    version: Option<&str>,
    fargs: &FetchArgs,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, true)?;
    // Without --board, every firmware file already on the card is updated, not only those of
    // the boards whose chain the card serves: a card left with start4.elf from one release and
    // start.elf from another is a trap for whoever moves it to a Pi 4 later.
    let boards: Vec<&Board> = if report.board.id().is_some() {
        update::target_boards(&report, manifests)
    } else {
        manifests.boards.iter().collect()
    };
    let src = read_from(&cfg, fargs, manifests, ReleaseKind::Firmware)?;
    let manifests = src
        .as_ref()
        .and_then(|s| s.archive.as_ref())
        .map_or(manifests, |a| &a.manifests);
    let from_archive = match &src {
        Some(s) => archive_version(s, version)?,
        None => None,
    };
    let version = match (from_archive, version, &src) {
        (Some(v), _, _) => Some(v),
        (None, Some(v), _) => Some(v.to_string()),
        (None, None, Some(s)) => Some(version_from(s.local(), ReleaseKind::Firmware).ok_or_else(|| {
            anyhow::anyhow!(
                "--from holds no Pi firmware file pinned in the manifests (pifw manifests list shows the releases); nothing was written"
            )
        })?),
        (None, None, None) => None,
    };
    let release = update::choose_release(
        manifests,
        ReleaseKind::Firmware,
        version.as_deref(),
        &boards,
    )?;
    allowed_issues(update::check_known_issues(
        &report,
        manifests,
        ReleaseKind::Firmware,
        &release.version,
        &boards,
        &fargs.allow_known_issue,
    )?);
    let installs = update::firmware_installs(&report, release, &boards);
    if installs.is_empty() {
        bail!(
            "the card has none of the files of {} for its boards; nothing was written",
            release.label()
        );
    }
    let changes = install_changes(&cfg, fargs, src.as_ref(), release, &installs)?;
    let req = Request {
        provenance: provenance(src.as_ref()),
        kind: ChangeKind::UpdateFirmware,
        title: format!(
            "Pi firmware {} -> {} ({} files)",
            versions_now(&installs),
            release.version,
            installs.len()
        ),
        changes,
        boot_critical: boot_set(&report, manifests),
        backup: true,
        card_copy: true,
    };
    change::execute(cli.json, &path, &report, req, wargs, &cfg)
}

/// The boards `update-uboot` works for: the one chosen, else one per U-Boot chain the card
/// serves (a NixOS card has one for the Pi 3 family and one for the Pi 4 family).
fn uboot_boards<'a>(report: &Report, manifests: &'a Manifests) -> Vec<&'a Board> {
    if let Some(b) = report.board.id().and_then(|id| manifests.board(id)) {
        return vec![b];
    }
    report
        .chains
        .iter()
        .filter(|c| c.complete && c.kind == crate::status::ChainKind::UBoot)
        .filter_map(|c| c.boards.first())
        .filter_map(|id| manifests.board(id))
        .collect()
}

pub fn uboot(
    cli: &Cli,
    manifests: &Manifests,
    version: Option<&str>,
    fargs: &FetchArgs,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, true)?;
    let boards = uboot_boards(&report, manifests);
    if boards.is_empty() {
        return Err(UsageError(
            "no board on this card boots U-Boot; pass --board to say which board should".into(),
        )
        .into());
    }
    let src = read_from(&cfg, fargs, manifests, ReleaseKind::UBoot)?;
    let manifests = src
        .as_ref()
        .and_then(|s| s.archive.as_ref())
        .map_or(manifests, |a| &a.manifests);
    let from_archive = match &src {
        Some(s) => archive_version(s, version)?,
        None => None,
    };
    let inferred = src
        .as_ref()
        .and_then(|s| version_from(s.local(), ReleaseKind::UBoot));
    if let (Some(s), None, None, None) = (&src, version, &inferred, &from_archive) {
        return unpinned_uboot(
            cli,
            manifests,
            &cfg,
            fargs,
            wargs,
            &path,
            &report,
            &boards,
            s.local(),
        );
    }
    let version = from_archive.or(version.map(str::to_string)).or(inferred);
    let release =
        update::choose_release(manifests, ReleaseKind::UBoot, version.as_deref(), &boards)?;
    allowed_issues(update::check_known_issues(
        &report,
        manifests,
        ReleaseKind::UBoot,
        &release.version,
        &boards,
        &fargs.allow_known_issue,
    )?);
    let mut installs: Vec<Install> = Vec::new();
    let mut by_board: Vec<(&str, Install)> = Vec::new();
    for b in &boards {
        let (install, _) = update::uboot_install(&report, release, b)?;
        by_board.push((&b.id, install.clone()));
        if !installs
            .iter()
            .any(|i| i.dest.eq_ignore_ascii_case(&install.dest))
        {
            installs.push(install);
        }
    }
    if let Some(s) = &src
        && let Some(hint) = update::board_hint(&by_board, |sha| s.local().find(sha).is_some())
    {
        bail!("{}: {hint}; nothing was written", s.label);
    }
    let config_change = kernel_edits(&path, &report, &boards)?;
    let changes = install_changes(&cfg, fargs, src.as_ref(), release, &installs)?;
    let mut ch = changes;
    ch.extend(config_change);
    let req = Request {
        provenance: provenance(src.as_ref()),
        kind: ChangeKind::UpdateUboot,
        title: format!(
            "U-Boot {} -> {} ({})",
            versions_now(&installs),
            release.version,
            installs
                .iter()
                .map(|i| format!("{} {}", i.dest, i.file.build.as_deref().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        changes: ch,
        boot_critical: boot_set(&report, manifests),
        backup: true,
        card_copy: true,
    };
    change::execute(cli.json, &path, &report, req, wargs, &cfg)
}

/// config.txt pointed at each board's U-Boot where it does not hand over to one yet; every
/// other line stays as it is.
fn kernel_edits(
    path: &Path,
    report: &Report,
    boards: &[&Board],
) -> anyhow::Result<Option<FileChange>> {
    let mut text: Option<String> = None;
    let mut changed = false;
    for b in boards {
        let (dest, edit_needed) = update::uboot_dest(report, b);
        if !edit_needed {
            continue;
        }
        let current = match text.take() {
            Some(t) => t,
            None => read_config(path, report)?,
        };
        let filters: Vec<&str> = b.config_filters.iter().map(String::as_str).collect();
        let edit = crate::configtxt::edit::set_kernel_for(&current, &filters, "kernel", &dest)
            .with_context(|| format!("pointing config.txt's kernel= at {dest} for {}", b.id))?;
        if edit.changed {
            super::output::note(format_args!("config.txt: {}", edit.description));
            changed = true;
            text = Some(edit.new_text);
        } else {
            text = Some(current);
        }
    }
    let Some(text) = text.filter(|_| changed) else {
        return Ok(None);
    };
    let bytes = text.into_bytes();
    let (sha256, size) = fetch::hash_reader(&mut &bytes[..])?;
    Ok(Some(FileChange {
        path: "config.txt".into(),
        content: NewContent::Bytes(bytes),
        sha256,
        size,
    }))
}

/// `--from` a U-Boot no manifest pins (a user's own build, e.g. from `nix build`): accepted
/// only with `--allow-unpinned`, and only if its content is recognisably U-Boot.
#[allow(clippy::too_many_arguments)]
fn unpinned_uboot(
    cli: &Cli,
    manifests: &Manifests,
    cfg: &Config,
    fargs: &FetchArgs,
    wargs: &WriteArgs,
    path: &Path,
    report: &Report,
    boards: &[&Board],
    local: &fetch::LocalArtifacts,
) -> anyhow::Result<Exit> {
    let from = fargs.from.as_deref().unwrap_or(Path::new("?"));
    let mut found = Vec::new();
    for a in &local.artifacts {
        let f = std::fs::File::open(&a.path)
            .with_context(|| format!("reading {}", a.path.display()))?;
        if let crate::probe::Probe::UBoot { version } = crate::probe::probe(f)? {
            found.push((a, version));
        }
    }
    if found.is_empty() {
        bail!(
            "--from {} holds no U-Boot (no U-Boot version banner found); nothing was written",
            from.display()
        );
    }
    // One build for every board; several (an sd-image's u-boot-rpi3.bin and u-boot-rpi4.bin)
    // each to the card file of the same name.
    let mut picks: Vec<(String, &fetch::LocalArtifact, String)> = Vec::new();
    for b in boards {
        let (dest, _) = update::uboot_dest(report, b);
        if picks.iter().any(|(d, _, _)| d.eq_ignore_ascii_case(&dest)) {
            continue;
        }
        let Some((artifact, uversion)) =
            update::pick_by_name(&found, |(a, _)| a.file_name(), &dest)
        else {
            bail!(
                "--from {} holds {} U-Boot builds, none named {dest} and none pinned in the manifests; name the one file to install (nothing was written)",
                from.display(),
                found.len()
            );
        };
        if !fargs.allow_unpinned {
            bail!(
                "{} ({uversion}, sha256 {}) matches no pin in the manifests, so pifw cannot vouch for it; pass --allow-unpinned to install it anyway (the backup records the command) — nothing was written",
                artifact.name,
                artifact.sha256
            );
        }
        allowed_issues(update::check_known_issues(
            report,
            manifests,
            ReleaseKind::UBoot,
            uversion,
            &[*b],
            &fargs.allow_known_issue,
        )?);
        picks.push((dest, artifact, uversion.clone()));
    }
    let mut versions: Vec<&str> = picks.iter().map(|(_, _, v)| v.as_str()).collect();
    versions.dedup();
    let uversion = versions.join("/");
    let mut ch: Vec<FileChange> = picks
        .iter()
        .map(|(dest, artifact, _)| FileChange {
            path: dest.clone(),
            content: NewContent::Path(artifact.path.clone()),
            sha256: artifact.sha256.clone(),
            size: artifact.size,
        })
        .collect();
    ch.extend(kernel_edits(path, report, boards)?);
    let req = Request {
        provenance: None,
        kind: ChangeKind::UpdateUboot,
        title: format!(
            "U-Boot -> {uversion}, unpinned, from {} ({})",
            from.display(),
            ch.iter()
                .map(|c| c.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        changes: ch,
        boot_critical: boot_set(report, manifests),
        backup: true,
        card_copy: true,
    };
    change::execute(cli.json, path, report, req, wargs, cfg)
}

/// How the files were verified, for the plan, `--json` and the backup: set only for a release
/// resolved through the Debian archive.
fn provenance(src: Option<&Sourced>) -> Option<fetch::ArchiveProvenance> {
    src.and_then(|s| s.archive.as_ref())
        .map(|a| a.provenance.clone())
}

/// Says on stderr which known issues `--allow-known-issue` let through.
fn allowed_issues(lines: Vec<String>) {
    for l in lines {
        eprintln!("warning: allowed by --allow-known-issue: {l}");
    }
}

fn read_config(path: &Path, report: &Report) -> anyhow::Result<String> {
    let bytes = change::read_card_file(path, report, "config.txt", 256 * 1024)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
