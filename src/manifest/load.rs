//! Reading manifest files: TOML parsing, schema check, and the cross-file validation.
//!
//! Owns the file format. Every error names the file and a line: for TOML and schema errors the
//! line of the offending key (from the parser's byte span), for validation errors the line of the
//! `[[board]]` or `[[release]]` table at fault. It never touches the network or the card.
//!
//! File format (every table rejects unknown keys):
//!
//! ```toml
//! schema = 1                # required, first thing checked
//!
//! [[board]]                 # zero or more; see `Board`
//! id = "pi3b"
//! ...
//!
//! [[release]]               # zero or more; see `Release`
//! kind = "firmware"         # firmware | u-boot | uefi
//! ...
//! [[release.source]]        # one or more
//! [[release.file]]          # pinned files (none when `members_pinned = false`)
//!
//! [[known_issue]]           # zero or more; see `known::KnownIssue`
//! ```

use super::known::{self, KnownIssue};
use super::{Board, ManifestError, Manifests, Release, ReleaseKind, SourceKind, version_key};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use toml::Spanned;

/// The manifest schema version this build reads.
pub const SCHEMA: i64 = 1;

/// Reads only `schema`, so a file written for a later schema is reported as such instead of as
/// a pile of unknown fields.
#[derive(Deserialize)]
struct SchemaProbe {
    schema: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[allow(dead_code)] // checked through `SchemaProbe`; present so the key is not unknown
    schema: i64,
    #[serde(default)]
    board: Vec<Spanned<Board>>,
    #[serde(default)]
    release: Vec<Spanned<Release>>,
    #[serde(default)]
    known_issue: Vec<Spanned<KnownIssue>>,
}

/// One parsed file, kept with its text so validation can turn spans into lines.
struct Parsed<'a> {
    name: String,
    text: &'a str,
    boards: Vec<Spanned<Board>>,
    releases: Vec<Spanned<Release>>,
    known_issues: Vec<Spanned<KnownIssue>>,
}

/// Parses and validates a set of manifest files, given as `(name, text)` in load order.
pub(super) fn load<'a>(
    files: impl IntoIterator<Item = (String, &'a str)>,
) -> Result<Manifests, ManifestError> {
    let parsed = files
        .into_iter()
        .map(|(name, text)| parse_file(name, text))
        .collect::<Result<Vec<_>, _>>()?;
    validate(&parsed)?;

    let mut manifests = Manifests::default();
    for file in parsed {
        manifests
            .boards
            .extend(file.boards.into_iter().map(Spanned::into_inner));
        manifests
            .known_issues
            .extend(file.known_issues.into_iter().map(Spanned::into_inner));
        manifests
            .releases
            .extend(file.releases.into_iter().map(|release| {
                let mut release = release.into_inner();
                release.origin = file.name.clone();
                release
            }));
    }
    Ok(manifests)
}

fn parse_file(name: String, text: &str) -> Result<Parsed<'_>, ManifestError> {
    let invalid = |span: Option<Range<usize>>, message: String| ManifestError::Invalid {
        file: name.clone(),
        line: span.map_or(1, |s| line_of(text, s.start)),
        message,
    };

    let probe: SchemaProbe =
        toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_string()))?;
    match probe.schema {
        None => {
            return Err(invalid(
                None,
                format!("missing `schema = {SCHEMA}` at the top of the file"),
            ));
        }
        Some(schema) if schema.get_ref().as_integer() != Some(SCHEMA) => {
            return Err(invalid(
                Some(schema.span()),
                format!(
                    "schema {} is not supported (this pifw reads schema {SCHEMA})",
                    schema.get_ref()
                ),
            ));
        }
        Some(_) => {}
    }

    let file: ManifestFile =
        toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_string()))?;
    Ok(Parsed {
        name,
        text,
        boards: file.board,
        releases: file.release,
        known_issues: file.known_issue,
    })
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A name on the firmware partition or inside an archive: relative, no `..`, no empty parts.
fn is_relative_path(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with('/')
        && !text.contains('\\')
        && text
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Checks everything a single table cannot check on its own.
fn validate(files: &[Parsed<'_>]) -> Result<(), ManifestError> {
    let at = |file: &Parsed<'_>, span: Range<usize>, message: String| ManifestError::Invalid {
        file: file.name.clone(),
        line: line_of(file.text, span.start),
        message,
    };

    let mut boards: HashMap<&str, (&Board, &str)> = HashMap::new();
    for file in files {
        for spanned in &file.boards {
            let board = spanned.get_ref();
            let fail = |message: String| at(file, spanned.span(), message);
            if board.id.is_empty()
                || !board
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                return Err(fail(format!(
                    "board id {:?}: use lowercase letters and digits only",
                    board.id
                )));
            }
            if let Some((_, first)) = boards.get(board.id.as_str()) {
                return Err(fail(format!(
                    "board {} is defined twice (first in {first})",
                    board.id
                )));
            }
            if board.dt_models.is_empty() || board.dt_models.iter().any(String::is_empty) {
                return Err(fail(format!(
                    "board {}: dt_models must list at least one non-empty model prefix",
                    board.id
                )));
            }
            boards.insert(&board.id, (board, &file.name));
        }
    }
    let uefi_projects: HashSet<&str> = boards
        .values()
        .filter_map(|(board, _)| board.uefi.as_deref())
        .collect();

    let mut seen: HashMap<(ReleaseKind, &str, Option<&str>, &str), &str> = HashMap::new();
    for file in files {
        for spanned in &file.releases {
            let release = spanned.get_ref();
            let label = release.label();
            let fail = |message: String| at(file, spanned.span(), format!("{label}: {message}"));

            version_key(&release.version).map_err(|e| fail(e.to_string()))?;
            let key = (
                release.kind,
                release.flavour.as_str(),
                release.project.as_deref(),
                release.version.as_str(),
            );
            if let Some(first) = seen.insert(key, &file.name) {
                return Err(fail(format!("defined twice (first in {first})")));
            }

            match (release.kind, &release.project) {
                (ReleaseKind::Uefi, None) => {
                    return Err(fail("a uefi release needs `project` (RPi3, RPi4)".into()));
                }
                (ReleaseKind::Uefi, Some(project)) if !uefi_projects.contains(project.as_str()) => {
                    return Err(fail(format!("no board has uefi = {project:?}")));
                }
                (ReleaseKind::Firmware | ReleaseKind::UBoot, Some(_)) => {
                    return Err(fail("`project` is only for uefi releases".into()));
                }
                _ => {}
            }

            if release.sources.is_empty() {
                return Err(fail(
                    "no [[release.source]]: where would it come from?".into(),
                ));
            }
            let mut archives = 0;
            for source in &release.sources {
                let what = format!("source {}", source.location);
                match source.kind {
                    SourceKind::Url => {
                        if !source.location.starts_with("https://")
                            || !source.location.contains("{file}")
                        {
                            return Err(fail(format!(
                                "{what}: a url source is an https:// pattern containing {{file}}"
                            )));
                        }
                        if source.sha256.is_some() || source.size.is_some() {
                            return Err(fail(format!(
                                "{what}: a url source is pinned per file, not with sha256/size"
                            )));
                        }
                    }
                    SourceKind::Zip | SourceKind::Tar | SourceKind::Deb => {
                        archives += 1;
                        if source.sha256.is_none() {
                            return Err(fail(format!("{what}: an archive source needs sha256")));
                        }
                        let ok = match source.kind {
                            // The mirror comes from configuration, never from the manifest.
                            SourceKind::Deb => {
                                source.location.starts_with("pool/")
                                    && is_relative_path(&source.location)
                            }
                            _ => source.location.starts_with("https://"),
                        };
                        if !ok {
                            return Err(fail(format!(
                                "{what}: a deb source is a Debian pool path (pool/...), \
                                 zip and tar sources are https:// URLs"
                            )));
                        }
                    }
                }
                if let Some(sha) = &source.sha256
                    && !is_sha256(sha)
                {
                    return Err(fail(format!(
                        "{what}: sha256 {sha:?} is not 64 lowercase hex digits"
                    )));
                }
                if source.size == Some(0) {
                    return Err(fail(format!("{what}: size must be > 0")));
                }
                if source.provenance.trim().is_empty() {
                    return Err(fail(format!("{what}: provenance is empty")));
                }
                if source.verified != source.verified_on.is_some() {
                    return Err(fail(format!(
                        "{what}: verified = true and verified_on go together"
                    )));
                }
            }

            if release.members_pinned == release.files.is_empty() {
                return Err(fail(if release.members_pinned {
                    "no [[release.file]]; set members_pinned = false if none are known".into()
                } else {
                    "members_pinned = false but files are listed".into()
                }));
            }
            let mut dests = HashSet::new();
            for f in &release.files {
                let what = format!("file {}", f.dest);
                if !is_relative_path(&f.dest) {
                    return Err(fail(format!("{what}: dest must be a relative path")));
                }
                if !dests.insert(f.dest.as_str()) {
                    return Err(fail(format!("{what}: listed twice")));
                }
                if !is_sha256(&f.sha256) {
                    return Err(fail(format!(
                        "{what}: sha256 {:?} is not 64 lowercase hex digits",
                        f.sha256
                    )));
                }
                if f.size == 0 {
                    return Err(fail(format!("{what}: size must be > 0")));
                }
                if let Some(member) = &f.member {
                    if !is_relative_path(member) {
                        return Err(fail(format!(
                            "{what}: member {member:?} must be a relative path"
                        )));
                    }
                    // With two archives, a member path would not say which one it is in.
                    if archives != 1 {
                        return Err(fail(format!(
                            "{what}: member needs exactly one zip/tar/deb source, found {archives}"
                        )));
                    }
                }
                match (release.kind, &f.build) {
                    (ReleaseKind::UBoot, None) => {
                        return Err(fail(format!("{what}: a u-boot file needs `build`")));
                    }
                    (ReleaseKind::Firmware | ReleaseKind::Uefi, Some(_)) => {
                        return Err(fail(format!("{what}: `build` is only for u-boot files")));
                    }
                    _ => {}
                }
                for id in &f.boards {
                    let Some((board, _)) = boards.get(id.as_str()) else {
                        return Err(fail(format!("{what}: unknown board {id:?}")));
                    };
                    if let Some(build) = &f.build
                        && !board.uboot_builds.contains(build)
                    {
                        return Err(fail(format!(
                            "{what}: board {id} does not list U-Boot build {build} in uboot_builds"
                        )));
                    }
                }
            }
        }
    }
    let board_ids: Vec<&str> = boards.keys().copied().collect();
    let mut issue_ids: HashMap<&str, &str> = HashMap::new();
    for file in files {
        for spanned in &file.known_issues {
            let issue = spanned.get_ref();
            let fail = |message: String| at(file, spanned.span(), message);
            known::validate(issue, &board_ids).map_err(fail)?;
            if let Some(first) = issue_ids.insert(&issue.id, &file.name) {
                return Err(fail(format!(
                    "known issue {} is defined twice (first in {first})",
                    issue.id
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_of_counts_newlines_before_the_offset() {
        let text = "a\nbb\nccc";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 5), 3);
        assert_eq!(line_of(text, 100), 3);
    }

    #[test]
    fn sha256_must_be_lowercase_hex_of_64() {
        let good = "ab6647b5621e5220b2e8e09a274e19c063a86df14426aa86e6a62d6655ec01cd";
        assert!(is_sha256(good));
        assert!(!is_sha256(&good.to_uppercase()));
        assert!(!is_sha256(&good[1..]));
        assert!(!is_sha256(&format!("{}g", &good[1..])));
    }

    #[test]
    fn relative_paths_exclude_escapes() {
        assert!(is_relative_path("usr/lib/u-boot/rpi_3/u-boot.bin"));
        assert!(is_relative_path("start.elf"));
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a\\b", "a/"] {
            assert!(!is_relative_path(bad), "{bad}");
        }
    }
}
