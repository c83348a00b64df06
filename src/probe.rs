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

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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
}
