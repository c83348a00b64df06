//! Deciding what an update installs: which release, which of its files, under which names.
//!
//! Pure: works on a status [`Report`] (what is on the card) and the manifests, and returns the
//! list of files to install. It never reads the card, downloads, or writes; the command layer
//! feeds the result to the fetcher and the transaction engine.
//!
//! Rules (issue "crash-safe changes"):
//! - Firmware: the release's files for the boards the card serves, under the names the card
//!   already uses, plus any file the boot chain needs that the card lacks. config.txt,
//!   cmdline.txt and every file pifw does not manage are left alone.
//! - U-Boot: the board's build, installed under the name config.txt's `kernel=` gives it for
//!   that board. The build already on the card is kept (an `rpi_3` stays `rpi_3`) when the
//!   release has it; otherwise the board's preferred build.
//! - Going to an older version than the one installed is a downgrade and needs an explicit
//!   permission.

use crate::fetch::ArchiveProvenance;
use crate::manifest::{
    Board, BootComponents, ManifestError, Manifests, Release, ReleaseFile, ReleaseKind, Source,
    SourceKind,
};
use crate::status::{FileReport, Report};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("no {kind} release in the manifests serves {boards}")]
    NoRelease { kind: &'static str, boards: String },
    #[error(
        "{what} would go from {from} to the older {to}; pass --allow-downgrade if that is what you want"
    )]
    Downgrade {
        what: String,
        from: String,
        to: String,
    },
    #[error(
        "release {release} pins none of its files, so pifw cannot verify what it would install"
    )]
    MembersNotPinned { release: String },
    #[error("the {release} release has no U-Boot build for {board} (it has: {builds})")]
    NoBuild {
        release: String,
        board: String,
        builds: String,
    },
    #[error(
        "no release of {kind} in the manifests comes from a Debian package, so pifw does not \
         know which members of {package} to install"
    )]
    NoArchiveTemplate { kind: &'static str, package: String },
    #[error(
        "{package} {version} from the Debian archive has none of the files pifw installs \
         from it ({expected}); nothing was written"
    )]
    NoArchiveMembers {
        package: String,
        version: String,
        expected: String,
    },
    #[error("the card serves no board pifw knows; pass --board")]
    NoBoard,
    #[error(
        "this change would make a combination known not to boot:{}\npass {} to go ahead \
         anyway (nothing was written)",
        issues.iter().map(|i| format!("\n  - {i}")).collect::<String>(),
        ids.iter().map(|id| format!("--allow-known-issue {id}")).collect::<Vec<_>>().join(" ")
    )]
    KnownIssue {
        /// One line per match: what, where, the reference and the fix.
        issues: Vec<String>,
        ids: Vec<String>,
    },
}

/// One file to put on the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Install {
    /// Path on the firmware partition (the name the card uses, which may differ from the
    /// release's name for the file).
    pub dest: String,
    pub file: ReleaseFile,
    /// What the card has there now.
    pub current: Option<Current>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Current {
    pub size: u64,
    pub sha256: String,
    /// The release version it was identified as, if any.
    pub version: Option<String>,
}

impl Install {
    /// The card already holds exactly these bytes.
    pub fn unchanged(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.sha256 == self.file.sha256)
    }
}

/// The boards an update applies to: the one chosen, else every board whose boot chain the card
/// serves completely.
pub fn target_boards<'a>(report: &Report, manifests: &'a Manifests) -> Vec<&'a Board> {
    let ids: Vec<&str> = match report.board.id() {
        Some(id) => vec![id],
        None => report
            .chains
            .iter()
            .filter(|c| c.complete)
            .flat_map(|c| c.boards.iter().map(String::as_str))
            .collect(),
    };
    ids.into_iter()
        .filter_map(|id| manifests.board(id))
        .collect()
}

/// The boards `update-uboot` works for: the one chosen, else one per U-Boot chain the card
/// serves (a NixOS card has one for the Pi 3 family and one for the Pi 4 family).
pub fn uboot_boards<'a>(report: &Report, manifests: &'a Manifests) -> Vec<&'a Board> {
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

/// The versions `installs` replace, as a plan's title says them: `2023.01/absent`.
pub fn versions_now(installs: &[Install]) -> String {
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

/// The release to install: `version` if given, else the newest of `kind` whose files serve one
/// of `boards` and are pinned.
pub fn choose_release<'a>(
    manifests: &'a Manifests,
    kind: ReleaseKind,
    version: Option<&str>,
    boards: &[&Board],
) -> Result<&'a Release, UpdateError> {
    let release = match version {
        Some(v) => manifests.release(kind, v)?,
        None => manifests
            .releases_of(kind)
            .into_iter()
            .find(|r| {
                r.members_pinned
                    && boards
                        .iter()
                        .any(|b| r.files.iter().any(|f| f.serves(&b.id)))
            })
            .ok_or_else(|| UpdateError::NoRelease {
                kind: kind.as_str(),
                boards: board_list(boards),
            })?,
    };
    if !release.members_pinned || release.files.is_empty() {
        return Err(UpdateError::MembersNotPinned {
            release: release.label(),
        });
    }
    Ok(release)
}

fn board_list(boards: &[&Board]) -> String {
    if boards.is_empty() {
        return "any board on this card".into();
    }
    boards
        .iter()
        .map(|b| b.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn current(report: &Report, dest: &str) -> Option<Current> {
    let f: &FileReport = report.card_file(dest)?;
    Some(Current {
        size: f.size,
        sha256: f.sha256.clone(),
        version: f.identified.as_ref().map(|i| i.version.clone()),
    })
}

/// The card's name for `name`, matching case-insensitively like the firmware does.
fn card_name(report: &Report, name: &str) -> Option<String> {
    report.card_file(name).map(|f| f.path.clone())
}

/// Files a chain names (start/fixup/bootcode) that must be on the card for `boards`.
fn chain_files(report: &Report, boards: &[&Board]) -> Vec<String> {
    report
        .chains
        .iter()
        .filter(|c| boards.iter().any(|b| c.boards.contains(&b.id)))
        .flat_map(|c| c.stages.iter())
        .filter(|s| matches!(s.role, "bootcode" | "start" | "fixup"))
        .filter_map(|s| s.file.clone())
        .collect()
}

/// Which firmware files to install for `boards`.
pub fn firmware_installs(report: &Report, release: &Release, boards: &[&Board]) -> Vec<Install> {
    let needed = chain_files(report, boards);
    let mut out: Vec<Install> = Vec::new();
    for f in &release.files {
        if !boards.iter().any(|b| f.serves(&b.id)) {
            continue;
        }
        let on_card = card_name(report, &f.dest);
        let required = needed.iter().any(|n| n.eq_ignore_ascii_case(&f.dest));
        if on_card.is_none() && !required {
            continue;
        }
        let dest = on_card.unwrap_or_else(|| f.dest.clone());
        out.push(Install {
            current: current(report, &dest),
            dest,
            file: f.clone(),
        });
    }
    out.sort_by(|a, b| a.dest.cmp(&b.dest));
    out.dedup_by(|a, b| a.dest.eq_ignore_ascii_case(&b.dest));
    out
}

/// Where `board`'s U-Boot goes on the card: the file its U-Boot chain's `kernel=` names, else
/// (second value true: config.txt must be edited to point at it) the board's conventional
/// name ([`Board::uboot_file`]) or `u-boot.bin`.
pub fn uboot_dest(report: &Report, board: &Board) -> (String, bool) {
    let chain = report.chains.iter().find(|c| c.boards.contains(&board.id));
    let kernel = chain
        .filter(|c| c.kind == crate::status::ChainKind::UBoot)
        .and_then(|c| c.stages.iter().find(|s| s.role == "kernel"))
        .and_then(|s| s.file.clone());
    match kernel {
        Some(k) => (k, false),
        None => (
            board
                .uboot_file
                .clone()
                .unwrap_or_else(|| "u-boot.bin".to_string()),
            true,
        ),
    }
}

/// What `update-uboot` installs for `board`: the build, and the name on the card. `None` for
/// the name when config.txt does not hand this board to a U-Boot (the caller then edits
/// config.txt to point `kernel=` at [`Board::uboot_file`]).
pub fn uboot_install(
    report: &Report,
    release: &Release,
    board: &Board,
) -> Result<(Install, bool), UpdateError> {
    let (dest, kernel_edit_needed) = uboot_dest(report, board);
    // Keep the build the card runs today when the release has it.
    let installed_build = report
        .card_file(&dest)
        .and_then(|f| f.identified.as_ref())
        .and_then(|i| i.build.clone());
    let builds: Vec<&str> = installed_build
        .iter()
        .map(String::as_str)
        .chain(board.uboot_builds.iter().map(String::as_str))
        .collect();
    let file = builds
        .iter()
        .find_map(|b| {
            release.files.iter().find(|f| {
                f.build.as_deref() == Some(b)
                    && (f.serves(&board.id) || Some(*b) == installed_build.as_deref())
            })
        })
        .ok_or_else(|| UpdateError::NoBuild {
            release: release.label(),
            board: board.id.clone(),
            builds: release
                .files
                .iter()
                .filter_map(|f| f.build.clone())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    Ok((
        Install {
            current: current(report, &dest),
            dest,
            file: file.clone(),
        },
        kernel_edit_needed,
    ))
}

/// Refuses going back to an older release unless allowed. Files whose current version is
/// unknown (an unpinned build) cannot be compared and are let through.
pub fn check_downgrade(
    installs: &[Install],
    release: &Release,
    allow: bool,
) -> Result<(), UpdateError> {
    if allow {
        return Ok(());
    }
    let to = release.version_key()?;
    for i in installs {
        let Some(from) = i.current.as_ref().and_then(|c| c.version.as_deref()) else {
            continue;
        };
        let Ok(from_key) = crate::manifest::version_key(from) else {
            continue;
        };
        if from_key.cmp_precedence(&to).is_gt() {
            return Err(UpdateError::Downgrade {
                what: i.dest.clone(),
                from: from.to_string(),
                to: release.version.clone(),
            });
        }
    }
    Ok(())
}

/// Refuses a change that would make a known-bad combination ([`crate::manifest::KnownIssue`])
/// on one of `boards`: `component` going to `version` on each boot chain of the card that
/// serves one of them. Only matches the change creates count (a combination already on the
/// card is status's to report, and updating something else must stay possible); `allowed`
/// ids (`--allow-known-issue`) pass. Returns the allowed matches, for the caller to mention.
pub fn check_known_issues(
    report: &Report,
    manifests: &Manifests,
    component: ReleaseKind,
    version: &str,
    boards: &[&Board],
    allowed: &[String],
) -> Result<Vec<String>, UpdateError> {
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut let_through = Vec::new();
    for chain in &report.chains {
        for board in boards.iter().filter(|b| chain.boards.contains(&b.id)) {
            let before = BootComponents {
                board: board.id.clone(),
                versions: chain.components.clone(),
            };
            let mut after = before.clone();
            after.versions.insert(component, version.to_string());
            let existing = manifests.known_issues_for(&before);
            for issue in manifests.known_issues_for(&after) {
                if existing.iter().any(|e| e.id == issue.id) {
                    continue;
                }
                let line = format!("{}; fix: {}", issue.describe(&after), issue.fix);
                if allowed.contains(&issue.id) {
                    let_through.push(line);
                } else if !refused.iter().any(|(_, l)| *l == line) {
                    refused.push((issue.id.clone(), line));
                }
            }
        }
    }
    if refused.is_empty() {
        return Ok(let_through);
    }
    let mut ids: Vec<String> = refused.iter().map(|(id, _)| id.clone()).collect();
    ids.dedup();
    Err(UpdateError::KnownIssue {
        issues: refused.into_iter().map(|(_, l)| l).collect(),
        ids,
    })
}

/// When a source has the build for some of the boards an update serves but not for others
/// (Debian's `rpi_3` u-boot.bin handed to a NixOS card that also boots a Pi 4): the sentence
/// that names the builds it lacks and the `--board` that updates only what it has. `None`
/// when the source has all of them, or none (the generic "has no file" error says more then).
pub fn board_hint(by_board: &[(&str, Install)], has: impl Fn(&str) -> bool) -> Option<String> {
    type Pair<'a> = &'a (&'a str, Install);
    let (ok, missing): (Vec<Pair>, Vec<Pair>) =
        by_board.iter().partition(|(_, i)| has(&i.file.sha256));
    if ok.is_empty() || missing.is_empty() {
        return None;
    }
    let describe = |list: &[Pair]| {
        list.iter()
            .map(|(board, i)| {
                let build = i.file.build.as_deref().unwrap_or("?");
                format!("{board} ({build} build, {})", i.dest)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let boards: Vec<&str> = ok.iter().map(|(b, _)| *b).collect();
    let flag = match boards.as_slice() {
        [one] => format!("--board {one} updates only that build"),
        _ => format!(
            "--board with one of {} updates only that board's build",
            boards.join(", ")
        ),
    };
    Some(format!(
        "it holds the U-Boot for {} but not for {}; {flag}",
        describe(&ok),
        describe(&missing)
    ))
}

/// Which of the builds `found` in one source goes to the card file `dest`: the only one, else
/// the one with that file name, case-insensitively (an sd-image carries `u-boot-rpi3.bin` and
/// `u-boot-rpi4.bin` under the names its config.txt loads, as the card does).
pub fn pick_by_name<'a, T>(
    found: &'a [T],
    name_of: impl Fn(&T) -> &str,
    dest: &str,
) -> Option<&'a T> {
    match found {
        [one] => Some(one),
        _ => found.iter().find(|t| name_of(t).eq_ignore_ascii_case(dest)),
    }
}

/// The Debian package pifw takes a release of `kind` from, when it resolves one through a
/// Debian archive, and that package's archive component. Both are `arm64` packages in the
/// index pifw reads: u-boot-rpi is built per architecture (the arm64 package carries the
/// 64-bit rpi_3, rpi_4 and rpi_arm64 builds the manifests and boards know; the armhf one
/// carries 32-bit builds they do not), raspi-firmware is `Architecture: all` and listed in
/// every architecture's index.
pub fn archive_package(kind: ReleaseKind) -> Option<(&'static str, &'static str)> {
    match kind {
        ReleaseKind::UBoot => Some(("u-boot-rpi", "main")),
        ReleaseKind::Firmware => Some(("raspi-firmware", "non-free-firmware")),
        ReleaseKind::Uefi => None,
    }
}

/// The architecture of the index pifw resolves [`archive_package`]s in.
pub const ARCHIVE_ARCH: &str = "arm64";

/// The version a Debian package version stands for in the manifests: U-Boot releases carry the
/// Debian version itself (a Debian revision can change the bytes); firmware releases carry the
/// upstream tag (`1:1.20240424+ds-6` -> `1.20240424`), as `manifests/firmware.toml` does.
pub fn archive_version(kind: ReleaseKind, debian_version: &str) -> String {
    let v = debian_version
        .split_once(':')
        .map_or(debian_version, |(_, v)| v);
    match kind {
        ReleaseKind::Firmware => {
            let v = v.rsplit_once('-').map_or(v, |(up, _)| up);
            v.split('+').next().unwrap_or(v).to_string()
        }
        _ => v.to_string(),
    }
}

/// The release a package resolved through the Debian archive provides.
///
/// When the manifests already have the release of that version, it is returned as it is: its
/// pins, not the archive's, decide what is installed (a package whose members differ from
/// them is then refused like any other source). Otherwise the release is new to pifw: its
/// files are those of the newest release of `kind` that comes from a Debian package (same
/// names on the card, boards, builds, member paths), each pinned to the size and sha256 it
/// has in the verified `.deb` (`members`: member path, sha256, size). A file the template has
/// and the package lacks is left out; a package with none of them is refused.
pub fn archive_release(
    manifests: &Manifests,
    kind: ReleaseKind,
    provenance: &ArchiveProvenance,
    deb_size: u64,
    members: &[(String, String, u64)],
) -> Result<Release, UpdateError> {
    let version = archive_version(kind, &provenance.version);
    if let Some(r) = manifests
        .releases
        .iter()
        .find(|r| r.kind == kind && r.version == version)
    {
        return Ok(r.clone());
    }
    let template = manifests
        .releases_of(kind)
        .into_iter()
        .find(|r| {
            r.members_pinned
                && r.sources.iter().any(|s| s.kind == SourceKind::Deb)
                && !r.files.is_empty()
                && r.files.iter().all(|f| f.member.is_some())
        })
        .ok_or_else(|| UpdateError::NoArchiveTemplate {
            kind: kind.as_str(),
            package: provenance.package.clone(),
        })?;
    let files: Vec<ReleaseFile> = template
        .files
        .iter()
        .filter_map(|f| {
            let member = f.member.as_deref()?;
            let (_, sha256, size) = members.iter().find(|(m, _, _)| m == member)?;
            Some(ReleaseFile {
                size: *size,
                sha256: sha256.clone(),
                ..f.clone()
            })
        })
        .collect();
    if files.is_empty() {
        return Err(UpdateError::NoArchiveMembers {
            package: provenance.package.clone(),
            version: provenance.version.clone(),
            expected: template
                .files
                .iter()
                .filter_map(|f| f.member.clone())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(Release {
        kind,
        version,
        flavour: template.flavour.clone(),
        project: None,
        description: format!(
            "Debian {} {} ({}), {}",
            provenance.package,
            provenance.version,
            provenance.suite,
            provenance.describe()
        ),
        members_pinned: true,
        note: Some(
            "resolved from the Debian archive at run time; not in pifw's manifests".to_string(),
        ),
        files,
        sources: vec![Source {
            kind: SourceKind::Deb,
            location: provenance.filename.clone(),
            sha256: Some(provenance.deb_sha256.clone()),
            size: Some(deb_size),
            provenance: provenance.describe(),
            verified: true,
            verified_on: None,
        }],
        origin: format!(
            "Debian archive {} {} ({})",
            provenance.suite, provenance.component, provenance.mirror
        ),
    })
}

#[cfg(test)]
mod archive_tests {
    use super::*;

    #[test]
    fn archive_versions_follow_the_manifests_convention() {
        assert_eq!(
            archive_version(ReleaseKind::Firmware, "1:1.20240424+ds-6"),
            "1.20240424"
        );
        assert_eq!(
            archive_version(ReleaseKind::Firmware, "1.20250430-1"),
            "1.20250430"
        );
        assert_eq!(
            archive_version(ReleaseKind::UBoot, "2025.01-3+deb13u1"),
            "2025.01-3+deb13u1"
        );
    }
}
