//! Backups written, read back by `unzip` and by [`Backup::open`], tampered with, listed and
//! pruned.

use super::*;
use chrono::TimeZone;
use std::io::{Cursor, Write};
use std::path::Path;
use std::process::Command;
use zip::write::SimpleFileOptions;

fn card(sig: &str, vol: &str) -> CardIdentity {
    CardIdentity {
        card_id: None,
        mbr_disk_signature: Some(sig.to_string()),
        gpt_disk_guid: None,
        fat_volume_id: Some(vol.to_string()),
        fat_label: Some("FIRMWARE".to_string()),
        firmware_offset_bytes: 8 << 20,
        firmware_size_bytes: 30 << 20,
    }
}

fn at(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .timestamp_opt(1_790_000_000 + secs, 0)
        .single()
        .unwrap()
}

/// Deterministic, incompressible-ish bytes.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    crate::digest::sha256_hex(data)
}

/// Large enough to span many deflate blocks and read buffers.
const UBOOT_LEN: usize = 300_000;

const CONFIG: &[u8] = b"[pi3]\nkernel=u-boot-rpi3.bin\n";

/// A backup of config.txt and a 300 kB u-boot, with an added file, an added directory and the
/// table sectors.
fn write_sample(dir: &Path, c: CardIdentity, secs: i64) -> PathBuf {
    let mut w =
        BackupWriter::create_at(dir, c, vec!["pifw".into(), "update-uboot".into()], at(secs))
            .unwrap();
    w.add_file("config.txt", &mut Cursor::new(CONFIG), None)
        .unwrap();
    let uboot = noise(UBOOT_LEN, 7);
    let after = FileState {
        size: 10,
        sha256: sha(b"0123456789"),
    };
    let state = w
        .add_file("u-boot-rpi3.bin", &mut uboot.as_slice(), Some(after))
        .unwrap();
    assert_eq!((state.size, state.sha256), (UBOOT_LEN as u64, sha(&uboot)));
    w.add_absent_dir("EFI").unwrap();
    w.add_absent_dir("EFI/BOOT").unwrap();
    w.add_absent("EFI/BOOT/BOOTAA64.EFI", None).unwrap();
    let lba0 = noise(512, 9);
    w.set_tables(512, 64 << 20, &[("lba0", 0, &lba0)]).unwrap();
    w.finish().unwrap()
}

/// A zip with exactly these members (for tampering with a real backup's manifest).
fn rezip(path: &Path, members: &[(&str, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, data) in members {
        zip.start_file(*name, SimpleFileOptions::default()).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

fn unzip_p(path: &Path, member: &str) -> Vec<u8> {
    let out = Command::new("unzip")
        .arg("-p")
        .arg(path)
        .arg(member)
        .output()
        .expect("unzip is installed (scripts/install-deps)");
    assert!(out.status.success(), "unzip -p {member}: {out:?}");
    out.stdout
}

#[test]
fn writes_a_portable_self_describing_zip() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path(), card("0x2178694e", "0x2178694e"), 0);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("pifw-20260921T141320.000Z-") && name.ends_with(".zip"),
        "{name}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no .partial left behind"
    );

    // An independent reader sees the old files under their FAT paths.
    assert_eq!(unzip_p(&path, "config.txt"), CONFIG);
    assert_eq!(unzip_p(&path, "u-boot-rpi3.bin"), noise(UBOOT_LEN, 7));
    assert_eq!(unzip_p(&path, "pifw-tables/lba0.bin"), noise(512, 9));
    let json: serde_json::Value = serde_json::from_slice(&unzip_p(&path, MANIFEST_NAME)).unwrap();
    assert_eq!(json["format"], 1);
    assert_eq!(json["created"], "2026-09-21T14:13:20Z");
    assert_eq!(json["pifw_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["command"], serde_json::json!(["pifw", "update-uboot"]));
    assert_eq!(json["card"]["mbr_disk_signature"], "0x2178694e");
    assert_eq!(json["files"][0]["path"], "config.txt");
    assert_eq!(json["files"][0]["before"]["sha256"], sha(CONFIG));
    assert_eq!(json["files"][2]["before"], serde_json::Value::Null);
    let id = json["id"].as_str().unwrap();
    assert_eq!(id.len(), "20260921T141320.000Z-abcdef".len(), "{id}");
    assert!(id.starts_with("20260921T141320.000Z-"), "{id}");
    assert_eq!(name, format!("pifw-{id}.zip"));

    let backup = Backup::open(&path).unwrap();
    assert_eq!(backup.manifest.id, id);
    let plan = backup.restore_plan();
    let summary: Vec<(&str, &str)> = plan
        .iter()
        .map(|s| {
            let what = match &s.action {
                RestoreAction::Write(_) => "write",
                RestoreAction::Remove => "remove",
                RestoreAction::RemoveDir => "rmdir",
            };
            (s.path.as_str(), what)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("config.txt", "write"),
            ("u-boot-rpi3.bin", "write"),
            ("EFI/BOOT/BOOTAA64.EFI", "remove"),
            ("EFI/BOOT", "rmdir"),
            ("EFI", "rmdir"),
        ]
    );
    assert_eq!(plan[1].expected_now.as_ref().unwrap().size, 10);
    let RestoreAction::Write(content) = &plan[0].action else {
        panic!("config.txt is restored");
    };
    let bytes = content
        .read_with(|r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v)?;
            Ok(v)
        })
        .unwrap();
    assert_eq!(bytes, CONFIG);
    let tables = backup.tables();
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].region.offset_bytes, 0);
    // A reader that stops early still gets the whole member checked.
    tables[0].content.read_with(|_| Ok(())).unwrap();
}

/// The old files are stored and the manifest and table sectors deflated (as `unzip -v`, an
/// independent reader, reports them), and a backup whose files are deflated, as pifw wrote
/// them before, opens and restores the same.
#[test]
fn members_are_stored_and_deflated_backups_still_restore() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path(), card("0x2178694e", "0x2178694e"), 0);
    let out = Command::new("unzip")
        .arg("-v")
        .arg(&path)
        .output()
        .expect("unzip is installed (scripts/install-deps)");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let method = |member: &str| {
        listing
            .lines()
            .find(|l| l.trim_end().ends_with(member))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    assert_eq!(
        method("u-boot-rpi3.bin").as_deref(),
        Some("Stored"),
        "{listing}"
    );
    assert_eq!(method("config.txt").as_deref(), Some("Stored"), "{listing}");
    // The manifest and the table sectors are small and compress: deflated.
    for member in [MANIFEST_NAME, "pifw-tables/lba0.bin"] {
        assert!(
            method(member).is_some_and(|m| m.starts_with("Defl")),
            "{member}: {listing}"
        );
    }

    // The same members, deflated.
    let names = [
        "config.txt",
        "u-boot-rpi3.bin",
        "pifw-tables/lba0.bin",
        MANIFEST_NAME,
    ];
    let old = dir.path().join("old.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&old).unwrap());
    let deflated =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for name in names {
        zip.start_file(name, deflated).unwrap();
        zip.write_all(&unzip_p(&path, name)).unwrap();
    }
    zip.finish().unwrap();
    let out = Command::new("unzip").arg("-v").arg(&old).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Defl"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let backup = Backup::open(&old).unwrap();
    let plan = backup.restore_plan();
    let RestoreAction::Write(content) = &plan[1].action else {
        panic!("u-boot-rpi3.bin is restored");
    };
    let bytes = content
        .read_with(|r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v)?;
            Ok(v)
        })
        .unwrap();
    assert_eq!(bytes, noise(UBOOT_LEN, 7));
}

#[test]
fn a_tampered_member_is_named_with_both_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path(), card("0x1", "0x2"), 0);
    let manifest = unzip_p(&path, MANIFEST_NAME);
    let backup = Backup::open(&path).unwrap();
    let plan = backup.restore_plan();

    let mut evil = CONFIG.to_vec();
    evil[0] = b'#';
    let members = |config: Vec<u8>| {
        vec![
            ("config.txt", config),
            ("u-boot-rpi3.bin", noise(UBOOT_LEN, 7)),
            ("pifw-tables/lba0.bin", noise(512, 9)),
            (MANIFEST_NAME, manifest.clone()),
        ]
    };
    rezip(&path, &members(evil.clone()));
    match Backup::open(&path).unwrap_err() {
        BackupError::HashMismatch {
            member,
            expected,
            actual,
            actual_size,
            ..
        } => {
            assert_eq!(member, "config.txt");
            assert_eq!(expected, sha(CONFIG));
            assert_eq!(actual, sha(&evil));
            assert_eq!(actual_size, CONFIG.len() as u64);
        }
        other => panic!("{other:?}"),
    }
    // A plan made before the zip changed notices when the bytes are read.
    let RestoreAction::Write(content) = &plan[0].action else {
        panic!("config.txt is restored");
    };
    let err = content
        .read_with(|r| io::copy(r, &mut io::sink()))
        .unwrap_err();
    assert!(
        matches!(&err, BackupError::HashMismatch { member, .. } if member == "config.txt"),
        "{err:?}"
    );

    let mut m = members(CONFIG.to_vec());
    m.remove(1);
    rezip(&path, &m);
    assert!(
        matches!(Backup::open(&path), Err(BackupError::MissingMember { member, .. }) if member == "u-boot-rpi3.bin")
    );

    let mut m = members(CONFIG.to_vec());
    m.push(("extra.bin", b"x".to_vec()));
    rezip(&path, &m);
    assert!(
        matches!(Backup::open(&path), Err(BackupError::UnexpectedMember { member, .. }) if member == "extra.bin")
    );

    let newer =
        String::from_utf8(manifest.clone())
            .unwrap()
            .replacen("\"format\": 1", "\"format\": 2", 1);
    let mut m = members(CONFIG.to_vec());
    m[3].1 = newer.into_bytes();
    rezip(&path, &m);
    let err = Backup::open(&path).unwrap_err();
    assert!(
        matches!(err, BackupError::NewerFormat { found: 2, .. }),
        "{err:?}"
    );

    rezip(&path, &members(CONFIG.to_vec())[..3]);
    assert!(matches!(
        Backup::open(&path),
        Err(BackupError::NoManifest { .. })
    ));

    rezip(&path, &members(CONFIG.to_vec()));
    Backup::open(&path).expect("the untampered members verify again");
}

#[test]
fn refuses_unsafe_and_duplicate_paths() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = BackupWriter::create_at(dir.path(), card("0x1", "0x2"), vec![], at(0)).unwrap();
    for bad in [
        "",
        "/config.txt",
        "../etc/passwd",
        "a//b",
        "a/./b",
        "a\\b",
        "PIFW-BACKUP.JSON",
        "pifw-tables/x.bin",
    ] {
        let err = w.add_absent(bad, None).unwrap_err();
        assert!(matches!(err, BackupError::BadPath { .. }), "{bad:?}: {err}");
    }
    w.add_file("Config.txt", &mut Cursor::new(b"x"), None)
        .unwrap();
    let err = w.add_absent("config.TXT", None).unwrap_err();
    assert!(matches!(err, BackupError::DuplicatePath { .. }), "{err:?}");
    w.finish().unwrap();
}

#[test]
fn identity_matching() {
    let a = card("0x2178694e", "0x2178694e");
    assert!(a.same_card(&a.clone()));
    assert!(!a.same_card(&card("0x2178694e", "0x11111111")));
    assert!(!a.same_card(&card("0x3e247b30", "0x2178694e")));
    let zeroed = CardIdentity {
        mbr_disk_signature: Some("0x00000000".into()),
        ..a.clone()
    };
    assert!(a.same_card(&zeroed), "a zeroed signature is no evidence");
    let nothing = CardIdentity {
        mbr_disk_signature: None,
        gpt_disk_guid: None,
        fat_volume_id: None,
        ..a.clone()
    };
    assert!(!a.same_card(&nothing), "no common identifier: not the same");
    let gpt = CardIdentity {
        gpt_disk_guid: Some("A1B2".into()),
        ..a.clone()
    };
    let gpt_lower = CardIdentity {
        gpt_disk_guid: Some("a1b2".into()),
        ..a.clone()
    };
    assert!(gpt.same_card(&gpt_lower));
}

#[test]
fn the_card_id_decides_when_a_backup_records_one() {
    // Two cards flashed from one NixOS image: every other identifier is the same.
    let shared = card("0x2178694e", "0x2178694e");
    let with = |id: &str| CardIdentity {
        card_id: Some(id.to_string()),
        ..shared.clone()
    };
    let (a, b) = (
        with("0f8c2a4e-1b2c-4d3e-8f90-a1b2c3d4e5f6"),
        with("77777777-1b2c-4d3e-8f90-a1b2c3d4e5f6"),
    );
    assert!(a.same_card(&a.clone()));
    assert!(!a.same_card(&b), "another card's id");
    assert!(
        !a.same_card(&shared),
        "a card without an id never made a backup that names one"
    );
    assert!(
        a.same_card(&with("0F8C2A4E-1B2C-4D3E-8F90-A1B2C3D4E5F6")),
        "case does not matter"
    );
    // A backup made before the card had an id (an older pifw) is pre-selected by the
    // identifiers, as before; content then decides (`chain`).
    assert!(shared.same_card(&a));
    // Retention groups by the card id when there is one.
    assert_ne!(a.key(), b.key());
    assert_ne!(a.key(), shared.key());
}

#[test]
fn lists_newest_first_and_prunes_only_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let a = card("0xaaaaaaaa", "0xaaaaaaaa");
    let b = card("0xbbbbbbbb", "0xbbbbbbbb");
    let a1 = write_sample(dir.path(), a.clone(), 0);
    let b1 = write_sample(dir.path(), b.clone(), 5);
    let a2 = write_sample(dir.path(), a.clone(), 10);
    let a3 = write_sample(dir.path(), a.clone(), 20);
    std::fs::write(dir.path().join("pifw-broken.zip"), b"not a zip").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();

    let listing = list(dir.path(), &a).unwrap();
    let paths: Vec<&PathBuf> = listing.backups.iter().map(|s| &s.path).collect();
    assert_eq!(paths, [&a3, &a2, &a1]);
    assert_eq!(listing.unreadable.len(), 1);
    assert!(listing.unreadable[0].0.ends_with("pifw-broken.zip"));
    assert_eq!(
        list(dir.path(), &b)
            .unwrap()
            .backups
            .iter()
            .map(|s| &s.path)
            .collect::<Vec<_>>(),
        [&b1]
    );
    assert_eq!(
        list(&dir.path().join("none"), &a).unwrap(),
        Listing::default()
    );

    let would = prune(dir.path(), 1, PruneMode::DryRun).unwrap();
    assert_eq!(would, [a1.clone(), a2.clone()], "the doomed, oldest first");
    assert!(a1.exists() && a2.exists(), "a dry run deletes nothing");

    let deleted = prune(dir.path(), 1, PruneMode::Delete).unwrap();
    assert_eq!(deleted, would);
    assert!(!a1.exists() && !a2.exists());
    assert!(a3.exists() && b1.exists(), "the newest of each card stays");
    assert!(
        dir.path().join("pifw-broken.zip").exists(),
        "unreadable files are never pruned"
    );
    assert_eq!(
        prune(dir.path(), 0, PruneMode::Delete).unwrap(),
        Vec::<PathBuf>::new()
    );
}

fn manifest(id: &str, files: &[(&str, Option<&str>, Option<&str>)]) -> Manifest {
    let st = |h: &Option<&str>| {
        h.map(|h| FileState {
            size: 1,
            sha256: h.to_string(),
        })
    };
    Manifest {
        format: FORMAT,
        id: id.to_string(),
        created: String::new(),
        pifw_version: String::new(),
        command: Vec::new(),
        card: card("0x2178694e", "0x2178694e"),
        files: files
            .iter()
            .map(|(p, b, a)| FileRecord {
                path: p.to_string(),
                before: st(b),
                after: st(a),
            })
            .collect(),
        dirs_absent_before: Vec::new(),
        tables: None,
        change: None,
        run: None,
        provenance: None,
    }
}

#[test]
fn chain_follows_what_the_card_holds_and_refuses_ties() {
    // Card A: u-boot old -> new (a1), then firmware f1 -> f2 (a2). Card B (a clone) untouched.
    let a1 = manifest("1", &[("u-boot.bin", Some("old"), Some("new"))]);
    let a2 = manifest("2", &[("start.elf", Some("f1"), Some("f2"))]);
    let card_a = |p: &str| match p {
        "u-boot.bin" => Some("new".to_string()),
        "start.elf" => Some("f2".to_string()),
        _ => None,
    };
    let card_b = |p: &str| match p {
        "u-boot.bin" => Some("old".to_string()),
        "start.elf" => Some("f1".to_string()),
        _ => None,
    };
    let cands = [(&a2, false), (&a1, false)];
    assert_eq!(chain(&cands, &card_a).members, vec![0, 1]);
    assert_eq!(
        chain(&cands, &card_b),
        Chain::default(),
        "a clone takes none"
    );
    // A card changed by hand since a2: a2 no longer matches, and nothing older is guessed
    // past it (a1 left u-boot new, which still holds: a1 is still this card's history).
    let hand = |p: &str| match p {
        "u-boot.bin" => Some("new".to_string()),
        "start.elf" => Some("mine".to_string()),
        _ => None,
    };
    assert_eq!(chain(&cands, &hand).members, vec![1]);
    // A file the change removed must be absent.
    let rm = manifest("3", &[("issue.txt", Some("x"), None)]);
    assert_eq!(chain(&[(&rm, false)], &card_b).members, vec![0]);
    let has = |p: &str| (p == "issue.txt").then(|| "x".to_string());
    assert!(chain(&[(&rm, false)], &has).members.is_empty());

    // Both clones changed alike: two backups of the same change tie.
    let b1 = manifest("4", &[("u-boot.bin", Some("old"), Some("new"))]);
    let tied = chain(&[(&b1, false), (&a1, false)], &card_a);
    assert!(tied.members.is_empty());
    assert_eq!(tied.tied, vec![0, 1]);
    // ... unless exactly one of them has its copy on this card.
    let picked = chain(&[(&b1, false), (&a1, true)], &card_a);
    assert_eq!(picked.members, vec![1]);
}

#[test]
fn provenance_is_the_newest_backup_that_left_the_bytes_the_card_holds() {
    let prov = |v: &str| crate::fetch::ArchiveProvenance {
        verified_by: crate::fetch::VERIFIED_BY.into(),
        mirror: "http://m/debian".into(),
        suite: "trixie".into(),
        component: "main".into(),
        arch: "arm64".into(),
        package: "u-boot-rpi".into(),
        version: v.into(),
        filename: "pool/x.deb".into(),
        deb_sha256: "d".into(),
        signing_key: "K".into(),
        signing_key_uid: None,
    };
    let mut a1 = manifest("1", &[("u-boot.bin", Some("old"), Some("new"))]);
    a1.provenance = Some(prov("1"));
    let a2 = manifest("2", &[("U-BOOT.BIN", Some("new"), Some("newer"))]);
    let mut a3 = manifest("3", &[("start.elf", Some("f1"), Some("f2"))]);
    a3.provenance = Some(prov("3"));
    // Newest first. The card holds a1's u-boot.bin: a2 replaced it since, but the card has
    // a1's bytes again (a rollback), and a3 does not touch it.
    let found = super::provenance_of(
        &[a3.clone(), a2.clone(), a1.clone()],
        &[("u-boot.bin", "new")],
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "u-boot.bin");
    assert_eq!(found[0].provenance.version, "1");
    // The newest backup that left the card's bytes has no provenance: none is claimed.
    let found = super::provenance_of(&[a2, a1], &[("u-boot.bin", "newer")]);
    assert!(found.is_empty());
    let found = super::provenance_of(&[a3], &[("start.elf", "f1")]);
    assert!(found.is_empty());
}

#[test]
fn the_read_back_of_a_written_backup_catches_a_flipped_byte_by_crc() {
    // What `finish` reads back (MemberCheck::Crc32): one byte changed on the disk inside a
    // stored member is refused, though its size and the manifest are untouched.
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path(), card("0x1", "0x2"), 0);
    Backup::open_checked(&path, MemberCheck::Crc32).expect("as written");
    let mut bytes = std::fs::read(&path).unwrap();
    let uboot = noise(UBOOT_LEN, 7);
    let at = bytes
        .windows(64)
        .position(|w| w == &uboot[1000..1064])
        .expect("the member is stored: its bytes are in the zip as they are");
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = Backup::open_checked(&path, MemberCheck::Crc32).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("member u-boot-rpi3.bin") && msg.contains("Invalid checksum"),
        "{msg}"
    );
    assert!(
        Backup::open(&path).is_err(),
        "the sha256 check refuses it too"
    );
}
