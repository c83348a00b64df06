//! Names for new directory entries: the 8.3 short name, the NT lower-case flags and, when the
//! name needs one, the VFAT long name (fatgen103 sections 6 and 7).
//!
//! Owns deciding how a name is stored, the way Windows and mtools do it: a name that is a valid
//! 8.3 name in upper case is stored as is; one whose base and extension are each all lower case
//! (or have no letters) is stored upper case with `DIR_NTRes` bits 3/4 set (mtools stores
//! `bootcode.bin` like that); anything else gets long-name entries plus a `BASIS~N` alias that
//! collides with no short name already in the directory. Must not touch the disk.

use super::WriteError;
use std::collections::HashSet;

/// Bytes a short name may hold besides letters and digits (fatgen103 section 6).
const SHORT_SPECIALS: &[u8] = b"!#$%&'()-@^_`{}~";
/// Characters no FAT name may hold, long or short.
const FORBIDDEN: &[char] = &['"', '*', '/', ':', '<', '>', '?', '\\', '|'];

/// How one name is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedName {
    /// `DIR_Name`: 8 + 3 bytes, space padded, upper case.
    pub short: [u8; 11],
    /// `DIR_NTRes`: 0x08 base lower case, 0x10 extension lower case.
    pub nt_res: u8,
    /// The UCS-2 long name, when the name needs long-name entries.
    pub long: Option<Vec<u16>>,
}

fn short_char_ok(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || SHORT_SPECIALS.contains(&c)
}

/// Case of a name part: `Some(true)` all lower, `Some(false)` all upper or no letters,
/// `None` mixed.
fn part_case(part: &str) -> Option<bool> {
    let lower = part.chars().any(|c| c.is_ascii_lowercase());
    let upper = part.chars().any(|c| c.is_ascii_uppercase());
    match (lower, upper) {
        (true, true) => None,
        (l, _) => Some(l),
    }
}

/// `name` as a plain 8.3 name, if it is one (ignoring case).
fn as_short(name: &str) -> Option<([u8; 11], u8)> {
    let (base, ext) = match name.rsplit_once('.') {
        Some((b, e)) => (b, e),
        None => (name, ""),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || base.contains('.') {
        return None;
    }
    let mut short = [b' '; 11];
    for (i, c) in base.bytes().enumerate() {
        short[i] = c.to_ascii_uppercase();
    }
    for (i, c) in ext.bytes().enumerate() {
        short[8 + i] = c.to_ascii_uppercase();
    }
    if !short.iter().all(|&c| c == b' ' || short_char_ok(c)) || short[0] == b' ' {
        return None;
    }
    if base.contains(' ') || ext.contains(' ') {
        return None;
    }
    let base_lower = part_case(base)?;
    let ext_lower = part_case(ext)?;
    let nt = if base_lower { 0x08 } else { 0 } | if ext_lower { 0x10 } else { 0 };
    Some((short, nt))
}

/// The Windows "basis name" for an alias: upper case, spaces and inner periods dropped,
/// other invalid characters replaced by `_`; base up to 8, extension up to 3 characters.
fn basis(name: &str) -> (Vec<u8>, Vec<u8>) {
    let trimmed = name.trim_start_matches('.');
    let (base, ext) = match trimmed.rsplit_once('.') {
        Some((b, e)) => (b, e),
        None => (trimmed, ""),
    };
    let clean = |s: &str, max: usize| -> Vec<u8> {
        s.chars()
            .filter(|&c| c != ' ' && c != '.')
            .map(|c| {
                let u = c.to_ascii_uppercase();
                if u.is_ascii() && short_char_ok(u as u8) {
                    u as u8
                } else {
                    b'_'
                }
            })
            .take(max)
            .collect()
    };
    let mut b = clean(base, 8);
    if b.is_empty() {
        b = b"_".to_vec();
    }
    (b, clean(ext, 3))
}

/// Decides how `name` is stored in a directory whose short names are `taken`.
pub(crate) fn encode(name: &str, taken: &HashSet<[u8; 11]>) -> Result<EncodedName, WriteError> {
    let bad = |reason: &str| WriteError::BadName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(bad("empty or a dot name"));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err(bad("ends with a period or a space"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| FORBIDDEN.contains(c) || (*c as u32) < 0x20)
    {
        return Err(bad(&format!("contains {c:?}")));
    }
    let long: Vec<u16> = name.encode_utf16().collect();
    if long.len() > 255 {
        return Err(bad("longer than 255 UCS-2 characters"));
    }
    if let Some((short, nt_res)) = as_short(name) {
        if taken.contains(&short) {
            return Err(bad("its 8.3 name is already used in the directory"));
        }
        return Ok(EncodedName {
            short,
            nt_res,
            long: None,
        });
    }
    let (base, ext) = basis(name);
    for n in 1u32..1_000_000 {
        let tail = format!("~{n}");
        let keep = base.len().min(8 - tail.len());
        let mut short = [b' '; 11];
        short[..keep].copy_from_slice(&base[..keep]);
        short[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        short[8..8 + ext.len()].copy_from_slice(&ext);
        if !taken.contains(&short) {
            return Ok(EncodedName {
                short,
                nt_res: 0,
                long: Some(long),
            });
        }
    }
    Err(bad("no free ~N alias"))
}

/// `ChkSum()` of fatgen103 section 7 over an 11-byte short name.
pub(crate) fn checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

/// The long-name entries for `long`, in on-disk order (the last piece, ordinal | 0x40, first).
///
/// Layout of one entry (fatgen103 section 7): `LDIR_Ord` offset 0 (1 byte), `LDIR_Name1`
/// offset 1 (10 bytes, 5 chars), `LDIR_Attr` offset 11 = 0x0F, `LDIR_Type` offset 12 = 0,
/// `LDIR_Chksum` offset 13, `LDIR_Name2` offset 14 (12 bytes, 6 chars), `LDIR_FstClusLO`
/// offset 26 = 0, `LDIR_Name3` offset 28 (4 bytes, 2 chars). The name ends with one 0x0000
/// unless it fills the last piece exactly; the rest is 0xFFFF.
pub(crate) fn long_entries(long: &[u16], sum: u8) -> Vec<[u8; 32]> {
    let pieces = long.len().div_ceil(13).max(1);
    let mut chars: Vec<u16> = long.to_vec();
    if chars.len() < pieces * 13 {
        chars.push(0);
    }
    chars.resize(pieces * 13, 0xFFFF);
    let offsets: Vec<usize> = (1..11)
        .step_by(2)
        .chain((14..26).step_by(2))
        .chain((28..32).step_by(2))
        .collect();
    let mut out = Vec::with_capacity(pieces);
    for n in (1..=pieces).rev() {
        let mut e = [0u8; 32];
        e[0] = n as u8 | if n == pieces { 0x40 } else { 0 };
        e[11] = 0x0F;
        e[13] = sum;
        for (i, &off) in offsets.iter().enumerate() {
            let c = chars[(n - 1) * 13 + i];
            e[off..off + 2].copy_from_slice(&c.to_le_bytes());
        }
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::super::FatType;
    use super::super::super::dir_entry::{LongName, ShortEntry};
    use super::*;

    fn enc(name: &str) -> EncodedName {
        encode(name, &HashSet::new()).expect(name)
    }

    #[test]
    fn lowercase_8_3_uses_the_nt_flags_like_mtools() {
        let e = enc("bootcode.bin");
        assert_eq!(&e.short, b"BOOTCODEBIN");
        assert_eq!(e.nt_res, 0x18);
        assert!(e.long.is_none());
        let e = enc("README");
        assert_eq!((&e.short, e.nt_res), (b"README     ", 0));
        let e = enc("fixup4cd.DAT");
        assert_eq!((&e.short, e.nt_res), (b"FIXUP4CDDAT", 0x08));
    }

    #[test]
    fn long_and_mixed_case_names_get_an_alias_and_long_entries() {
        let e = enc("u-boot-rpi3.bin");
        assert_eq!(&e.short, b"U-BOOT~1BIN");
        assert_eq!(e.nt_res, 0);
        let e = enc("Config.txt");
        assert_eq!(&e.short, b"CONFIG~1TXT");
        let e = enc("a long file name.dat");
        assert_eq!(&e.short, b"ALONGF~1DAT");
        let mut taken = HashSet::new();
        taken.insert(*b"U-BOOT~1BIN");
        let e = encode("u-boot-rpi4.bin", &taken).expect("alias");
        assert_eq!(&e.short, b"U-BOOT~2BIN");
    }

    #[test]
    fn forbidden_names_are_refused_with_the_reason() {
        for (name, why) in [("a:b", "':'"), ("x.", "period"), ("", "empty")] {
            let err = encode(name, &HashSet::new()).expect_err(name);
            assert!(err.to_string().contains(why), "{name}: {err}");
        }
    }

    #[test]
    fn long_entries_read_back_through_the_checkers_assembler() {
        for name in ["u-boot-rpi3.bin", "exactly13char", "bcm2711-rpi-400.dtb"] {
            let e = enc(name);
            let long = e.long.expect("long name");
            let mut raw_short = [0u8; 32];
            raw_short[..11].copy_from_slice(&e.short);
            let short = ShortEntry::parse(&raw_short, FatType::Fat16);
            assert_eq!(checksum(&e.short), short.checksum());
            let mut ln = LongName::default();
            for entry in long_entries(&long, checksum(&e.short)) {
                ln.push(&entry);
            }
            assert_eq!(ln.take(&short).as_deref(), Some(name));
        }
    }
}
