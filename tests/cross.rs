//! The Raspberry Pi builds (scripts/cross) run under qemu-user on the fixture images, judged
//! against the x86-64 build and the usual oracles: status on every fixture gives the same
//! JSON and exit code as the native binary; an update of U-Boot and its rollback leave the
//! files mtools reads and a clean `fsck.fat -n`.
//!
//! Ignored in a plain `cargo test` (the binaries come from scripts/cross, a release build per
//! target); scripts/test builds them and runs `cargo test --test cross -- --ignored`. A
//! missing binary or qemu is a failure with the way to fix it, never a pass.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NIXOS_FAT: u64 = 8 * 1024 * 1024;
const NIXOS_FAT_LEN: u64 = 30 * 1024 * 1024;

/// A cross-built pifw and how to run it here.
struct Cross {
    bin: PathBuf,
    qemu: &'static str,
    sysroot: &'static str,
}

impl Cross {
    fn new(triple: &str, qemu: &'static str, sysroot: &'static str, elf_machine: u16) -> Cross {
        let bin = repo_root()
            .join("target")
            .join(triple)
            .join("release")
            .join("pifw");
        let elf = std::fs::read(&bin).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build it with scripts/cross (scripts/test does)",
                bin.display()
            )
        });
        // e_machine at offset 18 (little-endian): proves the binary is the Pi's, not the host's.
        assert_eq!(
            u16::from_le_bytes([elf[18], elf[19]]),
            elf_machine,
            "{} is not a {triple} binary",
            bin.display()
        );
        tool(qemu);
        assert!(
            Path::new(sysroot).join("lib").is_dir(),
            "{sysroot} missing: install the cross libc (scripts/install-deps)"
        );
        Cross { bin, qemu, sysroot }
    }

    fn run(&self, env: &Env, args: &[&str]) -> Output {
        run(Command::new(tool(self.qemu))
            .arg("-L")
            .arg(self.sysroot)
            .arg(&self.bin)
            .args(args)
            .env("PIFW_CONFIG", &env.config)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null()))
    }

    fn run_ok(&self, env: &Env, args: &[&str]) -> String {
        let out = self.run(env, args);
        assert!(
            out.status.success(),
            "{} {args:?} under {} failed ({}):\n{}{}",
            self.bin.display(),
            self.qemu,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn assert_fsck_clean(img: &Path) {
    let (ok, text) = fsck_fat(img, NIXOS_FAT, NIXOS_FAT_LEN);
    assert!(ok, "fsck.fat -n failed:\n{text}");
    assert!(!text.contains("lost") && !text.contains("differ"), "{text}");
}

fn status_on_every_fixture_and_an_update_with_rollback(cross: &Cross) {
    let env = Env::new();
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "img"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 10, "too few fixtures: {fixtures:?}");
    for img in &fixtures {
        let native = env.pifw(&["status", "--json", s(img)]);
        let pi = cross.run(&env, &["status", "--json", s(img)]);
        assert_eq!(
            pi.status.code(),
            native.status.code(),
            "status exit code of {} differs: {}",
            img.display(),
            String::from_utf8_lossy(&pi.stderr)
        );
        let parse = |o: &Output| -> serde_json::Value {
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
                panic!(
                    "status --json {} printed no JSON ({e}): {}",
                    img.display(),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
        };
        assert_eq!(
            parse(&pi),
            parse(&native),
            "status --json of {} differs between {} and x86-64",
            img.display(),
            cross.qemu
        );
    }

    let (_tmp, img) = fixture_copy("nixos.img");
    let before = card_files(&img, NIXOS_FAT);
    let deb = blob_cache()
        .join("debs")
        .join(format!("u-boot-rpi_{UBOOT_NEW}_arm64.deb"));
    let out = cross.run_ok(&env, &["update-uboot", "--from", s(&deb), "--yes", s(&img)]);
    assert!(out.contains("Done:"), "{out}");
    let after = card_files(&img, NIXOS_FAT);
    assert_eq!(
        after["u-boot-rpi3.bin"],
        sha256sum(&std::fs::read(uboot_rpi3(UBOOT_NEW)).expect("u-boot")),
        "mtools does not read the new U-Boot"
    );
    assert_fsck_clean(&img);

    let out = cross.run_ok(&env, &["rollback", "--yes", s(&img)]);
    assert!(out.contains("Done:"), "{out}");
    // The backup copy the update put on the card is gone again with the rollback.
    assert_eq!(
        card_files(&img, NIXOS_FAT),
        before,
        "rollback did not restore the files"
    );
    assert_fsck_clean(&img);
}

#[test]
#[ignore = "needs scripts/cross builds; scripts/test runs it"]
fn aarch64_under_qemu_user() {
    let cross = Cross::new(
        "aarch64-unknown-linux-gnu",
        "qemu-aarch64",
        "/usr/aarch64-linux-gnu",
        0xb7,
    );
    status_on_every_fixture_and_an_update_with_rollback(&cross);
}

#[test]
#[ignore = "needs scripts/cross builds; scripts/test runs it"]
fn armhf_under_qemu_user() {
    let cross = Cross::new(
        "armv7-unknown-linux-gnueabihf",
        "qemu-arm",
        "/usr/arm-linux-gnueabihf",
        0x28,
    );
    status_on_every_fixture_and_an_update_with_rollback(&cross);
}
