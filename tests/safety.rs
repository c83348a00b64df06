//! The safety layer on real kernel objects: loop devices (tests run as root), the real
//! `/proc/self/mountinfo` and sysfs, and the fixture images built by `scripts/mkimages`.

mod common;

use common::{cmd, run_ok};
use pifw::disk::lock::{LockError, WriteTarget};
use pifw::disk::mounts::{self, MountError, SystemView, Use};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A loop device over an image, detached on drop (also when the test fails).
struct Loop(PathBuf);

impl Loop {
    fn attach(image: &Path) -> Loop {
        let out = run_ok(cmd("losetup").args(["-f", "--show"]).arg(image));
        Loop(PathBuf::from(out.trim()))
    }

    fn name(&self) -> String {
        self.0
            .file_name()
            .expect("/dev/loopN")
            .to_string_lossy()
            .into_owned()
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
    let lo = Loop::attach(&image);

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

    drop(lo);
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
    let lo = Loop::attach(&image);

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
