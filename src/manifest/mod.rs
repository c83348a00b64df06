//! Version manifests: boards and releases (Pi firmware, U-Boot builds, pftf UEFI).
//!
//! Owns what pifw knows about the world: which boards exist and how to recognise them, which
//! releases of each boot component exist, which files they contain (size and sha256 pins) and
//! where they can be downloaded, with a record of who published each pin and whether anyone
//! here checked it. It owns no I/O beyond reading manifest files: fetching, the card and
//! printing belong to other layers.
//!
//! The TOML files in `manifests/` are embedded in the binary; `--manifests DIR` replaces them
//! with every `*.toml` of a directory, loaded in name order. The format and its checks live in
//! [`load`](self::load): schema is versioned, unknown fields are rejected, and an error names
//! file, line and field. Version ordering is in [`version`](self::version).
//!
//! A release is only as trustworthy as its pins: `Source::verified` is true only where someone
//! downloaded the source and its sha256 matched. Releases whose member files are not pinned
//! (`members_pinned = false`) are listed so the CLI can show them, but pifw cannot identify or
//! install their files.

mod known;
mod load;
mod version;

pub use known::{BootComponents, Condition, KnownIssue, VersionRange};
pub use load::SCHEMA;
pub use version::version_key;

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

/// The manifests built into the binary, as `(name, text)`, in load order.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "manifests/boards.toml",
        include_str!("../../manifests/boards.toml"),
    ),
    (
        "manifests/firmware.toml",
        include_str!("../../manifests/firmware.toml"),
    ),
    (
        "manifests/u-boot.toml",
        include_str!("../../manifests/u-boot.toml"),
    ),
    (
        "manifests/uefi.toml",
        include_str!("../../manifests/uefi.toml"),
    ),
    (
        "manifests/known-issues.toml",
        include_str!("../../manifests/known-issues.toml"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseKind {
    /// Upstream raspberrypi/firmware blobs (bootcode.bin, start*.elf, fixup*.dat, ...).
    Firmware,
    /// U-Boot builds (u-boot.bin per defconfig).
    UBoot,
    /// pftf UEFI firmware (RPI_EFI.fd and its companion files).
    Uefi,
}

impl ReleaseKind {
    /// The name used in manifests and on the command line: `firmware`, `u-boot`, `uefi`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseKind::Firmware => "firmware",
            ReleaseKind::UBoot => "u-boot",
            ReleaseKind::Uefi => "uefi",
        }
    }
}

/// A board pifw knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Short id used on the command line: `pi3b`, `pi3bplus`, `pi3aplus`, `pi02w`, `cm3`, `pi4b`,
    /// `pi400`, `cm4`.
    pub id: String,
    /// Human name, e.g. "Raspberry Pi 3 Model B".
    pub name: String,
    /// Device-tree model strings (/proc/device-tree/model) that mean this board (prefix match;
    /// the longest matching prefix over all boards wins).
    pub dt_models: Vec<String>,
    pub soc: String,
    /// config.txt model filters that select this board, e.g. `["pi3"]`, `["pi3", "pi3+"]`.
    pub config_filters: Vec<String>,
    /// Device-tree blob names the firmware loads for it, e.g. `bcm2710-rpi-3-b.dtb`.
    pub dtbs: Vec<String>,
    /// U-Boot defconfig builds that run on it, preferred first, e.g. `["rpi_3", "rpi_arm64"]`.
    pub uboot_builds: Vec<String>,
    /// Name of the U-Boot binary on the firmware partition by convention (NixOS's config.txt):
    /// `u-boot-rpi3.bin` for the BCM2837 boards, `u-boot-rpi4.bin` for the Pi 4 family.
    #[serde(default)]
    pub uboot_file: Option<String>,
    /// pftf UEFI project for it: `RPi3`, `RPi4`, or none.
    #[serde(default)]
    pub uefi: Option<String>,
    /// Caveats worth showing to a user (unverified support, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One file a release provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseFile {
    /// Name on the firmware partition, e.g. `start.elf`, `u-boot-rpi3.bin`, `RPI_EFI.fd`.
    pub dest: String,
    pub size: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Board ids this file serves (empty = all boards of the release).
    #[serde(default)]
    pub boards: Vec<String>,
    /// U-Boot defconfig of this build (`rpi_3`), U-Boot releases only.
    #[serde(default)]
    pub build: Option<String>,
    /// Path of the file inside the release's (single) archive source, if it comes from one;
    /// relative, without the `./` that tar and dpkg-deb listings show.
    #[serde(default)]
    pub member: Option<String>,
}

impl ReleaseFile {
    /// Whether this file is meant for `board` (an empty board list means every board).
    pub fn serves(&self, board: &str) -> bool {
        self.boards.is_empty() || self.boards.iter().any(|b| b == board)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Per-file URLs (`{file}` in the URL is replaced by `dest`).
    Url,
    Zip,
    Tar,
    /// A Debian package; `location` is the pool path (the mirror comes from configuration).
    Deb,
}

/// Where a release can be downloaded from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub kind: SourceKind,
    /// URL, URL pattern, or Debian pool path.
    pub location: String,
    /// sha256 of the archive itself (zip/tar/deb).
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    /// Where the pin was published, e.g. "Debian bookworm Packages", "wuxxin/infra-shared".
    pub provenance: String,
    /// True only when someone downloaded it and checked the pin.
    pub verified: bool,
    /// When it was checked (ISO date); present exactly when `verified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_on: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub kind: ReleaseKind,
    /// Version as published: `1.20220830`, `v1.39`, or a Debian package version
    /// (`2023.01+dfsg-2+deb12u3`) for Debian builds.
    pub version: String,
    /// Who built it: `upstream`, `debian`, `pftf`, ...
    pub flavour: String,
    /// Sub-project within the flavour: the pftf repository (`RPi3`, `RPi4`) for uefi releases,
    /// matching [`Board::uefi`]; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// e.g. "Debian 2023.01+dfsg-2+deb12u3".
    pub description: String,
    /// False when only the archive is pinned and its member files are unknown; such a release
    /// has no `files` and pifw can neither identify nor install from it.
    #[serde(default = "default_true")]
    pub members_pinned: bool,
    /// Caveats worth showing to a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, rename(deserialize = "file"))]
    pub files: Vec<ReleaseFile>,
    #[serde(default, rename(deserialize = "source"))]
    pub sources: Vec<Source>,
    /// Manifest file it came from.
    #[serde(skip_deserializing)]
    pub origin: String,
}

fn default_true() -> bool {
    true
}

impl Release {
    /// The release's position in version order (see [`version_key`]).
    pub fn version_key(&self) -> Result<semver::Version, ManifestError> {
        version_key(&self.version)
    }

    /// Short human label: `u-boot debian 2023.01+dfsg-2+deb12u3`, `uefi pftf RPi3 v1.39`.
    pub fn label(&self) -> String {
        match &self.project {
            Some(project) => format!(
                "{} {} {project} {}",
                self.kind.as_str(),
                self.flavour,
                self.version
            ),
            None => format!("{} {} {}", self.kind.as_str(), self.flavour, self.version),
        }
    }

    /// The files of this release meant for `board`.
    pub fn files_for(&self, board: &str) -> Vec<&ReleaseFile> {
        self.files.iter().filter(|f| f.serves(board)).collect()
    }
}

/// A hash match: which release and which file of it.
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    pub release: &'a Release,
    pub file: &'a ReleaseFile,
}

/// sha256 → (release index, file index), built on the first [`Manifests::identify`].
type HashIndex = HashMap<String, Vec<(usize, usize)>>;

/// Boards and releases, validated. Treat as read-only once loaded: the hash index behind
/// [`Manifests::identify`] is built once, on first use.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Manifests {
    pub boards: Vec<Board>,
    pub releases: Vec<Release>,
    /// Combinations known not to boot ([`KnownIssue`]).
    pub known_issues: Vec<KnownIssue>,
    #[serde(skip)]
    index: OnceLock<HashIndex>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("reading manifests from {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not a version pifw understands")]
    BadVersion(String),
    #[error("no *.toml manifest in {path}")]
    NoManifests { path: String },
    #[error("no {kind} release {version} in the manifests")]
    UnknownRelease { kind: &'static str, version: String },
    #[error("{kind} release {version} is ambiguous: {}", candidates.join(", "))]
    AmbiguousRelease {
        kind: &'static str,
        version: String,
        candidates: Vec<String>,
    },
}

impl Manifests {
    /// The manifests built into the binary.
    pub fn embedded() -> Result<Manifests, ManifestError> {
        load::load(
            EMBEDDED
                .iter()
                .map(|&(name, text)| (name.to_string(), text)),
        )
    }

    /// Every `*.toml` in `dir`, in name order, replacing the embedded ones.
    pub fn load_dir(dir: &Path) -> Result<Manifests, ManifestError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| ManifestError::Io { path, source }
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        if paths.is_empty() {
            return Err(ManifestError::NoManifests {
                path: dir.display().to_string(),
            });
        }
        paths.sort();
        let texts = paths
            .iter()
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|text| (path.display().to_string(), text))
                    .map_err(io(path))
            })
            .collect::<Result<Vec<_>, _>>()?;
        load::load(
            texts
                .iter()
                .map(|(name, text)| (name.clone(), text.as_str())),
        )
    }

    /// These manifests plus `release` (one resolved at run time, e.g. from a Debian archive),
    /// unless a release of its kind and exact version is already here. The hash index is
    /// rebuilt on first use, so the new release's pins identify files too.
    pub fn with_release(&self, release: Release) -> Manifests {
        let mut releases = self.releases.clone();
        if !releases
            .iter()
            .any(|r| r.kind == release.kind && r.version == release.version)
        {
            releases.push(release);
        }
        Manifests {
            boards: self.boards.clone(),
            releases,
            known_issues: self.known_issues.clone(),
            index: OnceLock::new(),
        }
    }

    /// The known issues one board's boot components make.
    pub fn known_issues_for(&self, state: &BootComponents) -> Vec<&KnownIssue> {
        self.known_issues
            .iter()
            .filter(|i| i.matches(state))
            .collect()
    }

    pub fn board(&self, id: &str) -> Option<&Board> {
        self.boards.iter().find(|b| b.id == id)
    }

    /// The board whose `dt_models` holds the longest prefix of `model`, the text of
    /// /proc/device-tree/model (trailing NUL and whitespace ignored).
    pub fn board_by_dt_model(&self, model: &str) -> Option<&Board> {
        let model = model.trim_end_matches(['\0', '\n', ' ']);
        self.boards
            .iter()
            .flat_map(|board| board.dt_models.iter().map(move |prefix| (board, prefix)))
            .filter(|(_, prefix)| model.starts_with(prefix.as_str()))
            .max_by_key(|(_, prefix)| prefix.len())
            .map(|(board, _)| board)
    }

    /// Every release file whose sha256 is `sha256` (hex, either case). The same bytes may be
    /// pinned by several releases or under several names (fixup_cd.dat = fixup4cd.dat): all
    /// are returned, in manifest order.
    pub fn identify(&self, sha256: &str) -> Vec<Match<'_>> {
        let index = self.index.get_or_init(|| {
            let mut index = HashIndex::new();
            for (r, release) in self.releases.iter().enumerate() {
                for (f, file) in release.files.iter().enumerate() {
                    index.entry(file.sha256.clone()).or_default().push((r, f));
                }
            }
            index
        });
        index
            .get(&sha256.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .filter_map(|&(r, f)| {
                let release = self.releases.get(r)?;
                Some(Match {
                    release,
                    file: release.files.get(f)?,
                })
            })
            .collect()
    }

    /// Releases of `kind`, newest first. Equal versions keep manifest order.
    pub fn releases_of(&self, kind: ReleaseKind) -> Vec<&Release> {
        let mut releases: Vec<(Option<semver::Version>, &Release)> = self
            .releases
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| (r.version_key().ok(), r))
            .collect();
        // Loading rejects bad versions; a hand-built set sorts them last.
        releases.sort_by(|a, b| b.0.cmp(&a.0));
        releases.into_iter().map(|(_, r)| r).collect()
    }

    /// Releases of `kind` meant for `board`, newest first: uefi releases whose project is the
    /// board's `uefi`, other kinds with at least one file serving the board.
    pub fn releases_for_board(&self, kind: ReleaseKind, board: &Board) -> Vec<&Release> {
        self.releases_of(kind)
            .into_iter()
            .filter(|r| match kind {
                ReleaseKind::Uefi => r.project.is_some() && r.project == board.uefi,
                _ => r.files.iter().any(|f| f.serves(&board.id)),
            })
            .collect()
    }

    /// The release of `kind` named `version`: an exact match of the published version, else the
    /// single release whose version equals it ignoring packaging metadata (`2023.01` finds
    /// Debian's `2023.01+dfsg-2+deb12u3`). Several candidates are an error naming them.
    pub fn release(&self, kind: ReleaseKind, version: &str) -> Result<&Release, ManifestError> {
        let of_kind = || self.releases.iter().filter(move |r| r.kind == kind);
        let mut found: Vec<&Release> = of_kind().filter(|r| r.version == version).collect();
        if found.is_empty() {
            let wanted = version_key(version)?;
            found = of_kind()
                .filter(|r| {
                    r.version_key()
                        .is_ok_and(|k| k.cmp_precedence(&wanted).is_eq())
                })
                .collect();
        }
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(ManifestError::UnknownRelease {
                kind: kind.as_str(),
                version: version.to_string(),
            }),
            many => Err(ManifestError::AmbiguousRelease {
                kind: kind.as_str(),
                version: version.to_string(),
                candidates: many.iter().map(|r| r.label()).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOARDS: &str = include_str!("../../manifests/boards.toml");

    const UBOOT_2023_RPI3: &str =
        "ab6647b5621e5220b2e8e09a274e19c063a86df14426aa86e6a62d6655ec01cd";
    const BOOTCODE_20220830: &str =
        "098d5a2a61c485f757733390244319d4c992807e21ffd4e199b88de42d6e52ff";

    fn load_texts(files: &[(&str, &str)]) -> Result<Manifests, ManifestError> {
        load::load(files.iter().map(|&(n, t)| (n.to_string(), t)))
    }

    fn embedded() -> Manifests {
        match Manifests::embedded() {
            Ok(m) => m,
            Err(e) => panic!("embedded manifests: {e}"),
        }
    }

    /// Asserts that loading fails with `Invalid` at `file:line` with a message containing
    /// every one of `words`.
    fn assert_invalid(
        result: Result<Manifests, ManifestError>,
        file: &str,
        line: usize,
        words: &[&str],
    ) {
        match result {
            Err(ManifestError::Invalid {
                file: f,
                line: l,
                message,
            }) => {
                assert_eq!((f.as_str(), l), (file, line), "{message}");
                for word in words {
                    assert!(message.contains(word), "{word:?} not in {message:?}");
                }
            }
            Err(other) => panic!("expected Invalid, got {other}"),
            Ok(_) => panic!("expected Invalid at {file}:{line}, loaded fine"),
        }
    }

    /// A minimal valid release file; tests break one thing at a time.
    const RELEASE: &str = r#"schema = 1

[[release]]
kind = "firmware"
version = "1.20220830"
flavour = "upstream"
description = "test"

[[release.source]]
kind = "deb"
location = "pool/non-free-firmware/r/raspi-firmware/raspi-firmware_1.20220830+ds-1_all.deb"
sha256 = "0094ced47a7fbb6a220ff83e7b43aa637a5d8f6802461e2e4e474597fb796f62"
provenance = "test"
verified = false

[[release.file]]
dest = "bootcode.bin"
size = 52460
sha256 = "098d5a2a61c485f757733390244319d4c992807e21ffd4e199b88de42d6e52ff"
boards = ["pi3b"]
member = "usr/lib/raspi-firmware/bootcode.bin"
"#;

    fn with_release(text: &str) -> Result<Manifests, ManifestError> {
        load_texts(&[("boards.toml", BOARDS), ("r.toml", text)])
    }

    #[test]
    fn every_embedded_manifest_loads() {
        let m = embedded();
        let ids: Vec<&str> = m.boards.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "pi3b", "pi3bplus", "pi3aplus", "pi02w", "cm3", "pi4b", "pi400", "cm4"
            ]
        );
        assert_eq!(m.releases_of(ReleaseKind::Firmware).len(), 3);
        assert_eq!(m.releases_of(ReleaseKind::UBoot).len(), 2);
        assert_eq!(m.releases_of(ReleaseKind::Uefi).len(), 4);
        // Each release file also loads on its own next to the boards.
        for &(name, text) in &EMBEDDED[1..] {
            if let Err(e) = load_texts(&[("boards.toml", BOARDS), (name, text)]) {
                panic!("{name}: {e}");
            }
        }
        let origins: Vec<&str> = m.releases.iter().map(|r| r.origin.as_str()).collect();
        assert!(origins.contains(&"manifests/uefi.toml"));
    }

    #[test]
    fn load_dir_reads_the_same_manifests_as_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
        let from_dir = match Manifests::load_dir(&dir) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let embedded = embedded();
        assert_eq!(from_dir.boards, embedded.boards);
        assert_eq!(from_dir.releases.len(), embedded.releases.len());
        for (a, b) in from_dir.releases.iter().zip(&embedded.releases) {
            assert_eq!((&a.files, &a.sources), (&b.files, &b.sources));
            assert!(
                a.origin
                    .ends_with(b.origin.trim_start_matches("manifests/"))
            );
        }
    }

    /// A scratch directory under the system temp dir, removed on drop.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("pifw-manifest-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("creating a scratch dir");
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn load_dir_loads_sorted_toml_only_and_names_the_file() {
        let dir = Scratch::new("dir");
        std::fs::write(dir.0.join("a-boards.toml"), BOARDS).expect("write");
        std::fs::write(dir.0.join("README.md"), "not a manifest").expect("write");
        std::fs::write(dir.0.join("b.toml"), RELEASE).expect("write");
        let m = Manifests::load_dir(&dir.0).expect("valid dir");
        assert_eq!(m.boards.len(), 8);
        assert_eq!(m.releases.len(), 1);
        assert_eq!(
            m.releases[0].origin,
            dir.0.join("b.toml").display().to_string()
        );

        // A release file sorted before the boards still sees them: validation is cross-file.
        std::fs::write(
            dir.0.join("0.toml"),
            RELEASE.replace("1.20220830\"", "1.20240424\""),
        )
        .expect("write");
        assert_eq!(
            Manifests::load_dir(&dir.0).expect("valid").releases.len(),
            2
        );

        std::fs::write(dir.0.join("c.toml"), "schema = 1\nbogus = 1\n").expect("write");
        let bad = dir.0.join("c.toml").display().to_string();
        assert_invalid(Manifests::load_dir(&dir.0), &bad, 2, &["bogus"]);
    }

    #[test]
    fn load_dir_without_manifests_is_an_error() {
        let dir = Scratch::new("empty");
        assert!(matches!(
            Manifests::load_dir(&dir.0),
            Err(ManifestError::NoManifests { .. })
        ));
        assert!(matches!(
            Manifests::load_dir(&dir.0.join("missing")),
            Err(ManifestError::Io { .. })
        ));
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = BOARDS.replace(
            "soc = \"BCM2711\"\n",
            "soc = \"BCM2711\"\ncolour = \"red\"\n",
        );
        let line = text
            .lines()
            .position(|l| l.starts_with("colour"))
            .expect("inserted")
            + 1;
        assert_invalid(
            load_texts(&[("boards.toml", &text)]),
            "boards.toml",
            line,
            &["colour"],
        );

        let text = RELEASE.replace("verified = false\n", "verified = false\nmirror = \"x\"\n");
        assert_invalid(with_release(&text), "r.toml", 15, &["mirror"]);
    }

    #[test]
    fn schema_is_required_and_must_be_known() {
        assert_invalid(
            with_release(&RELEASE.replace("schema = 1\n", "")),
            "r.toml",
            1,
            &["schema"],
        );
        // A later schema is reported as such, not as its new fields.
        let text = RELEASE.replace("schema = 1\n", "schema = 2\n") + "newthing = true\n";
        assert_invalid(
            with_release(&text),
            "r.toml",
            1,
            &["schema 2", "not supported"],
        );
        assert_invalid(
            with_release(&RELEASE.replace("schema = 1\n", "schema = \"1\"\n")),
            "r.toml",
            1,
            &["schema"],
        );
    }

    #[test]
    fn minimal_release_loads() {
        let m = with_release(RELEASE).expect("valid");
        assert_eq!(m.releases[0].files[0].dest, "bootcode.bin");
        assert!(m.releases[0].members_pinned);
    }

    #[test]
    fn bad_sha256_names_file_release_and_value() {
        let upper = RELEASE.replace("098d5a2a61c4", "098D5A2A61C4");
        assert_invalid(
            with_release(&upper),
            "r.toml",
            3,
            &[
                "firmware upstream 1.20220830",
                "bootcode.bin",
                "098D5A2A61C4",
            ],
        );
        let short = RELEASE.replace("0094ced47a7f", "0094ced47a7");
        assert_invalid(with_release(&short), "r.toml", 3, &["source", "not 64"]);
    }

    #[test]
    fn duplicate_board_is_an_error() {
        let extra = "schema = 1\n\n[[board]]\nid = \"pi4b\"\nname = \"x\"\nsoc = \"x\"\n\
                     dt_models = [\"x\"]\nconfig_filters = []\ndtbs = []\nuboot_builds = []\n";
        assert_invalid(
            load_texts(&[("boards.toml", BOARDS), ("more.toml", extra)]),
            "more.toml",
            3,
            &["pi4b", "twice", "boards.toml"],
        );
    }

    #[test]
    fn release_checks_name_the_release() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "boards = [\"pi3b\"]",
                "boards = [\"pi9\"]",
                &["unknown board \"pi9\""],
            ),
            ("size = 52460", "size = 0", &["size must be > 0"]),
            (
                "version = \"1.20220830\"",
                "version = \"latest\"",
                &["latest"],
            ),
            (
                "[[release.source]]\nkind = \"deb\"",
                "[[release.nosource]]\nkind = \"deb\"",
                &["nosource"],
            ),
            (
                "description = \"test\"",
                "description = \"test\"\nmembers_pinned = false",
                &["members_pinned = false but files"],
            ),
            (
                "location = \"pool/",
                "location = \"http://example.org/pool/",
                &["pool path"],
            ),
            ("verified = false", "verified = true", &["verified_on"]),
            (
                "member = \"usr/",
                "build = \"rpi_3\"\nmember = \"usr/",
                &["build"],
            ),
            (
                "member = \"usr/lib",
                "member = \"../usr/lib",
                &["relative path"],
            ),
            ("member = \"usr/", "crc = 1\nmember = \"usr/", &["crc"]),
        ];
        for (from, to, words) in cases {
            let text = RELEASE.replace(from, to);
            assert_ne!(text, RELEASE, "{from} not in the template");
            let result = with_release(&text);
            // Field-level TOML errors point at the key; validation errors at the release.
            match &result {
                Err(ManifestError::Invalid { file, message, .. }) => {
                    assert_eq!(file, "r.toml");
                    for word in words.iter() {
                        assert!(message.contains(word), "{to}: {word:?} not in {message:?}");
                    }
                }
                Err(e) => panic!("{to}: {e}"),
                Ok(_) => panic!("{to}: loaded fine"),
            }
        }
    }

    #[test]
    fn release_without_source_or_with_duplicate_is_an_error() {
        let no_source = "schema = 1\n\n[[release]]\nkind = \"uefi\"\nversion = \"v1.39\"\n\
                         flavour = \"pftf\"\nproject = \"RPi3\"\ndescription = \"x\"\n\
                         members_pinned = false\n";
        assert_invalid(
            with_release(no_source),
            "r.toml",
            3,
            &["uefi pftf RPi3 v1.39", "source"],
        );

        let twice = format!("{RELEASE}\n{}", &RELEASE["schema = 1\n".len()..]);
        assert_invalid(
            with_release(&twice),
            "r.toml",
            24,
            &["firmware upstream 1.20220830", "twice"],
        );
    }

    #[test]
    fn uefi_release_needs_a_known_project() {
        let text = include_str!("../../manifests/uefi.toml").replace("\"RPi3\"", "\"RPi5\"");
        assert_invalid(with_release(&text), "r.toml", 12, &["RPi5"]);
    }

    #[test]
    fn identify_finds_pinned_files() {
        let m = embedded();

        let found = m.identify(UBOOT_2023_RPI3);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].release.kind, ReleaseKind::UBoot);
        assert_eq!(found[0].release.version, "2023.01+dfsg-2+deb12u3");
        assert_eq!(found[0].file.build.as_deref(), Some("rpi_3"));
        assert_eq!(found[0].file.dest, "u-boot-rpi3.bin");
        assert_eq!(found[0].file.size, 573160);

        let found = m.identify(&BOOTCODE_20220830.to_uppercase());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].release.kind, ReleaseKind::Firmware);
        assert_eq!(found[0].release.version, "1.20220830");
        assert_eq!(found[0].file.dest, "bootcode.bin");
        assert!(!found[0].file.serves("pi4b"));

        assert!(m.identify(&"0".repeat(64)).is_empty());
    }

    #[test]
    fn identify_returns_every_name_for_identical_bytes() {
        // fixup_cd.dat and fixup4cd.dat are byte-identical in 1.20220830.
        let m = embedded();
        let found = m.identify("b4df5747bfbdb77b1316f714f62aa6223fe918cf27d6b5e2e8f5f3d8335b937c");
        let mut dests: Vec<&str> = found.iter().map(|m| m.file.dest.as_str()).collect();
        dests.sort();
        assert_eq!(dests, ["fixup4cd.dat", "fixup_cd.dat"]);
    }

    #[test]
    fn every_start_elf_has_its_fixup_in_each_firmware_release() {
        for release in embedded().releases_of(ReleaseKind::Firmware) {
            if !release.members_pinned {
                continue;
            }
            let dests: Vec<&str> = release.files.iter().map(|f| f.dest.as_str()).collect();
            assert!(dests.contains(&"bootcode.bin"), "{}", release.label());
            let starts: Vec<&&str> = dests.iter().filter(|d| d.starts_with("start")).collect();
            assert_eq!(starts.len(), 8, "{}", release.label());
            for start in starts {
                let fixup = start.replacen("start", "fixup", 1).replace(".elf", ".dat");
                assert!(
                    dests.contains(&fixup.as_str()),
                    "{}: {fixup}",
                    release.label()
                );
            }
        }
    }

    #[test]
    fn board_by_dt_model_picks_the_longest_prefix() {
        let m = embedded();
        let id = |model: &str| m.board_by_dt_model(model).map(|b| b.id.as_str());
        assert_eq!(id("Raspberry Pi 3 Model B Rev 1.2\0"), Some("pi3b"));
        assert_eq!(
            id("Raspberry Pi 3 Model B Plus Rev 1.3\0"),
            Some("pi3bplus")
        );
        assert_eq!(id("Raspberry Pi 3 Model B+"), Some("pi3bplus"));
        assert_eq!(id("Raspberry Pi 3 Model B"), Some("pi3b"));
        assert_eq!(
            id("Raspberry Pi 3 Model A Plus Rev 1.0\0"),
            Some("pi3aplus")
        );
        assert_eq!(id("Raspberry Pi Zero 2 W Rev 1.0\0"), Some("pi02w"));
        assert_eq!(id("Raspberry Pi 4 Model B Rev 1.4\0"), Some("pi4b"));
        assert_eq!(id("Raspberry Pi 400 Rev 1.0\0"), Some("pi400"));
        assert_eq!(id("Raspberry Pi Compute Module 4 Rev 1.0\0"), Some("cm4"));
        assert_eq!(id("Raspberry Pi Compute Module 4S Rev 1.0\0"), None);
        assert_eq!(id("Raspberry Pi 5 Model B Rev 1.0\0"), None);
        assert_eq!(id(""), None);
    }

    #[test]
    fn releases_of_is_newest_first() {
        let m = embedded();
        let versions = |kind| -> Vec<String> {
            m.releases_of(kind)
                .iter()
                .map(|r| r.version.clone())
                .collect()
        };
        assert_eq!(
            versions(ReleaseKind::UBoot),
            ["2025.01-3+deb13u1", "2023.01+dfsg-2+deb12u3"]
        );
        assert_eq!(
            versions(ReleaseKind::Firmware),
            ["1.20241126", "1.20240424", "1.20220830"]
        );
        assert_eq!(
            versions(ReleaseKind::Uefi),
            ["v1.40", "v1.39", "v1.35", "v1.26"]
        );
    }

    #[test]
    fn releases_for_board_follow_files_and_projects() {
        let m = embedded();
        let board = |id| m.board(id).expect("known board");
        let labels = |kind, id| -> Vec<String> {
            m.releases_for_board(kind, board(id))
                .iter()
                .map(|r| r.label())
                .collect()
        };
        assert_eq!(labels(ReleaseKind::Uefi, "pi3b"), ["uefi pftf RPi3 v1.39"]);
        assert_eq!(labels(ReleaseKind::Uefi, "cm4").len(), 3);
        // Unpinned firmware (no files) serves nobody yet.
        assert_eq!(
            labels(ReleaseKind::Firmware, "pi4b"),
            [
                "firmware upstream 1.20240424",
                "firmware upstream 1.20220830"
            ]
        );
        let pi4_files: Vec<&str> = m
            .release(ReleaseKind::Firmware, "1.20240424")
            .expect("pinned")
            .files_for("pi4b")
            .iter()
            .map(|f| f.dest.as_str())
            .collect();
        assert!(
            pi4_files
                .iter()
                .all(|d| d.starts_with("start4") || d.starts_with("fixup4"))
        );
        assert_eq!(pi4_files.len(), 8);
    }

    #[test]
    fn release_lookup_by_published_or_upstream_version() {
        let m = embedded();
        let r = m
            .release(ReleaseKind::UBoot, "2023.01")
            .expect("by upstream version");
        assert_eq!(r.version, "2023.01+dfsg-2+deb12u3");
        let r = m
            .release(ReleaseKind::UBoot, "2025.01-3+deb13u1")
            .expect("by exact version");
        assert_eq!(r.sources[0].kind, SourceKind::Deb);
        assert!(matches!(
            m.release(ReleaseKind::Firmware, "1.20990101"),
            Err(ManifestError::UnknownRelease { .. })
        ));
        assert!(matches!(
            m.release(ReleaseKind::Firmware, "soon"),
            Err(ManifestError::BadVersion(_))
        ));
    }

    #[test]
    fn release_lookup_reports_ambiguity() {
        let rpi4 = include_str!("../../manifests/uefi.toml").replacen(
            "version = \"v1.26\"",
            "version = \"v1.39\"",
            1,
        );
        let m = with_release(&rpi4).expect("RPi3 and RPi4 may share a version");
        match m.release(ReleaseKind::Uefi, "v1.39") {
            Err(e @ ManifestError::AmbiguousRelease { .. }) => {
                let text = e.to_string();
                assert!(text.contains("uefi pftf RPi3 v1.39"), "{text}");
                assert!(text.contains("uefi pftf RPi4 v1.39"), "{text}");
            }
            other => panic!("expected ambiguity, got {other:?}"),
        }
    }

    #[test]
    fn json_uses_manifest_names_and_hides_the_index() {
        let m = embedded();
        m.identify(UBOOT_2023_RPI3);
        let json = serde_json::to_value(&m).expect("serialisable");
        // boards, releases, known_issues; not the index.
        assert_eq!(json.as_object().map(|o| o.len()), Some(3));
        let release = serde_json::to_value(m.release(ReleaseKind::UBoot, "2023.01").expect("pin"))
            .expect("serialisable");
        assert_eq!(release["kind"], "u-boot");
        assert_eq!(release["sources"][0]["kind"], "deb");
        assert_eq!(release["sources"][0]["verified_on"], "2026-11-25");
        assert_eq!(release["files"][0]["build"], "rpi_3");
    }
}
