//! Shared helpers for pifw's integration tests.
//!
//! Owns: finding (or building once) the fixture images made by
//! `scripts/mkimages`, handing each test a private copy, running the built
//! `pifw` binary, and wrapping the external oracles (sfdisk, sgdisk,
//! fsck.fat, mtools, e2fsck, blkid, U-Boot in QEMU) that judge its results.
//!
//! Must not: make fixtures with pifw code, modify the shared fixtures, or skip
//! a test because a tool is missing. A missing tool or blob cache is a test
//! failure whose message says to run `scripts/test`.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tempfile::TempDir;

/// The raspi-firmware and U-Boot releases the fixtures are built from.
pub const FW_OLD: &str = "1.20220830+ds-1";
pub const FW_NEW: &str = "1.20240424+ds-6";
pub const UBOOT_OLD: &str = "2023.01+dfsg-2+deb12u3";
pub const UBOOT_NEW: &str = "2025.01-3+deb13u1";

const HINT: &str =
    "run scripts/test (it installs the tools, fetches the blobs and builds the fixtures)";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture directory: `$PIFW_FIXTURES`, else `target/fixtures` built once
/// by `scripts/mkimages` under a file lock (test binaries run as separate
/// processes and may start it concurrently; mkimages itself skips work when its
/// stamp is current).
pub fn fixtures_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PIFW_FIXTURES") {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("nixos.img").is_file(),
                "PIFW_FIXTURES={} has no nixos.img; {HINT}",
                dir.display()
            );
            return dir;
        }
        let dir = repo_root().join("target").join("fixtures");
        std::fs::create_dir_all(&dir).expect("creating target/fixtures");
        let lock = File::create(repo_root().join("target").join("fixtures.lock"))
            .expect("creating target/fixtures.lock");
        lock.lock().expect("locking target/fixtures.lock");
        let out = Command::new(repo_root().join("scripts").join("mkimages"))
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/mkimages: {e}; {HINT}"));
        assert!(
            out.status.success(),
            "scripts/mkimages failed:\n{}\n{HINT}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// Path of a shared fixture. Never write to it: use [`fixture_copy`].
pub fn fixture(name: &str) -> PathBuf {
    let path = fixtures_dir().join(name);
    assert!(
        path.is_file(),
        "fixture {} is missing; {HINT}",
        path.display()
    );
    path
}

/// A private, sparse copy of a fixture in a fresh temporary directory.
pub fn fixture_copy(name: &str) -> (TempDir, PathBuf) {
    let src = fixture(name);
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let dst = dir.path().join(name);
    run_ok(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&src)
            .arg(&dst),
    );
    (dir, dst)
}

/// The generator's description of a fixture (`<name>.json` beside the `.img`).
pub fn sidecar(name: &str) -> serde_json::Value {
    let stem = name.strip_suffix(".img").unwrap_or(name);
    let path = fixtures_dir().join(format!("{stem}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}; {HINT}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The built pifw binary.
pub fn pifw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pifw"))
}

/// Run `pifw status --json IMAGE` and parse its output; panics with its stderr on failure.
pub fn pifw_status_json(image: &Path) -> serde_json::Value {
    let out = run(pifw().args(["status", "--json"]).arg(image));
    assert!(
        out.status.success(),
        "pifw status --json {} failed ({}):\n{}",
        image.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pifw status --json printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Locate a system tool, searching the sbin directories too (sfdisk and
/// friends live there and a non-root PATH may lack them).
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("required tool {name} is not installed; {HINT}")
}

pub fn cmd(name: &str) -> Command {
    let mut c = Command::new(tool(name));
    c.env("LC_ALL", "C").env("MTOOLS_SKIP_CHECK", "1");
    c
}

pub fn run(c: &mut Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("running {c:?}: {e}; {HINT}"))
}

/// Run a command that must succeed; returns its stdout as text.
pub fn run_ok(c: &mut Command) -> String {
    let out = run(c);
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sfdisk --dump IMAGE` (the primary table: GPT when there is one).
pub fn sfdisk_dump(image: &Path) -> String {
    run_ok(cmd("sfdisk").arg("--dump").arg(image))
}

/// `sfdisk --label-nested dos --dump IMAGE`: the MBR of a hybrid disk.
pub fn sfdisk_dump_mbr(image: &Path) -> String {
    run_ok(
        cmd("sfdisk")
            .args(["--label-nested", "dos", "--dump"])
            .arg(image),
    )
}

/// One partition line of `sfdisk --dump`, split into its `key=value` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpPart {
    pub number: u32,
    pub start: u64,
    pub size: u64,
    /// As sfdisk prints it: `b`, `83`, or a GPT type GUID.
    pub kind: String,
    pub bootable: bool,
}

/// Parse the header (`label`, `label-id`, ...) and partition lines of an sfdisk dump.
pub fn parse_sfdisk_dump(
    dump: &str,
) -> (std::collections::BTreeMap<String, String>, Vec<DumpPart>) {
    let mut header = std::collections::BTreeMap::new();
    let mut parts = Vec::new();
    for line in dump.lines() {
        if let Some((dev, rest)) = line.split_once(" : ") {
            let digits: String = dev
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            let number = digits
                .chars()
                .rev()
                .collect::<String>()
                .parse()
                .expect("partition number");
            let mut p = DumpPart {
                number,
                start: 0,
                size: 0,
                kind: String::new(),
                bootable: false,
            };
            for field in rest.split(',').map(str::trim) {
                match field.split_once('=') {
                    Some(("start", v)) => p.start = v.trim().parse().expect("start"),
                    Some(("size", v)) => p.size = v.trim().parse().expect("size"),
                    Some(("type", v)) => p.kind = v.trim().to_string(),
                    None if field == "bootable" => p.bootable = true,
                    _ => {}
                }
            }
            parts.push(p);
        } else if let Some((k, v)) = line.split_once(": ") {
            header.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    (header, parts)
}

/// `sgdisk -v IMAGE` text. sgdisk exits 0 even when it finds problems: read the text.
pub fn sgdisk_verify(image: &Path) -> String {
    let out = run(cmd("sgdisk").arg("-v").arg(image));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Copy `len` bytes at `offset` of `image` into a temporary file with dd.
pub fn extract_partition(image: &Path, offset: u64, len: u64) -> (TempDir, PathBuf) {
    assert!(
        offset.is_multiple_of(512) && len.is_multiple_of(512),
        "partition not sector aligned"
    );
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let part = dir.path().join("part.img");
    run_ok(
        cmd("dd")
            .arg(format!("if={}", image.display()))
            .arg(format!("of={}", part.display()))
            .arg("bs=512")
            .arg(format!("skip={}", offset / 512))
            .arg(format!("count={}", len / 512))
            .arg("status=none"),
    );
    (dir, part)
}

/// `fsck.fat -n` on a partition (fsck.fat has no offset option, so it is dd'ed
/// out first). Returns whether it exited 0 and its output.
pub fn fsck_fat(image: &Path, offset: u64, len: u64) -> (bool, String) {
    let (_dir, part) = extract_partition(image, offset, len);
    let out = run(cmd("fsck.fat").arg("-n").arg(&part));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `e2fsck -fn IMAGE?offset=BYTES`. Returns whether it exited 0 and its output.
pub fn e2fsck(image: &Path, offset: u64) -> (bool, String) {
    let out = run(cmd("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={offset}", image.display())));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `blkid -p --offset BYTES IMAGE -o export` as key/value pairs.
pub fn blkid(image: &Path, offset: u64) -> std::collections::BTreeMap<String, String> {
    let text = run_ok(
        cmd("blkid")
            .args(["-p", "-o", "export", "--offset"])
            .arg(offset.to_string())
            .arg(image),
    );
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `mdir -a -i IMAGE@@OFFSET ::/DIR` (mtools reading a FAT at a byte offset).
pub fn mdir(image: &Path, offset: u64, dir: &str) -> String {
    run_ok(
        cmd("mdir")
            .arg("-i")
            .arg(format!("{}@@{offset}", image.display()))
            .arg(format!("::/{dir}")),
    )
}

/// The bytes of one file of the FAT at OFFSET, read by `mcopy ... -`.
pub fn mcopy_out(image: &Path, offset: u64, path: &str) -> Vec<u8> {
    let out = run(cmd("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .arg(format!("::/{path}"))
        .arg("-"));
    assert!(
        out.status.success(),
        "mcopy ::/{path} from {} failed:\n{}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// sha256 of bytes as `sha256sum` prints it (the same tool the generator used).
pub fn sha256sum(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = cmd("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawning sha256sum");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(data)
        .expect("feeding sha256sum");
    let out = child.wait_with_output().expect("waiting for sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// Root of the blob cache filled by scripts/fetch-blobs.
pub fn blob_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("PIFW_TEST_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME must be set");
    base.join("pifw-test")
}

/// A file extracted from a cached Debian package, e.g.
/// `blob("u-boot-rpi", UBOOT_OLD, "usr/lib/u-boot/rpi_3/u-boot.bin")`.
pub fn blob(package: &str, version: &str, rel: &str) -> PathBuf {
    let path = blob_cache()
        .join("extract")
        .join(format!("{package}_{version}"))
        .join(rel);
    assert!(path.is_file(), "blob {} is missing; {HINT}", path.display());
    path
}

pub fn uboot_rpi3(version: &str) -> PathBuf {
    blob("u-boot-rpi", version, "usr/lib/u-boot/rpi_3/u-boot.bin")
}

/// The Pi 3 device tree (needed by U-Boot 2025.01 in QEMU).
pub fn pi3_dtb() -> PathBuf {
    let extract = blob_cache().join("extract");
    let entries = std::fs::read_dir(&extract)
        .unwrap_or_else(|e| panic!("reading {}: {e}; {HINT}", extract.display()));
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("linux-image-")
        {
            continue;
        }
        let lib = entry.path().join("usr/lib");
        for k in std::fs::read_dir(&lib).into_iter().flatten().flatten() {
            let dtb = k.path().join("broadcom/bcm2837-rpi-3-b.dtb");
            if dtb.is_file() {
                return dtb;
            }
        }
    }
    panic!(
        "bcm2837-rpi-3-b.dtb not found under {}; {HINT}",
        extract.display()
    )
}

/// Boot U-Boot in QEMU on a copy of IMAGE and run commands (scripts/qemu-uboot
/// --json). Returns each command's output, in order.
pub fn qemu_uboot(image: &Path, uboot: &Path, dtb: Option<&Path>, cmds: &[&str]) -> Vec<String> {
    // One QEMU at a time per test binary: parallel guests on a loaded 2-core
    // machine only slow each other down towards the timeout.
    static QEMU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = QEMU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut c = Command::new(repo_root().join("scripts").join("qemu-uboot"));
    c.arg("--json").arg("--timeout").arg("90");
    if let Some(dtb) = dtb {
        c.arg("--dtb").arg(dtb);
    }
    c.arg(image).arg(uboot).arg("--").args(cmds);
    let text = run_ok(&mut c);
    let v: serde_json::Value = serde_json::from_str(&text).expect("qemu-uboot --json output");
    v["commands"]
        .as_array()
        .expect("commands array")
        .iter()
        .map(|c| c["output"].as_str().expect("output string").to_string())
        .collect()
}

/// Rows of U-Boot's `part list` for a DOS table: (number, start, sectors, type byte, bootable).
pub fn parse_uboot_part_list(text: &str) -> Vec<(u32, u64, u64, u8, bool)> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "  1	16384     	61440     	2178694e-01	0b" [+ " Boot"]
        if f.len() >= 5 && f[0].parse::<u32>().is_ok() && f[3].contains('-') {
            let ty = u8::from_str_radix(f[4], 16).expect("type byte");
            rows.push((
                f[0].parse().expect("number"),
                f[1].parse().expect("start"),
                f[2].parse().expect("sectors"),
                ty,
                f.get(5) == Some(&"Boot"),
            ));
        }
    }
    rows
}

/// Entries of U-Boot's `fatls`: (lowercased name, size) for files, plus directory names.
pub fn parse_uboot_fatls(text: &str) -> (Vec<(String, u64)>, Vec<String>) {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [size, name] if size.parse::<u64>().is_ok() => {
                files.push((name.to_lowercase(), size.parse().expect("size")))
            }
            [name] if name.ends_with('/') => dirs.push(name.trim_end_matches('/').to_lowercase()),
            _ => {}
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

/// Like [`qemu_uboot`], but the last command does not return to the prompt (`bootefi`): its
/// output is read until `until` appears (scripts/qemu-uboot --until).
#[allow(dead_code)]
pub fn qemu_uboot_until(image: &Path, uboot: &Path, cmds: &[&str], until: &str) -> Vec<String> {
    static QEMU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = QEMU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut c = Command::new(repo_root().join("scripts").join("qemu-uboot"));
    c.arg("--json")
        .arg("--timeout")
        .arg("90")
        .arg("--until")
        .arg(until);
    c.arg(image).arg(uboot).arg("--").args(cmds);
    let text = run_ok(&mut c);
    let v: serde_json::Value = serde_json::from_str(&text).expect("qemu-uboot --json output");
    v["commands"]
        .as_array()
        .expect("commands array")
        .iter()
        .map(|c| c["output"].as_str().expect("output string").to_string())
        .collect()
}

/// A private pifw configuration for one test: backups and cache in a temporary directory,
/// never in /var/lib/pifw of the machine running the tests.
pub struct Env {
    pub dir: TempDir,
    pub config: PathBuf,
}

impl Env {
    pub fn new() -> Env {
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

    pub fn backups(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// `pifw ARGS`, stdin closed (no terminal), with this configuration.
    pub fn pifw(&self, args: &[&str]) -> Output {
        run(pifw()
            .args(args)
            .env("PIFW_CONFIG", &self.config)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null()))
    }

    /// As [`Env::pifw`], which must succeed; returns stdout.
    pub fn pifw_ok(&self, args: &[&str]) -> String {
        let out = self.pifw_checked(args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// As [`Env::pifw_ok`], returning stdout and stderr (notes go to stderr).
    pub fn pifw_ok_all(&self, args: &[&str]) -> String {
        let out = self.pifw_checked(args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn pifw_checked(&self, args: &[&str]) -> Output {
        let out = self.pifw(args);
        assert!(
            out.status.success(),
            "pifw {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// pifw's own identity file on a card (`PIFW-ID.TXT`, lowercase as [`card_files`] keys it).
pub const CARD_ID_FILE: &str = "pifw-id.txt";

/// Every file of the FAT at byte `offset` of `image`, lowercase path -> sha256, as mtools
/// reads them (`mdir -/ -b`, then `mcopy` each), except pifw's identity file: pifw gives a
/// card its identity with the first change and keeps it through every rollback by design, so
/// "the files the card had" are the others. [`card_id_on`] reads the identity.
pub fn card_files(image: &Path, offset: u64) -> std::collections::BTreeMap<String, String> {
    let mut files = card_files_all(image, offset);
    files.remove(CARD_ID_FILE);
    files
}

/// The card's identity as mtools reads `PIFW-ID.TXT`: the `id` line of a file whose first
/// line is pifw's magic (`None`: no such file).
pub fn card_id_on(image: &Path, offset: u64) -> Option<String> {
    let out = run(cmd("mtype")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .arg("::/PIFW-ID.TXT"));
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).expect("PIFW-ID.TXT is text");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("pifw card identity 1"), "{text}");
    let id = lines.next()?.strip_prefix("id ")?.to_string();
    assert_eq!(id.len(), 36, "{text}");
    Some(id)
}

/// [`card_files`] with pifw's identity file.
pub fn card_files_all(image: &Path, offset: u64) -> std::collections::BTreeMap<String, String> {
    let list = run_ok(
        cmd("mdir")
            .arg("-/")
            .arg("-b")
            .arg("-i")
            .arg(format!("{}@@{offset}", image.display()))
            .arg("::/"),
    );
    list.lines()
        .filter(|l| !l.ends_with('/'))
        .filter_map(|l| l.strip_prefix("::/"))
        .map(|p| (p.to_lowercase(), sha256sum(&mcopy_out(image, offset, p))))
        .collect()
}

/// An `RPI_EFI.fd` stand-in laid out as pftf RPi3 v1.50's RPi3.fdf lays the real one out
/// (FIELD-NOTES): 0x1f0000 bytes, the code region filled with `fill`, an EDK2 NV firmware
/// volume at 0x1d0000 spanning 0x20000 (PI spec vol. 3 §3.2.1 header, block map 0x20 x
/// 0x1000), an empty authenticated variable store of 0xe000 bytes behind it, the event log
/// at 0x1de000, the fault-tolerant-write working block at 0x1df000 (its signature only) and
/// the spare at 0x1e0000, erased (0xff). No real RPI_EFI.fd could be had here: pftf's
/// releases cannot be downloaded on these machines and none was built from source. The
/// store is left empty on purpose: variables are written into it by virt-fw-vars
/// ([`virt_fw_set`]), an independent EDK2 variable-store tool, never by pifw.
pub fn pftf_layout_fd(fill: u8) -> Vec<u8> {
    const NV: usize = 0x1d0000;
    let mut fd = vec![fill; 0x1f0000];
    fd[NV..].fill(0xff);
    let mut h = vec![0u8; 0x48];
    // gEfiSystemNvDataFvGuid FFF12B8D-7696-4C8B-A985-2747075B4F50, little-endian fields.
    h[16..32].copy_from_slice(&[
        0x8d, 0x2b, 0xf1, 0xff, 0x96, 0x76, 0x8b, 0x4c, 0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f,
        0x50,
    ]);
    h[32..40].copy_from_slice(&0x20000u64.to_le_bytes());
    h[40..44].copy_from_slice(b"_FVH");
    h[44..48].copy_from_slice(&0x0004feffu32.to_le_bytes());
    h[48..50].copy_from_slice(&0x48u16.to_le_bytes());
    h[55] = 2; // revision
    h[56..60].copy_from_slice(&0x20u32.to_le_bytes());
    h[60..64].copy_from_slice(&0x1000u32.to_le_bytes());
    let sum = h
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .fold(0u16, u16::wrapping_add);
    h[50..52].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    fd[NV..NV + 0x48].copy_from_slice(&h);
    // VARIABLE_STORE_HEADER: gEfiAuthenticatedVariableGuid AAF32C78-947B-439A-A180-2E144EC37792,
    // size (the store less the FV header), format 0x5a (formatted), state 0xfe (healthy).
    let s = NV + 0x48;
    fd[s..s + 16].copy_from_slice(&[
        0x78, 0x2c, 0xf3, 0xaa, 0x7b, 0x94, 0x9a, 0x43, 0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77,
        0x92,
    ]);
    fd[s + 16..s + 20].copy_from_slice(&(0xe000u32 - 0x48).to_le_bytes());
    fd[s + 20] = 0x5a;
    fd[s + 21] = 0xfe;
    fd[s + 22..s + 28].fill(0);
    // gEdkiiWorkingBlockSignatureGuid 9E58292B-7C68-497D-A0CE-6500FD9F1B95 at the FTW block.
    fd[0x1df000..0x1df010].copy_from_slice(&[
        0x2b, 0x29, 0x58, 0x9e, 0x68, 0x7c, 0x7d, 0x49, 0xa0, 0xce, 0x65, 0x00, 0xfd, 0x9f, 0x1b,
        0x95,
    ]);
    fd
}

/// virt-fw-vars (PyPI `virt-firmware`): `$PIFW_VIRT_FW_VARS`, else the venv that
/// scripts/install-deps makes in the test cache, else PATH.
pub fn virt_fw_vars() -> PathBuf {
    if let Some(p) = std::env::var_os("PIFW_VIRT_FW_VARS") {
        return PathBuf::from(p);
    }
    let venv = blob_cache().join("venv").join("bin").join("virt-fw-vars");
    if venv.is_file() {
        return venv;
    }
    tool("virt-fw-vars")
}

/// The EFI global variable GUID (BootOrder, Timeout, ...).
pub const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Writes `vars` (name, guid, data) into the variable store of the file `fd` with
/// virt-fw-vars (`--set-json`), attributes NV+BS+RT; returns the new file's bytes.
pub fn virt_fw_set(fd: &[u8], vars: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.fd");
    let output = dir.path().join("out.fd");
    let json = dir.path().join("vars.json");
    std::fs::write(&input, fd).expect("write fd");
    let list: Vec<serde_json::Value> = vars
        .iter()
        .map(|(name, guid, data)| {
            serde_json::json!({
                "name": name,
                "guid": guid,
                "attr": 7,
                "data": data.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            })
        })
        .collect();
    std::fs::write(
        &json,
        serde_json::json!({"version": 2, "variables": list}).to_string(),
    )
    .expect("write json");
    run_ok(
        Command::new(virt_fw_vars())
            .arg("-i")
            .arg(&input)
            .arg("--set-json")
            .arg(&json)
            .arg("-o")
            .arg(&output),
    );
    std::fs::read(&output).expect("virt-fw-vars output")
}

/// The variables virt-fw-vars reads from the file `fd`: name -> data (hex).
pub fn virt_fw_list(fd: &[u8]) -> std::collections::BTreeMap<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.fd");
    let json = dir.path().join("out.json");
    std::fs::write(&input, fd).expect("write fd");
    run_ok(
        Command::new(virt_fw_vars())
            .arg("-i")
            .arg(&input)
            .arg("--output-json")
            .arg(&json),
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    v["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|x| {
            (
                x["name"].as_str().expect("name").to_string(),
                x["data"].as_str().expect("data").to_string(),
            )
        })
        .collect()
}

/// pftf RPi3's `config.txt` as published (CRLF line ends; FIELD-NOTES: RPi3 zip).
pub const PFTF_CONFIG: &str = "arm_64bit=1\r\ndisable_commandline_tags=2\r\ndisable_overscan=1\r\nenable_uart=1\r\nuart_2ndstage=1\r\narmstub=RPI_EFI.fd\r\ndevice_tree_address=0x1f0000\r\ndevice_tree_end=0x200000\r\n";

/// A zip with pftf's RPi3 release layout at `dir/name`, built from real parts: bootcode.bin,
/// start.elf and fixup.dat from Debian's raspi-firmware, the Pi 3 device tree from Debian's
/// kernel package, pftf's config.txt, `fd` as `RPI_EFI.fd` (the real one cannot be had here),
/// and `extra` members.
pub fn pftf_zip(dir: &Path, name: &str, fd: &[u8], extra: &[(&str, &[u8])]) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut z = zip::ZipWriter::new(File::create(&path).expect("zip"));
    let opts = zip::write::SimpleFileOptions::default();
    let fw = |f: &str| {
        std::fs::read(blob(
            "raspi-firmware",
            FW_NEW,
            &format!("usr/lib/raspi-firmware/{f}"),
        ))
        .expect("firmware blob")
    };
    let mut add = |n: &str, bytes: &[u8]| {
        z.start_file(n, opts).expect("zip member");
        z.write_all(bytes).expect("zip write");
    };
    add("RPI_EFI.fd", fd);
    add("bootcode.bin", &fw("bootcode.bin"));
    add("start.elf", &fw("start.elf"));
    add("fixup.dat", &fw("fixup.dat"));
    add("config.txt", PFTF_CONFIG.as_bytes());
    add(
        "bcm2710-rpi-3-b.dtb",
        &std::fs::read(pi3_dtb()).expect("dtb"),
    );
    add("Readme.md", b"pftf-layout test zip built by pifw's tests\n");
    for (n, bytes) in extra {
        add(n, bytes);
    }
    z.finish().expect("zip finish");
    path
}

/// `fsck.fat -n` on the FAT at `offset` finds nothing: no lost clusters, FAT copies that
/// agree, no dirty flag, no wrong free count.
pub fn assert_fsck_clean_at(image: &Path, offset: u64, len: u64) {
    let (ok, text) = fsck_fat(image, offset, len);
    assert!(ok, "fsck.fat -n failed:\n{text}");
    for bad in ["differ", "lost", "Dirty", "dirty", "wrong"] {
        assert!(!text.contains(bad), "fsck.fat -n complains:\n{text}");
    }
}
