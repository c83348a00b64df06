//! Power cuts at every write of whole pifw commands, as a user runs them, judged by fsck.fat
//! and mtools; then the user's next steps (`pifw recover`, or `fsck.fat -a` first).
//!
//! `tests/powercut.rs` cuts one transaction of the engine. A command is more: the backup's
//! copy onto the card (a transaction of its own), directories created, the batches, for a
//! rollback the removal of the card's copy of the backup, and the gaps between them. Here the
//! built binary runs with `PIFW_TEST_CUT_AFTER_WRITES=k` (its k+1-th write to the card and
//! everything after fail, see `pifw::txn::env_cut`), for EVERY k from 0 until the command
//! completes, once keeping the writes since the last sync and once losing all of them
//! (`PIFW_TEST_CUT_LOSE_UNSYNCED=1`). At every cut:
//!
//! - as the cut left it: `fsck.fat -n` never reports a dirty bit (pifw never sets it: a set
//!   dirty bit invites a boot-time `fsck.fat -a`, which would free the change's clusters), and
//!   for a rollback from the card's own backup, the old files are back or the backup is still
//!   on the card;
//! - `pifw recover --yes`, itself cut after each of its writes and run again until it
//!   completes, then: `fsck.fat -n` prints only its banner and summary (no lost cluster, FAT
//!   copies agree, no FSInfo or dirty complaint), the files are exactly the old or exactly the
//!   new set (backup copies on the card aside), `pifw status` reports no interrupted change,
//!   and a second `pifw recover` says there is nothing to do.
//!
//! And `fsck.fat -a` (and `-a -f`, which salvages lost chains into FSCKnnnn.REC files) run on
//! the cut card before `pifw recover`, as the user did: recover either refuses, with
//! the evidence and nothing written, or leaves a card that fsck.fat -n finds clean with the old
//! or new files; never a cross-link.
//!
//! The checks and the recover sweep depend only on the card a cut left, so they run once per
//! distinct card (sha256 up to the end of the firmware partition); a cut that leaves a card
//! seen before is counted with its outcome. The ks of a sweep run on `PIFW_TEST_CUT_THREADS`
//! workers (default: the machine's cores). Counts, distinct cards and where the time went are
//! printed (`--nocapture`); the counts are asserted.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

type Files = BTreeMap<String, String>;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn firmware(image: &str) -> (u64, u64) {
    let fw = &sidecar(image)["firmware"];
    (
        fw["offset_bytes"].as_u64().expect("offset_bytes"),
        fw["size_bytes"].as_u64().expect("size_bytes"),
    )
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

/// Every file of the FAT at `offset`, read by one `mcopy -s`, lowercase path -> sha256.
fn files(image: &Path, offset: u64) -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(cmd("mcopy")
        .args(["-s", "-n", "-i"])
        .arg(format!("{}@@{offset}", image.display()))
        .arg("::*")
        .arg(dir.path()));
    assert!(
        out.status.success(),
        "mcopy -s failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = Files::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("reading the mcopy output") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir.path())
                    .expect("under the target")
                    .to_string_lossy()
                    .to_lowercase();
                let bytes = std::fs::read(&path).expect("read");
                if rel == common::CARD_ID_FILE {
                    // Written in a transaction of its own: whole whenever it is there.
                    let text = String::from_utf8_lossy(&bytes);
                    assert!(
                        text.starts_with("pifw card identity 1\nid ") && text.contains("\ncheck "),
                        "a torn identity file: {text:?}"
                    );
                }
                files.insert(rel, sha256_hex(&bytes));
            }
        }
    }
    files
}

/// sha256 as `sha256sum` prints it, computed in this process (one `sha256sum` run per file
/// cost more than the rest of a card's listing).
fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Without pifw's own files: the backups' copies on the card (`pifw-backup-*.zip`) and the
/// card's identity (`pifw-id.txt`: the first change writes it in a transaction of its own,
/// before its other writes, and rollbacks keep it; [`files`] checks it is whole).
fn without_backups(f: &Files) -> Files {
    f.iter()
        .filter(|(p, _)| !p.starts_with("pifw-backup-") && p.as_str() != common::CARD_ID_FILE)
        .map(|(p, h)| (p.clone(), h.clone()))
        .collect()
}

/// `fsck.fat -n` lines other than the banner and the summary.
fn fsck_complaints(image: &Path, offset: u64, len: u64) -> Vec<String> {
    let (ok, text) = fsck_fat(image, offset, len);
    let bad: Vec<String> = text
        .lines()
        .filter(|l| {
            !(l.starts_with("fsck.fat ")
                || (l.contains(" files, ") && l.ends_with(" clusters"))
                || l.trim().is_empty())
        })
        .map(str::to_string)
        .collect();
    if !ok && bad.is_empty() {
        return vec![format!("fsck.fat -n failed: {text}")];
    }
    bad
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `pifw ARGS` with a power cut after `k` writes (`None`: no cut).
fn pifw_cut(env: &Env, args: &[&str], k: Option<u64>, lose: bool) -> Output {
    let mut c = pifw();
    c.args(args)
        .env("PIFW_CONFIG", &env.config)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    if let Some(k) = k {
        c.env("PIFW_TEST_CUT_AFTER_WRITES", k.to_string());
        if lose {
            c.env("PIFW_TEST_CUT_LOSE_UNSYNCED", "1");
        }
    }
    run(&mut c)
}

/// One command on one card state, with what "old" and "new" mean for it.
struct Scenario {
    name: &'static str,
    image: &'static str,
    /// The card before the command.
    base: PathBuf,
    /// Backups on "this machine" before the command (copied into each run's fresh env).
    local_backups: Option<PathBuf>,
    args: Vec<String>,
    old: Files,
    new: Files,
    /// A rollback: at every cut, the old files are back or this backup copy is on the card.
    keeps: Option<String>,
    /// The command runs several file transactions (batches): between them each file is its
    /// old or its new version, not the whole set.
    batches: bool,
}

#[derive(Default, Debug)]
struct Counts {
    /// Cut points of the command (every k before the one it completes at).
    cuts: u64,
    /// Distinct cards among them (sha256 of the whole image): each is checked as the cut left
    /// it and swept through `recover`, cut after each of its writes, once.
    distinct_states: u64,
    /// Cuts that left a card an earlier cut had left (checked by the hash only).
    repeated_states: u64,
    /// Cut runs of `recover` (in the distinct states' sweeps).
    recovery_cuts: u64,
    /// Distinct cards after recovery, each judged by fsck.fat, mtools, a second `recover` and
    /// `status` once.
    distinct_recovered: u64,
    // Per cut point (repeated states counted with the outcome of their first sweep):
    rolled_forward: u64,
    rolled_back: u64,
    leftovers_cleaned: u64,
    nothing: u64,
    /// Cut points that recovered to a state between two batches (each file old or new).
    between_batches: u64,
}

/// How the recovery of one distinct cut state ended.
#[derive(Clone, Copy)]
struct Recovered {
    outcome: Outcome,
    between_batches: bool,
}

#[derive(Clone, Copy)]
enum Outcome {
    Forward,
    Back,
    Leftovers,
    Nothing,
}

/// What the threads of one sweep share.
#[derive(Default)]
struct Shared {
    /// Cut state (sha256 of the image) -> its recovery, once swept; `None` while being swept.
    states: std::collections::HashMap<String, Option<Recovered>>,
    /// Cards after recovery already judged (sha256 of the image) -> between batches.
    recovered: std::collections::HashMap<String, bool>,
    /// k -> the cut state it left.
    cuts: BTreeMap<u64, String>,
    recovery_cuts: u64,
    /// Seconds spent: the command's cut runs, the checks as cut, the recover sweeps, the
    /// checks after recovery, hashing the image.
    secs: [f64; 5],
}

/// sha256 of the card up to the end of its firmware partition (`end`): the partition table
/// and the partition, all that the swept commands and `recover` write. (The root filesystem
/// after it is never written; hashing it too would triple the cost.)
fn card_sha256(image: &Path, end: u64) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(image)
        .expect("opening the card")
        .take(end);
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("reading the card");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Marks the sweep failed when a worker thread panics, so the others stop early.
struct Bail<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Bail<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

fn fresh_env(local: Option<&Path>) -> Env {
    let env = Env::new();
    if let Some(src) = local {
        std::fs::create_dir_all(env.backups()).expect("backups dir");
        for e in std::fs::read_dir(src).expect("reading the backups") {
            let p = e.expect("entry").path();
            std::fs::copy(&p, env.backups().join(p.file_name().expect("name"))).expect("copy");
        }
    }
    env
}

/// Worker threads per sweep: `PIFW_TEST_CUT_THREADS`, else the machine's cores. Each k is
/// one pifw process on its own copy of the card, so the ks of a sweep are independent; on
/// two cores shared with other builds, two workers made six cut runs of update-firmware 20%
/// faster than one (7.3-9.5 s against 9.1-11.9 s).
fn sweep_threads() -> usize {
    std::env::var("PIFW_TEST_CUT_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

impl Scenario {
    fn args_for(&self, img: &Path) -> Vec<String> {
        self.args
            .iter()
            .map(|a| {
                if a == "IMG" {
                    s(img).to_string()
                } else {
                    a.clone()
                }
            })
            .collect()
    }

    /// The whole sweep; returns the counts.
    ///
    /// The command runs once for EVERY k, on a fresh copy of the card and a fresh
    /// configuration, and must report the simulated cut. What follows depends only on the
    /// card the cut left (and on `lose`, fixed for a sweep): `recover` is deterministic given
    /// the card and its arguments and reads nothing else of this machine, and the checks
    /// judge the card (`status` is asserted on card findings only). So a cut card is
    /// identified by the sha256 of the image up to the end of its firmware partition (the
    /// swept commands write nothing after it), and the checks as cut plus the nested
    /// `recover` sweep run once per distinct card; a cut that leaves a card seen before is
    /// counted with that card's outcome. The same holds after recovery: fsck.fat, mtools, the
    /// second `recover` and `status` judge each distinct recovered card once. (When unsynced
    /// writes are lost, every k between two syncs leaves the same card; when kept, nearly
    /// every write changes a byte. The command itself stamps the time into directory entries
    /// and its journal, so cards of different runs rarely coincide.)
    fn sweep(&self, lose: bool) -> Counts {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let started = std::time::Instant::now();
        let next = AtomicU64::new(0);
        let done_at = AtomicU64::new(u64::MAX);
        let failed = AtomicBool::new(false);
        let shared = std::sync::Mutex::new(Shared::default());
        let threads = sweep_threads();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    let _bail = Bail(&failed);
                    loop {
                        let k = next.fetch_add(1, Ordering::SeqCst);
                        if k > done_at.load(Ordering::SeqCst) || failed.load(Ordering::SeqCst) {
                            break;
                        }
                        if self.cut_at(k, lose, &shared) {
                            done_at.fetch_min(k, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        let shared = shared.into_inner().expect("no worker panicked");
        let done = done_at.load(Ordering::SeqCst);
        assert!(
            done < u64::MAX,
            "{}: the command never completed",
            self.name
        );
        let cut_ks: Vec<u64> = shared.cuts.keys().copied().collect();
        assert_eq!(
            cut_ks,
            (0..done).collect::<Vec<_>>(),
            "{}: every k before the completing one must be a cut",
            self.name
        );
        let mut counts = Counts {
            cuts: done,
            distinct_states: shared.states.len() as u64,
            recovery_cuts: shared.recovery_cuts,
            distinct_recovered: shared.recovered.len() as u64,
            ..Counts::default()
        };
        counts.repeated_states = counts.cuts - counts.distinct_states;
        for key in shared.cuts.values() {
            let r = shared.states[key].expect("every state swept");
            match r.outcome {
                Outcome::Forward => counts.rolled_forward += 1,
                Outcome::Back => counts.rolled_back += 1,
                Outcome::Leftovers => counts.leftovers_cleaned += 1,
                Outcome::Nothing => counts.nothing += 1,
            }
            counts.between_batches += u64::from(r.between_batches);
        }
        let [run, as_cut, recover, after, hash] = shared.secs;
        eprintln!(
            "{} (lose unsynced: {lose}): {counts:?}\n  {:.0} s with {threads} thread(s); summed \
             seconds: cut runs {run:.0}, checks as cut {as_cut:.0}, recover sweeps \
             {recover:.0}, checks after recovery {after:.0}, hashing {hash:.0}",
            self.name,
            started.elapsed().as_secs_f64()
        );
        assert!(
            counts.distinct_states >= 1 && counts.distinct_recovered >= 1,
            "{counts:?}"
        );
        counts
    }

    /// The command cut after `k` writes and, if the card it left is new, everything after.
    /// Returns whether the command completed (k is past its last write).
    fn cut_at(&self, k: u64, lose: bool, shared: &std::sync::Mutex<Shared>) -> bool {
        let lock = || shared.lock().unwrap_or_else(|p| p.into_inner());
        let (off, len) = firmware(self.image);
        let tmp = tempfile::tempdir().expect("tempdir");
        let img = tmp.path().join("card.img");
        std::fs::copy(&self.base, &img).expect("copying the card");
        let env = fresh_env(self.local_backups.as_deref());
        let args = self.args_for(&img);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let at = format!(
            "{} (lose unsynced: {lose}), cut after {k} writes",
            self.name
        );
        let t = std::time::Instant::now();
        let out = pifw_cut(&env, &argv, Some(k), lose);
        lock().secs[0] += t.elapsed().as_secs_f64();
        if out.status.success() {
            assert_eq!(
                without_backups(&files(&img, off)),
                self.new,
                "{at}: the uncut run's result"
            );
            assert!(fsck_complaints(&img, off, len).is_empty(), "{at}: uncut");
            return true;
        }
        assert!(
            text(&out).contains("simulated power cut"),
            "{at}: failed otherwise:\n{}",
            text(&out)
        );
        let t = std::time::Instant::now();
        let key = card_sha256(&img, off + len);
        {
            let mut sh = lock();
            sh.secs[4] += t.elapsed().as_secs_f64();
            sh.cuts.insert(k, key.clone());
            if sh.states.contains_key(&key) {
                return false;
            }
            sh.states.insert(key.clone(), None);
        }

        // As the cut left it.
        let t = std::time::Instant::now();
        let (_, fsck_text) = fsck_fat(&img, off, len);
        assert!(
            !fsck_text.to_lowercase().contains("dirty"),
            "{at}: {fsck_text}"
        );
        if let Some(copy) = &self.keeps {
            let f = files(&img, off);
            // A live journal (of the transaction that removes the card's copy) is no file
            // of the user's.
            let mut restored = without_backups(&f);
            restored.retain(|p, _| !(p.starts_with("pifw") && p.ends_with(".jnl")));
            assert!(
                restored == self.new || f.contains_key(copy),
                "{at}: neither the old files are back nor is {copy} on the card: {f:#?}"
            );
        }
        lock().secs[1] += t.elapsed().as_secs_f64();

        // recover, cut after each of its writes, run again until it completes.
        let t = std::time::Instant::now();
        let mut j = 0;
        let outcome = loop {
            let r = pifw_cut(&env, &["recover", "--yes", s(&img)], Some(j), lose);
            if r.status.success() {
                break text(&r);
            }
            assert!(
                text(&r).contains("simulated power cut"),
                "{at}: recover cut after {j}: {}",
                text(&r)
            );
            j += 1;
        };
        let outcome_kind = if outcome.contains("now finished") {
            Outcome::Forward
        } else if outcome.contains("holds its old files again") {
            Outcome::Back
        } else if outcome.contains("leftovers") {
            Outcome::Leftovers
        } else {
            Outcome::Nothing
        };
        {
            let mut sh = lock();
            sh.secs[2] += t.elapsed().as_secs_f64();
            sh.recovery_cuts += j;
        }

        let t = std::time::Instant::now();
        let after = card_sha256(&img, off + len);
        lock().secs[4] += t.elapsed().as_secs_f64();
        let seen = lock().recovered.get(&after).copied();
        let between_batches = match seen {
            Some(b) => b,
            None => {
                let t = std::time::Instant::now();
                let b = self.judge_recovered(&env, &img, &at, &outcome);
                let mut sh = lock();
                sh.secs[3] += t.elapsed().as_secs_f64();
                sh.recovered.insert(after, b);
                b
            }
        };
        lock().states.insert(
            key,
            Some(Recovered {
                outcome: outcome_kind,
                between_batches,
            }),
        );
        false
    }

    /// The checks of a card after `recover` completed; returns whether it holds a state
    /// between two batches.
    fn judge_recovered(&self, env: &Env, img: &Path, at: &str, outcome: &str) -> bool {
        let (off, len) = firmware(self.image);
        let bad = fsck_complaints(img, off, len);
        assert!(bad.is_empty(), "{at}: after recover ({outcome}): {bad:#?}");
        let f = without_backups(&files(img, off));
        let mut between = false;
        if self.batches && f != self.old && f != self.new {
            between = true;
            let paths: std::collections::BTreeSet<&String> = self
                .old
                .keys()
                .chain(self.new.keys())
                .chain(f.keys())
                .collect();
            for p in paths {
                let now = f.get(p);
                assert!(
                    now == self.old.get(p) || now == self.new.get(p),
                    "{at}: after recover, {p} is neither its old nor its new version"
                );
            }
        } else {
            assert!(
                f == self.old || f == self.new,
                "{at}: after recover, neither the old nor the new files: {f:#?}"
            );
        }
        if let Some(copy) = &self.keeps
            && f == self.old
        {
            assert!(
                files(img, off).contains_key(copy),
                "{at}: old files and no backup"
            );
        }
        let again = env.pifw_ok(&["recover", "--yes", s(img)]);
        assert!(again.contains("No interrupted change"), "{at}: {again}");
        let status = env.pifw(&["status", "--json", s(img)]);
        let st = String::from_utf8_lossy(&status.stdout);
        assert!(
            !st.contains("interrupted-change") && !st.contains("fat-lost-clusters"),
            "{at}: status after recover: {st}"
        );
        between
    }
}

fn update_uboot_nixos() -> Scenario {
    let image = "nixos.img";
    let (off, _) = firmware(image);
    let base = fixture(image);
    let old = files(&base, off);
    let mut new = old.clone();
    new.insert(
        "u-boot-rpi3.bin".into(),
        sha256sum(&std::fs::read(uboot_rpi3(UBOOT_NEW)).expect("u-boot")),
    );
    Scenario {
        name: "update-uboot on nixos.img",
        image,
        base,
        local_backups: None,
        args: vec![
            "update-uboot".into(),
            "--from".into(),
            s(&uboot_deb(UBOOT_NEW)).into(),
            "--yes".into(),
            "IMG".into(),
        ],
        old,
        new,
        keeps: None,
        batches: false,
    }
}

/// A scenario whose "new" file set is what an uncut run leaves on a copy of `image`.
fn measured(name: &'static str, image: &'static str, args: Vec<String>) -> Scenario {
    let (off, _) = firmware(image);
    let base = fixture(image);
    let old = files(&base, off);
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = tmp.path().join("uncut.img");
    std::fs::copy(&base, &img).expect("copy");
    let sc = Scenario {
        name,
        image,
        base,
        local_backups: None,
        args,
        old,
        new: Files::new(),
        keeps: None,
        batches: true,
    };
    let a = sc.args_for(&img);
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = pifw_cut(&Env::new(), &argv, None, false);
    assert!(out.status.success(), "{name}: uncut run: {}", text(&out));
    Scenario {
        new: without_backups(&files(&img, off)),
        ..sc
    }
}

/// The whole 1.20240424 firmware set on the NixOS-like card: it does not fit beside the old
/// one, so the command runs several batches, the boot set last. Swept keeping and losing
/// unsynced writes.
///
/// Where the time goes (two cores shared with other builds): 117 writes, so 117 cut runs of
/// the command per mode, each a debug pifw that unpacks the .deb's data.tar.xz and zips a
/// backup; then per cut fsck.fat, `recover` cut after each of its writes (212 cut runs over
/// the 117 cuts when unsynced writes are kept, 253 when lost; 0.15 s each) and the checks
/// after recovery (fsck.fat, `mcopy -s`, a second `recover`, `status`). Before this test ran
/// by default, a cut run took about 3 s (63% of it xz decoding in unoptimised lzma-rust2),
/// and the kept-writes sweep alone over 25 minutes. What made both modes fit in about 8:
///
/// - `lzma-rust2` optimised in dev builds (Cargo.toml): a cut run 1.2 s of CPU, not 2.1 s.
///   With one worker, kept writes: 447 s (cut runs 255 s, checks as cut 18 s, recover
///   sweeps 56 s, checks after recovery 60 s, hashing the whole image 31 s); lost: 327 s.
/// - Two workers, a k per pifw process on its own card copy (see [`sweep_threads`]): kept
///   194-231 s, lost 267 s, 463 s for the test.
/// - Files hashed in this process, not by one `sha256sum` run per file; the state key hashes
///   the card up to the end of the firmware partition, not the root filesystem after it.
/// - Dedup by card state (see [`Scenario::sweep`]) saves little here and is kept because it
///   costs little (9-12 s of hashing): pifw stamps directory entries and its journal with the
///   time, so all 117 kept-writes cut cards differ, and 106 of the 117 lost-writes ones (a
///   sync follows nearly every write); all recovered cards differ.
///
/// Nothing checked at a cut point was dropped: every k runs the command and checks that it
/// reports the cut; every distinct card gets the full checks and recover sweep.
#[test]
fn power_cut_at_every_write_of_update_firmware_in_batches() {
    let deb = blob_cache()
        .join("debs")
        .join(format!("raspi-firmware_{FW_NEW}_all.deb"));
    let sc = measured(
        "update-firmware (batches) on nixos.img",
        "nixos.img",
        vec![
            "update-firmware".into(),
            "--from".into(),
            s(&deb).into(),
            "--yes".into(),
            "IMG".into(),
        ],
    );
    for lose in [false, true] {
        let c = sc.sweep(lose);
        // Measured (kept / lost): 117 / 117 cuts, 117 / 106 distinct cards, 212 / 253 recover
        // cuts, 16 / 27 rolled forward, 52 / 38 leftovers cleaned, 92 / 94 between batches.
        // Bounds that fail if the sweep stopped early.
        assert!(c.cuts >= 100, "{c:?}");
        assert!(c.distinct_states >= 50, "{c:?}");
        assert!(c.recovery_cuts >= 100, "{c:?}");
        assert!(c.rolled_forward >= 5, "{c:?}");
        assert!(c.leftovers_cleaned >= 20, "{c:?}");
        assert!(c.between_batches >= 40, "{c:?}");
    }
}

/// `switch uefi` with systemd-boot on a card that already holds what the OS's systemd-boot
/// module writes: creates EFI/BOOT (txn::mkdir) before its batches, so its cuts include a
/// directory cluster allocated but not yet linked.
#[test]
fn power_cut_at_every_write_of_switch_uefi() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = pftf_zip(
        dir.path(),
        "RPi3_UEFI_Firmware_test.zip",
        &pftf_layout_fd(0x11),
        &[],
    );
    let efi = blob(
        "systemd-boot-efi",
        "252.39-1~deb12u2",
        "usr/lib/systemd/boot/efi/systemd-bootaa64.efi",
    );
    let sc = measured(
        "switch uefi on nixos-esp.img",
        "nixos-esp.img",
        vec![
            "switch".into(),
            "uefi".into(),
            "--from".into(),
            s(&zip).into(),
            "--allow-unpinned".into(),
            "--bootloader".into(),
            "systemd-boot".into(),
            "--efi".into(),
            s(&efi).into(),
            "--yes".into(),
            "IMG".into(),
        ],
    );
    let c = sc.sweep(false);
    assert!(c.cuts >= 20, "{c:?}");
}

#[test]
fn power_cut_at_every_write_of_update_uboot_then_recover() {
    let sc = update_uboot_nixos();
    for lose in [false, true] {
        let c = sc.sweep(lose);
        assert!(c.cuts >= 20, "{c:?}");
        assert!(c.rolled_forward + c.rolled_back >= 1, "{c:?}");
    }
}

/// The card after `update-uboot`, kept in `dir`, and its backup's copy name on the card.
fn updated_nixos(dir: &Path) -> (PathBuf, String) {
    let (off, _) = firmware("nixos.img");
    let img = dir.join("updated.img");
    std::fs::copy(fixture("nixos.img"), &img).expect("copy");
    let env = Env::new();
    env.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&uboot_deb(UBOOT_NEW)),
        "--yes",
        s(&img),
    ]);
    let copy = files(&img, off)
        .into_keys()
        .find(|p| p.starts_with("pifw-backup-"))
        .expect("the backup's copy on the card");
    (img, copy)
}

#[test]
fn power_cut_at_every_write_of_rollback_from_the_cards_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, copy) = updated_nixos(dir.path());
    let (off, _) = firmware("nixos.img");
    let old = without_backups(&files(&base, off));
    let new = files(&fixture("nixos.img"), off);
    // Another machine: no local backup, only the card's copy.
    let sc = Scenario {
        name: "rollback from the card's backup on nixos.img",
        image: "nixos.img",
        base,
        local_backups: None,
        args: vec!["rollback".into(), "--yes".into(), "IMG".into()],
        old,
        new,
        keeps: Some(copy),
        batches: false,
    };
    for lose in [false, true] {
        let c = sc.sweep(lose);
        assert!(c.cuts >= 20, "{c:?}");
    }
}

/// The user runs `fsck.fat -a` (or `-a -f`) on the cut card before `pifw recover`: recover
/// refuses with evidence and writes nothing, or leaves a clean card; never a cross-link.
#[test]
fn fsck_before_recover_never_ends_in_a_cross_link() {
    let sc = update_uboot_nixos();
    let (off, len) = firmware(sc.image);
    let (mut refused, mut recovered, mut cuts) = (0, 0, 0);
    for flags in [&["-a"][..], &["-a", "-f"][..]] {
        for k in 0.. {
            let tmp = tempfile::tempdir().expect("tempdir");
            let img = tmp.path().join("card.img");
            std::fs::copy(&sc.base, &img).expect("copy");
            let env = Env::new();
            let args = sc.args_for(&img);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            if pifw_cut(&env, &argv, Some(k), false).status.success() {
                break;
            }
            cuts += 1;
            let at = format!("fsck.fat {flags:?} after a cut after {k} writes");
            // fsck.fat on the partition, written back in place.
            let (_pdir, part) = extract_partition(&img, off, len);
            let _ = run(cmd("fsck.fat").args(flags).arg(&part));
            run_ok(
                cmd("dd")
                    .arg(format!("if={}", part.display()))
                    .arg(format!("of={}", img.display()))
                    .arg("bs=512")
                    .arg(format!("seek={}", off / 512))
                    .arg("conv=notrunc")
                    .arg("status=none"),
            );
            let before = std::fs::read(&img).expect("read");
            let r = env.pifw(&["recover", "--yes", s(&img)]);
            if r.status.success() {
                recovered += 1;
                let bad = fsck_complaints(&img, off, len);
                assert!(
                    bad.is_empty(),
                    "{at}: after recover: {bad:#?}\n{}",
                    text(&r)
                );
                let f: Files = without_backups(&files(&img, off))
                    .into_iter()
                    .filter(|(p, _)| !p.starts_with("fsck"))
                    .collect();
                assert!(
                    f == sc.old || f == sc.new,
                    "{at}: neither old nor new: {f:#?}"
                );
            } else {
                refused += 1;
                let t = text(&r);
                assert!(t.contains("refusing to recover"), "{at}: {t}");
                assert!(
                    std::fs::read(&img).expect("read") == before,
                    "{at}: a refusal wrote to the card"
                );
                let (_, fsck_text) = fsck_fat(&img, off, len);
                assert!(
                    !fsck_text.contains("cross-linked") && !fsck_text.contains("share clusters"),
                    "{at}: {fsck_text}"
                );
            }
        }
    }
    eprintln!(
        "fsck.fat -a / -a -f before recover: {cuts} cuts, {recovered} recovered clean, {refused} refused"
    );
    assert!(cuts >= 40);
}

/// The MBR's disk signature and four partition entries (bytes 440..510 of LBA 0).
fn mbr_entries(image: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; 512];
    std::fs::File::open(image)
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("reading LBA 0");
    b[440..510].to_vec()
}

/// `switch uefi --hybrid --grow` on the NixOS-like card is a composite: the file step (its
/// cuts are swept by `power_cut_at_every_write_of_switch_uefi`), then the table step (grow,
/// GPTs, hybrid MBR), then the table backup's copy onto the card. Here every cut from the
/// first one after the file step completed to the end, including the gap between the steps.
/// The first such cut is found by bisection on the command's own words for it. At each cut:
/// the card holds the new files (fsck.fat clean after `pifw recover`); LBA 0 is either the
/// old MBR or the new hybrid one, and then `sgdisk -v` finds no problem; and the user's way
/// back, `pifw switch uboot`, returns the old files, the old MBR and the old image size.
#[test]
fn power_cut_between_and_during_the_steps_of_switch_uefi_hybrid() {
    const AFTER_FILES: &str = "the UEFI firmware files are installed and verified";
    let image = "nixos.img";
    let (off, len) = firmware(image);
    let base = fixture(image);
    let old = files(&base, off);
    let old_mbr = mbr_entries(&base);
    let old_size = std::fs::metadata(&base).expect("size").len();
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = pftf_zip(
        dir.path(),
        "RPi3_UEFI_Firmware_test.zip",
        &pftf_layout_fd(0x11),
        &[],
    );
    let attempt = |k: Option<u64>| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let img = tmp.path().join("card.img");
        std::fs::copy(&base, &img).expect("copying the card");
        let env = fresh_env(None);
        let args = [
            "switch",
            "uefi",
            "--from",
            s(&zip),
            "--allow-unpinned",
            "--hybrid",
            "--grow",
            "--yes",
            s(&img),
        ];
        let out = pifw_cut(&env, &args, k, false);
        (tmp, img, env, out)
    };
    let (_t, img, _env, out) = attempt(None);
    assert!(out.status.success(), "uncut run: {}", text(&out));
    let new = without_backups(&files(&img, off));
    assert_ne!(new, old, "the uncut run changed no file");
    assert_ne!(mbr_entries(&img), old_mbr, "the uncut run left the MBR");

    // Cuts at k or later come after the file step: the command says so, or completes.
    let past_files = |k: u64| {
        let (_t, _img, _env, out) = attempt(Some(k));
        out.status.success() || text(&out).contains(AFTER_FILES)
    };
    let mut hi = 16;
    while !past_files(hi) {
        hi *= 2;
        assert!(hi < 1 << 16, "no cut point after the file step");
    }
    let mut lo = 0;
    while lo < hi {
        let mid = (lo + hi) / 2;
        if past_files(mid) {
            hi = mid
        } else {
            lo = mid + 1
        }
    }
    eprintln!("the file step ends after {lo} writes");

    let (mut cuts, mut converted) = (0u64, 0u64);
    for k in lo.. {
        let (_t, img, env, out) = attempt(Some(k));
        let at = format!("cut after {k} writes");
        let t = text(&out);
        if !t.contains("simulated power cut") {
            assert!(out.status.success(), "{at}: {t}");
            break;
        }
        if out.status.success() {
            // Cut in the table backup's copy onto the card, after the tables: the change is
            // complete, the copy is not, and the command says what to run.
            assert!(t.contains("pifw recover"), "{at}: {t}");
        } else {
            assert!(t.contains(AFTER_FILES), "{at}: {t}");
        }
        cuts += 1;
        let mbr = mbr_entries(&img);
        if mbr != old_mbr {
            converted += 1;
            let v = sgdisk_verify(&img);
            assert!(v.contains("No problems found"), "{at}: hybrid MBR but {v}");
        }
        env.pifw_ok_all(&["recover", "--yes", s(&img)]);
        let bad = fsck_complaints(&img, off, len);
        assert!(bad.is_empty(), "{at}: after recover: {bad:#?}");
        assert_eq!(without_backups(&files(&img, off)), new, "{at}: files");

        // The way back, as pifw's own advice says.
        env.pifw_ok_all(&["switch", "uboot", "--yes", s(&img)]);
        assert_eq!(
            without_backups(&files(&img, off)),
            old,
            "{at}: switch uboot"
        );
        assert_eq!(
            mbr_entries(&img),
            old_mbr,
            "{at}: switch uboot left the MBR"
        );
        assert_eq!(
            std::fs::metadata(&img).expect("size").len(),
            old_size,
            "{at}: switch uboot left the grown image"
        );
        let bad = fsck_complaints(&img, off, len);
        assert!(bad.is_empty(), "{at}: after switch uboot: {bad:#?}");
    }
    eprintln!(
        "switch uefi --hybrid: {cuts} cuts after the file step, {converted} with the new MBR"
    );
    assert!(cuts >= 4, "{cuts} cuts");
    assert!(converted >= 1, "no cut came after the MBR write");
}

/// `partition mbr` (the way back from a hybrid conversion) cut at every write of the command:
/// the backup of the tables it replaces (on this machine), the tables, the image cut back to
/// its size, and the removal of the table backup's copy on the card. At every cut LBA 0 is the
/// hybrid MBR or the old one, and the user's next step, the same command again (as its error
/// says), ends with the old MBR, the old image size, the same files and a clean FAT.
#[test]
fn power_cut_at_every_write_of_partition_mbr_then_run_again() {
    let image = "nixos.img";
    let (off, len) = firmware(image);
    let base = fixture(image);
    let old_files = without_backups(&files(&base, off));
    let old_mbr = mbr_entries(&base);
    let old_size = std::fs::metadata(&base).expect("size").len();
    // The converted card and the backups of this machine, as `partition hybrid` left them.
    let conv = tempfile::tempdir().expect("tempdir");
    let hybrid = conv.path().join("hybrid.img");
    std::fs::copy(&base, &hybrid).expect("copy");
    let env = fresh_env(None);
    env.pifw_ok_all(&["partition", "hybrid", "--grow", "--yes", s(&hybrid)]);
    let hybrid_mbr = mbr_entries(&hybrid);
    assert_ne!(hybrid_mbr, old_mbr);
    let local = env.backups();

    let (mut cuts, mut back) = (0u64, 0u64);
    for k in 0.. {
        let tmp = tempfile::tempdir().expect("tempdir");
        let img = tmp.path().join("card.img");
        std::fs::copy(&hybrid, &img).expect("copying the card");
        let env = fresh_env(Some(&local));
        let at = format!("partition mbr cut after {k} writes");
        let out = pifw_cut(
            &env,
            &["partition", "mbr", "--yes", s(&img)],
            Some(k),
            false,
        );
        let t = text(&out);
        if !t.contains("simulated power cut") {
            assert!(out.status.success(), "{at}: {t}");
            assert_eq!(mbr_entries(&img), old_mbr, "{at}: uncut run");
            break;
        }
        cuts += 1;
        let mbr = mbr_entries(&img);
        assert!(
            mbr == old_mbr || mbr == hybrid_mbr,
            "{at}: LBA 0 is neither"
        );
        if mbr == old_mbr {
            back += 1;
        }
        // The user's next step: what the error says, the same command again (after
        // `pifw recover` for a cut in the card copy's removal).
        env.pifw_ok_all(&["recover", "--yes", s(&img)]);
        let again = env.pifw(&["partition", "mbr", "--yes", s(&img)]);
        assert!(again.status.success(), "{at}: run again: {}", text(&again));
        assert_eq!(
            mbr_entries(&img),
            old_mbr,
            "{at}: the MBR after running again"
        );
        assert_eq!(
            std::fs::metadata(&img).expect("size").len(),
            old_size,
            "{at}: the size after running again"
        );
        assert_eq!(without_backups(&files(&img, off)), old_files, "{at}: files");
        let bad = fsck_complaints(&img, off, len);
        assert!(bad.is_empty(), "{at}: {bad:#?}");
    }
    eprintln!("partition mbr: {cuts} cuts, {back} with the old MBR already back");
    assert!(cuts >= 5, "{cuts} cuts");
    assert!(back >= 1, "no cut came after the MBR write");
}
