//! Is the target in use? Mounted partitions, holders, and loop devices over an image file.
//!
//! A mounted firmware partition has the kernel's cached copy of its FAT and directories;
//! writing the card underneath it corrupts both, and the kernel may write its stale copy back
//! later. So pifw refuses to write a target when:
//!
//! - the block device, or any of its partitions, appears in the mount table
//!   (`/proc/self/mountinfo`, matched by `major:minor`, which sysfs gives for the device and
//!   for each partition: `/sys/class/block/<dev>/dev`, `/sys/class/block/<dev>/<part>/dev`);
//! - the device or a partition has holders (`/sys/class/block/<dev>/holders/`: device-mapper,
//!   md, bcache);
//! - an image file backs a loop device (`/sys/block/loop*/loop/backing_file`). Even an
//!   unmounted loop device has its own page cache of the image, so a later mount through it
//!   could read stale sectors: pifw asks for `losetup -d` first, and reports the loop device's
//!   mounts and holders too.
//!
//! The mount table and sysfs root come from a [`SystemView`], redirected in tests with the
//! `PIFW_MOUNTINFO` and `PIFW_SYSFS` environment variables (the latter shared with
//! [`super::host`]) or built directly.
//!
//! Must not: unmount or detach anything. It reports what holds the target and how to release it.

use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where the mount table and sysfs are read from.
#[derive(Debug, Clone)]
pub struct SystemView {
    pub mountinfo: PathBuf,
    pub sysfs: PathBuf,
}

impl SystemView {
    /// The running system, honouring `PIFW_MOUNTINFO` and `PIFW_SYSFS`.
    pub fn system() -> SystemView {
        let env_or = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        SystemView {
            mountinfo: env_or("PIFW_MOUNTINFO", "/proc/self/mountinfo"),
            sysfs: env_or("PIFW_SYSFS", "/sys"),
        }
    }
}

/// One line of `mountinfo` (proc(5)): the fields pifw uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted device (field 3).
    pub dev: (u32, u32),
    /// Where it is mounted (field 5), octal escapes decoded.
    pub mount_point: PathBuf,
    /// Filesystem type (first field after ` - `).
    pub fstype: String,
    /// Mount source, e.g. `/dev/sdb1` (second field after ` - `).
    pub source: String,
}

/// Something that keeps pifw from writing the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Use {
    /// `device` (kernel name, e.g. `sdb1`) is mounted at `mount_point`.
    Mounted {
        device: String,
        mount_point: PathBuf,
        fstype: String,
    },
    /// `device` is held by `holder` (e.g. `dm-0`).
    Held { device: String, holder: String },
    /// The image file backs the loop device `/dev/<device>`.
    LoopBacked { device: String },
}

impl fmt::Display for Use {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Use::Mounted {
                device,
                mount_point,
                fstype,
            } => {
                let mp = mount_point.display();
                write!(
                    f,
                    "/dev/{device} is mounted on {mp} ({fstype}); unmount it: `umount {mp}`"
                )?;
                if mount_point == Path::new("/boot/firmware") {
                    write!(
                        f,
                        " (on NixOS /boot/firmware is `noauto`: it is mounted only when someone mounted it by hand)"
                    )?;
                }
                Ok(())
            }
            Use::Held { device, holder } => write!(
                f,
                "/dev/{device} is held by /dev/{holder} (device-mapper, md or similar); stop that first (e.g. `dmsetup remove {holder}`)"
            ),
            Use::LoopBacked { device } => write!(
                f,
                "the image backs loop device /dev/{device}; detach it: `losetup -d /dev/{device}`"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{target} is in use; pifw changed nothing:{}", bullet_list(uses))]
    InUse { target: PathBuf, uses: Vec<Use> },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a mountinfo line: `{text}`")]
    BadMountinfo {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

fn bullet_list(uses: &[Use]) -> String {
    uses.iter().map(|u| format!("\n  - {u}")).collect()
}

/// Fails with [`MountError::InUse`] when [`usage`] finds anything.
pub fn refuse_in_use(target: &Path, view: &SystemView) -> Result<(), MountError> {
    let uses = usage(target, view)?;
    if uses.is_empty() {
        Ok(())
    } else {
        Err(MountError::InUse {
            target: target.to_path_buf(),
            uses,
        })
    }
}

/// Everything that keeps pifw from writing `target` (an image file or a block device).
pub fn usage(target: &Path, view: &SystemView) -> Result<Vec<Use>, MountError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MountError::Io { path, source }
    };
    let meta = fs::metadata(target).map_err(io(target))?;
    let mounts = read_mountinfo(&view.mountinfo)?;
    if meta.file_type().is_block_device() {
        let rdev = meta.rdev();
        let dev = (
            nix::sys::stat::major(rdev as nix::libc::dev_t) as u32,
            nix::sys::stat::minor(rdev as nix::libc::dev_t) as u32,
        );
        Ok(block_usage(dev, view, &mounts))
    } else {
        let canonical = fs::canonicalize(target).map_err(io(target))?;
        let mut uses = Vec::new();
        for (name, dev) in loops_backed_by(&canonical, &view.sysfs) {
            uses.push(Use::LoopBacked { device: name });
            uses.extend(block_usage(dev, view, &mounts));
        }
        Ok(uses)
    }
}

/// Mounts and holders of the block device `dev` and its partitions.
fn block_usage(dev: (u32, u32), view: &SystemView, mounts: &[Mount]) -> Vec<Use> {
    let class = view.sysfs.join("class/block");
    let Some(name) = name_of(&class, dev) else {
        // Not in sysfs (a fake tree, or a device that vanished): the mount table still counts.
        return mounts
            .iter()
            .filter(|m| m.dev == dev)
            .map(|m| Use::Mounted {
                device: format!("{}:{}", dev.0, dev.1),
                mount_point: m.mount_point.clone(),
                fstype: m.fstype.clone(),
            })
            .collect();
    };
    let mut devices = vec![(name.clone(), dev)];
    devices.extend(partitions(&class.join(&name)));

    let mut uses = Vec::new();
    for (dev_name, number) in &devices {
        let node = format!("/dev/{dev_name}");
        for m in mounts
            .iter()
            .filter(|m| m.dev == *number || m.source == node)
        {
            uses.push(Use::Mounted {
                device: dev_name.clone(),
                mount_point: m.mount_point.clone(),
                fstype: m.fstype.clone(),
            });
        }
        let dir = if dev_name == &name {
            class.join(&name)
        } else {
            class.join(&name).join(dev_name)
        };
        for holder in sorted_names(&dir.join("holders")) {
            uses.push(Use::Held {
                device: dev_name.clone(),
                holder,
            });
        }
    }
    uses
}

/// The kernel name of the block device numbered `dev`, found by its `dev` file in
/// `/sys/class/block/*/dev`.
fn name_of(class: &Path, dev: (u32, u32)) -> Option<String> {
    sorted_names(class)
        .into_iter()
        .find(|name| read_dev(&class.join(name).join("dev")) == Some(dev))
}

/// `(name, major:minor)` of each partition of the device whose sysfs directory is `dir`: its
/// subdirectories that have a `partition` file.
fn partitions(dir: &Path) -> Vec<(String, (u32, u32))> {
    sorted_names(dir)
        .into_iter()
        .filter(|n| dir.join(n).join("partition").is_file())
        .filter_map(|n| read_dev(&dir.join(&n).join("dev")).map(|d| (n, d)))
        .collect()
}

/// Loop devices whose backing file is `image` (canonical path), with their numbers.
fn loops_backed_by(image: &Path, sysfs: &Path) -> Vec<(String, (u32, u32))> {
    let block = sysfs.join("block");
    sorted_names(&block)
        .into_iter()
        .filter(|n| n.starts_with("loop"))
        .filter_map(|n| {
            let dir = block.join(&n);
            let backing = fs::read_to_string(dir.join("loop/backing_file")).ok()?;
            let backing = backing.trim_end_matches('\n');
            // The kernel appends " (deleted)" when the file was unlinked; that is not our image.
            let same =
                Path::new(backing) == image || fs::canonicalize(backing).is_ok_and(|c| c == image);
            if !same {
                return None;
            }
            let dev = read_dev(&dir.join("dev"))?;
            Some((n, dev))
        })
        .collect()
}

/// Entry names of a directory, sorted; empty when it cannot be read.
fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A sysfs `dev` file: `major:minor\n`.
fn read_dev(path: &Path) -> Option<(u32, u32)> {
    parse_dev(fs::read_to_string(path).ok()?.trim())
}

fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn read_mountinfo(path: &Path) -> Result<Vec<Mount>, MountError> {
    let text = fs::read_to_string(path).map_err(|source| MountError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_mountinfo(&text).map_err(|(line, text)| MountError::BadMountinfo {
        path: path.to_path_buf(),
        line,
        text,
    })
}

/// Parses `mountinfo` (proc(5)): `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root
/// rw,errors=continue`. Optional fields sit between the options and the ` - ` separator.
/// Errors carry the 1-based line number and text of the first line that does not parse.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, (usize, String)> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || (index + 1, line.to_string());
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-").ok_or_else(bad)?;
        if sep < 6 || fields.len() < sep + 3 {
            return Err(bad());
        }
        out.push(Mount {
            dev: parse_dev(fields[2]).ok_or_else(bad)?,
            mount_point: PathBuf::from(unescape(fields[4])),
            fstype: fields[sep + 1].to_string(),
            source: unescape(fields[sep + 2]),
        });
    }
    Ok(out)
}

/// Decodes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash) in mountinfo fields.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && oct.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(oct.iter().fold(0u8, |acc, b| (acc << 3) | (b - b'0')));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 8:17 / /boot/firmware rw,relatime shared:20 - vfat /dev/sdb1 rw,fmask=0022
41 22 8:18 / /mnt/nixos\\040root rw,relatime - ext4 /dev/sdb2 rw
42 22 7:0 / /mnt/loop rw shared:30 master:2 - vfat /dev/loop0 rw
";

    /// A fake sysfs: sdb with partitions sdb1 (mounted), sdb2 (mounted), sdb3 (held by dm-0);
    /// sdc with nothing; loop0 backed by `image`.
    fn fake_sysfs(root: &Path, image: &Path) -> SystemView {
        let dev = |dir: &Path, d: &str| {
            fs::create_dir_all(dir).unwrap();
            fs::write(dir.join("dev"), format!("{d}\n")).unwrap();
        };
        let class = root.join("class/block");
        dev(&class.join("sdb"), "8:16");
        for (p, d) in [("sdb1", "8:17"), ("sdb2", "8:18"), ("sdb3", "8:19")] {
            dev(&class.join("sdb").join(p), d);
            fs::write(class.join("sdb").join(p).join("partition"), "1\n").unwrap();
        }
        fs::create_dir_all(class.join("sdb/holders")).unwrap();
        fs::create_dir_all(class.join("sdb/sdb3/holders/dm-0")).unwrap();
        dev(&class.join("sdc"), "8:32");
        dev(&class.join("loop0"), "7:0");
        dev(&root.join("block/loop0"), "7:0");
        fs::create_dir_all(root.join("block/loop0/loop")).unwrap();
        fs::write(
            root.join("block/loop0/loop/backing_file"),
            format!("{}\n", image.display()),
        )
        .unwrap();
        dev(&root.join("block/loop1"), "7:1");
        fs::create_dir_all(root.join("block/loop1/loop")).unwrap();
        fs::write(
            root.join("block/loop1/loop/backing_file"),
            "/elsewhere/other.img\n",
        )
        .unwrap();
        let mountinfo = root.join("mountinfo");
        fs::write(&mountinfo, MOUNTINFO).unwrap();
        SystemView {
            mountinfo,
            sysfs: root.to_path_buf(),
        }
    }

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let m = parse_mountinfo(MOUNTINFO).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].dev, (8, 17));
        assert_eq!(m[1].mount_point, PathBuf::from("/boot/firmware"));
        assert_eq!(m[1].fstype, "vfat");
        assert_eq!(m[1].source, "/dev/sdb1");
        assert_eq!(m[2].mount_point, PathBuf::from("/mnt/nixos root"));
        assert_eq!(m[3].fstype, "vfat");
        assert_eq!(
            parse_mountinfo("22 1 254:1 / / rw\n"),
            Err((1, "22 1 254:1 / / rw".to_string()))
        );
        assert_eq!(
            parse_mountinfo("\n22 1 x / / rw - ext4 /dev/x rw\n"),
            Err((2, "22 1 x / / rw - ext4 /dev/x rw".to_string()))
        );
    }

    #[test]
    fn finds_mounted_and_held_partitions_of_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let view = fake_sysfs(dir.path(), Path::new("/img/card.img"));
        let mounts = read_mountinfo(&view.mountinfo).unwrap();
        let uses = block_usage((8, 16), &view, &mounts);
        assert_eq!(
            uses,
            vec![
                Use::Mounted {
                    device: "sdb1".into(),
                    mount_point: "/boot/firmware".into(),
                    fstype: "vfat".into()
                },
                Use::Mounted {
                    device: "sdb2".into(),
                    mount_point: "/mnt/nixos root".into(),
                    fstype: "ext4".into()
                },
                Use::Held {
                    device: "sdb3".into(),
                    holder: "dm-0".into()
                },
            ]
        );
        assert_eq!(block_usage((8, 32), &view, &mounts), vec![]);
        let text = MountError::InUse {
            target: "/dev/sdb".into(),
            uses,
        }
        .to_string();
        assert!(text.contains("/dev/sdb1 is mounted on /boot/firmware (vfat); unmount it: `umount /boot/firmware` (on NixOS /boot/firmware is `noauto`"), "{text}");
        assert!(text.contains("`umount /mnt/nixos root`"), "{text}");
        assert!(text.contains("/dev/sdb3 is held by /dev/dm-0"), "{text}");
    }

    #[test]
    fn finds_the_loop_device_over_an_image_and_its_mount() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("card.img");
        fs::write(&image, b"x").unwrap();
        let image = fs::canonicalize(&image).unwrap();
        let view = fake_sysfs(&dir.path().join("sys"), &image);
        let uses = usage(&image, &view).unwrap();
        assert_eq!(
            uses,
            vec![
                Use::LoopBacked {
                    device: "loop0".into()
                },
                Use::Mounted {
                    device: "loop0".into(),
                    mount_point: "/mnt/loop".into(),
                    fstype: "vfat".into()
                },
            ]
        );
        let err = refuse_in_use(&image, &view).unwrap_err().to_string();
        assert!(err.contains("`losetup -d /dev/loop0`"), "{err}");
        assert!(err.contains("`umount /mnt/loop`"), "{err}");

        let other = dir.path().join("other.img");
        fs::write(&other, b"x").unwrap();
        refuse_in_use(&other, &view).expect("no loop device backs other.img");
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/a\040b\011c\134d\012"), "/a b\tc\\d\n");
        assert_eq!(unescape(r"/a\04"), r"/a\04");
        assert_eq!(unescape(r"/a\089"), r"/a\089");
    }
}
