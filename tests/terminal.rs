//! pifw on a terminal, as a user meets it: the binary runs on a pseudo-terminal (stdin,
//! stdout and stderr all on the pty's slave side) and the test types into the master side.
//!
//! Covers what only shows on a terminal: the confirmation reads a whole line (`y` alone
//! writes nothing until Enter; `yes⏎` is one answer, not `y` plus `es` for the shell), a block
//! device wants its name typed, progress bars appear on a terminal and never in a pipe; and
//! what a pipe sees: `| head -1` ends pifw with exit 0 and nothing on stderr.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NIXOS_FAT: u64 = 8 * 1024 * 1024;
const NIXOS_FAT_LEN: u64 = 30 * 1024 * 1024;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn uboot_new_deb() -> PathBuf {
    let p = blob_cache()
        .join("debs")
        .join(format!("u-boot-rpi_{UBOOT_NEW}_arm64.deb"));
    assert!(
        p.is_file(),
        "{} missing; run scripts/fetch-blobs",
        p.display()
    );
    p
}

/// A child process on a pseudo-terminal, and everything it has printed so far.
struct OnPty {
    master: std::fs::File,
    child: Child,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl OnPty {
    fn spawn(env: &Env, args: &[&str]) -> OnPty {
        OnPty::spawn_with(env, args, &[])
    }

    fn spawn_with(env: &Env, args: &[&str], vars: &[(&str, &std::ffi::OsStr)]) -> OnPty {
        let winsize = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&winsize), None).expect("openpty");
        let slave = std::fs::File::from(pty.slave);
        let child = {
            let mut c = pifw();
            c.args(args)
                .env("PIFW_CONFIG", &env.config)
                .env("TERM", "xterm")
                .env_remove("NO_COLOR")
                .env_remove("COLUMNS")
                .envs(vars.iter().copied())
                .stdin(Stdio::from(slave.try_clone().expect("dup pty")))
                .stdout(Stdio::from(slave.try_clone().expect("dup pty")))
                .stderr(Stdio::from(slave));
            c.spawn().expect("spawning pifw on a pty")
            // `c` drops here, closing this process's copies of the slave side: the master
            // then reads EOF (EIO) once pifw exits.
        };
        let master = std::fs::File::from(pty.master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup pty master");
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("pty buffer")
                    .extend_from_slice(&buf[..n]);
            }
        });
        OnPty {
            master,
            child,
            seen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("pty buffer")).into_owned()
    }

    /// Waits until the output contains `what`; panics with the output after 60 s.
    fn expect(&self, what: &str) {
        let start = Instant::now();
        while !self.text().contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "pifw never printed {what:?}; it printed:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_text(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("typing");
        self.master.flush().expect("typing");
    }

    /// Waits for the exit (60 s at most); returns the code and the whole output.
    fn finish(mut self) -> (i32, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for pifw") {
                // Let the reader drain what is left in the pty.
                std::thread::sleep(Duration::from_millis(200));
                return (status.code().unwrap_or(-1), self.text());
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("pifw did not exit; output:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("waiting for pifw").is_none()
    }
}

fn image_sha(image: &Path) -> String {
    sha256sum(&std::fs::read(image).expect("reading the image"))
}

fn assert_fsck_clean(image: &Path) {
    let (ok, text) = fsck_fat(image, NIXOS_FAT, NIXOS_FAT_LEN);
    assert!(ok, "fsck.fat -n failed:\n{text}");
}

/// `y` without Enter writes nothing; `es⏎` completes the line: `yes` confirms, and no `es`
/// is left over (the whole line went to pifw).
#[test]
fn confirmation_waits_for_enter() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let before = image_sha(&img);
    let deb = uboot_new_deb();
    let mut t = OnPty::spawn(&env, &["update-uboot", "--from", s(&deb), s(&img)]);
    t.expect("[y/N]");
    t.type_text("y");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(t.running(), "pifw acted on a single key:\n{}", t.text());
    assert_eq!(image_sha(&img), before, "the image changed before Enter");
    t.type_text("es\r");
    let (code, out) = t.finish();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Done:"), "{out}");
    // The bars of the backup and of each transaction (drawn at least once, at 0 bytes).
    assert!(
        out.contains("backing up [") && out.contains("writing 2/2 ["),
        "no progress bars on the terminal:\n{out}"
    );
    assert_ne!(
        image_sha(&img),
        before,
        "confirmed, yet nothing was written"
    );
    assert_fsck_clean(&img);
}

/// The same change with stderr in a pipe: no bar, no carriage return, only the notes.
#[test]
fn no_progress_bars_in_a_pipe() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let deb = uboot_new_deb();
    let out = env.pifw(&["update-uboot", "--from", s(&deb), "--yes", s(&img)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains('\r') && !err.contains("backing up") && !err.contains("writing "),
        "progress in a pipe:\n{err}"
    );
    assert!(err.contains("copying the backup onto the card"), "{err}");
    // --quiet: the same change on a fresh copy prints its result and no note.
    let env = Env::new();
    let (_tmp2, img2) = fixture_copy("nixos.img");
    let out = env.pifw(&[
        "--quiet",
        "update-uboot",
        "--from",
        s(&deb),
        "--yes",
        s(&img2),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Done:"));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "--quiet still printed notes"
    );
}

/// Enter alone, or any other answer, declines and writes nothing.
#[test]
fn an_empty_answer_declines() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let before = image_sha(&img);
    let deb = uboot_new_deb();
    let mut t = OnPty::spawn(&env, &["update-uboot", "--from", s(&deb), s(&img)]);
    t.expect("[y/N]");
    t.type_text("\r");
    let (code, out) = t.finish();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not confirmed; nothing was written"), "{out}");
    assert_eq!(image_sha(&img), before);
}

/// A block device takes its name (or yes), not `y`.
#[test]
fn a_device_wants_its_name_typed() {
    struct Loop(PathBuf);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = cmd("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let before = image_sha(&img);
    let attach = run(cmd("losetup").args(["-f", "--show"]).arg(&img));
    assert!(
        attach.status.success(),
        "losetup cannot attach a loop device (this test needs root and /dev/loop*): {}",
        String::from_utf8_lossy(&attach.stderr).trim()
    );
    let dev = Loop(PathBuf::from(
        String::from_utf8_lossy(&attach.stdout).trim(),
    ));
    let name = dev
        .0
        .file_name()
        .expect("device name")
        .to_string_lossy()
        .into_owned();
    let deb = uboot_new_deb();
    let args = ["update-uboot", "--from", s(&deb), s(&dev.0)];

    let mut t = OnPty::spawn(&env, &args);
    t.expect(&format!("Type its name ({name}) or yes"));
    t.type_text("y\r");
    let (code, out) = t.finish();
    assert_eq!(code, 1, "`y` confirmed a device write:\n{out}");
    assert!(out.contains("not confirmed"), "{out}");
    assert_eq!(image_sha(&img), before, "declined, yet the device changed");

    let mut t = OnPty::spawn(&env, &args);
    t.expect(&format!("Type its name ({name}) or yes"));
    t.type_text(&format!("{name}\r"));
    let (code, out) = t.finish();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Done:"), "{out}");
    drop(dev);
    assert_ne!(image_sha(&img), before);
    assert_fsck_clean(&img);
}

/// A reader that has gone (`| head -1` after its line, `| true`) ends pifw quietly with
/// exit 0. The read end is closed before pifw starts, so its very first write meets EPIPE.
#[test]
fn a_closed_pipe_ends_quietly() {
    for args in [
        &["manifests", "list", "--json"][..],
        &["manifests", "list"][..],
        &["manifests", "show", "u-boot"][..],
        &["status", "--json"][..],
        &["completions", "bash"][..],
        &["man"][..],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut c = pifw();
        c.args(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped());
        if args[0] == "status" {
            c.arg(fixture("nixos.img"));
        }
        let out = c.output().expect("running pifw");
        assert_eq!(
            out.status.code(),
            Some(0),
            "pifw {args:?} into a closed pipe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "pifw {args:?} into a closed pipe wrote to stderr"
        );
    }
}

/// The case of the issue, in a shell: `pifw manifests list --json | head -1`.
#[test]
fn head_dash_one_in_a_shell() {
    let bin = env!("CARGO_BIN_EXE_pifw");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{bin}' manifests list --json | head -1; echo \"exit ${{PIPESTATUS[0]}}\""
        ))
        .output()
        .expect("bash");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\nexit 0\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// A local HTTP server that sends `body` for any `.deb` path, slowly (64 KiB every 60 ms),
/// so a download lasts long enough for a bar to be drawn. Returns its base URL.
fn slow_mirror(body: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a local port");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req);
                let path = line.split_whitespace().nth(1).unwrap_or("");
                if !path.ends_with(".deb") {
                    let _ =
                        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    return;
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for chunk in body.chunks(64 * 1024) {
                    if stream.write_all(chunk).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(60));
                }
            });
        }
    });
    format!("http://{addr}/debian")
}

/// A download draws a bar (bytes, rate) on a terminal; in a pipe, and with --quiet, stderr
/// has no trace of it.
#[test]
fn download_progress_on_a_terminal_only() {
    let deb = std::fs::read(uboot_new_deb()).expect("reading the u-boot .deb");
    let mirror = slow_mirror(deb);

    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let args = [
        "update-uboot",
        "--dry-run",
        "--debian-mirror",
        &mirror,
        s(&img),
    ];
    let t = OnPty::spawn(&env, &args);
    let (code, out) = t.finish();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("downloading u-boot-rpi_") && (out.contains("KiB/s") || out.contains("MiB/s")),
        "no progress bar on the terminal:\n{out}"
    );
    assert!(out.contains("downloaded http://"), "{out}");

    for quiet in [false, true] {
        let env = Env::new();
        let mut a: Vec<&str> = args.to_vec();
        if quiet {
            a.insert(0, "--quiet");
        }
        let out = env.pifw(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("download") && !err.contains("KiB/s"),
            "progress in a pipe (quiet: {quiet}):\n{err}"
        );
    }
}

/// Removes ANSI escape sequences (colours, cursor moves) from terminal output.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// No TARGET on a PC: the picker offers only disks pifw can read, lists the others apart
/// with the reason, keeps every line within 80 columns, and Enter picks the first.
#[test]
fn the_disk_picker_offers_readable_disks_only() {
    struct Loop(PathBuf);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = cmd("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let attach = run(cmd("losetup").args(["-f", "--show"]).arg(&img));
    assert!(
        attach.status.success(),
        "losetup cannot attach a loop device (this test needs root and /dev/loop*): {}",
        String::from_utf8_lossy(&attach.stderr).trim()
    );
    let dev = Loop(PathBuf::from(
        String::from_utf8_lossy(&attach.stdout).trim(),
    ));
    let name = dev
        .0
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    // A sysfs with the loop device and a disk that has no device node.
    let sysfs = tempfile::tempdir().expect("tempdir");
    for (disk, sectors) in [(name.as_str(), "262144"), ("pifwgone0", "1000")] {
        let d = sysfs.path().join("block").join(disk);
        std::fs::create_dir_all(d.join("device")).expect("fake sysfs");
        std::fs::write(d.join("size"), sectors).expect("fake sysfs");
        std::fs::write(d.join("device/vendor"), "0x1af4\n").expect("fake sysfs");
    }
    let no_dt = sysfs.path().join("no-device-tree");
    let mut t = OnPty::spawn_with(
        &env,
        &["status"],
        &[
            ("PIFW_SYSFS", sysfs.path().as_os_str()),
            ("PIFW_DT_MODEL", no_dt.as_os_str()),
        ],
    );
    t.expect("Which disk holds the Pi's card?");
    let shown = strip_ansi(&t.text());
    assert!(shown.contains("Not readable (not offered):"), "{shown}");
    let gone = shown
        .lines()
        .find(|l| l.contains("/dev/pifwgone0"))
        .unwrap_or_else(|| panic!("the unreadable disk is not listed:\n{shown}"));
    assert!(gone.contains("no such file"), "{gone}");
    assert!(
        !gone.contains("0x1af4"),
        "a vendor id shown as the model: {gone}"
    );
    t.type_text("\r");
    let (code, out) = t.finish();
    let out = strip_ansi(&out);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("/dev/{name} (block device")),
        "Enter did not pick the loop device:\n{out}"
    );
    let menu: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(&format!("/dev/{name} ")))
        .collect();
    assert!(!menu.is_empty(), "{out}");
    for line in out.lines() {
        assert!(
            line.trim_end().chars().count() <= 80,
            "a line wider than 80 columns:\n{line}"
        );
    }
    assert!(
        !out.lines()
            .any(|l| l.contains("pifwgone0") && l.contains("> ")),
        "the unreadable disk was offered:\n{out}"
    );
    drop(dev);
}
