//! Recognising boot binaries by their content, for files no manifest pins.
//!
//! A user's own U-Boot (a NixOS build, say) matches no pin, but it carries its version banner
//! (`U-Boot 2020.10 (...)`), and that is what the "U-Boot older than 2023.01" advice needs.
//! The same goes for EFI loaders (systemd-boot's `LoaderInfo` string, GRUB's name) and arm64
//! Linux kernels (the `ARM\x64` magic of the Image header). Streams the file; memory stays at
//! one chunk plus a small overlap.

use serde::Serialize;
use std::io::{self, Read};

/// What a binary turned out to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Probe {
    UBoot {
        version: String,
    },
    SystemdBoot {
        version: Option<String>,
    },
    Grub,
    LinuxArm64,
    /// A UEFI firmware volume (`_FVH` header), e.g. pftf's RPI_EFI.fd.
    UefiFirmwareVolume,
    Unknown,
}

impl Probe {
    pub fn describe(&self) -> String {
        match self {
            Probe::UBoot { version } => format!("U-Boot {version}"),
            Probe::SystemdBoot { version: Some(v) } => format!("systemd-boot {v}"),
            Probe::SystemdBoot { version: None } => "systemd-boot".into(),
            Probe::Grub => "GRUB".into(),
            Probe::LinuxArm64 => "Linux kernel (arm64 Image)".into(),
            Probe::UefiFirmwareVolume => "UEFI firmware volume".into(),
            Probe::Unknown => "unknown".into(),
        }
    }
}

const CHUNK: usize = 64 * 1024;
/// Bytes carried from one chunk to the next, so a marker and the version after it are never
/// split across a chunk boundary.
const OVERLAP: usize = 128;

/// Reads `r` to the end and says what it is.
pub fn probe<R: Read>(mut r: R) -> io::Result<Probe> {
    let mut buf = vec![0u8; CHUNK + OVERLAP];
    let mut carried = 0usize;
    let mut first = true;
    let mut found_grub = false;
    let mut found_fvh = false;
    loop {
        let n = read_full(&mut r, &mut buf[carried..])?;
        let window = &buf[..carried + n];
        if first {
            first = false;
            if window.len() >= 60 && &window[56..60] == b"ARM\x64" {
                return Ok(Probe::LinuxArm64);
            }
            if window.len() >= 44 && &window[40..44] == b"_FVH" {
                found_fvh = true;
            }
        }
        if let Some(v) = after_marker(window, b"U-Boot 20") {
            return Ok(Probe::UBoot {
                version: format!("20{}", take_version(v)),
            });
        }
        if let Some(v) = after_marker(window, b"LoaderInfo: systemd-boot ") {
            let version = take_version(v);
            return Ok(Probe::SystemdBoot {
                version: (!version.is_empty()).then_some(version),
            });
        }
        found_grub |= find(window, b"GNU GRUB").is_some();
        if n == 0 {
            break;
        }
        let keep = window.len().min(OVERLAP);
        let start = window.len() - keep;
        buf.copy_within(start..start + keep, 0);
        carried = keep;
    }
    Ok(if found_grub {
        Probe::Grub
    } else if found_fvh {
        Probe::UefiFirmwareVolume
    } else {
        Probe::Unknown
    })
}

/// The parts of a PE image pifw reads: its section names and sizes, and the `.osrel` section
/// (os-release text) when it has one, as a unified kernel image does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PeImage {
    /// Section names and their `VirtualSize`, in table order.
    pub sections: Vec<(String, u64)>,
    pub osrel: Option<String>,
}

/// What a GRUB EFI image carries in its `mods` section (grub-mkimage's module info, objects
/// of type 2 = embedded config, 3 = prefix): where it will look for `grub.cfg`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct GrubImage {
    /// The prefix compiled in (`/EFI/debian`, or `(hd0,gpt2)/boot/grub`); relative to the
    /// partition GRUB was loaded from unless it names a device.
    pub prefix: Option<String>,
    /// The embedded early config, when there is one.
    pub config: Option<String>,
    /// `grub.cfg` of the memdisk built in (Debian's monolithic image sources it from its
    /// early config: `normal (memdisk)/grub.cfg`).
    pub memdisk_config: Option<String>,
}

/// Largest section content kept (`.osrel`, GRUB's config and prefix objects).
const SECTION_CAP: u64 = 64 * 1024;
impl GrubImage {
    /// Where this GRUB looks for `grub.cfg` on the partition it was started from, in order,
    /// and whether it looks on another partition instead (a prefix naming a device, or a
    /// `search` setting the prefix), which pifw cannot follow. Debian's monolithic
    /// grubaa64.efi has prefix `/EFI/debian` and a memdisk `grub.cfg` that sources
    /// `$prefix/arm64-efi/grub.cfg`, `$prefix/grub.cfg`, else `$cmdpath/grub.cfg` (the
    /// directory it was started from: `EFI/BOOT`).
    pub fn config_candidates(&self) -> (Vec<String>, bool) {
        let config = format!(
            "{}\n{}",
            self.config.as_deref().unwrap_or_default(),
            self.memdisk_config.as_deref().unwrap_or_default()
        );
        let mut candidates: Vec<String> = Vec::new();
        let mut elsewhere = false;
        match self.prefix.as_deref() {
            Some(p) if p.starts_with('(') => elsewhere = true,
            Some(p) => {
                let dir = crate::bls::normalise(p);
                if config.contains("arm64-efi/grub.cfg") {
                    candidates.push(format!("{dir}/arm64-efi/grub.cfg"));
                }
                candidates.push(format!("{dir}/grub.cfg"));
            }
            None if config.contains("search") && config.contains("prefix") => elsewhere = true,
            None => candidates.extend(
                [
                    "EFI/BOOT/grub.cfg",
                    "EFI/debian/grub.cfg",
                    "boot/grub/grub.cfg",
                ]
                .map(String::from),
            ),
        }
        if config.contains("cmdpath") {
            candidates.push("EFI/BOOT/grub.cfg".into());
            elsewhere = false;
        }
        candidates.dedup();
        (candidates, elsewhere)
    }
}

/// Largest memdisk (a FAT image inside GRUB) read to find its `grub.cfg`.
const MEMDISK_CAP: u64 = 16 * 1024 * 1024;
/// Largest PE header pifw reads (DOS stub, COFF and optional headers, section table).
const PE_HEADER_CAP: usize = 64 * 1024;

/// Reads a PE image's section table from a stream and hands each section's raw data, in file
/// order, to `visit` (which returns whether to go on). `Ok(None)` if it is not a PE image.
/// Layout: PE/COFF spec, "MS-DOS stub" (e_lfanew at 0x3c), "COFF file header" (20 bytes after
/// `PE\0\0`: NumberOfSections at 2, SizeOfOptionalHeader at 16), "Section table" (40 bytes
/// each: Name 0..8, VirtualSize 8, SizeOfRawData 16, PointerToRawData 20).
fn pe_walk<R: Read>(
    r: &mut R,
    mut visit: impl FnMut(&str, &mut dyn Read) -> io::Result<bool>,
) -> io::Result<Option<Vec<(String, u64)>>> {
    let mut head = vec![0u8; 0x40];
    if read_full(r, &mut head)? < 0x40 || &head[..2] != b"MZ" {
        return Ok(None);
    }
    let pe = u32::from_le_bytes([head[0x3c], head[0x3d], head[0x3e], head[0x3f]]) as usize;
    let grow = |r: &mut R, head: &mut Vec<u8>, to: usize| -> io::Result<bool> {
        if to > PE_HEADER_CAP {
            return Ok(false);
        }
        if to > head.len() {
            let old = head.len();
            head.resize(to, 0);
            if read_full(r, &mut head[old..])? < to - old {
                return Ok(false);
            }
        }
        Ok(true)
    };
    if !grow(r, &mut head, pe + 24)? || &head[pe..pe + 4] != b"PE\0\0" {
        return Ok(None);
    }
    let count = u16::from_le_bytes([head[pe + 6], head[pe + 7]]) as usize;
    let opt = u16::from_le_bytes([head[pe + 20], head[pe + 21]]) as usize;
    let table = pe + 24 + opt;
    if !grow(r, &mut head, table + 40 * count)? {
        return Ok(None);
    }
    let u32_at = |o: usize| u32::from_le_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
    let mut sections = Vec::new();
    let mut data = Vec::new();
    for i in 0..count {
        let s = table + 40 * i;
        let name = String::from_utf8_lossy(&head[s..s + 8])
            .trim_end_matches('\0')
            .to_string();
        let vsize = u64::from(u32_at(s + 8));
        let raw = u64::from(u32_at(s + 16));
        let ptr = u64::from(u32_at(s + 20));
        sections.push((name.clone(), vsize));
        // Raw data is padded to the file alignment; the content is VirtualSize long.
        let len = if vsize == 0 { raw } else { raw.min(vsize) };
        data.push((ptr, len, name));
    }
    data.sort();
    let mut pos = head.len() as u64;
    for (ptr, len, name) in data {
        if ptr < pos || len == 0 {
            continue;
        }
        io::copy(&mut r.by_ref().take(ptr - pos), &mut io::sink())?;
        pos = ptr;
        let mut section = r.by_ref().take(len);
        let go_on = visit(&name, &mut section)?;
        io::copy(&mut section, &mut io::sink())?;
        pos += len;
        if !go_on {
            break;
        }
    }
    Ok(Some(sections))
}

/// An aarch64 PE/COFF image (what the firmware can start), by its headers.
pub fn is_aa64_pe(bytes: &[u8]) -> bool {
    if bytes.get(0..2) != Some(b"MZ") {
        return false;
    }
    let Some(pe) = bytes
        .get(0x3c..0x40)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    else {
        return false;
    };
    bytes.get(pe..pe + 4) == Some(b"PE\0\0") && bytes.get(pe + 4..pe + 6) == Some(&[0x64, 0xaa])
}

/// Reads a PE image's section table and its `.osrel` section.
pub fn pe_image<R: Read>(mut r: R) -> io::Result<Option<PeImage>> {
    let mut osrel = None;
    let sections = pe_walk(&mut r, |name, s| {
        if name == ".osrel" {
            let mut buf = Vec::new();
            s.take(SECTION_CAP).read_to_end(&mut buf)?;
            let text = String::from_utf8_lossy(&buf);
            osrel = Some(text.trim_end_matches('\0').to_string());
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(sections.map(|sections| PeImage { sections, osrel }))
}

/// Reads the prefix and embedded config a GRUB EFI image was built with (grub-mkimage's
/// `mods` section: `struct grub_module_info64` {magic "mimg", padding, offset u64, size u64},
/// then objects {type u32, size u32 including this header}). `Ok(None)` if it has none.
pub fn grub_image<R: Read>(mut r: R) -> io::Result<Option<GrubImage>> {
    let mut found = None;
    pe_walk(&mut r, |name, s| {
        if name != "mods" {
            return Ok(true);
        }
        let mut info = [0u8; 24];
        if read_full(s, &mut info)? < 24 || &info[..4] != b"mimg" {
            return Ok(false);
        }
        let offset = u64::from_le_bytes(info[8..16].try_into().expect("8 bytes"));
        let size = u64::from_le_bytes(info[16..24].try_into().expect("8 bytes"));
        io::copy(&mut s.take(offset.saturating_sub(24)), &mut io::sink())?;
        let mut g = GrubImage::default();
        let mut at = offset.max(24);
        while at + 8 <= size {
            let mut oh = [0u8; 8];
            if read_full(s, &mut oh)? < 8 {
                break;
            }
            let kind = u32::from_le_bytes(oh[..4].try_into().expect("4 bytes"));
            let len = u64::from(u32::from_le_bytes(oh[4..].try_into().expect("4 bytes")));
            if len < 8 {
                break;
            }
            let body = len - 8;
            if kind == 1 && body <= MEMDISK_CAP {
                let mut disk = vec![0u8; body as usize];
                read_full(s, &mut disk)?;
                g.memdisk_config = crate::fat::read_small_file(
                    &mut io::Cursor::new(disk),
                    "grub.cfg",
                    SECTION_CAP,
                )
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            } else if (kind == 2 || kind == 3) && body <= SECTION_CAP {
                let mut buf = vec![0u8; body as usize];
                read_full(s, &mut buf)?;
                let text = String::from_utf8_lossy(&buf)
                    .trim_end_matches('\0')
                    .to_string();
                if kind == 2 {
                    g.config = Some(text);
                } else {
                    g.prefix = Some(text);
                }
            } else {
                io::copy(&mut s.take(body), &mut io::sink())?;
            }
            at += len;
        }
        found = Some(g);
        Ok(false)
    })?;
    Ok(found)
}

fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The bytes following the first `marker` in `hay`, if the marker is there and at least a
/// little of what follows is in the window.
fn after_marker<'a>(hay: &'a [u8], marker: &[u8]) -> Option<&'a [u8]> {
    let at = find(hay, marker)?;
    let rest = &hay[at + marker.len()..];
    // A marker at the very end of the window has its version in the next chunk; the overlap
    // brings it back next round.
    (rest.len() >= 16 || rest.contains(&0)).then_some(rest)
}

/// A version token: printable ASCII up to a space, NUL or `(`, at most 64 bytes.
fn take_version(rest: &[u8]) -> String {
    let end = rest
        .iter()
        .take(64)
        .position(|&b| b == b' ' || b == 0 || b == b'(' || !b.is_ascii_graphic())
        .unwrap_or(rest.len().min(64));
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_at(marker: &[u8], at: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0x11u8; len];
        v[at..at + marker.len()].copy_from_slice(marker);
        v
    }

    #[test]
    fn uboot_banner_anywhere_including_chunk_boundary() {
        let banner = b"U-Boot 2023.01+dfsg-2+deb12u3 (Aug 01 2024 - 12:00:00 +0000)\0";
        for at in [0, 1000, CHUNK - 5, CHUNK - 20, CHUNK + 3, 3 * CHUNK - 9] {
            let data = with_at(banner, at, 4 * CHUNK);
            assert_eq!(
                probe(&data[..]).unwrap(),
                Probe::UBoot {
                    version: "2023.01+dfsg-2+deb12u3".into()
                },
                "banner at {at}"
            );
        }
    }

    #[test]
    fn systemd_boot_grub_linux_fv_unknown() {
        let sd = with_at(
            b"#### LoaderInfo: systemd-boot 252.39-1~deb12u2 ####",
            500,
            9000,
        );
        assert_eq!(
            probe(&sd[..]).unwrap(),
            Probe::SystemdBoot {
                version: Some("252.39-1~deb12u2".into())
            }
        );
        let grub = with_at(b"GNU GRUB  version 2.06", 70_000, 100_000);
        assert_eq!(probe(&grub[..]).unwrap(), Probe::Grub);
        let linux = with_at(b"ARM\x64", 56, 4096);
        assert_eq!(probe(&linux[..]).unwrap(), Probe::LinuxArm64);
        let fv = with_at(b"_FVH", 40, 4096);
        assert_eq!(probe(&fv[..]).unwrap(), Probe::UefiFirmwareVolume);
        assert_eq!(probe(&[0u8; 10][..]).unwrap(), Probe::Unknown);
        assert_eq!(probe(&[][..]).unwrap(), Probe::Unknown);
    }

    /// A PE image built by hand from the spec offsets: DOS header with e_lfanew 0x80, COFF
    /// header, an empty optional header, then the section table and the sections' data.
    fn pe(sections: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let table = 0x80 + 24;
        let mut data_at = (table + 40 * sections.len() + 0x1ff) & !0x1ff;
        let mut v = vec![0u8; data_at];
        v[0..2].copy_from_slice(b"MZ");
        v[0x3c] = 0x80;
        v[0x80..0x84].copy_from_slice(b"PE\0\0");
        v[0x84..0x86].copy_from_slice(&[0x64, 0xaa]);
        v[0x86..0x88].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        for (i, (name, body)) in sections.iter().enumerate() {
            let e = table + 40 * i;
            v[e..e + name.len()].copy_from_slice(name.as_bytes());
            v[e + 8..e + 12].copy_from_slice(&(body.len() as u32).to_le_bytes());
            let raw = (body.len() + 0x1ff) & !0x1ff;
            v[e + 16..e + 20].copy_from_slice(&(raw as u32).to_le_bytes());
            v[e + 20..e + 24].copy_from_slice(&(data_at as u32).to_le_bytes());
            v.extend_from_slice(body);
            v.resize(data_at + raw, 0);
            data_at += raw;
        }
        v
    }

    #[test]
    fn pe_sections_and_osrel_of_a_uki() {
        let uki = pe(&[
            (".text", vec![0x90; 100]),
            (".osrel", b"ID=debian\nPRETTY_NAME=\"Debian\"\n".to_vec()),
            (".linux", vec![1; 5000]),
        ]);
        let img = pe_image(&uki[..]).unwrap().expect("a PE image");
        assert_eq!(
            img.sections,
            [
                (".text".to_string(), 100),
                (".osrel".to_string(), 31),
                (".linux".to_string(), 5000)
            ]
        );
        assert_eq!(
            img.osrel.as_deref(),
            Some("ID=debian\nPRETTY_NAME=\"Debian\"\n")
        );
        assert_eq!(pe_image(&b"MZ not a pe"[..]).unwrap(), None);
        let mut bad = uki.clone();
        bad[0x80] = b'X';
        assert_eq!(pe_image(&bad[..]).unwrap(), None);
    }

    #[test]
    fn grub_prefix_and_config_from_mods() {
        let obj = |kind: u32, body: &[u8]| {
            let mut o = kind.to_le_bytes().to_vec();
            o.extend_from_slice(&((body.len() + 8) as u32).to_le_bytes());
            o.extend_from_slice(body);
            o
        };
        let mut objs = obj(0, &[7; 40]);
        objs.extend(obj(2, b"normal (memdisk)/grub.cfg\n\0\0"));
        objs.extend(obj(3, b"/EFI/debian\0\0\0\0\0"));
        let mut mods = b"mimg".to_vec();
        mods.extend_from_slice(&[0; 4]);
        mods.extend_from_slice(&24u64.to_le_bytes());
        mods.extend_from_slice(&((24 + objs.len()) as u64).to_le_bytes());
        mods.extend(objs);
        let grub = pe(&[(".text", vec![0; 64]), ("mods", mods)]);
        let g = grub_image(&grub[..]).unwrap().expect("mods");
        assert_eq!(g.prefix.as_deref(), Some("/EFI/debian"));
        assert_eq!(g.config.as_deref(), Some("normal (memdisk)/grub.cfg\n"));
        let (candidates, elsewhere) = g.config_candidates();
        assert_eq!(candidates, ["EFI/debian/grub.cfg"]);
        assert!(!elsewhere);
        let device = GrubImage {
            prefix: Some("(hd0,gpt2)/boot/grub".into()),
            ..GrubImage::default()
        };
        assert!(device.config_candidates().1);
    }

    #[test]
    fn pe_machine_check() {
        let mut pe = vec![0u8; 0x100];
        pe[0..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&[0x64, 0xaa]);
        assert!(is_aa64_pe(&pe));
        pe[0x84] = 0x4c; // i386
        assert!(!is_aa64_pe(&pe));
        assert!(!is_aa64_pe(b"MZ"));
    }
}
