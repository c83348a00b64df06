//! Known issues: combinations of boot components that are known not to boot, with the public
//! report each comes from and the way out.
//!
//! Owns the table's format (the `[[known_issue]]` tables of the manifests) and the matching of
//! one board's boot components against it. It reads no card: the status layer says which
//! versions a board's boot chain runs ([`BootComponents`]), the update planner says which it
//! would run after a change, and both ask [`Manifests::known_issues_for`].
//!
//! A version range is `from` (inclusive), `through` (inclusive) and `before` (exclusive), any of
//! them optional, compared by [`version_key`](super::version_key) precedence: Debian's
//! `2023.01+dfsg-2+deb12u3` is `2023.01` for this purpose, `2024.07-rc3` sorts before
//! `2024.07`. A version that cannot be parsed matches no range.
//!
//! ```toml
//! [[known_issue]]
//! id = "uboot-2024.07-pi3"         # what --allow-known-issue names; unique
//! boards = ["pi3b", "pi3bplus"]    # boards pifw knows
//! component = "u-boot"             # firmware | u-boot | uefi
//! from = "2024.07-rc3"             # range of that component's version
//! through = "2024.07"
//! [[known_issue.with]]             # zero or more: other components that must be present,
//! component = "firmware"           # optionally within a range of their own
//! problem = "..."                  # what goes wrong
//! reference = "..."                # where it is reported (public)
//! fix = "..."                      # the next command, or what to install
//! ```

use super::{ManifestError, ReleaseKind, version_key};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One known-bad combination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownIssue {
    /// Stable id, kebab-case; `--allow-known-issue ID` names it.
    pub id: String,
    /// Finding code status uses; `known-issue-<id>` when absent (kept for entries that
    /// replaced an older hard-coded check, whose code is part of the `--json` schema).
    #[serde(default)]
    pub code: Option<String>,
    pub boards: Vec<String>,
    pub component: ReleaseKind,
    /// The component's versions affected: `from` (inclusive).
    #[serde(default)]
    pub from: Option<String>,
    /// ... `through` (inclusive).
    #[serde(default)]
    pub through: Option<String>,
    /// ... `before` (exclusive).
    #[serde(default)]
    pub before: Option<String>,
    /// Other components that must be on the board's boot chain for the issue to apply.
    #[serde(default)]
    pub with: Vec<Condition>,
    pub problem: String,
    /// The public report (an issue URL, a mailing-list thread).
    pub reference: String,
    pub fix: String,
}

/// A range of versions (`from` and `through` inclusive, `before` exclusive); every bound
/// optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionRange {
    pub from: Option<String>,
    pub through: Option<String>,
    pub before: Option<String>,
}

/// Another component on the same boot chain, within a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub component: ReleaseKind,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub through: Option<String>,
    #[serde(default)]
    pub before: Option<String>,
}

impl Condition {
    pub fn range(&self) -> VersionRange {
        VersionRange {
            from: self.from.clone(),
            through: self.through.clone(),
            before: self.before.clone(),
        }
    }
}

/// What one board's boot chain runs: component kind → version (a pinned release's version,
/// or what the bytes say of themselves: a U-Boot banner, a firmware build date as
/// `1.YYYYMMDD`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BootComponents {
    pub board: String,
    pub versions: BTreeMap<ReleaseKind, String>,
}

impl VersionRange {
    /// Whether `version` is inside the range.
    pub fn contains(&self, version: &str) -> bool {
        let Ok(v) = version_key(version) else {
            return false;
        };
        let bound = |b: &Option<String>| b.as_deref().map(version_key).transpose();
        let (Ok(from), Ok(through), Ok(before)) =
            (bound(&self.from), bound(&self.through), bound(&self.before))
        else {
            return false;
        };
        from.is_none_or(|f| v.cmp_precedence(&f).is_ge())
            && through.is_none_or(|t| v.cmp_precedence(&t).is_le())
            && before.is_none_or(|b| v.cmp_precedence(&b).is_lt())
    }

    /// `>= 2024.07-rc3, <= 2024.07`, or `any version`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            self.from.as_ref().map(|v| format!(">= {v}")),
            self.through.as_ref().map(|v| format!("<= {v}")),
            self.before.as_ref().map(|v| format!("< {v}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "any version".into()
        } else {
            parts.join(", ")
        }
    }

    fn bounds(&self) -> Vec<String> {
        [&self.from, &self.through, &self.before]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

impl KnownIssue {
    /// The affected versions of [`KnownIssue::component`].
    pub fn range(&self) -> VersionRange {
        VersionRange {
            from: self.from.clone(),
            through: self.through.clone(),
            before: self.before.clone(),
        }
    }

    /// The finding code status reports it under.
    pub fn finding_code(&self) -> String {
        self.code
            .clone()
            .unwrap_or_else(|| format!("known-issue-{}", self.id))
    }

    /// Whether the board's components make this combination.
    pub fn matches(&self, state: &BootComponents) -> bool {
        self.boards.contains(&state.board)
            && state
                .versions
                .get(&self.component)
                .is_some_and(|v| self.range().contains(v))
            && self.with.iter().all(|c| {
                state
                    .versions
                    .get(&c.component)
                    .is_some_and(|v| c.range().contains(v))
            })
    }

    /// One line: `U-Boot 2024.07 on pi3b: <problem> (<reference>)`.
    pub fn describe(&self, state: &BootComponents) -> String {
        let version = state
            .versions
            .get(&self.component)
            .map(String::as_str)
            .unwrap_or("?");
        format!(
            "{} {version} on {}: {} [known issue {}, {}]",
            component_name(self.component),
            state.board,
            self.problem,
            self.id,
            self.reference
        )
    }
}

fn component_name(kind: ReleaseKind) -> &'static str {
    match kind {
        ReleaseKind::Firmware => "Pi firmware",
        ReleaseKind::UBoot => "U-Boot",
        ReleaseKind::Uefi => "pftf UEFI",
    }
}

/// Checks one entry: an id, known boards, parseable bounds, a reference and a fix.
pub(super) fn validate(issue: &KnownIssue, boards: &[&str]) -> Result<(), String> {
    let id_ok = !issue.id.is_empty()
        && issue
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !id_ok {
        return Err(format!(
            "known issue id {:?} must be lowercase letters, digits, '-' and '.'",
            issue.id
        ));
    }
    if issue.boards.is_empty() {
        return Err(format!("known issue {} names no board", issue.id));
    }
    if let Some(b) = issue.boards.iter().find(|b| !boards.contains(&b.as_str())) {
        return Err(format!("known issue {} names unknown board {b}", issue.id));
    }
    let ranges = std::iter::once(issue.range()).chain(issue.with.iter().map(Condition::range));
    for bound in ranges.flat_map(|r| r.bounds()) {
        version_key(&bound).map_err(|e: ManifestError| {
            format!("known issue {}: version {bound:?}: {e}", issue.id)
        })?;
    }
    for (field, text) in [
        ("problem", &issue.problem),
        ("reference", &issue.reference),
        ("fix", &issue.fix),
    ] {
        if text.trim().is_empty() {
            return Err(format!("known issue {}: {field} is empty", issue.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(from: Option<&str>, through: Option<&str>, before: Option<&str>) -> VersionRange {
        VersionRange {
            from: from.map(str::to_string),
            through: through.map(str::to_string),
            before: before.map(str::to_string),
        }
    }

    #[test]
    fn ranges_compare_by_precedence() {
        let r = range(Some("2024.07-rc3"), Some("2024.07"), None);
        assert!(!r.contains("2024.07-rc2"));
        assert!(r.contains("2024.07-rc3"));
        assert!(r.contains("2024.07"));
        assert!(
            r.contains("2024.07+dfsg-1"),
            "packaging does not move a version"
        );
        assert!(!r.contains("2024.10"));
        let below = range(None, None, Some("2023.01"));
        assert!(below.contains("2022.04"));
        assert!(!below.contains("2023.01+dfsg-2+deb12u3"));
        assert!(!below.contains("not a version"));
        assert_eq!(r.describe(), ">= 2024.07-rc3, <= 2024.07");
        assert_eq!(VersionRange::default().describe(), "any version");
    }

    #[test]
    fn a_match_needs_board_component_and_every_condition() {
        let issue = KnownIssue {
            id: "fw-1868".into(),
            code: None,
            boards: vec!["pi4b".into()],
            component: ReleaseKind::Firmware,
            from: Some("1.20240208".into()),
            through: None,
            before: Some("1.20240214".into()),
            with: vec![Condition {
                component: ReleaseKind::UBoot,
                from: None,
                through: None,
                before: None,
            }],
            problem: "p".into(),
            reference: "r".into(),
            fix: "f".into(),
        };
        let mut state = BootComponents {
            board: "pi4b".into(),
            versions: BTreeMap::from([(ReleaseKind::Firmware, "1.20240208".into())]),
        };
        assert!(!issue.matches(&state), "without U-Boot on the chain");
        state.versions.insert(ReleaseKind::UBoot, "2023.01".into());
        assert!(issue.matches(&state));
        assert_eq!(issue.finding_code(), "known-issue-fw-1868");
        state.board = "pi3b".into();
        assert!(!issue.matches(&state), "another board");
        state.board = "pi4b".into();
        state
            .versions
            .insert(ReleaseKind::Firmware, "1.20240424".into());
        assert!(!issue.matches(&state), "a fixed release");
    }

    fn load_with(extra: &str) -> Result<super::super::Manifests, ManifestError> {
        let boards = include_str!("../../manifests/boards.toml");
        let text = format!("schema = 1\n{extra}");
        super::super::load::load([
            ("boards.toml".to_string(), boards),
            ("issues.toml".to_string(), text.as_str()),
        ])
    }

    const ENTRY: &str = "[[known_issue]]\nid = \"x\"\nboards = [\"pi3b\"]\ncomponent = \"u-boot\"\n\
                         before = \"2023.01\"\nproblem = \"p\"\nreference = \"r\"\nfix = \"f\"\n";

    #[test]
    fn the_embedded_table_loads_and_is_checked() {
        let m = super::super::Manifests::embedded().expect("embedded");
        let ids: Vec<&str> = m.known_issues.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "uboot-usb-hang-pi3",
                "uboot-2024.07-pi3",
                "firmware-20240208-uboot-pi4"
            ]
        );
        assert!(load_with(ENTRY).is_ok());
        let cases = [
            (format!("{ENTRY}colour = \"red\"\n"), "unknown field", 10),
            (ENTRY.replace("pi3b", "pi9"), "unknown board pi9", 2),
            (ENTRY.replace("2023.01", "soon"), "version \"soon\"", 2),
            (
                ENTRY.replace("fix = \"f\"", "fix = \" \""),
                "fix is empty",
                2,
            ),
            (format!("{ENTRY}{ENTRY}"), "defined twice", 10),
        ];
        for (text, words, line) in cases {
            match load_with(&text) {
                Err(ManifestError::Invalid {
                    file,
                    line: at,
                    message,
                }) => {
                    assert_eq!(file, "issues.toml");
                    assert!(message.contains(words), "{words:?} not in {message:?}");
                    assert_eq!(at, line, "{message}");
                }
                other => panic!("{words}: {other:?}"),
            }
        }
    }
}
