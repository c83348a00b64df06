//! The card's own identity: a small text file, [`FILE_NAME`] (`PIFW-ID.TXT`), in the root of
//! the firmware partition, holding a random 128-bit id that pifw creates with the first change
//! it makes to a card. Every backup records it ([`super::CardIdentity::card_id`]), so backups
//! bind to one card even when every other identifier is shared: each NixOS sd-image card has
//! disk signature and FAT volume id `0x2178694e`.
//!
//! Why a file: it is read by any machine that holds the card (no state elsewhere), it is
//! written like every other file through the crash-safe transaction engine (a cut leaves it
//! whole or absent), and it touches nothing a boot or an OS reads. The alternatives were
//! rejected: a new random MBR disk signature or FAT volume id would change the `PARTUUID=` and
//! `UUID=` names an OS mounts by (`cmdline.txt`, a `hardware-configuration.nix` that mounts
//! `/dev/disk/by-uuid/2178-694E`), and bytes in the boot sector are the one write that can
//! leave the volume unreadable when torn.
//!
//! The id is recognised by content, never by name alone: the first line is [`MAGIC`], and a
//! `check` line carries the sha256 (first 16 hex digits) of the lines above it. A user's file
//! of that name that does not parse is not pifw's: pifw neither trusts nor overwrites it (the
//! card then stays without identity, and backups are matched by content alone).
//!
//! A card copied sector for sector (`dd`) carries the same id: a copy *is* the same card until
//! one of them changes, and what each change left decides from then on ([`super::chain`]).
//!
//! Pure: formatting, parsing, generating. Writing the file is the change layer's
//! (`change::card::ensure_identity`).

use chrono::{DateTime, SecondsFormat, Utc};
use std::io::Read;

/// The file in the firmware partition's root: a plain 8.3 name (one directory entry, no long
/// name), upper case as FAT stores it.
pub const FILE_NAME: &str = "PIFW-ID.TXT";

/// First line of the file; the trailing digit is the format version.
pub const MAGIC: &str = "pifw card identity 1";

/// Largest file read when looking for the identity.
pub const MAX_BYTES: u64 = 4096;

/// A fresh id: 16 random bytes from the kernel, as a version-4 UUID (`8-4-4-4-12` lowercase hex).
pub fn generate() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::digest::hex(&b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// The file's bytes for `id`, created at `created`.
pub fn render(id: &str, created: DateTime<Utc>) -> Vec<u8> {
    let body = format!(
        "{MAGIC}\nid {id}\ncreated {}\n",
        created.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let check = &crate::digest::sha256_hex(body.as_bytes())[..16];
    format!(
        "{body}check {check}\n# pifw binds this card's backups to it. Do not copy this file to another card.\n"
    )
    .into_bytes()
}

/// The id in `bytes` when they are pifw's identity file: magic line, a well-formed id, and a
/// check line that matches. `None` for anything else.
pub fn parse(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split_inclusive('\n');
    let magic = lines.next()?;
    let id_line = lines.next()?;
    let created = lines.next()?;
    let check = lines.next()?;
    if magic != format!("{MAGIC}\n") || !created.starts_with("created ") {
        return None;
    }
    let id = id_line.strip_prefix("id ")?.strip_suffix('\n')?;
    if !well_formed(id) {
        return None;
    }
    let body = format!("{magic}{id_line}{created}");
    let want = &crate::digest::sha256_hex(body.as_bytes())[..16];
    (check.strip_prefix("check ")?.trim_end() == want).then(|| id.to_string())
}

/// `8-4-4-4-12` lowercase hex digits.
fn well_formed(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_back() {
        let id = generate().unwrap();
        assert!(well_formed(&id), "{id}");
        assert_ne!(id, generate().unwrap());
        let bytes = render(&id, Utc::now());
        assert_eq!(parse(&bytes).as_deref(), Some(id.as_str()));
    }

    #[test]
    fn refuses_what_is_not_pifws_file() {
        let id = "0f8c2a4e-1b2c-4d3e-8f90-a1b2c3d4e5f6";
        let good = String::from_utf8(render(id, Utc::now())).unwrap();
        // A user's note of the same name, a changed id (check no longer matches), a torn
        // file, an upper-case id, nothing at all.
        for bad in [
            "my notes\n".to_string(),
            good.replace("0f8c2a4e", "0f8c2a4f"),
            good[..good.len() / 2].to_string(),
            good.replace(id, &id.to_uppercase()),
            String::new(),
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
