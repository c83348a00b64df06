//! Obtaining verified artifacts: downloads, the content-addressed cache, archives, `--from`.
//!
//! Owns every byte pifw gets from outside the card: release files downloaded from the sources
//! a manifest lists, archives (zip, tar, Debian packages) and the members taken out of them,
//! and files a user hands over with `--from`. The promise it keeps: **nothing unverified is
//! cached or returned as verified**. A download streams into a temporary file inside the cache
//! directory while it is hashed; only when its size and sha256 equal the pin is it renamed to
//! `<cache>/sha256/<hex>`. Any failure (wrong bytes, a short body, a stalled server, a limit
//! hit) drops the temporary file, so the cache holds only files whose name is their hash.
//!
//! It must not print (progress goes through [`Progress`], which the command layer draws), read
//! the user's configuration (the mirror and the cache directory arrive in [`FetchOptions`]), or
//! touch the card.
//!
//! # API
//!
//! - [`obtain`]: the files of one release, each from the cache or from the release's sources
//!   in manifest order: a per-file URL (`{file}` in the pattern replaced by the file's `dest`,
//!   as the manifest format defines), then the release's archive (zip, tar(.gz/.xz), or a
//!   Debian package fetched from `<debian_mirror>/<pool path>`), itself pinned by sha256 and
//!   cached by it, from which the file's `member` is streamed out and verified.
//! - [`from_path`] (`--from`): a file, a directory, an archive (zip, tar plain or gz/xz/zst,
//!   a .deb whose members are plain, gz, xz or zst), or a whole disk image (`.img`, plain or
//!   gz/xz/zst: the files of its firmware partition, see `image.rs`); every file in it hashed
//!   and matched against every pin of the manifests. Pinned ones are copied into the cache;
//!   unpinned ones are reported as such and the command layer decides whether to accept them.
//! - [`resolve_package`]: a Debian package resolved through the archive's signed `InRelease`
//!   (verified with a keyring), its `Packages` index and the `.deb`'s sha256 (`debian.rs`):
//!   releases newer than the embedded manifests, with the [`ArchiveProvenance`] that says how
//!   they were verified; `--from-debian` (`crate::debian_source`) drives it. Only the
//!   verified `.deb` is cached; the `Packages` index never is. [`lookup_package`] stops at the
//!   signed index (what `pifw manifests list` shows the archive offers).
//! - [`debian_mirror_from_apt`]: the first Debian archive named in the apt sources, a default
//!   for `--debian-mirror`.
//! - [`check_url`]: the scheme rule: `https://` always, `http://` only for pinned artifacts
//!   (their sha256 protects them; Debian mirrors are often plain http).
//!
//! Differences from the first sketch of this API: progress is only the `&mut dyn Progress`
//! argument (pass [`NoProgress`] when stderr is not a terminal) instead of a flag as well; and
//! a `--from` file carries every pin it matches (the same bytes can be pinned by several
//! releases or under several names), not at most one.
//!
//! # Archive safety
//!
//! Member names that are absolute or contain `..` are refused in every archive kind (the whole
//! archive is rejected: a well-formed release never has one); a zip's raw name is judged, with
//! `\` as a separator too. Symlinks, hard links, devices and directories are skipped: their
//! bytes are never a release file. [`Limits`] caps the bytes of one member, the bytes
//! decompressed from one archive (which also bounds what a tar stream makes us skip through)
//! and the number of members, against zip and tar bombs.
//!
//! # `--from` guards
//!
//! What `--from` names must be a regular file or a directory: a FIFO, socket or device is
//! refused from its metadata, before it is opened (and the file is opened with `O_NONBLOCK`
//! and checked again, so a FIFO swapped in meanwhile cannot hang the command either). A plain
//! file is one firmware file at most: over [`Limits::max_member`] (256 MiB; the largest Pi
//! firmware file is a few MiB, a kernel image some tens) it is refused before its first byte is
//! read. An archive may be as large as [`Limits::max_total`] (1 GiB). A disk image is exempt:
//! it is streamed, never staged whole, and only its firmware partition's range (at most
//! [`Limits::max_total`]) is spooled; its files are capped like archive members. A download
//! without a size pin is cut off at [`Limits::max_total`] too. So the cache's `tmp` never holds
//! more than one capped object per source at a time, and every failure removes it.

mod apt;
mod archive;
mod cache;
mod compress;
mod debian;
mod http;
mod image;
mod local;

pub use crate::digest::hash_reader;
pub use apt::debian_mirror_from_apt;
pub use archive::{Limits, Unpacked, unpack_zip};
pub use debian::{
    Archive, ArchiveProvenance, IndexedPackage, VERIFIED_BY, lookup_package, resolve_package,
    verify_signed_text,
};
pub use local::{LocalArtifact, LocalArtifacts, PinMatch, from_path, open_source};

use crate::manifest::{Release, ReleaseFile, Source, SourceKind};
use cache::Cache;
use std::path::PathBuf;
use std::time::Duration;

/// What [`obtain`] and [`from_path`] need from the command layer.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Root of the content-addressed cache (`<cache_dir>/sha256/<hex>`); temporary files live
    /// in `<cache_dir>/tmp` so a verified download is renamed, never copied, into place.
    pub cache_dir: PathBuf,
    /// Base URL of a Debian archive (the directory holding `pool/`), for `deb` sources.
    pub debian_mirror: Option<String>,
    /// Use the cache only; a miss is an error that names the artifact.
    pub offline: bool,
    /// Connect timeout and the longest wait for any single read: a stalled server fails after
    /// this long, a slow but moving download does not.
    pub timeout: Duration,
    pub limits: Limits,
}

impl FetchOptions {
    /// Options with a 30 s timeout, default [`Limits`], no mirror, online.
    pub fn new(cache_dir: impl Into<PathBuf>) -> FetchOptions {
        FetchOptions {
            cache_dir: cache_dir.into(),
            debian_mirror: None,
            offline: false,
            timeout: Duration::from_secs(30),
            limits: Limits::default(),
        }
    }
}

/// A file whose bytes matched a pin, kept in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `<cache>/sha256/<hex>`.
    pub path: PathBuf,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
}

/// Download progress, drawn by the command layer. Every method has an empty default.
pub trait Progress {
    /// A download of `url` starts; `total` is its size when known.
    fn start(&mut self, _url: &str, _total: Option<u64>) {}
    /// `done` bytes of the current download have arrived.
    fn advance(&mut self, _done: u64) {}
    /// The current download ended (successfully or not).
    fn finish(&mut self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{what} from {origin} has sha256 {actual}, but the pin is {expected}")]
    HashMismatch {
        what: String,
        origin: String,
        expected: String,
        actual: String,
    },
    #[error("{what} from {origin} is {actual} bytes, but the pin says {expected}")]
    SizeMismatch {
        what: String,
        origin: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "download of {url} ended early: {received} of {} bytes arrived ({cause})",
        expected.map_or("?".to_string(), |n| n.to_string())
    )]
    Truncated {
        url: String,
        expected: Option<u64>,
        received: u64,
        cause: String,
    },
    #[error("{url}: the server sent nothing for {}s (after {received} bytes)", after.as_secs_f32())]
    Timeout {
        url: String,
        after: Duration,
        received: u64,
    },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    // Not "{source}": reqwest's own text repeats the URL, and its causes are a chain of
    // generic layers; the innermost one says what went wrong ("failed to lookup address").
    #[error("{url}: {}", network_cause(source))]
    Network {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("setting up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("refusing {url}: {reason}")]
    InsecureUrl { url: String, reason: String },
    #[error(
        "{what} is not in the cache ({cache}) and downloads are off (--offline): run without \
         --offline to download it, or hand the file over with --from PATH"
    )]
    Offline { what: String, cache: String },
    #[error(
        "{what} comes from the Debian package {pool_path}, but no Debian mirror is set: pass \
         --debian-mirror URL (the directory that holds pool/), set debian_mirror in the config \
         file, or add a Debian archive to the apt sources"
    )]
    NoMirror { what: String, pool_path: String },
    #[error("{release}: no source provides {}", files.join(", "))]
    NoSource { release: String, files: Vec<String> },
    #[error("{release}: could not obtain {}:{}", files.join(", "), list(errors))]
    AllSourcesFailed {
        release: String,
        files: Vec<String>,
        errors: Vec<FetchError>,
    },
    #[error("{archive} has no member {member}")]
    MemberMissing { archive: String, member: String },
    #[error("{archive}: refusing member {member:?}: absolute or escaping path")]
    UnsafeMember { archive: String, member: String },
    #[error("{archive}: {what} exceeds the limit of {}", mib(*limit))]
    ArchiveLimit {
        archive: String,
        what: String,
        limit: u64,
    },
    #[error("{archive}: {message}")]
    Archive { archive: String, message: String },
    #[error(
        "{path} is {kind}; --from takes a regular file (a release file, an archive, a disk \
         image) or a directory"
    )]
    NotRegular { path: String, kind: String },
    #[error(
        "{path} is {size} bytes, more than the {} pifw accepts for one {what} \
         (no Pi firmware file comes near it); nothing was read",
        mib(*limit)
    )]
    TooLarge {
        path: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("{what}: bad signature: {message}")]
    Signature { what: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// `limit` bytes as MiB when it is a whole number of them (`256 MiB`), else in bytes.
fn mib(limit: u64) -> String {
    if limit >= 1 << 20 && limit.is_multiple_of(1 << 20) {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{limit} bytes")
    }
}

/// What went wrong on the network, from the innermost cause of a reqwest error.
fn network_cause(e: &reqwest::Error) -> String {
    let mut innermost: Option<&dyn std::error::Error> = None;
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        innermost = Some(c);
        cur = c.source();
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "network error"
    };
    match innermost {
        Some(inner) => format!("{what}: {inner}"),
        None => what.to_string(),
    }
}

fn list(errors: &[FetchError]) -> String {
    errors.iter().map(|e| format!("\n  - {e}")).collect()
}

impl FetchError {
    pub(crate) fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> FetchError {
        let what = what.to_string();
        move |source| FetchError::Io { what, source }
    }
}

/// Whether `url` may be downloaded: `https://` always; `http://` only when the bytes are
/// `pinned` (checked against a sha256 before use); nothing else.
pub fn check_url(url: &str, pinned: bool) -> Result<(), FetchError> {
    let refuse = |reason: &str| FetchError::InsecureUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| refuse(&format!("not a URL ({e})")))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if pinned => Ok(()),
        "http" => Err(refuse(
            "plain http is allowed only for pinned artifacts; use https",
        )),
        other => Err(refuse(&format!("scheme {other}: is not http(s)"))),
    }
}

/// `dest` of `release`, as error messages name a file.
fn file_label(release: &Release, file: &ReleaseFile) -> String {
    format!("{} of {}", file.dest, release.label())
}

/// The files of `release` listed in `files`, from the cache or downloaded and verified.
///
/// Returns them in the order asked. Sources are tried in manifest order; a file still missing
/// after all of them is an error carrying every source's failure.
pub fn obtain(
    opts: &FetchOptions,
    release: &Release,
    files: &[&ReleaseFile],
    progress: &mut dyn Progress,
) -> Result<Vec<(ReleaseFile, Verified)>, FetchError> {
    let cache = Cache::open(&opts.cache_dir)?;
    let mut found: Vec<Option<Verified>> = Vec::with_capacity(files.len());
    for file in files {
        found.push(cache.lookup(&file.sha256, Some(file.size))?);
    }
    let pending = |found: &[Option<Verified>]| -> Vec<usize> {
        (0..files.len()).filter(|&i| found[i].is_none()).collect()
    };

    if opts.offline && !pending(&found).is_empty() {
        let what = pending(&found)
            .iter()
            .map(|&i| file_label(release, files[i]))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(FetchError::Offline {
            what,
            cache: opts.cache_dir.display().to_string(),
        });
    }

    let mut client: Option<http::Http> = None;
    let mut errors = Vec::new();
    for source in &release.sources {
        let todo = pending(&found);
        if todo.is_empty() {
            break;
        }
        match source.kind {
            SourceKind::Url => {
                for i in todo {
                    let file = files[i];
                    let url = source.location.replace("{file}", &file.dest);
                    let http = client_for(&mut client, opts)?;
                    let pin = cache::Pin {
                        sha256: &file.sha256,
                        size: Some(file.size),
                    };
                    match http.download(&url, pin, &file.dest, &cache, progress) {
                        Ok(v) => found[i] = Some(v),
                        Err(e) => errors.push(e),
                    }
                }
            }
            SourceKind::Zip | SourceKind::Tar | SourceKind::Deb => {
                let wanted: Vec<usize> = todo
                    .into_iter()
                    .filter(|&i| files[i].member.is_some())
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                let what = wanted
                    .iter()
                    .map(|&i| files[i].dest.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let result = obtain_archive(opts, &cache, &mut client, source, &what, progress)
                    .and_then(|(archive, label)| {
                        let members: Vec<&ReleaseFile> = wanted.iter().map(|&i| files[i]).collect();
                        archive::extract_pinned(
                            &archive.path,
                            format_of(source),
                            &label,
                            &members,
                            &opts.limits,
                            &cache,
                        )
                    });
                match result {
                    Ok(extracted) => {
                        for (&i, v) in wanted.iter().zip(extracted) {
                            found[i] = Some(v);
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
    }

    let missing = pending(&found);
    if !missing.is_empty() {
        let names = missing.iter().map(|&i| files[i].dest.clone()).collect();
        return Err(match errors.len() {
            0 => FetchError::NoSource {
                release: release.label(),
                files: names,
            },
            1 => errors.remove(0),
            _ => FetchError::AllSourcesFailed {
                release: release.label(),
                files: names,
                errors,
            },
        });
    }
    Ok(files
        .iter()
        .zip(found)
        .filter_map(|(file, v)| Some(((*file).clone(), v?)))
        .collect())
}

/// One whole archive `source` (a release zip, say), from the cache or downloaded and verified
/// against the source's sha256 pin. For releases whose members are not pinned (pftf UEFI):
/// the archive's own pin is then the only check, and the caller reads the members.
pub fn obtain_source(
    opts: &FetchOptions,
    source: &Source,
    progress: &mut dyn Progress,
) -> Result<Verified, FetchError> {
    let cache = Cache::open(&opts.cache_dir)?;
    if let Some(sha) = &source.sha256
        && let Some(v) = cache.lookup(sha, source.size)?
    {
        return Ok(v);
    }
    if opts.offline {
        return Err(FetchError::Offline {
            what: source.location.clone(),
            cache: opts.cache_dir.display().to_string(),
        });
    }
    let mut client = None;
    obtain_archive(
        opts,
        &cache,
        &mut client,
        source,
        &source.location,
        progress,
    )
    .map(|(v, _)| v)
}

fn client_for<'a>(
    client: &'a mut Option<http::Http>,
    opts: &FetchOptions,
) -> Result<&'a http::Http, FetchError> {
    if client.is_none() {
        *client = Some(http::Http::new(opts.timeout, opts.limits.max_total)?);
    }
    Ok(client.as_ref().expect("the client was set just above"))
}

fn format_of(source: &Source) -> archive::Format {
    match source.kind {
        SourceKind::Zip => archive::Format::Zip,
        SourceKind::Deb => archive::Format::Deb,
        SourceKind::Tar | SourceKind::Url => archive::Format::Tar,
    }
}

/// The archive of `source`, from the cache or downloaded, and the label errors use for it
/// (its URL). `what` names the files wanted from it, for the offline and mirror errors.
fn obtain_archive(
    opts: &FetchOptions,
    cache: &Cache,
    client: &mut Option<http::Http>,
    source: &Source,
    what: &str,
    progress: &mut dyn Progress,
) -> Result<(Verified, String), FetchError> {
    let url = match source.kind {
        SourceKind::Deb => {
            let Some(mirror) = &opts.debian_mirror else {
                return Err(FetchError::NoMirror {
                    what: what.to_string(),
                    pool_path: source.location.clone(),
                });
            };
            format!("{}/{}", mirror.trim_end_matches('/'), source.location)
        }
        _ => source.location.clone(),
    };
    let Some(sha256) = &source.sha256 else {
        // The manifest loader requires a sha256 on every archive source.
        return Err(FetchError::Archive {
            archive: url,
            message: "archive source without a sha256 pin".into(),
        });
    };
    if let Some(v) = cache.lookup(sha256, source.size)? {
        return Ok((v, url));
    }
    let name = url.rsplit('/').next().unwrap_or(&url).to_string();
    let http = client_for(client, opts)?;
    let pin = cache::Pin {
        sha256,
        size: source.size,
    };
    let v = http.download(&url, pin, &name, cache, progress)?;
    Ok((v, url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_for_pinned_artifacts() {
        assert!(check_url("https://example.org/a.zip", false).is_ok());
        assert!(check_url("http://deb.example/debian/pool/x.deb", true).is_ok());
        let e = check_url("http://example.org/a.zip", false).expect_err("unpinned http");
        assert!(e.to_string().contains("https"), "{e}");
        for bad in ["file:///etc/passwd", "ftp://example.org/x", "not a url"] {
            assert!(
                matches!(check_url(bad, true), Err(FetchError::InsecureUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn all_sources_failed_lists_each_error() {
        let e = FetchError::AllSourcesFailed {
            release: "firmware upstream 1.2".into(),
            files: vec!["start.elf".into()],
            errors: vec![
                FetchError::Status {
                    url: "https://a/start.elf".into(),
                    status: 404,
                },
                FetchError::NoMirror {
                    what: "start.elf".into(),
                    pool_path: "pool/x.deb".into(),
                },
            ],
        };
        let text = e.to_string();
        assert!(text.contains("\n  - https://a/start.elf: the server answered 404"));
        assert!(text.contains("\n  - start.elf comes from the Debian package pool/x.deb"));
    }
}
