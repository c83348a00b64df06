//! The safety layer on real kernel objects: loop devices (tests run as root), the real
//! `/proc/self/mountinfo` and sysfs, and the fixture images built by `scripts/mkimages`.

mod common;

use common::{cmd, run};
use pifw::disk::lock::{LockError, WriteTarget};
use pifw::disk::mounts::{self, MountError, SystemView, Use};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A loop device over an image, detached on drop (also when the test fails).
struct Loop(PathBuf);

impl Loop {
    /// `None` (and a note on stderr) where the machine has no loop devices to give, e.g.
    /// an unprivileged container: the test then has nothing to run on.
    fn attach(image: &Path) -> Option<Loop> {
        let out = run(cmd("losetup").args(["-f", "--show"]).arg(image));
        if !out.status.success() {
            eprintln!(
                "skipped: losetup cannot attach a loop device here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Loop(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim(),
        )))
    }

    fn name(&self) -> String {
        self.0
            .file_name()
            .expect("/dev/loopN")
            .to_string_lossy()
            .into_owned()
    }

    /// Detaches and waits until the kernel has let go: with another opener (udev probing a
    /// new loop device) `losetup -d` only marks the device for autoclear.
    fn detach(self) {
        let backing = PathBuf::from(format!("/sys/block/{}/loop/backing_file", self.name()));
        drop(self);
        for _ in 0..100 {
            if !backing.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{} still exists after losetup -d", backing.display());
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = cmd("losetup").arg("-d").arg(&self.0).status();
    }
}

fn blank_image(dir: &Path) -> PathBuf {
    let path = dir.join("card.img");
    std::fs::write(&path, vec![0u8; 1 << 20]).expect("writing the image");
    path
}

#[test]
fn an_image_behind_a_loop_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = blank_image(dir.path());
    let Some(lo) = Loop::attach(&image) else {
        return;
    };

    let uses = mounts::usage(&image, &SystemView::system()).unwrap();
    assert_eq!(uses, vec![Use::LoopBacked { device: lo.name() }]);

    let err = WriteTarget::open(&image).expect_err("an attached image must be refused");
    assert!(
        matches!(&err, LockError::InUse(MountError::InUse { .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("`losetup -d {}`", lo.0.display())),
        "{text}"
    );

    lo.detach();
    assert_eq!(
        mounts::usage(&image, &SystemView::system()).unwrap(),
        vec![]
    );
    WriteTarget::open(&image).expect("detached: writable again");
}

#[test]
fn a_block_device_held_exclusively_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = blank_image(dir.path());
    let Some(lo) = Loop::attach(&image) else {
        return;
    };

    // Another program (not pifw: no flock) holds the device with O_EXCL, as a mounted
    // filesystem does.
    let holder = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_EXCL.bits())
        .open(&lo.0)
        .expect("first exclusive open");
    let err = WriteTarget::open(&lo.0).expect_err("O_EXCL must refuse a second opener");
    assert!(matches!(err, LockError::Busy { .. }), "{err:?}");
    assert!(err.to_string().contains("is busy"), "{err}");
    drop(holder);

    let mut first = WriteTarget::open(&lo.0).expect("free device opens");
    assert_eq!(first.size_bytes, 1 << 20);
    let err = WriteTarget::open(&lo.0).expect_err("a second pifw must be refused");
    assert!(
        err.to_string()
            .starts_with(&format!("another pifw is changing {}", lo.0.display())),
        "{err}"
    );

    use std::io::Write;
    first.write_all(b"PIFW").unwrap();
    first.sync().unwrap();
    drop(first);
    drop(lo);
    assert_eq!(&std::fs::read(&image).unwrap()[..4], b"PIFW");
}

/// The card identity as the generator describes the fixture (not as pifw reads it).
fn identity_from_sidecar(name: &str) -> pifw::backup::CardIdentity {
    let s = common::sidecar(name);
    let fw = &s["firmware"];
    pifw::backup::CardIdentity {
        card_id: None,
        mbr_disk_signature: s["table"]["disk_id"].as_str().map(str::to_string),
        gpt_disk_guid: None,
        fat_volume_id: fw["volume_id"].as_str().map(str::to_string),
        fat_label: fw["label"].as_str().map(str::to_string),
        firmware_offset_bytes: fw["offset_bytes"].as_u64().expect("offset"),
        firmware_size_bytes: fw["size_bytes"].as_u64().expect("size"),
    }
}

fn unzip_p(zip: &Path, member: &str) -> Vec<u8> {
    let out = common::run(cmd("unzip").arg("-p").arg(zip).arg(member));
    assert!(out.status.success(), "unzip -p {member}: {out:?}");
    out.stdout
}

#[test]
fn backup_of_a_real_card_matches_mtools() {
    use pifw::backup::{Backup, BackupWriter, RestoreAction};
    let (_img_dir, image) = common::fixture_copy("nixos.img");
    let card = identity_from_sidecar("nixos.img");
    let (offset, size) = (card.firmware_offset_bytes, card.firmware_size_bytes);
    let backups = tempfile::tempdir().unwrap();

    let mut disk = pifw::disk::target::Target::open_read(&image).unwrap();
    let mut part = fscommon::StreamSlice::new(&mut disk.file, offset, offset + size).unwrap();
    let mut w = BackupWriter::create(
        backups.path(),
        card.clone(),
        vec!["pifw".into(), "update-uboot".into()],
    )
    .unwrap();
    let paths = ["config.txt", "u-boot-rpi3.bin", "bootcode.bin"];
    for path in paths {
        pifw::fat::with_file(&mut part, path, |r| {
            w.add_file(path, r, None).map_err(std::io::Error::other)
        })
        .unwrap()
        .unwrap_or_else(|| panic!("{path} is on the fixture"));
    }
    w.add_absent("EFI/BOOT/BOOTAA64.EFI", None).unwrap();
    let zip = w.finish().unwrap();

    for path in paths {
        assert_eq!(
            unzip_p(&zip, path),
            common::mcopy_out(&image, offset, path),
            "{path}: the backup holds what mtools reads from the card"
        );
    }
    let backup = Backup::open(&zip).unwrap();
    let listed = pifw::backup::list(backups.path(), &card).unwrap();
    assert_eq!(listed.backups.len(), 1);
    assert_eq!(listed.backups[0].path, zip);
    let plan = backup.restore_plan();
    assert_eq!(plan.len(), 4);
    assert_eq!(plan[3].action, RestoreAction::Remove);
    let RestoreAction::Write(content) = &plan[1].action else {
        panic!("u-boot-rpi3.bin is restored");
    };
    assert_eq!(
        content.state.sha256,
        common::sha256sum(&common::mcopy_out(&image, offset, "u-boot-rpi3.bin"))
    );
}

#[test]
fn config_txt_edits_on_the_fixtures_bytes() {
    use pifw::configtxt::edit::set_kernel_for;
    // NixOS: the [pi3] line, in place.
    let card = identity_from_sidecar("nixos.img");
    let nixos = common::mcopy_out(
        &common::fixture("nixos.img"),
        card.firmware_offset_bytes,
        "config.txt",
    );
    let nixos = String::from_utf8(nixos).unwrap();
    let edit = set_kernel_for(&nixos, &["pi3"], "kernel", "u-boot-rpi3-2025.bin").unwrap();
    assert_eq!(
        edit.new_text,
        nixos.replacen(
            "[pi3]\nkernel=u-boot-rpi3.bin\n",
            "[pi3]\nkernel=u-boot-rpi3-2025.bin\n",
            1
        )
    );

    // pftf: CRLF, no sections; appended with CRLF.
    let card = identity_from_sidecar("uefi.img");
    let pftf = common::mcopy_out(
        &common::fixture("uefi.img"),
        card.firmware_offset_bytes,
        "config.txt",
    );
    let pftf = String::from_utf8(pftf).unwrap();
    assert!(pftf.contains("armstub=RPI_EFI.fd\r\n"), "{pftf:?}");
    let edit = set_kernel_for(&pftf, &["pi3"], "kernel", "u-boot.bin").unwrap();
    assert_eq!(
        edit.new_text,
        format!("{pftf}[pi3]\r\nkernel=u-boot.bin\r\n[all]\r\n")
    );
}
