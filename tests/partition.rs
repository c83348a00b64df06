//! `pifw partition hybrid` and `pifw partition mbr` (and `rollback` of their backups) on the
//! fixture images, judged by readers other than pifw: `sgdisk -v` (its text), `sfdisk --dump`
//! and `sfdisk --label-nested dos --dump`, `fsck.fat -n`, `e2fsck -fn`, `sha256sum`, and
//! Debian's U-Boot 2023.01 in QEMU, which must list the GPT partitions, read the FAT and still
//! find /boot/extlinux/extlinux.conf by its own distro-boot scan.
//!
//! The power-cut tests drive the table writer of the library through
//! `pifw::txn::FaultyDevice` on copies of the real images, cutting after every possible number
//! of writes, and ask sfdisk and pifw's parser what the disk is: exactly the old MBR layout or
//! exactly the new hybrid, never anything else.

mod common;

use common::*;
use pifw::disk::table::convert::{
    self, COPY_SECTORS, Guid, HEAD_SECTORS, HybridOptions, HybridPlan,
};
use pifw::disk::table::{TableKind, read_layout};
use pifw::txn::{FaultyDevice, WriteLog};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use tempfile::TempDir;

const MIB: u64 = 1024 * 1024;
const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const NIXOS_FAT: u64 = 8 * MIB;
const NIXOS_FAT_LEN: u64 = 30 * MIB;
const NIXOS_ROOT: u64 = 38 * MIB;
const RPIOS_FAT: u64 = 4 * MIB;
const RPIOS_FAT_LEN: u64 = 256 * MIB;
const RPIOS_ROOT: u64 = 260 * MIB;

/// A private configuration: backups in a temporary directory.
struct Env {
    dir: TempDir,
    config: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "cache_dir = \"{}\"\nbackup_dir = \"{}\"\n",
                dir.path().join("cache").display(),
                dir.path().join("backups").display()
            ),
        )
        .expect("writing config.toml");
        Env { dir, config }
    }

    /// `pifw ARGS IMAGE`, stdin closed (no terminal).
    fn pifw(&self, args: &[&str], image: &Path) -> Output {
        run(pifw()
            .args(args)
            .arg(image)
            .env("PIFW_CONFIG", &self.config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null()))
    }

    fn pifw_ok(&self, args: &[&str], image: &Path) -> String {
        let out = self.pifw(args, image);
        assert!(
            out.status.success(),
            "pifw {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pifw_json(&self, args: &[&str], image: &Path) -> Value {
        let text = self.pifw_ok(args, image);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
    }

    fn backups(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join("backups"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

fn file_sha(path: &Path) -> String {
    run_ok(cmd("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// Every file and directory of the FAT at `offset`, with each file's sha256, by mtools; but
/// pifw's identity file (`PIFW-ID.TXT`), which the first change creates and every return
/// keeps (tests check it with `card_id_on`).
fn fat_tree(image: &Path, offset: u64) -> Vec<(String, String)> {
    run_ok(
        cmd("mdir")
            .arg("-/")
            .arg("-b")
            .arg("-i")
            .arg(format!("{}@@{offset}", image.display()))
            .arg("::/"),
    )
    .lines()
    .map(|l| {
        let p = l.trim_start_matches("::/").to_string();
        let sha = if p.ends_with('/') {
            String::new()
        } else {
            sha256sum(&mcopy_out(image, offset, &p))
        };
        (p, sha)
    })
    .filter(|(p, _)| !p.eq_ignore_ascii_case("pifw-id.txt"))
    .collect()
}

/// `image` is `reference` again: the same length, every byte outside the firmware partition
/// the same (tables, gaps, root file system), and the same files and directories in the FAT,
/// byte for byte. Inside the FAT only its bookkeeping may differ: the conversion's backup
/// was put on the card and removed again by the return.
fn assert_restored(image: &Path, reference: &Path, fat: u64, fat_len: u64) {
    assert_eq!(len(image), len(reference), "length");
    let (mut a, mut b) = (
        File::open(image).expect("open"),
        File::open(reference).expect("open"),
    );
    let mut at = 0u64;
    let total = len(reference);
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    while at < total {
        let n = MIB.min(total - at) as usize;
        a.read_exact(&mut x[..n]).expect("read");
        b.read_exact(&mut y[..n]).expect("read");
        let outside = at + n as u64 <= fat || at >= fat + fat_len;
        if outside {
            assert!(x[..n] == y[..n], "bytes differ in the MiB at {at}");
        }
        at += n as u64;
    }
    assert_eq!(
        fat_tree(image, fat),
        fat_tree(reference, fat),
        "the FAT's files"
    );
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

fn read_at(path: &Path, offset: u64, n: usize) -> Vec<u8> {
    let mut f = File::open(path).expect("open");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf).expect("read");
    buf
}

/// One partition line of an sfdisk dump with every `key=value` field (`uuid`, `name`,
/// `attrs` included) and the `bootable` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    number: u32,
    fields: BTreeMap<String, String>,
    bootable: bool,
}

impl Line {
    fn get(&self, k: &str) -> &str {
        self.fields.get(k).map_or("", String::as_str)
    }
    fn num(&self, k: &str) -> u64 {
        self.get(k)
            .parse()
            .unwrap_or_else(|_| panic!("{k} in {self:?}"))
    }
}

/// Header and partition lines of `sfdisk --dump` output, with the device path cut off.
fn dump(text: &str) -> (BTreeMap<String, String>, Vec<Line>) {
    let (header, parts) = parse_sfdisk_dump(text);
    let mut lines = Vec::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(" : ") else {
            continue;
        };
        let mut fields = BTreeMap::new();
        let mut bootable = false;
        for f in rest.split(", ") {
            match f.split_once('=') {
                Some((k, v)) => {
                    fields.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
                }
                None if f.trim() == "bootable" => bootable = true,
                None => {}
            }
        }
        lines.push(Line {
            number: parts[lines.len()].number,
            fields,
            bootable,
        });
    }
    (header, lines)
}

/// `(number, start, size, type, bootable)` of each line.
fn rows(lines: &[Line]) -> Vec<(u32, u64, u64, String, bool)> {
    lines
        .iter()
        .map(|l| {
            (
                l.number,
                l.num("start"),
                l.num("size"),
                l.get("type").to_string(),
                l.bootable,
            )
        })
        .collect()
}

/// `sgdisk -v` found nothing: its text says so and has no warning or caution.
fn assert_sgdisk_clean(image: &Path) {
    let text = sgdisk_verify(image);
    assert!(text.contains("No problems found"), "sgdisk -v:\n{text}");
    for bad in ["Warning", "Caution", "problems!", "Problem"] {
        assert!(!text.contains(bad), "sgdisk -v:\n{text}");
    }
}

fn assert_fsck_clean(image: &Path, offset: u64, len: u64) {
    let (ok, text) = fsck_fat(image, offset, len);
    assert!(ok, "fsck.fat -n failed:\n{text}");
    for bad in [
        "differ",
        "lost",
        "Dirty",
        "dirty",
        "Free cluster summary wrong",
    ] {
        assert!(!text.contains(bad), "fsck.fat -n complains:\n{text}");
    }
}

fn assert_e2fsck_clean(image: &Path, offset: u64) {
    let (ok, text) = e2fsck(image, offset);
    assert!(ok, "e2fsck -fn failed:\n{text}");
}

/// A row of U-Boot's `part list` on a GPT disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UbootGpt {
    number: u32,
    start: u64,
    end: u64,
    name: String,
    attrs: u64,
    type_guid: String,
    guid: String,
}

/// Parses U-Boot's `part list` for an EFI (GPT) table:
/// `  1\t0x00004000\t0x00012fff\t"firmware"` then `attrs:`, `type:` and `guid:` lines.
fn parse_uboot_gpt(text: &str) -> Vec<UbootGpt> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
    let mut rows: Vec<UbootGpt> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [n, start, end, name, ..] if n.parse::<u32>().is_ok() && start.starts_with("0x") => {
                rows.push(UbootGpt {
                    number: n.parse().expect("number"),
                    start: hex(start),
                    end: hex(end),
                    name: name.trim_matches('"').to_string(),
                    attrs: 0,
                    type_guid: String::new(),
                    guid: String::new(),
                })
            }
            ["attrs:", v] => rows.last_mut().expect("a row").attrs = hex(v),
            ["type:", v] => rows.last_mut().expect("a row").type_guid = v.to_uppercase(),
            ["guid:", v] => rows.last_mut().expect("a row").guid = v.to_uppercase(),
            _ => {}
        }
    }
    rows
}

#[test]
fn uboot_gpt_parser_reads_the_2023_01_format() {
    let text = "\nPartition Map for MMC device 0  --   Partition Type: EFI\n\n\
                Part\tStart LBA\tEnd LBA\t\tName\n\tAttributes\n\tType GUID\n\tPartition GUID\n\
                \x20 1\t0x00004000\t0x00012fff\t\"firmware\"\n\
                \tattrs:\t0x0000000000000000\n\
                \ttype:\tc12a7328-f81f-11d2-ba4b-00a0c93ec93b\n\
                \tguid:\t8a831be9-2adf-4a74-ad25-c7cb822ddaf3\n\
                \x20 2\t0x00013000\t0x0003ffff\t\"root\"\n\
                \tattrs:\t0x0000000000000004\n\
                \ttype:\t0fc63daf-8483-4772-8e79-3d69d8477de4\n\
                \tguid:\t8e4d1e11-5e29-4f4b-99a0-9811a4a29f28\n";
    let rows = parse_uboot_gpt(text);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[1],
        UbootGpt {
            number: 2,
            start: 0x13000,
            end: 0x3ffff,
            name: "root".into(),
            attrs: 4,
            type_guid: LINUX_FS.into(),
            guid: "8E4D1E11-5E29-4F4B-99A0-9811A4A29F28".into(),
        }
    );
}

/// What U-Boot 2023.01 sees on `image` (whose size must be a power of two).
struct Uboot {
    part_list: String,
    devplist: String,
    fatls: Vec<(String, u64)>,
    extlinux: String,
    scan: String,
}

fn uboot(image: &Path) -> Uboot {
    let out = qemu_uboot(
        image,
        &uboot_rpi3(UBOOT_OLD),
        None,
        &[
            "part list mmc 0",
            "part list mmc 0 -bootable devplist",
            "echo ${devplist}",
            "fatls mmc 0:1",
            "ext4ls mmc 0:2 /boot/extlinux",
            // Distro boot's own partition scan: which partitions it looks at, and where it
            // finds extlinux.conf (the NixOS fixture has no kernel, so booting then fails).
            "setenv devtype mmc; setenv devnum 0; run scan_dev_for_boot_part",
        ],
    );
    Uboot {
        part_list: out[0].clone(),
        devplist: out[2].trim().to_string(),
        fatls: parse_uboot_fatls(&out[3]).0,
        extlinux: out[4].clone(),
        scan: out[5].clone(),
    }
}

/// The NixOS image, whose root runs to the last sector: `--grow`, then every reader, U-Boot in
/// QEMU, and `partition mbr` back to the original bytes.
#[test]
fn nixos_hybrid_with_grow_is_read_alike_by_every_reader_and_reverts() {
    let env = Env::new();
    let (_dir, img) = fixture_copy("nixos.img");
    let lba0_before = read_at(&img, 0, 512);

    let v = env.pifw_json(&["partition", "hybrid", "--grow", "--yes", "--json"], &img);
    assert_eq!(v["result"]["verified"], true, "{v:#}");
    assert_eq!(v["plan"]["room"]["how"], "grow");
    assert_eq!(len(&img), 128 * MIB + MIB, "grown by 1 MiB");
    let disk_guid = v["plan"]["gpt"]["disk_guid"]
        .as_str()
        .expect("guid")
        .to_string();
    let guid = |i: usize| {
        v["plan"]["gpt"]["partitions"][i]["unique_guid"]
            .as_str()
            .expect("guid")
            .to_string()
    };
    assert_eq!(env.backups().len(), 1, "one verified backup");

    assert_sgdisk_clean(&img);
    let (h, gpt) = dump(&sfdisk_dump(&img));
    assert_eq!(h["label"], "gpt");
    assert_eq!(h["label-id"], disk_guid);
    assert_eq!(h["first-lba"], "34");
    assert_eq!(h["last-lba"], (264192 - 34).to_string());
    assert_eq!(
        rows(&gpt),
        vec![
            (1, 16384, 61440, ESP.to_string(), false),
            (2, 77824, 184320, LINUX_FS.to_string(), false)
        ]
    );
    assert_eq!(
        (gpt[0].get("name"), gpt[1].get("name")),
        ("firmware", "root")
    );
    assert_eq!(
        (gpt[0].get("uuid"), gpt[1].get("uuid")),
        (&*guid(0), &*guid(1))
    );
    assert_eq!(gpt[0].get("attrs"), "");
    assert_eq!(gpt[1].get("attrs"), "LegacyBIOSBootable");

    let (h, mbr) = dump(&sfdisk_dump_mbr(&img));
    assert_eq!(h["label"], "dos");
    assert_eq!(h["label-id"], "0x2178694e", "disk signature kept");
    assert_eq!(
        rows(&mbr),
        vec![
            (1, 16384, 61440, "b".to_string(), false),
            (2, 1, 16383, "ee".to_string(), false),
            (3, 77824, 184320, "83".to_string(), true)
        ]
    );
    let lba0_after = read_at(&img, 0, 512);
    assert_eq!(
        lba0_after[..446],
        lba0_before[..446],
        "boot code and signature"
    );
    assert_eq!(
        lba0_after[446..462],
        lba0_before[446..462],
        "slot 1 record verbatim"
    );

    assert_fsck_clean(&img, NIXOS_FAT, NIXOS_FAT_LEN);
    assert_e2fsck_clean(&img, NIXOS_ROOT);
    let status = pifw_status_json(&img);
    assert_eq!(status["table"]["kind"], "hybrid");
    assert_eq!(status["firmware"]["pi3_rom_bootable"], true);
    assert_eq!(status["health"], "ok", "{:#}", status["findings"]);

    // U-Boot: the converted card (padded to 256 MiB, QEMU's SD model wants a power of two;
    // U-Boot reads the primary GPT) against the original.
    let before = uboot(&fixture("nixos.img"));
    let padded = _dir.path().join("padded.img");
    run_ok(cmd("cp").arg("--sparse=always").arg(&img).arg(&padded));
    run_ok(cmd("truncate").args(["-s", "256M"]).arg(&padded));
    let after = uboot(&padded);
    assert!(
        before.part_list.contains("Partition Type: DOS"),
        "{}",
        before.part_list
    );
    assert!(
        after.part_list.contains("Partition Type: EFI"),
        "{}",
        after.part_list
    );
    let parts = parse_uboot_gpt(&after.part_list);
    let got: Vec<_> = parts
        .iter()
        .map(|p| {
            (
                p.number,
                p.start,
                p.end,
                p.name.as_str(),
                p.attrs,
                p.type_guid.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 16384, 77823, "firmware", 0, ESP),
            (2, 77824, 262143, "root", 4, LINUX_FS)
        ]
    );
    assert_eq!(
        (parts[0].guid.clone(), parts[1].guid.clone()),
        (guid(0), guid(1))
    );
    // The same FAT files, plus the conversion's backup, which travels with the card, and the
    // card's identity, which the conversion gave it first (U-Boot lists both).
    let (copies, rest): (Vec<_>, Vec<_>) = after
        .fatls
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("pifw-id.txt"))
        .cloned()
        .partition(|(n, _)| n.starts_with("pifw-backup-"));
    assert_eq!(rest, before.fatls, "the same FAT files");
    assert_eq!(copies.len(), 1, "{:?}", after.fatls);
    assert!(
        after
            .fatls
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("pifw-id.txt")),
        "{:?}",
        after.fatls
    );
    let card_id = card_id_on(&img, NIXOS_FAT).expect("the card's identity");
    assert_eq!(v["creates_card_id"], true, "the plan says so: {v:#}");
    assert_eq!(
        v["result"]["created_card_id"].as_str(),
        Some(card_id.as_str())
    );
    assert!(after.fatls.iter().any(|(n, _)| n == "bootcode.bin"));
    assert_eq!(after.extlinux, before.extlinux);
    assert!(
        after.extlinux.contains("extlinux.conf"),
        "{}",
        after.extlinux
    );
    // On the MBR only the bootable root is scanned; on the GPT the EFI System partition
    // counts as bootable too, and extlinux.conf is still found on partition 2.
    assert_eq!(before.devplist, "2");
    assert_eq!(after.devplist, "1 2");
    for scan in [&before.scan, &after.scan] {
        assert!(scan.contains("Scanning mmc 0:2..."), "{scan}");
        assert!(
            scan.contains("Found /boot/extlinux/extlinux.conf"),
            "{scan}"
        );
        assert!(scan.contains("NixOS - Default"), "{scan}");
    }
    assert!(after.scan.contains("Scanning mmc 0:1..."), "{}", after.scan);

    // And back: the original image, byte for byte (the grown MiB cut off again); the card
    // keeps its identity.
    env.pifw_ok(&["partition", "mbr", "--yes"], &img);
    assert_eq!(len(&img), 128 * MIB);
    assert_restored(&img, &fixture("nixos.img"), NIXOS_FAT, NIXOS_FAT_LEN);
    assert_eq!(card_id_on(&img, NIXOS_FAT), Some(card_id));
    assert_fsck_clean(&img, NIXOS_FAT, NIXOS_FAT_LEN);
    let restored = file_sha(&img);
    let again = env.pifw(&["partition", "mbr", "--yes"], &img);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
    assert_eq!(file_sha(&img), restored);
}

/// Raspberry Pi OS: cmdline.txt's `root=PARTUUID=3e247b30-02` is reported with its exact
/// replacement, and `pifw rollback` of the conversion's backup returns the original bytes.
#[test]
fn rpios_hybrid_reports_cmdline_partuuid_and_rolls_back() {
    let env = Env::new();
    let (_dir, img) = fixture_copy("rpios.img");

    let v = env.pifw_json(&["partition", "hybrid", "--grow", "--yes", "--json"], &img);
    assert_eq!(v["cmdline_rewritten"], false);
    let refs = v["partuuid_references"].as_array().expect("refs");
    assert_eq!(refs.len(), 1, "{v:#}");
    assert_eq!(refs[0]["word"], "root=PARTUUID=3e247b30-02");

    assert_sgdisk_clean(&img);
    let (_, gpt) = dump(&sfdisk_dump(&img));
    assert_eq!(
        rows(&gpt),
        vec![
            (1, 8192, 524288, ESP.to_string(), false),
            (2, 532480, 516096, LINUX_FS.to_string(), false)
        ]
    );
    // The replacement names GPT partition 2 as sfdisk (and so Linux) reads it.
    let uuid2 = gpt[1].get("uuid").to_ascii_lowercase();
    assert_eq!(refs[0]["replacement"], format!("root=PARTUUID={uuid2}"));
    let (h, mbr) = dump(&sfdisk_dump_mbr(&img));
    assert_eq!(h["label-id"], "0x3e247b30");
    assert_eq!(
        rows(&mbr),
        vec![
            (1, 8192, 524288, "c".to_string(), false),
            (2, 1, 8191, "ee".to_string(), false),
            (3, 532480, 516096, "83".to_string(), false)
        ]
    );
    assert_fsck_clean(&img, RPIOS_FAT, RPIOS_FAT_LEN);
    assert_e2fsck_clean(&img, RPIOS_ROOT);
    // pifw status agrees that the old reference is now broken (exit 3: problems found).
    let out = run(pifw().args(["status", "--json"]).arg(&img));
    assert_eq!(out.status.code(), Some(3));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let codes: Vec<&str> = status["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert!(codes.contains(&"cmdline-root-missing"), "{codes:?}");

    let id = v["result"]["backup_id"].as_str().expect("id");
    env.pifw_ok(&["rollback", "--yes", "--to", id], &img);
    assert_restored(&img, &fixture("rpios.img"), RPIOS_FAT, RPIOS_FAT_LEN);
    assert_fsck_clean(&img, RPIOS_FAT, RPIOS_FAT_LEN);
}

/// A root file system smaller than its partition: no growing; only the GPT entry (and its MBR
/// mirror) ends earlier, at a MiB boundary, and the file system is untouched.
#[test]
fn rpios_with_a_smaller_root_file_system_shortens_only_the_entry() {
    let env = Env::new();
    let (dir, img) = fixture_copy("rpios.img");
    // Shrink the root file system to 250 MiB with resize2fs, on a copy of the partition.
    let (_pdir, part) = extract_partition(&img, RPIOS_ROOT, 516096 * 512);
    run_ok(cmd("e2fsck").arg("-fy").arg(&part));
    run_ok(cmd("resize2fs").arg(&part).arg("250M"));
    run_ok(
        cmd("dd")
            .arg(format!("if={}", part.display()))
            .arg(format!("of={}", img.display()))
            .args(["bs=512", "seek=532480", "conv=notrunc", "status=none"]),
    );
    let prepared = dir.path().join("prepared.img");
    run_ok(cmd("cp").arg("--sparse=always").arg(&img).arg(&prepared));
    let size = len(&img);

    let v = env.pifw_json(&["partition", "hybrid", "--yes", "--json"], &img);
    assert_eq!(
        v["plan"]["room"]["how"], "shrink-entry",
        "{:#}",
        v["plan"]["room"]
    );
    assert_eq!(len(&img), size, "an image without --grow keeps its size");
    // 1048576 sectors; the backup GPT takes the last 33; the entry ends at the MiB boundary
    // below them: LBA 1046527.
    let (_, gpt) = dump(&sfdisk_dump(&img));
    assert_eq!(gpt[1].num("start"), 532480);
    assert_eq!(gpt[1].num("size"), 1046528 - 532480);
    let (_, mbr) = dump(&sfdisk_dump_mbr(&img));
    assert_eq!(mbr[2].num("size"), 1046528 - 532480, "the mirror agrees");
    assert_sgdisk_clean(&img);
    assert_e2fsck_clean(&img, RPIOS_ROOT);
    assert_fsck_clean(&img, RPIOS_FAT, RPIOS_FAT_LEN);

    env.pifw_ok(&["partition", "mbr", "--yes"], &img);
    assert_restored(&img, &prepared, RPIOS_FAT, RPIOS_FAT_LEN);
    drop(dir);
}

/// Every refusal happens before the first write: the image's sha256 does not change.
#[test]
fn refusals_leave_the_image_unchanged() {
    let env = Env::new();
    let (_dir, img) = fixture_copy("nixos.img");
    let sha = file_sha(&img);
    let check = |out: &Output, code: i32, needles: &[&str]| {
        let err = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(code),
            "stdout:\n{stdout}\nstderr:\n{err}"
        );
        for n in needles {
            assert!(
                err.contains(n) || stdout.contains(n),
                "{n:?} in:\n{stdout}{err}"
            );
        }
        assert_eq!(file_sha(&img), sha);
    };

    // The root's ext4 fills the partition: no room for the backup GPT without --grow.
    let out = env.pifw(&["partition", "hybrid", "--yes"], &img);
    check(
        &out,
        1,
        &[
            "its ext4 file system (92160 blocks of 1024 bytes) uses them",
            "shrink the file system by at least 17 blocks",
            "--grow",
            "nothing was written",
        ],
    );
    // No terminal to confirm on.
    let out = env.pifw(&["partition", "hybrid", "--grow"], &img);
    check(&out, 2, &["pass --yes", "nothing was written"]);
    // A dry run shows the plan and writes nothing.
    let out = env.pifw(&["partition", "hybrid", "--grow", "--dry-run"], &img);
    check(
        &out,
        0,
        &[
            "slot 1  0x0b",
            "slot 2  0xee          LBA 1-16383",
            "the file grows by 1.0 MiB",
            "Dry run: nothing was written",
        ],
    );
    let out = env.pifw(
        &["partition", "hybrid", "--grow", "--dry-run", "--json"],
        &img,
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON plan");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["plan"]["mbr"][1]["type_byte"], 0xEE);
    assert!(v.get("result").is_none());
    check(&out, 0, &[]);
    // Nothing to undo on a card pifw never converted.
    let out = env.pifw(&["partition", "mbr", "--yes"], &img);
    check(&out, 0, &["already has a plain MBR"]);
    assert!(env.backups().is_empty(), "no backup for refused commands");

    // The sgdisk-made hybrid: already converted; the 0x07 slot 1 is reported, not changed.
    let (_d2, hybrid) = fixture_copy("hybrid.img");
    let hsha = file_sha(&hybrid);
    let out = env.pifw(&["partition", "hybrid", "--yes"], &hybrid);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("already has a GPT with a hybrid MBR"),
        "{text}"
    );
    assert!(text.contains("type 0x07"), "{text}");
    let out = env.pifw(&["partition", "mbr", "--yes"], &hybrid);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no backup of this card's MBR"), "{err}");
    assert_eq!(file_sha(&hybrid), hsha);
}

// ---------------------------------------------------------------------------------------------
// Power cuts

fn fixed_options(may_grow: bool) -> HybridOptions {
    HybridOptions {
        may_grow,
        disk_guid: Guid::random_v4([0xD1; 16]),
        partition_guids: (1..=4).map(|i| Guid::random_v4([i; 16])).collect(),
    }
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open rw")
}

/// The bytes of LBA 0-33 and of the last 33 sectors: everything the writers touch.
fn snapshot(path: &Path) -> (Vec<u8>, Vec<u8>) {
    let size = len(path);
    (
        read_at(path, 0, (HEAD_SECTORS * 512) as usize),
        read_at(
            path,
            size - COPY_SECTORS * 512,
            (COPY_SECTORS * 512) as usize,
        ),
    )
}

fn put_back(path: &Path, snap: &(Vec<u8>, Vec<u8>)) {
    let mut f = open_rw(path);
    let size = f.seek(SeekFrom::End(0)).expect("size");
    f.seek(SeekFrom::Start(0)).expect("seek");
    f.write_all(&snap.0).expect("write head");
    f.seek(SeekFrom::Start(size - COPY_SECTORS * 512))
        .expect("seek");
    f.write_all(&snap.1).expect("write tail");
    f.sync_all().expect("sync");
}

/// What the disk is: `"old"` (exactly the original MBR, by sfdisk and by pifw's parser) or
/// `"new"` (exactly the planned hybrid, by both); panics on anything else.
fn judge(
    img: &Path,
    plan: &HybridPlan,
    old_dump: &str,
    new_dump: &str,
    old_mbr: &[(u32, u8, bool, u64, u64)],
    what: &str,
) -> &'static str {
    let text = sfdisk_dump(img);
    let mut f = File::open(img).expect("open");
    let size = len(img);
    let layout = read_layout(&mut f, size).expect("readable");
    if text == old_dump {
        assert_eq!(
            layout.kind,
            TableKind::Mbr,
            "{what}: sfdisk reads the old MBR, pifw does not"
        );
        let got: Vec<_> = layout
            .mbr
            .expect("mbr")
            .entries
            .iter()
            .map(|e| (e.slot, e.type_byte, e.bootable, e.start_lba, e.sectors))
            .collect();
        assert_eq!(got, old_mbr, "{what}");
        // A partly written GPT behind the old MBR is reported as stale, nothing worse.
        for finding in &layout.findings {
            assert_eq!(finding.code, "stale-gpt-signature", "{what}: {finding:?}");
        }
        "old"
    } else {
        assert_eq!(
            text, new_dump,
            "{what}: sfdisk reads neither the old nor the new table"
        );
        convert::verify_hybrid(&mut f, plan).unwrap_or_else(|e| panic!("{what}: {e}"));
        "new"
    }
}

/// Conversion and reversal with a power cut after every possible number of writes, on a copy
/// of `fixture`.
fn power_cuts(fixture_name: &str) -> (u64, u64) {
    let (_dir, img) = fixture_copy(fixture_name);
    let old_dump = sfdisk_dump(&img);
    let old_size = len(&img);
    let mut f = open_rw(&img);
    let plan = convert::plan_hybrid(&mut f, old_size, &fixed_options(true)).expect("plan");
    let old_layout = read_layout(&mut f, old_size).expect("layout");
    let old_mbr: Vec<_> = old_layout
        .mbr
        .expect("mbr")
        .entries
        .iter()
        .map(|e| (e.slot, e.type_byte, e.bootable, e.start_lba, e.sectors))
        .collect();
    // Grow as the command does, before the tables.
    f.set_len(plan.new_disk_bytes).expect("grow");
    drop(f);
    let new_size = plan.new_disk_bytes;
    let new_total = new_size / 512;

    // The sectors written lie outside every partition: LBA 1-33 before the first, the last
    // 33 after the last.
    let first = old_mbr.iter().map(|e| e.3).min().expect("partitions");
    let end = old_mbr.iter().map(|e| e.3 + e.4).max().expect("partitions");
    assert!(first >= HEAD_SECTORS, "first partition at LBA {first}");
    assert!(
        end <= new_total - COPY_SECTORS,
        "last partition ends at {end}"
    );

    let before = snapshot(&img);
    let mut log = WriteLog::new(FaultyDevice::new(open_rw(&img), None));
    convert::write_hybrid(&mut log, &plan).expect("complete run");
    for &(offset, n) in log.log() {
        let inside_head = offset + n <= HEAD_SECTORS * 512;
        let inside_tail = offset >= new_size - COPY_SECTORS * 512 && offset + n <= new_size;
        assert!(inside_head || inside_tail, "write at {offset} ({n} bytes)");
        assert_eq!(n, 512, "one sector per write");
    }
    let writes = log.into_inner().writes();
    let new_dump = sfdisk_dump(&img);
    let after = snapshot(&img);

    for k in 0..=writes {
        put_back(&img, &before);
        let mut dev = FaultyDevice::new(open_rw(&img), Some(k));
        assert!(
            convert::write_hybrid(&mut dev, &plan).is_err(),
            "cut after {k}"
        );
        drop(dev);
        let state = judge(
            &img,
            &plan,
            &old_dump,
            &new_dump,
            &old_mbr,
            &format!("conversion cut after {k}"),
        );
        // LBA 0 is the last write: everything before it reads as the old disk.
        assert_eq!(
            state,
            if k == writes { "new" } else { "old" },
            "cut after {k}"
        );
    }

    let saved = plan.saved_tables();
    put_back(&img, &after);
    let mut full = FaultyDevice::new(open_rw(&img), None);
    convert::restore_tables(&mut full, &saved).expect("complete restore");
    let restores = full.writes();
    drop(full);
    assert_eq!(read_at(&img, 0, (HEAD_SECTORS * 512) as usize), before.0);
    assert_eq!(
        read_at(
            &img,
            old_size - COPY_SECTORS * 512,
            (COPY_SECTORS * 512) as usize
        ),
        saved.regions()[2].bytes
    );
    for k in 0..=restores {
        put_back(&img, &after);
        let mut dev = FaultyDevice::new(open_rw(&img), Some(k));
        let _ = convert::restore_tables(&mut dev, &saved);
        drop(dev);
        let state = judge(
            &img,
            &plan,
            &old_dump,
            &new_dump,
            &old_mbr,
            &format!("restore cut after {k}"),
        );
        // LBA 0 is the first write: from then on the old disk.
        assert_eq!(state, if k == 0 { "new" } else { "old" }, "cut after {k}");
    }
    (writes, restores)
}

#[test]
fn power_cut_at_every_write_nixos() {
    assert_eq!(power_cuts("nixos.img"), (69, 67));
}

#[test]
fn power_cut_at_every_write_rpios() {
    assert_eq!(power_cuts("rpios.img"), (69, 67));
}

/// The conversion's backup travels with the card: a second machine, with an empty backup
/// directory, returns the card to its MBR from the copy on the card.
#[test]
fn another_machine_reverts_from_the_backup_on_the_card() {
    let first = Env::new();
    let (_dir, img) = fixture_copy("nixos.img");
    let table_before = sfdisk_dump(&img);
    first.pifw_ok(&["partition", "hybrid", "--grow", "--yes"], &img);
    assert!(sfdisk_dump(&img).contains("label: gpt"));
    let second = Env::new();
    assert!(second.backups().is_empty());
    second.pifw_ok(&["partition", "mbr", "--yes"], &img);
    assert_eq!(sfdisk_dump(&img), table_before);
    assert_restored(&img, &fixture("nixos.img"), NIXOS_FAT, NIXOS_FAT_LEN);
    assert_fsck_clean(&img, NIXOS_FAT, NIXOS_FAT_LEN);
}
