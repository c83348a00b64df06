//! Debian packages resolved through the archive's signature: releases newer than pifw.
//!
//! Owns the chain of trust from a keyring on this machine to the bytes of one `.deb`:
//!
//! 1. `<mirror>/dists/<suite>/InRelease`, clearsigned, must carry a signature that verifies
//!    with a key of the keyring (the system's `/usr/share/keyrings/debian-archive-keyring.gpg`,
//!    or one the user names). Only the signed text is read from then on: the OpenPGP cleartext
//!    framework ignores trailing whitespace, so what is parsed is exactly what was signed.
//! 2. Its `SHA256:` list pins `<component>/binary-<arch>/Packages.xz` (or `.gz`, or plain):
//!    downloaded, checked by size and sha256 before it is cached or read.
//! 3. The package's stanza (the highest `Version:` of that name) pins the `.deb`: `Filename`,
//!    `Size`, `SHA256`; downloaded and checked the same way.
//!
//! A wrong signature, a `Packages` whose hash differs from the signed one, a `.deb` whose hash
//! differs from `Packages` each stop the chain with nothing of it cached (the InRelease is never
//! cached; `Packages` only once its signed hash matched). The `.deb`'s members are then as good
//! as pinned: the caller takes them out with the archive code and may treat them as verified
//! "by the Debian archive signature".
//!
//! rPGP (`pgp`, pure Rust, maintained, used by Delta Chat and others) verifies the signatures:
//! it parses the binary keyring Debian ships, verifies RSA and Ed25519 signatures by primary
//! keys and subkeys (both kinds sign Debian's `InRelease` today), and needs no C library,
//! unlike sequoia's default crypto backend (nettle).
//!
//! Not done here (a caller must not claim them): key expiry and revocation are not checked
//! against the signature's time; `Valid-Until` is not enforced (Debian sets it only on some
//! suites), so a replayed older `InRelease` would resolve an older, still correctly signed
//! release; `Acquire-By-Hash` paths are not used.

use super::cache::{Cache, Pin};
use super::compress::{Compression, decompressor};
use super::{FetchError, FetchOptions, Progress, Verified, http};
use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::types::KeyDetails;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// An `InRelease` larger than this is refused (Debian's are a few hundred KiB).
const MAX_INRELEASE: u64 = 16 << 20;

/// Where and what to resolve.
#[derive(Debug, Clone)]
pub struct Archive<'a> {
    /// The directory that holds `dists/` and `pool/`.
    pub mirror: &'a str,
    /// `bookworm`, `trixie`, `stable`, ...
    pub suite: &'a str,
    /// `main`, `non-free-firmware`, ...
    pub component: &'a str,
    /// `arm64`, `all`, ...
    pub arch: &'a str,
    /// OpenPGP keyring (binary or ASCII-armoured).
    pub keyring: &'a Path,
}

/// One package as the signed index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPackage {
    pub name: String,
    pub version: String,
    /// Pool path, relative to the mirror.
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

/// How a package resolved through the archive was verified: what backups, plans and status
/// record beside the files it installed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveProvenance {
    /// Always [`VERIFIED_BY`].
    pub verified_by: String,
    /// The archive base the package came from.
    pub mirror: String,
    pub suite: String,
    pub component: String,
    pub arch: String,
    pub package: String,
    /// The package's Debian version, as the signed index gives it.
    pub version: String,
    /// Pool path of the `.deb`.
    pub filename: String,
    /// sha256 of the `.deb`, as the signed index pins it.
    pub deb_sha256: String,
    /// Fingerprint (uppercase hex) of the keyring's primary key whose key or subkey made the
    /// `InRelease` signature that verified.
    pub signing_key: String,
    /// That key's first user id, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_uid: Option<String>,
}

/// The words plans, JSON, backups and status use for a release resolved through the archive.
pub const VERIFIED_BY: &str = "the Debian archive signature";

impl ArchiveProvenance {
    /// One line: `verified by the Debian archive signature: u-boot-rpi 2025.01-3+deb13u1
    /// (trixie main arm64), InRelease signed by key ABCD...`.
    pub fn describe(&self) -> String {
        format!(
            "verified by {}: {} {} ({} {} {}), InRelease signed by key {}{}",
            self.verified_by,
            self.package,
            self.version,
            self.suite,
            self.component,
            self.arch,
            self.signing_key,
            self.signing_key_uid
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default()
        )
    }
}

/// The newest version of `package` in the archive, its `.deb` downloaded (or found in the
/// cache) and verified through the signed index, and how it was verified.
///
/// Only the `.deb` is cached, and only once its hash matched the signed index: the `Packages`
/// index is downloaded into a scratch directory (verified against the signed `InRelease` all
/// the same) and removed when this returns, so a failure anywhere in the chain leaves the
/// cache as it was.
pub fn resolve_package(
    opts: &FetchOptions,
    archive: &Archive<'_>,
    package: &str,
    progress: &mut dyn Progress,
) -> Result<(IndexedPackage, Verified, ArchiveProvenance), FetchError> {
    let (found, signer) = resolve_index(opts, archive, package, progress)?;
    let cache = Cache::open(&opts.cache_dir)?;
    let base = archive.mirror.trim_end_matches('/');
    let deb_url = format!("{base}/{}", found.filename);
    let deb = match cache.lookup(&found.sha256, Some(found.size))? {
        Some(v) => v,
        None => {
            let http = http::Http::new(opts.timeout, opts.limits.max_total)?;
            let pin = Pin {
                sha256: &found.sha256,
                size: Some(found.size),
            };
            http.download(&deb_url, pin, &found.filename, &cache, progress)?
        }
    };
    let provenance = ArchiveProvenance {
        verified_by: VERIFIED_BY.to_string(),
        mirror: base.to_string(),
        suite: archive.suite.to_string(),
        component: archive.component.to_string(),
        arch: archive.arch.to_string(),
        package: found.name.clone(),
        version: found.version.clone(),
        filename: found.filename.clone(),
        deb_sha256: found.sha256.clone(),
        signing_key: signer.fingerprint,
        signing_key_uid: signer.uid,
    };
    Ok((found, deb, provenance))
}

/// The newest version of `package` the signed index of `archive` names, without downloading
/// the package: what `pifw manifests list` shows the archive offers.
pub fn lookup_package(
    opts: &FetchOptions,
    archive: &Archive<'_>,
    package: &str,
    progress: &mut dyn Progress,
) -> Result<(IndexedPackage, String), FetchError> {
    resolve_index(opts, archive, package, progress).map(|(p, s)| (p, s.fingerprint))
}

/// Who signed an `InRelease`.
pub(crate) struct Signer {
    pub fingerprint: String,
    pub uid: Option<String>,
}

fn resolve_index(
    opts: &FetchOptions,
    archive: &Archive<'_>,
    package: &str,
    progress: &mut dyn Progress,
) -> Result<(IndexedPackage, Signer), FetchError> {
    let base = archive.mirror.trim_end_matches('/');
    let in_release_url = format!("{base}/dists/{}/InRelease", archive.suite);
    if opts.offline {
        return Err(FetchError::Offline {
            what: in_release_url,
            cache: opts.cache_dir.display().to_string(),
        });
    }
    let cache = Cache::open(&opts.cache_dir)?;
    let http = http::Http::new(opts.timeout, opts.limits.max_total)?;
    let text = http.get_small(&in_release_url, MAX_INRELEASE)?;
    let keys = read_keyring(archive.keyring)?;
    let (signed, signer) = verify_clearsigned_by(&text, &keys, &in_release_url)?;

    let (index_path, index_pin) = pick_index(&signed, archive, &in_release_url)?;
    let index_url = format!("{base}/dists/{}/{index_path}", archive.suite);
    // The index is verified against the signed hash like anything else, but kept in a scratch
    // cache that goes away with this function: the real cache gains only the .deb.
    let scratch = tempfile::tempdir_in(cache.tmp_dir())
        .map_err(FetchError::io("creating a scratch directory in the cache"))?;
    let scratch_cache = Cache::open(scratch.path())?;
    let pin = Pin {
        sha256: &index_pin.sha256,
        size: Some(index_pin.size),
    };
    let index = http.download(&index_url, pin, &index_path, &scratch_cache, progress)?;
    let found = find_package(&index.path, &index_url, package, opts.limits.max_total)?;
    drop(scratch);
    Ok((found, signer))
}

/// The signed text of a clearsigned document (an `InRelease`) whose signature verifies with a
/// key of `keyring`; `origin` names it in errors.
pub fn verify_signed_text(text: &str, keyring: &Path, origin: &str) -> Result<String, FetchError> {
    let keys = read_keyring(keyring)?;
    verify_clearsigned_by(text, &keys, origin).map(|(t, _)| t)
}

/// Every key of an OpenPGP keyring file, binary or armoured.
pub(crate) fn read_keyring(path: &Path) -> Result<Vec<SignedPublicKey>, FetchError> {
    let label = path.display().to_string();
    let bytes = std::fs::read(path).map_err(FetchError::io(format!("reading {label}")))?;
    let bad = |message: String| FetchError::Signature {
        what: label.clone(),
        message,
    };
    let (keys, _) = SignedPublicKey::from_reader_many(std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("not an OpenPGP keyring: {e}")))?;
    let keys: Vec<SignedPublicKey> = keys
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not an OpenPGP keyring: {e}")))?;
    if keys.is_empty() {
        return Err(bad("the keyring holds no key".into()));
    }
    Ok(keys)
}

/// The signed text of a clearsigned document, if one of its signatures verifies with a key
/// (primary or subkey) of `keys`, and the primary key whose key or subkey verified it.
pub(crate) fn verify_clearsigned_by(
    text: &str,
    keys: &[SignedPublicKey],
    origin: &str,
) -> Result<(String, Signer), FetchError> {
    let bad = |message: &str| FetchError::Signature {
        what: origin.to_string(),
        message: message.to_string(),
    };
    let (msg, _) = CleartextSignedMessage::from_string(text)
        .map_err(|e| bad(&format!("not a clearsigned document: {e}")))?;
    let signer = keys
        .iter()
        .find(|k| msg.verify(*k).is_ok() || k.public_subkeys.iter().any(|s| msg.verify(s).is_ok()));
    let Some(key) = signer else {
        return Err(bad(
            "no signature on it verifies with a key of the keyring; nothing from this archive \
             was used",
        ));
    };
    let signer = Signer {
        fingerprint: format!("{:X}", key.fingerprint()),
        uid: key
            .details
            .users
            .first()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned()),
    };
    Ok((msg.signed_text().replace("\r\n", "\n"), signer))
}

struct IndexPin {
    sha256: String,
    size: u64,
}

/// The best `Packages` index the signed `SHA256:` list names for the component and
/// architecture: `.xz`, then `.gz`, then plain.
fn pick_index(
    signed: &str,
    archive: &Archive<'_>,
    origin: &str,
) -> Result<(String, IndexPin), FetchError> {
    let mut entries: Vec<(String, IndexPin)> = Vec::new();
    let mut in_sha256 = false;
    for line in signed.lines() {
        if !line.starts_with(' ') {
            in_sha256 = line.trim_end() == "SHA256:";
            continue;
        }
        if !in_sha256 {
            continue;
        }
        let mut parts = line.split_whitespace();
        if let (Some(sha), Some(size), Some(path), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
            && let Ok(size) = size.parse::<u64>()
            && sha.len() == 64
            && sha.bytes().all(|b| b.is_ascii_hexdigit())
        {
            entries.push((
                path.to_string(),
                IndexPin {
                    sha256: sha.to_ascii_lowercase(),
                    size,
                },
            ));
        }
    }
    let stem = format!("{}/binary-{}/Packages", archive.component, archive.arch);
    for suffix in [".xz", ".gz", ""] {
        let want = format!("{stem}{suffix}");
        if let Some(i) = entries.iter().position(|(p, _)| *p == want) {
            return Ok(entries.swap_remove(i));
        }
    }
    Err(FetchError::Archive {
        archive: origin.to_string(),
        message: format!("the signed SHA256 list names no {stem}(.xz|.gz)"),
    })
}

/// The stanza of the highest version of `package` in a (verified) `Packages` file.
fn find_package(
    path: &Path,
    origin: &str,
    package: &str,
    max: u64,
) -> Result<IndexedPackage, FetchError> {
    let io_err = FetchError::io(format!("reading {origin}"));
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let mut magic = [0u8; 6];
    let n = file
        .read(&mut magic)
        .map_err(FetchError::io(format!("reading {origin}")))?;
    let compression = Compression::sniff(&magic[..n]);
    let file = std::fs::File::open(path).map_err(FetchError::io(format!("reading {origin}")))?;
    let reader = BufReader::new(decompressor(compression, file).take(max));
    let mut best: Option<IndexedPackage> = None;
    let mut stanza: Vec<String> = Vec::new();
    let mut lines = reader.lines();
    loop {
        let line = lines.next().transpose().map_err(|e| FetchError::Archive {
            archive: origin.to_string(),
            message: format!("decompressing: {e}"),
        })?;
        let end = line.as_deref().is_none_or(|l| l.trim().is_empty());
        if let Some(l) = &line
            && !l.trim().is_empty()
        {
            stanza.push(l.clone());
        }
        if end && !stanza.is_empty() {
            if let Some(p) = parse_stanza(&stanza)
                && p.name == package
                && best.as_ref().is_none_or(|b| newer(&p.version, &b.version))
            {
                best = Some(p);
            }
            stanza.clear();
        }
        if line.is_none() {
            break;
        }
    }
    let found = best.ok_or_else(|| FetchError::Archive {
        archive: origin.to_string(),
        message: format!("no package {package}"),
    })?;
    // A pool path comes from the signed index, but it still must not climb out of the mirror.
    if found.filename.starts_with('/') || found.filename.split('/').any(|p| p == "..") {
        return Err(FetchError::UnsafeMember {
            archive: origin.to_string(),
            member: found.filename,
        });
    }
    Ok(found)
}

fn parse_stanza(lines: &[String]) -> Option<IndexedPackage> {
    let field = |name: &str| {
        lines.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == name).then(|| v.trim().to_string())
        })
    };
    let sha256 = field("SHA256")?.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(IndexedPackage {
        name: field("Package")?,
        version: field("Version")?,
        filename: field("Filename")?,
        size: field("Size")?.parse().ok()?,
        sha256,
    })
}

/// Whether Debian version `a` sorts after `b`, by pifw's version keys; unparseable versions
/// fall back to text order.
fn newer(a: &str, b: &str) -> bool {
    match (
        crate::manifest::version_key(a),
        crate::manifest::version_key(b),
    ) {
        (Ok(a), Ok(b)) => a.cmp_precedence(&b).then_with(|| a.cmp(&b)).is_gt(),
        _ => a > b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_and_the_newest_version() {
        let lines = |t: &str| t.lines().map(str::to_string).collect::<Vec<_>>();
        let p = parse_stanza(&lines(
            "Package: u-boot-rpi\nVersion: 2025.01-3\nFilename: pool/main/u/u-boot/x.deb\n\
             Size: 12\nSHA256: ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        ))
        .expect("stanza");
        assert_eq!(p.size, 12);
        assert!(p.sha256.starts_with("abcdef"));
        assert!(parse_stanza(&lines("Package: x\nVersion: 1\nFilename: f\nSize: 1")).is_none());
        assert!(newer("2025.01-3+deb13u1", "2023.01+dfsg-2+deb12u3"));
        assert!(!newer("2023.01+dfsg-2", "2025.01-3"));
    }
}
