//! Version ordering across the numbering schemes pifw meets.
//!
//! Three upstream schemes and one packaging scheme, none of them semver as written:
//!
//! - Raspberry Pi firmware tags: `1.20230405` (a date in the minor part).
//! - U-Boot: `2023.01`, `2023.01-rc3` (zero-padded month, release candidates).
//! - pftf UEFI: `v1.39`, `v1.40-rc1` (dot parts are integers: v1.5 < v1.39 < v1.50).
//! - Debian package versions wrapped around any of these: `2023.01+dfsg-2+deb12u3`,
//!   `2025.01-3+deb13u1`, `1.20220830+ds-1`, `252.39-1~deb12u2`.
//!
//! Everything is normalised to a [`semver::Version`]:
//!
//! - an optional leading `v`/`V` is dropped;
//! - one to three dot-separated decimal numbers become major.minor.patch, missing parts are 0
//!   and leading zeros are dropped (`2023.01` → `2023.1.0`, `1.20230405` → `1.20230405.0`);
//! - a `-` or `~` followed by a letter starts a pre-release tag `<word>[<n>]`, normalised to the
//!   identifiers `<word>.<n>` so that `rc2` < `rc10` and every pre-release sorts before the
//!   release (`2023.01-rc3` → `2023.1.0-rc.3`);
//! - a `+`, or a `-` followed by a digit, starts packaging metadata (a Debian repack suffix and
//!   revision). It becomes semver build metadata, with `+` and `~` turned into `.`
//!   (`2023.01+dfsg-2+deb12u3` → `2023.1.0+dfsg-2.deb12u3`).
//!
//! Decision on Debian revisions: they never outrank the upstream part. Two packages of the same
//! upstream version are ordered by `semver`'s build-metadata tie-break (identifier by
//! identifier, numbers numerically, words as text). That is close to, but not, dpkg's
//! algorithm: `deb12u10` sorts before `deb12u9`. Good enough to pick "newest first" among the
//! few pins a manifest holds; not a general Debian version comparator.
//!
//! Anything else (empty, four numbers, letters in a number, a dangling `-`) is
//! [`ManifestError::BadVersion`].

use super::ManifestError;
use semver::{BuildMetadata, Prerelease, Version};

/// Normalises `version` to a semver [`Version`] whose ordering is the release order.
pub fn version_key(version: &str) -> Result<Version, ManifestError> {
    parse(version).ok_or_else(|| ManifestError::BadVersion(version.to_string()))
}

fn parse(version: &str) -> Option<Version> {
    let rest = version
        .strip_prefix('v')
        .or_else(|| version.strip_prefix('V'))
        .unwrap_or(version);

    // The numeric core runs up to the first character that is neither a digit nor a dot.
    let core_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (core, mut rest) = rest.split_at(core_end);
    let numbers = core
        .split('.')
        .map(parse_number)
        .collect::<Option<Vec<u64>>>()?;
    if numbers.is_empty() || numbers.len() > 3 {
        return None;
    }
    let mut key = Version::new(
        numbers[0],
        numbers.get(1).copied().unwrap_or(0),
        numbers.get(2).copied().unwrap_or(0),
    );

    // Pre-release: `-rc3`, `~rc3`, `-beta`.
    if let Some(tail) = rest.strip_prefix(['-', '~'])
        && tail.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        let word_end = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (word, after_word) = tail.split_at(word_end);
        let digits_end = after_word
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_word.len());
        let (digits, after) = after_word.split_at(digits_end);
        let word = word.to_ascii_lowercase();
        let pre = if digits.is_empty() {
            word
        } else {
            format!("{word}.{}", parse_number(digits)?)
        };
        key.pre = Prerelease::new(&pre).ok()?;
        rest = after;
    }

    // Packaging metadata: `+dfsg-2+deb12u3`, `-3+deb13u1`, `-1~deb12u2`.
    if !rest.is_empty() {
        let tail = if let Some(tail) = rest.strip_prefix('+') {
            tail
        } else if let Some(tail) = rest.strip_prefix('-')
            && tail.starts_with(|c: char| c.is_ascii_digit())
        {
            tail
        } else {
            return None;
        };
        if tail.is_empty()
            || !tail
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-'))
        {
            return None;
        }
        let build = tail.replace(['+', '~'], ".");
        if build.split('.').any(str::is_empty) {
            return None;
        }
        key.build = BuildMetadata::new(&build).ok()?;
    }
    Some(key)
}

/// A decimal number, leading zeros allowed (`01`); no sign, no empty string.
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: &str) -> Version {
        match version_key(v) {
            Ok(k) => k,
            Err(e) => panic!("{v}: {e}"),
        }
    }

    #[test]
    fn normalises_each_scheme() {
        assert_eq!(key("1.20230405").to_string(), "1.20230405.0");
        assert_eq!(key("2023.01").to_string(), "2023.1.0");
        assert_eq!(key("v1.39").to_string(), "1.39.0");
        assert_eq!(key("2023.01-rc3").to_string(), "2023.1.0-rc.3");
        assert_eq!(key("v1.40-rc1").to_string(), "1.40.0-rc.1");
        assert_eq!(
            key("2023.01+dfsg-2+deb12u3").to_string(),
            "2023.1.0+dfsg-2.deb12u3"
        );
        assert_eq!(key("2025.01-3+deb13u1").to_string(), "2025.1.0+3.deb13u1");
        assert_eq!(key("252.39-1~deb12u2").to_string(), "252.39.0+1.deb12u2");
        assert_eq!(key("2025.01~rc3-1").to_string(), "2025.1.0-rc.3+1");
    }

    #[test]
    fn pftf_dot_parts_compare_as_integers() {
        assert!(key("v1.5") < key("v1.39"));
        assert!(key("v1.39") < key("v1.50"));
        assert!(key("v1.9") < key("v1.10"));
    }

    #[test]
    fn release_candidates_sort_before_the_release_and_numerically() {
        assert!(key("2023.01-rc3") < key("2023.01"));
        assert!(key("v1.40-rc1") < key("v1.40"));
        assert!(key("v1.40-rc2") < key("v1.40-rc10"));
        assert!(key("v1.39") < key("v1.40-rc1"));
        assert!(key("2023.01-rc4") > key("2022.10"));
    }

    #[test]
    fn firmware_tags_and_u_boot_versions_order_by_value() {
        assert!(key("1.20220830") < key("1.20240424"));
        assert!(key("1.20240424") < key("1.20241126"));
        assert!(key("2023.01") < key("2023.10"));
        assert!(key("2023.10") < key("2025.01"));
    }

    #[test]
    fn debian_revisions_never_outrank_the_upstream_version() {
        assert!(key("2023.01+dfsg-2+deb12u3") < key("2025.01-3+deb13u1"));
        assert!(key("2023.01+dfsg-2+deb12u3") > key("2023.01-rc3"));
        // Same upstream: the revision breaks the tie.
        assert!(key("2025.01-3+deb13u1") < key("2025.01-3+deb13u2"));
        assert!(key("2025.01-2") < key("2025.01-3"));
        assert_ne!(key("2023.01+dfsg-2+deb12u3"), key("2023.01"));
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "",
            "v",
            "abc",
            "1..2",
            "1.2.3.4",
            "1.x",
            "1.2-",
            "1.2+",
            "1.2-rc3-",
            "1.2 ",
            " 1.2",
            "1.2+a..b",
            "1.2_3",
            "-1.2",
            "1.2-rc.3",
            "1.2+dfsg!",
        ] {
            match version_key(bad) {
                Err(ManifestError::BadVersion(v)) => assert_eq!(v, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
