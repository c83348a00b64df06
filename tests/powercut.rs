//! Power cuts at every write of real firmware updates, judged by fsck.fat and mtools.
//!
//! Drives the change engine (`pifw::txn`) directly on the firmware partition of two fixture
//! images, held in memory as a `Cursor<Vec<u8>>`. For one realistic change set per image an
//! uncut run records its N writes (and its syncs); then EVERY k in 0..N is a cut point. The
//! partition a cut after k writes leaves is the base plus the first k recorded writes (the
//! engine cannot see a cut before the write that fails, so its first k writes do not depend
//! on k); real cut runs (`apply` through [`FaultyDevice`] cutting after k) check that, write
//! for write, at every k on the FAT16 image and every tenth k on the FAT32 one. At every k:
//!
//! - (a) as the cut left it: `fsck.fat -n` reports only what the engine's module doc allows
//!   (lost clusters, FAT copies that differ, an uninitialised free-cluster summary), pifw's own
//!   checker finds no damage beyond lost clusters and differing copies, and every file reads
//!   the same through FAT copy 1 as through copy 0 (the doc: copies differ only on
//!   unreferenced clusters);
//! - (b) as the cut left it, read by mtools without any recovery: every file is exactly its old
//!   or its new version, and the share of cut points where the boot-critical set is all-old or
//!   all-new is measured, printed and asserted (mixed only between the directory-sector switch
//!   writes: at most switch writes - 1 cut points);
//! - (c) after `txn::recover`: the whole file set is exactly the old or exactly the new one, a
//!   later cut never yields an older state than an earlier one (one commit point), `fsck.fat
//!   -n` is fully clean (banner and summary line only, exit 0), pifw's checker has no findings,
//!   the FAT copies are identical, `pending` is empty and a second `recover` writes nothing.
//!
//! And on a subset, chosen because the engine re-hashes all new content in every recovery,
//! which this unoptimised test build does at about 40 MB/s:
//!
//! - (d) recovery itself cut after each of its j writes, then recovered again, judged as (c)
//!   and required to decide as the uncut recovery did: at the k whose recovery writes most for
//!   each outcome (rolled back, rolled forward, nothing to undo), i.e. the longest recovery
//!   of each path;
//! - on the FAT16 image, at every k from the first sync on, each single write since the last
//!   sync lost, and all of them (a disk cache that reorders between syncs), judged as (a), (b)
//!   per file and (c). `txn::tests` does this on small images at every k, and to recovery too.
//!
//! Plus: a content mismatch leaves the partition byte-identical, a no-op plan writes 0 bytes,
//! a change set larger than the free space is refused before any write, and the bytes written
//! for a one-blob update stay within 1.1 x the blob + 64 KiB (measured and printed).

mod common;

use common::{FW_NEW, FW_OLD, UBOOT_NEW, blob, cmd, fixture, pi3_dtb, run, sidecar, uboot_rpi3};
use pifw::txn::{
    self, ApplyOptions, FaultyDevice, FileChange, NewContent, Plan, RecoverOutcome, TxnError,
    WriteLog,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Lower-cased path → content of every file of a volume, as mtools read it. Compared byte for
/// byte (sha256 in this unoptimised test binary would dominate the run time); the uncut states
/// are also checked by sha256 against the change set.
type Files = BTreeMap<String, Vec<u8>>;

fn hashes(files: &Files) -> BTreeMap<String, String> {
    files.iter().map(|(p, b)| (p.clone(), sha256(b))).collect()
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The firmware partition of a fixture image, as bytes.
fn partition(image: &str) -> Vec<u8> {
    let fw = &sidecar(image)["firmware"];
    let off = fw["offset_bytes"].as_u64().expect("offset_bytes");
    let len = fw["size_bytes"].as_u64().expect("size_bytes");
    let mut f = std::fs::File::open(fixture(image)).expect("opening the fixture");
    f.seek(SeekFrom::Start(off)).expect("seek");
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).expect("reading the partition");
    buf
}

fn file_change(path: &str, src: &Path) -> FileChange {
    let data = std::fs::read(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    FileChange {
        path: path.to_string(),
        content: NewContent::Path(src.to_path_buf()),
        sha256: sha256(&data),
        size: data.len() as u64,
    }
}

fn remove(path: &str) -> FileChange {
    FileChange {
        path: path.to_string(),
        content: NewContent::Remove,
        sha256: String::new(),
        size: 0,
    }
}

fn firmware_blob(version: &str, name: &str) -> PathBuf {
    blob(
        "raspi-firmware",
        version,
        &format!("usr/lib/raspi-firmware/{name}"),
    )
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        // A fixed time stamp: every run writes the same directory entries.
        mtime: Some(UNIX_EPOCH + Duration::from_secs(1_713_966_358)),
        boot_critical: Vec::new(),
        known_old: Default::default(),
    }
}

/// Scratch files for the external tools, in /dev/shm when there is one (the partitions are
/// written out many times).
struct Scratch {
    dir: tempfile::TempDir,
    /// What each scratch file holds, so that `put` rewrites only the blocks that differ.
    written: std::cell::RefCell<BTreeMap<String, Vec<u8>>>,
}

impl Scratch {
    fn new() -> Scratch {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("pifw-powercut")
                .tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("creating a scratch directory");
        Scratch {
            dir,
            written: Default::default(),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        use std::os::unix::fs::FileExt;
        let p = self.dir.path().join(name);
        let mut written = self.written.borrow_mut();
        match written.get_mut(name) {
            Some(old) if old.len() == bytes.len() => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .expect("opening a scratch partition");
                const BLOCK: usize = 64 * 1024;
                for (i, (o, n)) in old.chunks_mut(BLOCK).zip(bytes.chunks(BLOCK)).enumerate() {
                    if o != n {
                        f.write_all_at(n, (i * BLOCK) as u64)
                            .expect("writing a scratch partition");
                        o.copy_from_slice(n);
                    }
                }
            }
            _ => {
                std::fs::write(&p, bytes).expect("writing a scratch partition");
                written.insert(name.to_string(), bytes.to_vec());
            }
        }
        p
    }

    /// `fsck.fat -n` on the partition: (exit code, output lines).
    fn fsck(&self, bytes: &[u8]) -> (i32, Vec<String>) {
        let p = self.put("fsck.img", bytes);
        let out = run(cmd("fsck.fat").arg("-n").arg(&p));
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

    /// Every file of the partition, read by `mcopy -s` and hashed.
    fn files(&self, bytes: &[u8]) -> Result<Files, String> {
        let p = self.put("mtools.img", bytes);
        let out_dir = self.dir.path().join("out");
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir(&out_dir).expect("creating the mcopy target");
        let out = run(cmd("mcopy")
            .args(["-s", "-n", "-i"])
            .arg(&p)
            .arg("::*")
            .arg(&out_dir));
        if !out.status.success() || !out.stderr.is_empty() {
            return Err(format!(
                "mcopy -s failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut files = Files::new();
        let mut stack = vec![out_dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("reading the mcopy output") {
                let path = e.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path
                        .strip_prefix(&out_dir)
                        .expect("under the mcopy target")
                        .to_string_lossy()
                        .to_lowercase();
                    files.insert(rel, std::fs::read(&path).expect("reading"));
                }
            }
        }
        Ok(files)
    }
}

/// Geometry of the FATs from the boot sector: (offset of FAT 0, bytes per FAT, copies).
fn fat_geometry(bytes: &[u8]) -> (usize, usize, usize) {
    let le16 = |o: usize| usize::from(u16::from_le_bytes([bytes[o], bytes[o + 1]]));
    let bps = le16(11);
    let reserved = le16(14);
    let fats = usize::from(bytes[16]);
    let sectors = match le16(22) {
        0 => u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]) as usize,
        n => n,
    };
    (reserved * bps, sectors * bps, fats)
}

/// The partition as a reader that trusts FAT copy `copy` sees it (that copy put in place of
/// copy 0).
fn through_fat_copy(bytes: &[u8], copy: usize) -> Vec<u8> {
    let (off, len, _) = fat_geometry(bytes);
    let mut out = bytes.to_vec();
    out.copy_within(off + copy * len..off + (copy + 1) * len, off);
    out
}

/// Whether the copies of the FAT are byte-identical.
fn fats_equal(bytes: &[u8]) -> bool {
    let (off, len, n) = fat_geometry(bytes);
    (1..n).all(|c| bytes[off..off + len] == bytes[off + c * len..off + (c + 1) * len])
}

/// The fsck.fat lines that say nothing is wrong: the version banner and the summary.
fn informational(line: &str) -> bool {
    line.starts_with("fsck.fat ")
        || (line.contains(" files, ") && line.ends_with(" clusters"))
        || line.trim().is_empty()
}

/// The complaints the module doc of `pifw::txn` allows between two writes: lost clusters, FAT
/// copies that differ (copy 0 used) and "Free cluster summary uninitialized".
fn allowed_after_cut(lines: &[String]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].as_str();
        let ok = informational(l)
            || l == "FATs differ but appear to be intact."
            || l == "  Using first FAT."
            || (l.starts_with("Reclaimed ") && l.contains(" unused cluster"))
            || l.starts_with("Free cluster summary uninitialized")
            || l == "Leaving filesystem unchanged.";
        if !ok {
            bad.push(l.to_string());
        }
        i += 1;
    }
    bad
}

fn pifw_findings(bytes: &[u8]) -> Result<Vec<String>, String> {
    match pifw::fat::check(&mut Cursor::new(bytes)) {
        Ok((_, findings)) => Ok(findings.into_iter().map(|f| f.code).collect()),
        Err(e) => Err(e.to_string()),
    }
}

/// The partition as a device that records every write (with its bytes) and every sync, so
/// that the state a cut after any k writes leaves can be rebuilt without running the engine
/// again: the writes before the cut are the same whatever k is (the engine cannot see the cut
/// before its next write fails), so `base` plus the first k recorded writes is exactly what
/// `FaultyDevice::new(.., Some(k))` leaves. The sweep checks that on real cut runs too.
struct Recorder {
    dev: Cursor<Vec<u8>>,
    /// `Some((offset, bytes))` for a write, `None` for a sync.
    events: Vec<Option<(u64, Vec<u8>)>>,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.dev.read(buf)
    }
}

impl Seek for Recorder {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.dev.seek(pos)
    }
}

impl std::io::Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let at = self.dev.position();
        let n = self.dev.write(buf)?;
        self.events.push(Some((at, buf[..n].to_vec())));
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl txn::Durable for Recorder {
    fn sync(&mut self) -> std::io::Result<()> {
        self.events.push(None);
        Ok(())
    }
}

/// A recording's writes, and for each write the number of syncs before it.
#[allow(clippy::type_complexity)]
fn split_events(events: &[Option<(u64, Vec<u8>)>]) -> (Vec<(u64, Vec<u8>)>, Vec<usize>) {
    let mut writes = Vec::new();
    let mut syncs_before = Vec::new();
    let mut syncs = 0;
    for e in events {
        match e {
            Some(w) => {
                writes.push(w.clone());
                syncs_before.push(syncs);
            }
            None => syncs += 1,
        }
    }
    (writes, syncs_before)
}

/// One change set on one fixture, with everything the judge needs.
struct Case {
    image: &'static str,
    changes: Vec<FileChange>,
    base: Vec<u8>,
    plan: Plan,
    old: Files,
    new: Files,
    /// The uncut run's writes, in order.
    writes: Vec<(u64, Vec<u8>)>,
    /// For each write, the number of syncs before it.
    syncs_before: Vec<usize>,
    switch_writes: usize,
}

impl Case {
    fn new(image: &'static str, changes: Vec<FileChange>, scratch: &Scratch) -> Case {
        let base = partition(image);
        let plan = txn::plan(&mut Cursor::new(&base), &changes).expect("plan");
        assert!(!plan.is_noop());
        let old = scratch.files(&base).expect("mtools reads the fixture");
        let mut rec = Recorder {
            dev: Cursor::new(base.clone()),
            events: Vec::new(),
        };
        let applied = txn::apply(&mut rec, &plan, &changes, &opts()).expect("uncut apply");
        let after = rec.dev.into_inner();
        let new = scratch.files(&after).expect("mtools reads the result");
        // The expected new state, by sha256, from the change set alone.
        let mut want = hashes(&old);
        for c in &changes {
            let key = c.path.to_lowercase();
            match &c.content {
                NewContent::Remove => {
                    want.remove(&key);
                }
                _ => {
                    want.insert(key, c.sha256.clone());
                }
            }
        }
        assert_eq!(hashes(&new), want, "{image}: the uncut run's result");
        let (code, lines) = scratch.fsck(&after);
        assert!(
            code == 0 && lines.iter().all(|l| informational(l)),
            "{image}: fsck.fat after the uncut run ({code}): {lines:#?}"
        );
        let (writes, syncs_before) = split_events(&rec.events);
        let case = Case {
            image,
            changes,
            base,
            plan,
            old,
            new,
            writes,
            syncs_before,
            switch_writes: applied.switch_writes,
        };
        assert!(case.cut_state(case.n(), &[]) == after, "{image}: replay");
        case
    }

    /// Writes of the uncut run: the cut points are 0..n.
    fn n(&self) -> u64 {
        self.writes.len() as u64
    }

    /// The partition after the first `k` writes, without the writes whose indexes are in
    /// `lost`.
    fn cut_state(&self, k: u64, lost: &[usize]) -> Vec<u8> {
        let mut b = self.base.clone();
        for (i, (off, data)) in self.writes[..k as usize].iter().enumerate() {
            if !lost.contains(&i) {
                b[*off as usize..*off as usize + data.len()].copy_from_slice(data);
            }
        }
        b
    }

    /// Writes that a cut after `k` writes may lose on a disk that reorders between syncs: those
    /// after the last sync that completed (a sync after the k-th write fails: the power is off).
    fn unsynced(&self, k: u64) -> Vec<usize> {
        let k = k as usize;
        if k == 0 {
            return Vec::new();
        }
        let s = self.syncs_before[k - 1];
        (0..k).filter(|&i| self.syncs_before[i] == s).collect()
    }

    /// A real cut run: `apply` through a [`FaultyDevice`] that cuts after `k` writes. Checks
    /// that it wrote what the uncut run wrote, write for write, sync for sync, up to the cut
    /// (the journal's content differs: it holds a time-based transaction id), and that the
    /// partition it left is the replayed one but for the journal's bytes.
    fn check_real_cut(&self, k: u64, replayed: &[u8]) {
        let rec = Recorder {
            dev: Cursor::new(self.base.clone()),
            events: Vec::new(),
        };
        let mut dev = FaultyDevice::new(rec, Some(k));
        let r = txn::apply(&mut dev, &self.plan, &self.changes, &opts());
        assert!(
            r.is_err(),
            "{}: apply cut after {k} of {} writes reported success",
            self.image,
            self.n()
        );
        assert_eq!(dev.writes(), k);
        let rec = dev.into_inner();
        let (real, real_syncs) = split_events(&rec.events);
        assert_eq!(real.len() as u64, k, "{}: cut {k}", self.image);
        assert_eq!(
            real_syncs[..],
            self.syncs_before[..k as usize],
            "{}: cut {k}: syncs between the writes",
            self.image
        );
        let mut journal = Vec::new();
        for (i, (w, u)) in real.iter().zip(&self.writes).enumerate() {
            assert_eq!(
                (w.0, w.1.len()),
                (u.0, u.1.len()),
                "{}: cut {k}: write {i}",
                self.image
            );
            if u.1.starts_with(b"PIFWJNL1\n") && w.1.starts_with(b"PIFWJNL1\n") {
                journal.push(w.0 as usize..w.0 as usize + w.1.len());
            } else {
                assert!(w.1 == u.1, "{}: cut {k}: write {i} differs", self.image);
            }
        }
        let got = rec.dev.into_inner();
        let same = got
            .iter()
            .zip(replayed)
            .enumerate()
            .all(|(i, (a, b))| a == b || journal.iter().any(|r| r.contains(&i)));
        assert!(
            same && got.len() == replayed.len(),
            "{}: cut {k}: a real cut run left other bytes than the replay",
            self.image
        );
    }

    fn boot_critical(&self) -> BTreeSet<String> {
        self.old
            .keys()
            .chain(self.new.keys())
            .filter(|p| txn::is_boot_critical(p, &[]))
            .cloned()
            .collect()
    }

    /// Whether `files` has exactly the old (`false`) or new (`true`) version of every path in
    /// `paths`; `None` when mixed.
    fn side(&self, files: &Files, paths: &BTreeSet<String>) -> Option<bool> {
        let all = |want: &Files| paths.iter().all(|p| files.get(p) == want.get(p));
        match (all(&self.old), all(&self.new)) {
            (true, _) => Some(false),
            (false, true) => Some(true),
            _ => None,
        }
    }
}

/// Checks (a) and the per-file part of (b) on a partition as a cut left it; returns its files
/// as mtools reads them through FAT copy 0.
fn judge_cut(case: &Case, scratch: &Scratch, cut: &[u8], at: &str) -> Files {
    let (_code, lines) = scratch.fsck(cut);
    let bad = allowed_after_cut(&lines);
    assert!(
        bad.is_empty(),
        "{}: {at}: fsck.fat -n complains beyond what the design allows: {bad:#?}\nfull output: {lines:#?}",
        case.image
    );
    let findings =
        pifw_findings(cut).unwrap_or_else(|e| panic!("{}: {at}: pifw's checker: {e}", case.image));
    assert!(
        findings
            .iter()
            .all(|c| ["fat-lost-clusters", "fat-copies-differ"].contains(&c.as_str())),
        "{}: {at}: pifw's checker: {findings:?}",
        case.image
    );
    let files = scratch
        .files(cut)
        .unwrap_or_else(|e| panic!("{}: {at}: {e}", case.image));
    for (p, b) in &files {
        let known = case.old.get(p) == Some(b) || case.new.get(p) == Some(b);
        assert!(
            known || p == "pifw.jnl",
            "{}: {at}: {p} is neither its old nor its new version",
            case.image
        );
    }
    for p in case.old.keys().filter(|p| case.new.contains_key(*p)) {
        assert!(
            files.contains_key(p),
            "{}: {at}: {p} is missing",
            case.image
        );
    }
    if !fats_equal(cut) {
        let via1 = scratch
            .files(&through_fat_copy(cut, 1))
            .unwrap_or_else(|e| panic!("{}: {at}: through FAT copy 1: {e}", case.image));
        assert!(
            via1 == files,
            "{}: {at}: FAT copy 1 shows other files than copy 0",
            case.image
        );
    }
    files
}

/// Checks (c) on a recovered partition; returns whether it is the new state.
fn judge_recovered(case: &Case, scratch: &Scratch, bytes: &[u8], what: &str) -> bool {
    let files = scratch
        .files(bytes)
        .unwrap_or_else(|e| panic!("{}: {what}: mtools after recovery: {e}", case.image));
    let is_new = if files == case.new {
        true
    } else if files == case.old {
        false
    } else {
        let diff: Vec<_> = case
            .old
            .keys()
            .chain(case.new.keys())
            .chain(files.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|p| files.get(*p) != case.old.get(*p) || files.get(*p) != case.new.get(*p))
            .map(|p| {
                let s = |f: &Files| f.get(p).map(|b| sha256(b)[..12].to_string());
                (p.clone(), s(&case.old), s(&case.new), s(&files))
            })
            .collect();
        panic!(
            "{}: {what}: after recovery the files are neither old nor new (path, old, new, now): {diff:#?}",
            case.image
        );
    };
    let (code, lines) = scratch.fsck(bytes);
    assert!(
        code == 0 && lines.iter().all(|l| informational(l)),
        "{}: {what}: fsck.fat -n after recovery ({code}): {lines:#?}",
        case.image
    );
    assert_eq!(
        pifw_findings(bytes),
        Ok(Vec::new()),
        "{}: {what}: pifw's checker after recovery",
        case.image
    );
    assert!(
        fats_equal(bytes),
        "{}: {what}: FAT copies differ",
        case.image
    );
    assert_eq!(
        txn::pending(&mut Cursor::new(bytes)).expect("pending"),
        None,
        "{}: {what}: a journal is still pending after recovery",
        case.image
    );
    let mut again = WriteLog::new(Cursor::new(bytes.to_vec()));
    assert_eq!(
        txn::recover(&mut again).expect("second recovery"),
        RecoverOutcome::Nothing,
        "{}: {what}",
        case.image
    );
    assert_eq!(
        again.bytes_written(),
        0,
        "{}: {what}: a second recovery wrote {:?}",
        case.image,
        again.log()
    );
    is_new
}

/// How much of the sweep runs at every cut point.
struct Sweep {
    /// Real cut runs (`apply` through `FaultyDevice`) at every k divisible by this; the other
    /// cut states are replayed from the uncut run (byte-identical, see [`Recorder`]).
    real_cut_every: u64,
    /// Lose each single unsynced write, and all of them, at every k from the first sync on.
    /// (Before it only content and the journal's deleted slot are written: every variant is
    /// the old volume plus unreferenced bytes; the unit tests in `txn::tests` cover them.)
    reorder: bool,
}

/// Runs the whole power-cut sweep on one case; returns a one-line summary.
fn sweep(case: &Case, scratch: &Scratch, how: &Sweep) -> String {
    let t0 = Instant::now();
    let n = case.n();
    let critical = case.boot_critical();
    let mut all_or_nothing = 0u64;
    let mut mixed = Vec::new();
    let mut sides = Vec::new();
    let (mut real_cuts, mut recovery_cuts, mut reordered) = (0u64, 0u64, 0u64);
    let mut recoveries = Vec::new();
    for k in 0..n {
        let at = format!("cut after {k} of {n} writes");
        let cut = case.cut_state(k, &[]);
        if k % how.real_cut_every == 0 {
            case.check_real_cut(k, &cut);
            real_cuts += 1;
        }

        // (a), (b): the state the cut left, without recovery.
        let files = judge_cut(case, scratch, &cut, &at);
        match case.side(&files, &critical) {
            Some(_) => all_or_nothing += 1,
            None => mixed.push(k),
        }

        // (c) Recovery.
        let mut rec = FaultyDevice::new(Cursor::new(cut.clone()), None);
        let outcome =
            txn::recover(&mut rec).unwrap_or_else(|e| panic!("{}: {at}: recover: {e}", case.image));
        let rec_writes = rec.writes();
        let is_new = judge_recovered(case, scratch, &rec.into_inner().into_inner(), &at);
        match outcome {
            RecoverOutcome::RolledForward => assert!(is_new, "{}: {at}", case.image),
            RecoverOutcome::RolledBack | RecoverOutcome::DiscardedTorn => {
                assert!(!is_new, "{}: {at}", case.image)
            }
            RecoverOutcome::Nothing => {}
        }
        sides.push(is_new);

        recoveries.push((k, format!("{outcome:?}"), rec_writes, is_new));

        // A disk cache that persisted only some of the writes since the last sync.
        if how.reorder && k > 0 && case.syncs_before[k as usize - 1] > 0 {
            let unsynced = case.unsynced(k);
            let mut variants: Vec<Vec<usize>> = unsynced.iter().map(|&i| vec![i]).collect();
            if unsynced.len() > 1 {
                variants.push(unsynced.clone());
            }
            for lost in variants {
                let what = format!("{at}, unsynced writes {lost:?} of {unsynced:?} lost");
                let state = case.cut_state(k, &lost);
                judge_cut(case, scratch, &state, &what);
                let mut dev = Cursor::new(state);
                txn::recover(&mut dev)
                    .unwrap_or_else(|e| panic!("{}: {what}: recover: {e}", case.image));
                judge_recovered(case, scratch, &dev.into_inner(), &what);
                reordered += 1;
            }
        }
    }
    // (d) Recovery cut after j writes, then recovered again, for every j, at the k whose
    //     recovery writes most for each outcome (rolled back, rolled forward, nothing to
    //     undo): the longest recovery of each path; a shorter one of the same outcome does a
    //     subset of its steps. Every k would add minutes in this unoptimised build.
    let mut longest: BTreeMap<&str, (u64, u64, bool)> = BTreeMap::new();
    for (k, outcome, writes, is_new) in &recoveries {
        let e = longest
            .entry(outcome.as_str())
            .or_insert((*k, *writes, *is_new));
        if *writes > e.1 {
            *e = (*k, *writes, *is_new);
        }
    }
    for &(k, rec_writes, is_new) in longest.values() {
        let cut = case.cut_state(k, &[]);
        for j in 0..rec_writes {
            let what =
                format!("cut after {k} of {n} writes, recovery cut after {j} of {rec_writes}");
            let mut dev = FaultyDevice::new(Cursor::new(cut.clone()), Some(j));
            assert!(
                txn::recover(&mut dev).is_err(),
                "{}: {what}: reported success",
                case.image
            );
            let mut again = Cursor::new(dev.into_inner().into_inner());
            txn::recover(&mut again)
                .unwrap_or_else(|e| panic!("{}: {what}: recover: {e}", case.image));
            let again_new = judge_recovered(case, scratch, &again.into_inner(), &what);
            assert_eq!(
                again_new, is_new,
                "{}: {what}: a cut recovery decided otherwise than an uncut one",
                case.image
            );
            recovery_cuts += 1;
        }
    }
    let recovery_cut_at: Vec<u64> = longest.values().map(|v| v.0).collect();

    // One commit point: every cut before it recovers to the old files, every cut from it on
    // to the new ones.
    let commit = sides.iter().position(|&s| s).unwrap_or(sides.len());
    assert!(
        sides[commit..].iter().all(|&s| s),
        "{}: recovered states by cut point (true = new): {sides:?}",
        case.image
    );
    let share = all_or_nothing as f64 * 100.0 / n as f64;
    let summary = format!(
        "{}: {n} writes = {n} cut points ({real_cuts} also as real cut runs), commit at cut {commit}, \
         {} directory-sector switch writes; boot-critical set ({} files) all-old or all-new \
         without recovery at {all_or_nothing}/{n} cut points ({share:.1}%), mixed at {mixed:?}; \
         {recovery_cuts} cut recoveries (at cuts {recovery_cut_at:?}); {reordered} lost-unsynced-write variants; {:.1} s",
        case.image,
        case.switch_writes,
        critical.len(),
        t0.elapsed().as_secs_f64()
    );
    eprintln!("{summary}");
    // The design's guarantee: the boot-critical set can be mixed only between the switch
    // writes, i.e. at most switch_writes - 1 cut points (none when one sector switches all).
    assert!(
        mixed.len() < case.switch_writes.max(1),
        "{summary}: mixed at more cut points than there are gaps between switch writes"
    );
    summary
}

/// NixOS-like image (FAT16, 2 KiB clusters, 30 MiB with 7.9 MB free): U-Boot 2023.01 ->
/// 2025.01 and firmware 1.20220830 -> 1.20240424 for the Pi 3 boot chain (bootcode.bin, every
/// fixup*.dat, start.elf, start_cd.elf, start4cd.elf). The whole firmware set does not fit
/// beside the old one on this partition (see `a_change_larger_than_the_free_space_...`).
fn nixos_changes() -> Vec<FileChange> {
    let mut v = vec![file_change("u-boot-rpi3.bin", &uboot_rpi3(UBOOT_NEW))];
    for name in [
        "bootcode.bin",
        "fixup.dat",
        "fixup4.dat",
        "fixup4cd.dat",
        "fixup4db.dat",
        "fixup4x.dat",
        "fixup_cd.dat",
        "fixup_db.dat",
        "fixup_x.dat",
        "start.elf",
        "start_cd.elf",
        "start4cd.elf",
    ] {
        v.push(file_change(name, &firmware_blob(FW_NEW, name)));
    }
    v
}

/// The full firmware 1.20240424 set plus U-Boot, for nixos.img.
fn nixos_full_changes() -> Vec<FileChange> {
    let mut v = vec![file_change("u-boot-rpi3.bin", &uboot_rpi3(UBOOT_NEW))];
    for name in FIRMWARE {
        v.push(file_change(name, &firmware_blob(FW_NEW, name)));
    }
    v
}

const FIRMWARE: [&str; 17] = [
    "bootcode.bin",
    "fixup.dat",
    "fixup4.dat",
    "fixup4cd.dat",
    "fixup4db.dat",
    "fixup4x.dat",
    "fixup_cd.dat",
    "fixup_db.dat",
    "fixup_x.dat",
    "start.elf",
    "start4.elf",
    "start4cd.elf",
    "start4db.elf",
    "start4x.elf",
    "start_cd.elf",
    "start_db.elf",
    "start_x.elf",
];

/// Raspberry Pi OS-like image (FAT32, 512-byte clusters): the whole firmware set 1.20240424 ->
/// 1.20220830 (a downgrade: the image ships the newer one), plus two added files (a device
/// tree in the root, an overlay in `overlays/`, both with long names) and one removed file
/// (`issue.txt`).
fn rpios_changes() -> Vec<FileChange> {
    let mut v: Vec<FileChange> = FIRMWARE
        .iter()
        .map(|name| file_change(name, &firmware_blob(FW_OLD, name)))
        .collect();
    v.push(file_change("bcm2837-rpi-3-b.dtb", &pi3_dtb()));
    v.push(file_change(
        "overlays/hifiberry-dac.dtbo",
        &firmware_blob(FW_NEW, "overlays/hifiberry-dac.dtbo"),
    ));
    v.push(remove("issue.txt"));
    v
}

#[test]
fn power_cut_at_every_write_nixos_fat16() {
    let scratch = Scratch::new();
    let case = Case::new("nixos.img", nixos_changes(), &scratch);
    sweep(
        &case,
        &scratch,
        &Sweep {
            real_cut_every: 1,
            reorder: true,
        },
    );
}

#[test]
fn power_cut_at_every_write_rpios_fat32() {
    let scratch = Scratch::new();
    let case = Case::new("rpios.img", rpios_changes(), &scratch);
    sweep(
        &case,
        &scratch,
        &Sweep {
            real_cut_every: 10,
            reorder: false,
        },
    );
}

#[test]
fn a_content_mismatch_leaves_the_partition_byte_identical() {
    let base = partition("nixos.img");
    let mut changes = nixos_changes();
    // The last change (start4cd.elf) announces another blob's hash: every earlier file is
    // fine, so the engine must refuse before writing any of them.
    let last = changes.len() - 1;
    changes[last].sha256 = changes[0].sha256.clone();
    let plan = txn::plan(&mut Cursor::new(&base), &changes).expect("plan");
    let mut dev = WriteLog::new(Cursor::new(base.clone()));
    let err = txn::apply(&mut dev, &plan, &changes, &opts()).expect_err("mismatch");
    assert!(
        matches!(err, TxnError::ContentMismatch { ref path, .. } if path == "start4cd.elf"),
        "{err}"
    );
    assert_eq!(dev.log(), &[], "writes before refusing");
    assert!(dev.into_inner().into_inner() == base, "partition changed");

    // A wrong size too.
    let mut changes = nixos_changes();
    changes[0].size += 1;
    let plan = txn::plan(&mut Cursor::new(&base), &changes).expect("plan");
    let mut dev = WriteLog::new(Cursor::new(base.clone()));
    let err = txn::apply(&mut dev, &plan, &changes, &opts()).expect_err("mismatch");
    assert!(matches!(err, TxnError::ContentMismatch { .. }), "{err}");
    assert_eq!(dev.log(), &[], "writes before refusing");
}

#[test]
fn a_noop_plan_writes_nothing() {
    for image in ["nixos.img", "rpios.img"] {
        let base = partition(image);
        let scratch = Scratch::new();
        let files = hashes(&scratch.files(&base).expect("mtools"));
        // Every file of the volume, "replaced" by its own content.
        let dir = tempfile::tempdir().expect("tempdir");
        let changes: Vec<FileChange> = files
            .keys()
            .map(|p| {
                let mut c = FileChange {
                    path: p.clone(),
                    content: NewContent::Remove,
                    sha256: files[p].clone(),
                    size: 0,
                };
                let fw = &sidecar(image)["firmware"]["files"];
                let size = fw
                    .as_array()
                    .expect("files")
                    .iter()
                    .find(|f| f["path"].as_str().map(str::to_lowercase).as_deref() == Some(p))
                    .and_then(|f| f["size"].as_u64())
                    .expect("size in the sidecar");
                let src = dir.path().join(p.replace('/', "_"));
                std::fs::write(&src, vec![0u8; 0]).expect("placeholder");
                c.content = NewContent::Path(src);
                c.size = size;
                c
            })
            .chain([remove("not-there.bin")])
            .collect();
        let plan = txn::plan(&mut Cursor::new(&base), &changes).expect("plan");
        assert!(plan.is_noop(), "{image}: {plan:#?}");
        let mut dev = WriteLog::new(Cursor::new(base.clone()));
        let applied = txn::apply(&mut dev, &plan, &changes, &opts()).expect("apply");
        assert_eq!(applied.txn_id, None);
        assert_eq!(dev.bytes_written(), 0, "{image}: {:?}", dev.log());
    }
}

#[test]
fn a_change_larger_than_the_free_space_is_refused_before_any_write() {
    let base = partition("nixos.img");
    let changes = nixos_full_changes();
    let err = txn::plan(&mut Cursor::new(&base), &changes).expect_err("too big");
    assert!(matches!(err, TxnError::NoSpace { .. }), "{err}");
    // apply re-plans and refuses the same way, with a plan that would have fit.
    let plan = txn::plan(&mut Cursor::new(&base), &nixos_changes()).expect("plan");
    let mut dev = WriteLog::new(Cursor::new(base.clone()));
    let err = txn::apply(&mut dev, &plan, &changes, &opts()).expect_err("too big");
    assert!(matches!(err, TxnError::NoSpace { .. }), "{err}");
    assert_eq!(dev.bytes_written(), 0);
}

#[test]
fn one_blob_update_writes_little_more_than_the_blob() {
    for image in ["nixos.img", "rpios.img"] {
        let base = partition(image);
        let path = if image == "nixos.img" {
            "u-boot-rpi3.bin"
        } else {
            "start.elf"
        };
        let src = if image == "nixos.img" {
            uboot_rpi3(UBOOT_NEW)
        } else {
            firmware_blob(FW_OLD, "start.elf")
        };
        let changes = vec![file_change(path, &src)];
        let blob_bytes = changes[0].size;
        let plan = txn::plan(&mut Cursor::new(&base), &changes).expect("plan");
        let mut dev = WriteLog::new(Cursor::new(base.clone()));
        txn::apply(&mut dev, &plan, &changes, &opts()).expect("apply");
        let written = dev.bytes_written();
        let limit = blob_bytes + blob_bytes / 10 + 64 * 1024;
        eprintln!(
            "{image}: replacing {path} ({blob_bytes} bytes) wrote {written} bytes in {} writes \
             ({:.3} x the blob; limit {limit})",
            dev.log().len(),
            written as f64 / blob_bytes as f64
        );
        assert!(written <= limit, "{image}: {written} > {limit}");
    }
}
