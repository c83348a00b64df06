//! Unit tests of the change engine on small images made by `mkfs.vfat` and `mcopy`, judged by
//! `fsck.fat -n` and a fresh parse. The power-cut sweep here cuts `apply` after every write
//! and, at every cut, also loses each single write since the last sync and all of them
//! ([`Unsynced`]: a disk cache that reorders between flushes); it does the same to the
//! recovery of every cut state. `tests/powercut.rs` runs the real firmware updates on the
//! fixture images.

use super::*;
use crate::fat::testimg::{Image, TempDir, noise};
use sha2::{Digest, Sha256};

type Files = BTreeMap<String, String>;

fn sha(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn put(path: &str, data: &[u8]) -> FileChange {
    FileChange {
        path: path.into(),
        content: NewContent::Bytes(data.to_vec()),
        sha256: sha(data),
        size: data.len() as u64,
    }
}

fn gone(path: &str) -> FileChange {
    FileChange {
        path: path.into(),
        content: NewContent::Remove,
        sha256: String::new(),
        size: 0,
    }
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        mtime: Some(UNIX_EPOCH + std::time::Duration::from_secs(1_713_966_358)),
        boot_critical: Vec::new(),
        known_old: Default::default(),
    }
}

/// Every file by a fresh parse (lower-cased path → sha256); panics on damage.
fn files(bytes: &[u8]) -> Files {
    let mut c = Cursor::new(bytes);
    crate::fat::check(&mut c).expect("pifw's checker");
    crate::fat::inventory(&mut c)
        .expect("inventory")
        .files
        .into_iter()
        .map(|f| (f.path.to_lowercase(), f.sha256))
        .collect()
}

/// `fsck.fat -n`: (exit code, lines).
fn fsck(bytes: &[u8]) -> (i32, Vec<String>) {
    let dir = TempDir::new();
    let p = dir.0.join("fsck.img");
    std::fs::write(&p, bytes).expect("write image copy");
    let out = std::process::Command::new("fsck.fat")
        .arg("-n")
        .arg(&p)
        .output()
        .expect("spawn fsck.fat");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        text.lines().map(str::to_string).collect(),
    )
}

fn informational(l: &str) -> bool {
    l.starts_with("fsck.fat ") || (l.contains(" files, ") && l.ends_with(" clusters"))
}

/// What the module doc allows `fsck.fat -n` to say between two writes.
fn allowed_after_cut(l: &str) -> bool {
    informational(l)
        || l.is_empty()
        || l == "FATs differ but appear to be intact."
        || l == "  Using first FAT."
        || (l.starts_with("Reclaimed ") && l.contains(" unused cluster"))
        || l.starts_with("Free cluster summary uninitialized")
        || l == "Leaving filesystem unchanged."
}

fn clean(bytes: &[u8], what: &str) {
    let (code, lines) = fsck(bytes);
    assert!(
        code == 0 && lines.iter().all(|l| informational(l)),
        "{what}: fsck.fat -n ({code}): {lines:#?}"
    );
}

fn apply_uncut(base: &[u8], changes: &[FileChange]) -> (Vec<u8>, Applied, u64) {
    let p = plan(&mut Cursor::new(base), changes).expect("plan");
    let mut dev = FaultyDevice::new(Cursor::new(base.to_vec()), None);
    let applied = apply(&mut dev, &p, changes, &opts()).expect("apply");
    let n = dev.writes();
    (dev.into_inner().into_inner(), applied, n)
}

/// Judges a partition a cut left: fsck.fat's complaints are the allowed ones, every file is its
/// old or new version; then recovers and requires exactly the old or the new file set, a clean
/// fsck.fat, nothing pending and a second recovery that writes nothing. Returns whether the
/// recovered state is the new one.
fn judge(cut: Vec<u8>, old: &Files, new: &Files, what: &str) -> bool {
    let (_, lines) = fsck(&cut);
    let bad: Vec<_> = lines.iter().filter(|l| !allowed_after_cut(l)).collect();
    assert!(bad.is_empty(), "{what}: fsck.fat -n: {lines:#?}");
    for (p, h) in files(&cut) {
        assert!(
            old.get(&p) == Some(&h) || new.get(&p) == Some(&h) || p == "pifw.jnl",
            "{what}: {p} is neither old nor new"
        );
    }
    for p in old.keys().filter(|p| new.contains_key(*p)) {
        assert!(files(&cut).contains_key(p), "{what}: {p} missing");
    }
    let mut dev = Cursor::new(cut);
    recover(&mut dev).unwrap_or_else(|e| panic!("{what}: recover: {e}"));
    let rec = dev.into_inner();
    let now = files(&rec);
    assert!(
        now == *old || now == *new,
        "{what}: recovered to neither old nor new: {now:#?}"
    );
    clean(&rec, what);
    assert_eq!(
        pending(&mut Cursor::new(&rec)).expect("pending"),
        None,
        "{what}"
    );
    let mut again = WriteLog::new(Cursor::new(rec));
    recover(&mut again).expect("second recovery");
    assert_eq!(again.log(), &[], "{what}: second recovery wrote");
    now == *new
}

/// Cuts the recovery of `cut` after every write j, and at each j also loses each single write
/// since the last sync and then all of them; judges each variant (which recovers it again).
fn recovery_sweep(cut: &[u8], old: &Files, new: &Files, at: &str) {
    let mut dev = FaultyDevice::new(Cursor::new(cut.to_vec()), None);
    recover(&mut dev).unwrap_or_else(|e| panic!("{at}: recover: {e}"));
    let m = dev.writes();
    for j in 0..m {
        let run = || {
            let mut dev = FaultyDevice::new(Unsynced::new(Cursor::new(cut.to_vec())), Some(j));
            assert!(recover(&mut dev).is_err(), "{at}: recovery cut {j}");
            dev.into_inner()
        };
        let dev = run();
        let unsynced = dev.pending();
        let what = format!("{at}, recovery cut after {j} of {m}");
        judge(dev.into_inner().into_inner(), old, new, &what);
        let mut variants: Vec<Vec<usize>> = (0..unsynced).map(|i| vec![i]).collect();
        if unsynced > 1 {
            variants.push((0..unsynced).collect());
        }
        for lost in variants {
            let mut dev = run();
            dev.lose(&lost).expect("lose");
            let what = format!("{what}, unsynced writes {lost:?} of {unsynced} lost");
            judge(dev.into_inner().into_inner(), old, new, &what);
        }
    }
}

/// Cuts `apply` after every write k, and at each k also loses each single write since the
/// last sync and then all of them; judges every variant. Returns the uncut result.
fn sweep(base: &[u8], changes: &[FileChange]) -> Vec<u8> {
    let old = files(base);
    let (after, _, n) = apply_uncut(base, changes);
    let new = files(&after);
    clean(&after, "uncut");
    let p = plan(&mut Cursor::new(base), changes).expect("plan");
    let mut sides = Vec::new();
    for k in 0..n {
        let run = || {
            let mut dev = FaultyDevice::new(Unsynced::new(Cursor::new(base.to_vec())), Some(k));
            assert!(apply(&mut dev, &p, changes, &opts()).is_err(), "cut {k}");
            dev.into_inner()
        };
        let dev = run();
        let unsynced = dev.pending();
        let cut = dev.into_inner().into_inner();
        let at = format!("cut after {k} of {n}");
        recovery_sweep(&cut, &old, &new, &at);
        sides.push(judge(cut, &old, &new, &at));
        let mut variants: Vec<Vec<usize>> = (0..unsynced).map(|i| vec![i]).collect();
        if unsynced > 1 {
            variants.push((0..unsynced).collect());
        }
        for lost in variants {
            let mut dev = run();
            dev.lose(&lost).expect("lose");
            let what = format!("cut after {k} of {n}, unsynced writes {lost:?} of {unsynced} lost");
            judge(dev.into_inner().into_inner(), &old, &new, &what);
        }
    }
    let commit = sides.iter().position(|&s| s).unwrap_or(sides.len());
    assert!(sides[commit..].iter().all(|&s| s), "{sides:?}");
    after
}

/// A FAT16 root whose end marker is the second-to-last slot of its first sector: the journal
/// takes that slot, and a long name (3 slots) cannot start in the last one without crossing
/// into the next sector.
fn fat16_end_marker_at_slot_14() -> Image {
    let img = Image::new("30M", 16, &[]);
    let files: Vec<(String, Vec<u8>)> = (1..=13)
        .map(|i| (format!("f{i:02}.bin"), noise(3000, i)))
        .collect();
    img.put_many("", &files);
    img
}

#[test]
fn an_entry_added_past_the_end_marker_is_visible() {
    let img = fat16_end_marker_at_slot_14();
    let base = img.bytes();
    let data = noise(10_000, 99);
    let changes = [put("A long name.bin", &data)];
    let (after, _, _) = apply_uncut(&base, &changes);
    assert_eq!(
        files(&after).get("a long name.bin"),
        Some(&sha(&data)),
        "{:?}",
        files(&after)
    );
    clean(&after, "after");
    sweep(&base, &changes);
}

/// A FAT32 volume with one-sector clusters whose root cluster is full: the journal's slot, and
/// the new entry, need a grown root.
#[test]
fn a_full_fat32_root_grows_and_survives_every_cut() {
    let img = Image::new("40M", 32, &["-s", "1"]);
    let files_in: Vec<(String, Vec<u8>)> = (1..=15)
        .map(|i| (format!("f{i:02}.bin"), noise(700, i)))
        .collect();
    img.put_many("", &files_in);
    let base = img.bytes();
    {
        let mut c = Cursor::new(&base);
        let vol = Volume::open(&mut c).expect("open");
        let root = vol.read_dir(&mut c, vol.root()).expect("root");
        assert_eq!(root.clusters.len(), 1, "one root cluster");
        assert!(root.free_slots().is_empty(), "root is full");
    }
    let changes = [
        put("f03.bin", &noise(2000, 300)),
        put("new long name.dtb", &noise(1500, 301)),
    ];
    let after = sweep(&base, &changes);
    let mut c = Cursor::new(&after);
    let vol = Volume::open(&mut c).expect("open");
    assert_eq!(
        vol.read_dir(&mut c, vol.root())
            .expect("root")
            .clusters
            .len(),
        2
    );
}

#[test]
fn adds_removes_and_replaces_in_a_subdirectory_survive_every_cut() {
    let img = Image::new("40M", 32, &["-s", "1"]);
    img.put("bootcode.bin", &noise(5000, 1));
    img.put("config.txt", b"arm_64bit=1\n");
    img.mkdir("overlays");
    img.put("overlays/README", &noise(300, 2));
    img.put("overlays/old-thing.dtbo", &noise(900, 3));
    let base = img.bytes();
    let changes = [
        put("bootcode.bin", &noise(5200, 10)),
        put("overlays/hifiberry-dac.dtbo", &noise(1300, 11)),
        put("overlays/README", &[]),
        gone("overlays/old-thing.dtbo"),
        put("start.elf", &noise(4000, 12)),
    ];
    sweep(&base, &changes);
}

#[test]
fn a_fat16_replace_survives_every_cut_and_every_lost_unsynced_write() {
    let img = fat16_end_marker_at_slot_14();
    img.put("bootcode.bin", &noise(5000, 1));
    img.put("u-boot-rpi3.bin", &noise(9000, 2));
    let base = img.bytes();
    let changes = [
        put("bootcode.bin", &noise(6000, 20)),
        put("u-boot-rpi3.bin", &noise(9100, 21)),
        gone("f01.bin"),
    ];
    sweep(&base, &changes);
}

#[test]
fn a_content_mismatch_writes_nothing() {
    let img = fat16_end_marker_at_slot_14();
    let base = img.bytes();
    let mut changes = vec![
        put("f01.bin", &noise(5000, 5)),
        put("f02.bin", &noise(10, 6)),
    ];
    let p = plan(&mut Cursor::new(&base), &changes).expect("plan");
    changes[1].content = NewContent::Bytes(noise(10, 7));
    let mut dev = WriteLog::new(Cursor::new(base.clone()));
    let err = apply(&mut dev, &p, &changes, &opts()).expect_err("mismatch");
    assert!(
        matches!(err, TxnError::ContentMismatch { ref path, .. } if path == "f02.bin"),
        "{err}"
    );
    assert_eq!(dev.log(), &[]);
}

#[test]
fn a_deleted_journal_slot_never_frees_clusters_another_file_owns_in_any_fat_copy() {
    // Cut right after the journal's chain reached FAT copy 0 (its slot still deleted), then
    // let copy 1's entry for the journal's first cluster differ (another owner there).
    let img = fat16_end_marker_at_slot_14();
    let base = img.bytes();
    let changes = [put("f01.bin", &noise(5000, 5))];
    let (_, _, n) = apply_uncut(&base, &changes);
    let p = plan(&mut Cursor::new(&base), &changes).expect("plan");
    let mut found = false;
    for k in 0..n {
        let mut dev = FaultyDevice::new(Cursor::new(base.clone()), Some(k));
        let _ = apply(&mut dev, &p, &changes, &opts());
        let mut cut = dev.into_inner().into_inner();
        let mut c = Cursor::new(&cut);
        let vol = Volume::open(&mut c).expect("open");
        let slots = journal_slots(&mut c, &vol).expect("slots");
        let Some(s) = slots.iter().find(|s| !s.live) else {
            continue;
        };
        let first = s.journal.journal_first;
        let v0 = vol.reader(0).raw(&mut c, first).expect("fat0");
        let v1 = vol.reader(1).raw(&mut c, first).expect("fat1");
        if v0 == 0 || v1 == 0 {
            continue;
        }
        found = true;
        // Copy 0 now says the cluster chains on to a cluster of some other file.
        let geo = &vol.geo;
        let at = (geo.fat_offset + u64::from(first) * 2) as usize;
        cut[at..at + 2].copy_from_slice(&3u16.to_le_bytes());
        let before = cut.clone();
        let mut dev = Cursor::new(cut);
        recover(&mut dev).expect("recover");
        let after = dev.into_inner();
        let fat = geo.fat_offset as usize..(geo.fat_offset + 2 * geo.fat_bytes) as usize;
        assert!(after[fat.clone()] == before[fat], "cut {k}: FAT changed");
        break;
    }
    assert!(
        found,
        "no cut left a deleted journal slot with allocated clusters"
    );
}

#[test]
fn the_sector_with_the_boot_critical_entries_switches_first() {
    // Root slots: 0 label, 1..=13 f01..f13, 14 zz.bin, 15 yy.bin (sector 0); 16 start.elf,
    // 17 fixup.dat, 18 the journal (sector 1).
    let img = fat16_end_marker_at_slot_14();
    img.put_many(
        "",
        &[
            ("zz.bin".into(), noise(400, 3)),
            ("yy.bin".into(), noise(400, 3)),
            ("start.elf".into(), noise(4000, 1)),
            ("fixup.dat".into(), noise(400, 2)),
        ],
    );
    let base = img.bytes();
    let changes = [
        put("f01.bin", &noise(100, 4)),
        put("zz.bin", &noise(100, 5)),
        put("start.elf", &noise(4100, 6)),
        put("fixup.dat", &noise(410, 7)),
    ];
    let p = plan(&mut Cursor::new(&base), &changes).expect("plan");
    let mut dev = WriteLog::new(Cursor::new(base.clone()));
    let applied = apply(&mut dev, &p, &changes, &opts()).expect("apply");
    assert_eq!(applied.switch_writes, 2);
    let mut c = Cursor::new(&base);
    let vol = Volume::open(&mut c).expect("open");
    let root = vol.read_dir(&mut c, vol.root()).expect("root");
    let start = root.slot_offset(0);
    let dir_writes: Vec<u64> = dev
        .log()
        .iter()
        .filter(|&&(o, _)| o >= start && o < start + 32 * 512)
        .map(|&(o, _)| (o - start) / 512)
        .collect();
    // The journal's slot (sector 1) deleted, then live; the switch: sector 1 (start.elf and
    // fixup.dat) before sector 0; the journal's slot deleted again.
    assert_eq!(dir_writes, [1, 1, 1, 0, 1]);
}

/// Free space only in holes far apart: the new chain is fragmented, so linking it (and freeing
/// it on roll back) takes several FAT writes per copy, and a cut can leave it half linked.
#[test]
fn a_fragmented_chain_half_linked_survives_every_cut_and_lost_write() {
    let img = Image::new("4M", 16, &["-s", "1"]);
    let mut content = Vec::new();
    for i in 0..3u64 {
        content.push((format!("h{i}.bin"), noise(300 * 512, 100 + i)));
        content.push((format!("s{i}.bin"), noise(600 * 512, 200 + i)));
    }
    img.put_many("", &content);
    let free = {
        let mut c = Cursor::new(img.bytes());
        let vol = Volume::open(&mut c).expect("open");
        vol.free_map(&mut c).expect("free").count()
    };
    img.put("filler.bin", &vec![0u8; (free as usize - 100) * 512]);
    for i in 0..3 {
        let out = std::process::Command::new("mdel")
            .arg("-i")
            .arg(&img.path)
            .arg(format!("::/h{i}.bin"))
            .output()
            .expect("mdel");
        assert!(out.status.success(), "mdel");
    }
    let base = img.bytes();
    let changes = [
        put("big.bin", &noise(500 * 512, 7)),
        put("s1.bin", &noise(900, 8)),
    ];
    let mut log = WriteLog::new(Cursor::new(base.clone()));
    let p = plan(&mut Cursor::new(&base), &changes).expect("plan");
    apply(&mut log, &p, &changes, &opts()).expect("apply");
    let mut c = Cursor::new(&base);
    let vol = Volume::open(&mut c).expect("open");
    let fat0 = vol.geo.fat_offset..vol.geo.fat_offset + vol.geo.fat_bytes;
    let fat0_writes = log.log().iter().filter(|(o, _)| fat0.contains(o)).count();
    // The journal's chain; the new chains (two runs of FAT sectors); the old chain freed; the
    // journal freed.
    assert!(fat0_writes >= 5, "FAT copy 0 writes: {:?}", log.log());
    // Every cut that recovery rolls back after writing something (the chain half linked),
    // with that recovery cut and reordered at every write.
    let old = files(&base);
    let new = files(&log.into_inner().into_inner());
    let n = {
        let mut dev = FaultyDevice::new(Cursor::new(base.clone()), None);
        apply(&mut dev, &p, &changes, &opts()).expect("apply");
        dev.writes()
    };
    let mut rolled_back = 0;
    for k in 0..n {
        let mut dev = FaultyDevice::new(Cursor::new(base.clone()), Some(k));
        assert!(apply(&mut dev, &p, &changes, &opts()).is_err());
        let cut = dev.into_inner().into_inner();
        let mut rec = FaultyDevice::new(Cursor::new(cut.clone()), None);
        if recover(&mut rec).expect("recover") == RecoverOutcome::RolledBack && rec.writes() > 1 {
            recovery_sweep(&cut, &old, &new, &format!("cut after {k} of {n}"));
            rolled_back += 1;
        }
    }
    assert!(rolled_back > 0, "no cut left a half-linked chain");
}

#[test]
fn an_old_file_the_caller_already_hashed_is_not_read_again() {
    // The executor's backup hashes every file a change replaces just before the batches; with
    // those hashes in `known_old`, the batch reads each old file's bytes once fewer. Counted
    // (reads and writes together) measures it: the writes are the same in every run.
    let img = Image::new("16M", 16, &[]);
    let old = noise(300_000, 1);
    img.put("big.bin", &old);
    let base = img.bytes();
    let new = noise(200_000, 2);
    let changes = [put("big.bin", &new)];
    let run = |known: KnownOld| {
        let moved = std::cell::Cell::new(0u64);
        let on = |n: usize| moved.set(moved.get() + n as u64);
        let mut dev = crate::device::Counted::new(Cursor::new(base.clone()), &on);
        let o = ApplyOptions {
            known_old: known,
            ..opts()
        };
        let (plan, _) = apply_now(&mut dev, &changes, &o, &mut |_| {}).expect("apply");
        assert_eq!(
            plan.items[0].old.as_ref().map(|s| s.sha256.clone()),
            Some(sha(&old))
        );
        drop(dev);
        moved.get()
    };
    let plain = run(HashMap::new());
    let key = path_key("/BIG.BIN");
    assert_eq!(key, "big.bin");
    let known = run(HashMap::from([(
        key.clone(),
        (old.len() as u64, sha(&old)),
    )]));
    assert_eq!(
        plain - known,
        old.len() as u64,
        "the old file is read once fewer"
    );
    // A size that does not match what the card holds is not trusted: the file is hashed.
    let other = run(HashMap::from([(key, (old.len() as u64 + 1, sha(&old)))]));
    assert_eq!(other, plain);
}
