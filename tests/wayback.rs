//! The ways back, as a user meets them: two cards flashed from one image sharing a backup
//! directory (told apart by the identity pifw gives each card, or refused when they cannot
//! be), a user's own file named `PIFW.JNL`, and a volume whose damage hides a file.
//!
//! Fixtures are copies of the images `scripts/mkimages` built with real tools; the damage is a
//! byte patch at an offset computed from the boot sector here, never made by pifw. Results
//! are judged by the image's sha256 (a refusal writes nothing), mtools and `fsck.fat -n`.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const NIXOS_FAT: u64 = 8 * 1024 * 1024;
const NIXOS_FAT_LEN: u64 = 30 * 1024 * 1024;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn uboot_deb(version: &str) -> PathBuf {
    let p = blob_cache()
        .join("debs")
        .join(format!("u-boot-rpi_{version}_arm64.deb"));
    assert!(
        p.is_file(),
        "{} missing; run scripts/fetch-blobs",
        p.display()
    );
    p
}

fn image_sha(image: &Path) -> String {
    sha256sum(&std::fs::read(image).expect("reading the image"))
}

fn all_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn update_uboot(env: &Env, img: &Path) -> String {
    env.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&uboot_deb(UBOOT_NEW)),
        "--yes",
        s(img),
    ])
}

/// The id of the backup whose copy is on the card, lowercase (as mtools lists it).
fn card_copy_id(img: &Path) -> String {
    card_files(img, NIXOS_FAT)
        .into_keys()
        .find_map(|p| {
            p.strip_prefix("pifw-backup-")
                .and_then(|r| r.strip_suffix(".zip"))
                .map(str::to_string)
        })
        .expect("a backup copy on the card")
}

/// A machine whose configuration keeps backups off the cards (`backups_on_card = false`).
fn env_without_card_copies() -> Env {
    let env = Env::new();
    let mut cfg = std::fs::read_to_string(&env.config).expect("config");
    cfg.push_str("backups_on_card = false\n");
    std::fs::write(&env.config, cfg).expect("config");
    env
}

fn assert_fsck_clean(img: &Path) {
    let (ok, text) = fsck_fat(img, NIXOS_FAT, NIXOS_FAT_LEN);
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| {
            !(l.starts_with("fsck.fat ")
                || (l.contains(" files, ") && l.ends_with(" clusters"))
                || l.trim().is_empty())
        })
        .collect();
    assert!(ok && bad.is_empty(), "fsck.fat -n:\n{text}");
}

/// Two cards from one image, one backup directory: every command on the second card leaves
/// it unchanged or acts only on its own backups.
#[test]
fn two_cards_from_one_image_never_share_backups() {
    let env = Env::new();
    let (_ta, a) = fixture_copy("nixos.img");
    let (_tb, b) = fixture_copy("nixos.img");
    let original = card_files(&b, NIXOS_FAT);
    update_uboot(&env, &a);
    let a_id = card_copy_id(&a);
    let a_sha = image_sha(&a);
    let b_sha = image_sha(&b);

    // Card B has no backup of its own: nothing to list, roll back or switch back to.
    let listed = env.pifw_ok(&["backups", s(&b)]);
    assert!(listed.contains("No backups of this card"), "{listed}");
    assert!(!listed.to_lowercase().contains(&a_id), "{listed}");
    for args in [
        &["rollback", "--dry-run"][..],
        &["rollback", "--yes"][..],
        &["switch", "uboot", "--yes"][..],
    ] {
        let mut argv = args.to_vec();
        argv.push(s(&b));
        let out = env.pifw(&argv);
        let t = all_text(&out);
        assert!(!out.status.success(), "{argv:?} on card B succeeded:\n{t}");
        assert!(!t.contains("--force"), "{argv:?} suggests --force:\n{t}");
        assert!(
            !t.to_lowercase().contains(&a_id),
            "{argv:?} offers card A's backup:\n{t}"
        );
        assert_eq!(image_sha(&b), b_sha, "{argv:?} changed card B");
    }
    let out = env.pifw_ok(&["recover", "--yes", s(&b)]);
    assert!(out.contains("No interrupted change"), "{out}");
    assert_eq!(image_sha(&b), b_sha);

    // Card B changed alike: its own backup (its copy is on card B) is the one used.
    update_uboot(&env, &b);
    let b_id = card_copy_id(&b);
    assert_ne!(a_id, b_id);
    let plan = env
        .pifw_ok(&["rollback", "--dry-run", s(&b)])
        .to_lowercase();
    assert!(plan.contains(&b_id), "{plan}");
    assert!(!plan.contains(&a_id), "{plan}");
    env.pifw_ok(&["rollback", "--yes", s(&b)]);
    assert_eq!(card_files(&b, NIXOS_FAT), original, "card B rolled back");
    assert_fsck_clean(&b);
    assert_eq!(
        image_sha(&a),
        a_sha,
        "card A untouched by card B's commands"
    );

    // Card A still rolls back to its own backup.
    let plan = env
        .pifw_ok(&["rollback", "--dry-run", s(&a)])
        .to_lowercase();
    assert!(plan.contains(&a_id), "{plan}");
    env.pifw_ok(&["rollback", "--yes", s(&a)]);
    assert_eq!(card_files(&a, NIXOS_FAT), original, "card A rolled back");
}

/// Two clones of one image changed alike, no backup copies on the cards: every other
/// identifier and every file agree, and only the identity pifw gave each card with its first
/// change tells the two backups apart. Each card's rollback takes its own backup.
#[test]
fn clones_changed_alike_each_roll_back_to_their_own_backup() {
    let env = env_without_card_copies();
    let (_ta, a) = fixture_copy("nixos.img");
    let (_tb, b) = fixture_copy("nixos.img");
    let original = card_files(&b, NIXOS_FAT);
    update_uboot(&env, &a);
    update_uboot(&env, &b);
    assert_eq!(card_files(&a, NIXOS_FAT), card_files(&b, NIXOS_FAT));
    let a_card = card_id_on(&a, NIXOS_FAT).expect("card A's identity");
    let b_card = card_id_on(&b, NIXOS_FAT).expect("card B's identity");
    assert_ne!(a_card, b_card);
    // Which backup is whose, from each zip's manifest as unzip reads it.
    let mut owner = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(env.backups()).expect("backups") {
        let zip = e.expect("entry").path();
        let m = run_ok(cmd("unzip").arg("-p").arg(&zip).arg("pifw-backup.json"));
        let m: serde_json::Value = serde_json::from_str(&m).expect("manifest");
        owner.insert(
            m["card"]["card_id"].as_str().expect("card id").to_string(),
            m["id"].as_str().expect("id").to_string(),
        );
    }
    assert_eq!(owner.len(), 2, "{owner:?}");
    let a_sha = image_sha(&a);
    let plan = env.pifw_ok(&["rollback", "--dry-run", s(&b)]);
    assert!(plan.contains(&owner[&b_card]), "{plan}");
    assert!(!plan.contains(&owner[&a_card]), "{plan}");
    env.pifw_ok(&["rollback", "--yes", s(&b)]);
    assert_eq!(card_files(&b, NIXOS_FAT), original, "card B rolled back");
    assert_eq!(card_id_on(&b, NIXOS_FAT).as_ref(), Some(&b_card));
    assert_fsck_clean(&b);
    assert_eq!(image_sha(&a), a_sha, "card A untouched");
    let listed = env.pifw_ok(&["backups", s(&a)]);
    assert!(listed.contains(&owner[&a_card]), "{listed}");
    assert!(!listed.contains(&owner[&b_card]), "{listed}");
}

/// Cards that cannot carry an identity (a file of its name is the user's, and pifw does not
/// overwrite it), cloned and changed alike without copies on the cards: the two backups
/// cannot be told apart. Rollback refuses and lists both for `--to`, never suggesting
/// `--force`.
#[test]
fn indistinguishable_backups_are_listed_not_guessed() {
    let env = env_without_card_copies();
    let (_ta, a) = fixture_copy("nixos.img");
    let (_tb, b) = fixture_copy("nixos.img");
    let notes = a.with_file_name("user-notes.txt");
    std::fs::write(&notes, b"my own notes, not pifw's\n").expect("notes");
    for img in [&a, &b] {
        run_ok(
            cmd("mcopy")
                .arg("-i")
                .arg(format!("{}@@{NIXOS_FAT}", img.display()))
                .arg(&notes)
                .arg("::/PIFW-ID.TXT"),
        );
    }
    let status = env.pifw_ok(&["status", s(&a)]);
    assert!(status.contains("PIFW-ID.TXT is not pifw's"), "{status}");
    update_uboot(&env, &a);
    update_uboot(&env, &b);
    for img in [&a, &b] {
        assert_eq!(
            mcopy_out(img, NIXOS_FAT, "PIFW-ID.TXT"),
            b"my own notes, not pifw's\n",
            "the user's file is left alone"
        );
    }
    let b_sha = image_sha(&b);
    let out = env.pifw(&["rollback", "--yes", s(&b)]);
    let t = all_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("--to"), "{t}");
    assert!(!t.contains("--force"), "{t}");
    assert_eq!(image_sha(&b), b_sha);
    let ids: Vec<String> = std::fs::read_dir(env.backups())
        .expect("backups")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in &ids {
        let id = id
            .strip_prefix("pifw-")
            .and_then(|r| r.strip_suffix(".zip"))
            .expect("backup name");
        assert!(t.contains(id), "{id} not listed:\n{t}");
    }
}

/// A user's file named PIFW.JNL, even one that starts like a journal, is no journal: status,
/// recover, a change and its rollback leave it byte for byte.
#[test]
fn a_user_file_named_pifw_jnl_is_left_alone() {
    let env = Env::new();
    let (tmp, img) = fixture_copy("nixos.img");
    let mine = tmp.path().join("PIFW.JNL");
    let content = b"PIFWJNL1\nnot a journal: my own notes about this card\n".to_vec();
    std::fs::write(&mine, &content).expect("write");
    run_ok(
        cmd("mcopy")
            .arg("-i")
            .arg(format!("{}@@{NIXOS_FAT}", img.display()))
            .arg(&mine)
            .arg("::/PIFW.JNL"),
    );
    let sha = image_sha(&img);
    let status = env.pifw(&["status", "--json", s(&img)]);
    let st = String::from_utf8_lossy(&status.stdout);
    assert!(!st.contains("interrupted-change"), "{st}");
    let out = env.pifw_ok(&["recover", "--yes", s(&img)]);
    assert!(out.contains("No interrupted change"), "{out}");
    assert_eq!(image_sha(&img), sha, "recover wrote");

    update_uboot(&env, &img);
    assert_eq!(mcopy_out(&img, NIXOS_FAT, "PIFW.JNL"), content);
    assert_fsck_clean(&img);
    env.pifw_ok(&["rollback", "--yes", s(&img)]);
    assert_eq!(mcopy_out(&img, NIXOS_FAT, "PIFW.JNL"), content);
    assert_fsck_clean(&img);
}

/// The root directory of the FAT16 firmware partition: (byte offset in the image, slots).
fn fat16_root(img: &Path) -> (u64, usize) {
    let data = std::fs::read(img).expect("read");
    let bs = &data[NIXOS_FAT as usize..NIXOS_FAT as usize + 512];
    let le16 = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
    let (bps, reserved, fats, root_entries, fat_sectors) =
        (le16(11), le16(14), u64::from(bs[16]), le16(17), le16(22));
    (
        NIXOS_FAT + (reserved + fats * fat_sectors) * bps,
        root_entries as usize,
    )
}

/// A zeroed first byte of u-boot-rpi4.bin's long-name entry ends the root directory there
/// for every reader, hiding the file: its clusters look lost. pifw must not take them for
/// its own leftovers and write over them: refused before the first write, --dry-run too,
/// and status keeps reporting them.
#[test]
fn a_file_hidden_by_a_zeroed_long_name_byte_is_not_written_over() {
    let env = Env::new();
    let (_t, img) = fixture_copy("nixos.img");
    let (root, slots) = fat16_root(&img);
    let mut data = std::fs::read(&img).expect("read");
    let slot = (0..slots)
        .find(|&i| {
            let e = &data[root as usize + i * 32..root as usize + i * 32 + 32];
            let name: Vec<u8> = e[1..11].iter().step_by(2).copied().collect();
            e[11] == 0x0F && e[0] == 0x01 && name.starts_with(b"u-boo") && e[14..26].contains(&b'4')
        })
        .expect("u-boot-rpi4.bin's long-name entry");
    // The entry before it (slot - 1) is the sequence's last piece, first on disk.
    let at = root as usize + (slot - 1) * 32;
    assert_eq!(data[at + 11], 0x0F);
    data[at] = 0;
    std::fs::write(&img, &data).expect("patch");
    assert!(
        !card_files(&img, NIXOS_FAT).contains_key("u-boot-rpi4.bin"),
        "mtools should no longer see the hidden file"
    );
    let sha = image_sha(&img);
    let status = env.pifw(&["status", "--json", s(&img)]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("fat-lost-clusters"),
        "status"
    );
    for mode in ["--dry-run", "--yes"] {
        let out = env.pifw(&[
            "update-uboot",
            "--from",
            s(&uboot_deb(UBOOT_NEW)),
            mode,
            s(&img),
        ]);
        let t = all_text(&out);
        assert!(!out.status.success(), "{mode}: {t}");
        assert!(t.contains("lost clusters"), "{mode}: {t}");
        assert!(t.contains("nothing was written"), "{mode}: {t}");
        assert_eq!(image_sha(&img), sha, "{mode}: the card changed");
    }
    let out = env.pifw_ok(&["recover", "--yes", s(&img)]);
    assert!(out.contains("No interrupted change"), "{out}");
    assert_eq!(
        image_sha(&img),
        sha,
        "recover freed the hidden file's clusters"
    );
}
