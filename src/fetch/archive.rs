//! Reading archives safely: zip, tar (plain, gzip, xz) and Debian packages (an `ar` archive
//! whose `data.tar.*` member holds the files).
//!
//! Owns the walk over an archive's regular files and the limits that make a hostile archive an
//! error instead of a full disk: member names are checked before anything is read (absolute or
//! `..` names reject the archive), links, devices and directories are skipped, and every byte
//! read goes through a cap. Members are handed to a visitor as a stream; nothing is unpacked
//! to a path chosen by the archive.

use super::cache::{Cache, Pin};
use super::compress::{Compression, decompressor};
use super::{FetchError, Verified};
use crate::manifest::ReleaseFile;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// Caps applied while reading one archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one member (the largest Pi firmware file is a few MiB).
    pub max_member: u64,
    /// Bytes decompressed from one archive, skipped members included.
    pub max_total: u64,
    /// Entries of one archive (directories and links count).
    pub max_members: usize,
}

impl Default for Limits {
    /// 256 MiB per member, 1 GiB per archive, 100,000 entries: a Debian kernel package
    /// (about 400 MiB unpacked) passes, a bomb does not.
    fn default() -> Limits {
        Limits {
            max_member: 256 << 20,
            max_total: 1 << 30,
            max_members: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Zip,
    /// tar, plain or compressed (recognised by its magic bytes).
    Tar,
    Deb,
}

/// What the visitor wants after one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// A visitor sees each regular member: its normalised name (relative, `/`-separated, no `./`),
/// its declared size, and a capped stream of its bytes.
pub(crate) type Visit<'a> = dyn FnMut(&str, u64, &mut dyn Read) -> Result<Flow, FetchError> + 'a;

/// The archive format of `path` from its first bytes: zip, Debian package, or a tar (plain,
/// gzip, xz or zstd; a tar is recognised by the `ustar` magic of its first header, POSIX.1-2001,
/// after decompressing the first block), else `None`.
pub(crate) fn sniff(path: &Path) -> io::Result<Option<Format>> {
    let mut file = File::open(path)?;
    let head = read_head(&mut file, 8)?;
    match head.as_slice() {
        [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..] => return Ok(Some(Format::Zip)),
        b"!<arch>\n" => return Ok(Some(Format::Deb)),
        _ => {}
    }
    file.seek(SeekFrom::Start(0))?;
    let compression = Compression::sniff(&head);
    // A damaged or foreign compressed stream is simply not a tar: the caller offers the file
    // as it is.
    let block = read_head(&mut decompressor(compression, file), 512).unwrap_or_default();
    Ok(is_tar_header(&block).then_some(Format::Tar))
}

/// Whether `block` is a tar header: `ustar` at offset 257 (POSIX and GNU tar both write it).
pub(crate) fn is_tar_header(block: &[u8]) -> bool {
    block.len() >= 262 && &block[257..262] == b"ustar"
}

/// Up to `n` bytes from the start of `r` (fewer only at the end of the stream).
pub(crate) fn read_head<R: Read>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// The compression of a file from its magic bytes; leaves `file` at its start.
fn head_compression(file: &mut File, label: &str) -> Result<Compression, FetchError> {
    let io_err = || FetchError::io(format!("reading {label}"));
    let head = read_head(file, 6).map_err(io_err())?;
    file.seek(SeekFrom::Start(0)).map_err(io_err())?;
    Ok(Compression::sniff(&head))
}

/// One member of an archive unpacked to a scratch file.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The member's normalised name (relative, `/`-separated).
    pub name: String,
    /// Where it was unpacked (a name chosen by pifw, never by the archive).
    pub file: std::path::PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Unpacks every regular member of the zip at `path` into `dir` as `m0`, `m1`, ..., each
/// hashed on its way, under `limits` and the name checks of every walk.
pub fn unpack_zip(path: &Path, dir: &Path, limits: &Limits) -> Result<Vec<Unpacked>, FetchError> {
    let label = path.display().to_string();
    let mut out: Vec<Unpacked> = Vec::new();
    walk(path, Format::Zip, &label, limits, &mut |name, _size, r| {
        let dest = dir.join(format!("m{}", out.len()));
        let mut w =
            File::create(&dest).map_err(FetchError::io(format!("creating {}", dest.display())))?;
        let mut hashing = crate::digest::Hashing::new(r);
        io::copy(&mut hashing, &mut w)
            .map_err(FetchError::io(format!("unpacking {name} from {label}")))?;
        let (sha256, size) = hashing.finish();
        out.push(Unpacked {
            name: name.to_string(),
            file: dest,
            size,
            sha256,
        });
        Ok(Flow::Continue)
    })?;
    Ok(out)
}

/// Calls `visit` for each regular member of the archive at `path` until it returns
/// [`Flow::Stop`]. `label` names the archive in errors.
pub(crate) fn walk(
    path: &Path,
    format: Format,
    label: &str,
    limits: &Limits,
    visit: &mut Visit<'_>,
) -> Result<(), FetchError> {
    let mut file = File::open(path).map_err(FetchError::io(format!("opening {label}")))?;
    match format {
        Format::Zip => walk_zip(file, label, limits, visit),
        Format::Tar => {
            let compression = head_compression(&mut file, label)?;
            walk_tar(decompressor(compression, file), label, limits, visit)
        }
        Format::Deb => {
            let (name, offset, size) = deb_data_member(&mut BufReader::new(&mut file), label)?;
            file.seek(SeekFrom::Start(offset))
                .map_err(FetchError::io(format!("reading {label}")))?;
            let Some(compression) = name
                .strip_prefix("data.tar")
                .and_then(Compression::from_suffix)
            else {
                return Err(FetchError::Archive {
                    archive: label.to_string(),
                    message: format!("{name}: unsupported compression (none, gz, xz and zst are)"),
                });
            };
            let stream = decompressor(compression, file.take(size));
            walk_tar(stream, label, limits, visit)
        }
    }
}

/// Streams the `member` of each of `files` out of the archive into the cache, verifying size
/// and sha256 against the file's pin. Returns them in the order of `files`.
pub(crate) fn extract_pinned(
    path: &Path,
    format: Format,
    label: &str,
    files: &[&ReleaseFile],
    limits: &Limits,
    cache: &Cache,
) -> Result<Vec<Verified>, FetchError> {
    let mut found: Vec<Option<Verified>> = vec![None; files.len()];
    walk(path, format, label, limits, &mut |name, size, reader| {
        let wanted: Vec<usize> = (0..files.len())
            .filter(|&i| found[i].is_none() && files[i].member.as_deref() == Some(name))
            .collect();
        let Some(&first) = wanted.first() else {
            return Ok(Flow::Continue);
        };
        let file = files[first];
        let origin = format!("{label} member {name}");
        if size != file.size {
            return Err(FetchError::SizeMismatch {
                what: file.dest.clone(),
                origin,
                expected: file.size,
                actual: size,
            });
        }
        let staged = cache
            .stage(reader, &mut |_| {})
            .map_err(|(e, _)| read_error(label, name, e))?;
        let pin = Pin {
            sha256: &file.sha256,
            size: Some(file.size),
        };
        let verified = cache.store(staged, pin, &file.dest, &origin)?;
        for i in wanted {
            found[i] = Some(verified.clone());
        }
        Ok(if found.iter().all(Option::is_some) {
            Flow::Stop
        } else {
            Flow::Continue
        })
    })?;
    files
        .iter()
        .zip(found)
        .map(|(file, v)| {
            v.ok_or_else(|| FetchError::MemberMissing {
                archive: label.to_string(),
                member: file.member.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// A cap was hit; carried inside an `io::Error` out of a [`Capped`] reader.
#[derive(Debug)]
struct LimitHit {
    what: String,
    limit: u64,
}

impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} exceeds {} bytes", self.what, self.limit)
    }
}

impl std::error::Error for LimitHit {}

/// A reader that fails once more than `limit` bytes came through, reporting `cap` (the
/// configured limit, of which `limit` may be the part still left).
struct Capped<R> {
    inner: R,
    used: u64,
    limit: u64,
    cap: u64,
    what: String,
}

impl<R> Capped<R> {
    fn new(inner: R, limit: u64, what: impl Into<String>) -> Capped<R> {
        Capped {
            inner,
            used: 0,
            limit,
            cap: limit,
            what: what.into(),
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.used += n as u64;
        if self.used > self.limit {
            return Err(io::Error::other(LimitHit {
                what: self.what.clone(),
                limit: self.cap,
            }));
        }
        Ok(n)
    }
}

/// An error from reading `member` of `label`: a limit when a [`Capped`] reader tripped,
/// otherwise a malformed or unreadable archive.
pub(crate) fn read_error(label: &str, member: &str, e: io::Error) -> FetchError {
    if let Some(hit) = e.get_ref().and_then(|i| i.downcast_ref::<LimitHit>()) {
        return FetchError::ArchiveLimit {
            archive: label.to_string(),
            what: hit.what.clone(),
            limit: hit.limit,
        };
    }
    FetchError::Archive {
        archive: label.to_string(),
        message: if member.is_empty() {
            e.to_string()
        } else {
            format!("{member}: {e}")
        },
    }
}

/// The relative, `/`-joined name of an archive path; `None` for the archive root (`./`);
/// an error for absolute paths and `..`.
fn member_name(path: &Path, label: &str) -> Result<Option<String>, FetchError> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(FetchError::UnsafeMember {
                    archive: label.to_string(),
                    member: path.display().to_string(),
                });
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// A zip member name is safe when it is relative (no leading `/` or `\\`, no drive letter)
/// and no component is `..`.
fn zip_name_is_safe(name: &str) -> bool {
    let absolute = name.starts_with(['/', '\\']) || name.as_bytes().get(1) == Some(&b':');
    !absolute && !name.split(['/', '\\']).any(|part| part == "..")
}

fn too_many(label: &str, limits: &Limits) -> FetchError {
    FetchError::ArchiveLimit {
        archive: label.to_string(),
        what: "the number of members".into(),
        limit: limits.max_members as u64,
    }
}

fn member_too_big(label: &str, name: &str, limits: &Limits) -> FetchError {
    FetchError::ArchiveLimit {
        archive: label.to_string(),
        what: format!("member {name}"),
        limit: limits.max_member,
    }
}

fn walk_zip(
    file: File,
    label: &str,
    limits: &Limits,
    visit: &mut Visit<'_>,
) -> Result<(), FetchError> {
    let zip_error = |e: zip::result::ZipError| FetchError::Archive {
        archive: label.to_string(),
        message: e.to_string(),
    };
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(zip_error)?;
    if archive.len() > limits.max_members {
        return Err(too_many(label, limits));
    }
    // Names first: one bad name rejects the archive before any byte is inflated. The raw
    // name is judged, not `enclosed_name()`, which makes `/etc/passwd` relative instead of
    // refusing it; a backslash counts as a separator, as zip tools on Windows write it.
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(zip_error)?;
        let raw = String::from_utf8_lossy(entry.name_raw()).into_owned();
        if !zip_name_is_safe(&raw) || entry.enclosed_name().is_none() {
            return Err(FetchError::UnsafeMember {
                archive: label.to_string(),
                member: raw,
            });
        }
    }
    let mut used = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_error)?;
        if entry.is_dir() || entry.is_symlink() || !entry.is_file() {
            continue;
        }
        let Some(name) = entry
            .enclosed_name()
            .map(|p| member_name(&p, label))
            .transpose()?
            .flatten()
        else {
            continue;
        };
        let size = entry.size();
        if size > limits.max_member {
            return Err(member_too_big(label, &name, limits));
        }
        let left = limits.max_total.saturating_sub(used);
        let mut capped = if left < limits.max_member {
            Capped {
                cap: limits.max_total,
                ..Capped::new(&mut entry, left, "the archive's decompressed total")
            }
        } else {
            Capped::new(&mut entry, limits.max_member, format!("member {name}"))
        };
        let flow = visit(&name, size, &mut capped);
        used += capped.used;
        if flow? == Flow::Stop {
            break;
        }
    }
    Ok(())
}

fn walk_tar(
    stream: Box<dyn Read + '_>,
    label: &str,
    limits: &Limits,
    visit: &mut Visit<'_>,
) -> Result<(), FetchError> {
    let total = Capped::new(stream, limits.max_total, "the archive's decompressed total");
    let mut archive = tar::Archive::new(total);
    let entries = archive.entries().map_err(|e| read_error(label, "", e))?;
    for (count, entry) in entries.enumerate() {
        if count >= limits.max_members {
            return Err(too_many(label, limits));
        }
        let mut entry = entry.map_err(|e| read_error(label, "", e))?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let path = entry.path().map_err(|e| read_error(label, "", e))?;
        let Some(name) = member_name(&path, label)? else {
            continue;
        };
        let size = entry.size();
        if size > limits.max_member {
            return Err(member_too_big(label, &name, limits));
        }
        let mut capped = Capped::new(&mut entry, limits.max_member, format!("member {name}"));
        if visit(&name, size, &mut capped)? == Flow::Stop {
            break;
        }
    }
    Ok(())
}

/// `ar` global magic (dpkg's deb(5) format).
const AR_MAGIC: &[u8; 8] = b"!<arch>\n";

/// Finds the `data.tar*` member of a Debian package: its name, byte offset and size.
///
/// Layout (deb(5), ar(5)): the magic, then per member a 60-byte header (name 0..16,
/// mtime 16..28, uid 28..34, gid 34..40, mode 40..48, decimal size 48..58, `` `\n `` 58..60)
/// followed by the data, padded to an even length. The first member must be `debian-binary`.
fn deb_data_member<R: Read>(r: &mut R, label: &str) -> Result<(String, u64, u64), FetchError> {
    let bad = |message: String| FetchError::Archive {
        archive: label.to_string(),
        message,
    };
    let io_err = |e: io::Error| bad(format!("not a Debian package: {e}"));
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io_err)?;
    if &magic != AR_MAGIC {
        return Err(bad("not a Debian package (no ar magic)".into()));
    }
    let mut offset = AR_MAGIC.len() as u64;
    for index in 0.. {
        let mut header = [0u8; 60];
        match r.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(bad("no data.tar member".into()));
            }
            Err(e) => return Err(io_err(e)),
        }
        offset += 60;
        if &header[58..60] != b"`\n" {
            return Err(bad(format!("damaged ar header at byte {}", offset - 60)));
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| bad(format!("member {name}: bad size field")))?;
        if index == 0 && name != "debian-binary" {
            return Err(bad(format!(
                "not a Debian package (first member is {name:?})"
            )));
        }
        if name.starts_with("data.tar") {
            return Ok((name, offset, size));
        }
        let skip = size + (size & 1);
        let skipped = io::copy(&mut r.take(skip), &mut io::sink()).map_err(io_err)?;
        if skipped != skip {
            return Err(bad(format!("member {name} is truncated")));
        }
        offset += skip;
    }
    Err(bad("no data.tar member".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn ar_member(name: &str, data: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            100644,
            data.len()
        )
        .into_bytes();
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn deb_data_member_skips_padded_members() {
        let mut deb = AR_MAGIC.to_vec();
        deb.extend(ar_member("debian-binary", b"2.0\n"));
        deb.extend(ar_member("control.tar.xz/", b"odd"));
        let data_at = deb.len() as u64 + 60;
        deb.extend(ar_member("data.tar.xz", b"payload"));
        let (name, offset, size) = deb_data_member(&mut Cursor::new(&deb), "t.deb").expect("deb");
        assert_eq!(name, "data.tar.xz");
        assert_eq!(offset, data_at);
        assert_eq!(size, 7);
        assert_eq!(&deb[offset as usize..][..7], b"payload");
    }

    #[test]
    fn deb_data_member_rejects_damage() {
        let mut deb = AR_MAGIC.to_vec();
        deb.extend(ar_member("debian-binary", b"2.0\n"));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"!<arch>x".to_vec(), "no ar magic"),
            (deb.clone(), "no data.tar"),
            (
                [AR_MAGIC.to_vec(), ar_member("data.tar.xz", b"x")].concat(),
                "first member",
            ),
            (
                {
                    let mut d = deb.clone();
                    d[8 + 58] = b'!';
                    d
                },
                "damaged ar header at byte 8",
            ),
            (
                [
                    deb.clone(),
                    ar_member("control.tar", b"abcd")[..62].to_vec(),
                ]
                .concat(),
                "truncated",
            ),
        ];
        for (bytes, words) in cases {
            match deb_data_member(&mut Cursor::new(&bytes), "t.deb") {
                Err(FetchError::Archive { archive, message }) => {
                    assert_eq!(archive, "t.deb");
                    assert!(message.contains(words), "{words:?} not in {message:?}");
                }
                other => panic!("{words}: {other:?}"),
            }
        }
    }

    #[test]
    fn member_names_are_relative_and_normalised() {
        let name = |p: &str| member_name(Path::new(p), "a");
        assert_eq!(
            name("./usr/lib/x").expect("ok").as_deref(),
            Some("usr/lib/x")
        );
        assert_eq!(name("./").expect("ok"), None);
        for bad in ["../evil", "/etc/passwd", "a/../../b"] {
            assert!(
                matches!(name(bad), Err(FetchError::UnsafeMember { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn capped_reader_reports_the_limit() {
        let mut ok = Capped::new(&b"abcd"[..], 4, "m");
        let mut out = Vec::new();
        ok.read_to_end(&mut out).expect("at the limit is fine");
        let mut over = Capped::new(&b"abcde"[..], 4, "member m");
        let e = over.read_to_end(&mut Vec::new()).expect_err("over");
        match read_error("a.zip", "m", e) {
            FetchError::ArchiveLimit {
                archive,
                what,
                limit,
            } => {
                assert_eq!(
                    (archive.as_str(), what.as_str(), limit),
                    ("a.zip", "member m", 4)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
