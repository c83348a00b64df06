//! The machine pifw runs on: is it a Raspberry Pi, and which disks could hold a Pi's card.
//!
//! Reads `/proc/device-tree/model` and `/sys/block`. Both roots can be redirected with the
//! `PIFW_DT_MODEL` and `PIFW_SYSFS` environment variables so tests can play a Pi or a PC with a
//! card reader; nothing else in pifw reads them.

use std::fs;
use std::path::{Path, PathBuf};

/// A whole disk the kernel knows, as listed in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `/dev/<name>`.
    pub dev: PathBuf,
    pub size_bytes: u64,
    /// Vendor and model as the kernel reports them (may be empty; a numeric vendor id such as
    /// virtio's `0x1af4` is left out).
    pub model: String,
    pub removable: bool,
    /// How the disk is attached: `usb`, `sd` (the SD slot, mmcblk), `sata`, `nvme`,
    /// `virtio`, `loop`, or empty when unknown.
    pub transport: String,
}

#[derive(Debug, Clone)]
pub struct Host {
    dt_model: PathBuf,
    sysfs: PathBuf,
}

impl Host {
    /// The running system, honouring the test overrides.
    pub fn system() -> Host {
        let env_or = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Host {
            dt_model: env_or("PIFW_DT_MODEL", "/proc/device-tree/model"),
            sysfs: env_or("PIFW_SYSFS", "/sys"),
        }
    }

    /// The device-tree model string (e.g. `Raspberry Pi 3 Model B Rev 1.2`), when the machine
    /// has a device tree. The kernel's copy ends with a NUL, which is trimmed.
    pub fn dt_model(&self) -> Option<String> {
        let raw = fs::read(&self.dt_model).ok()?;
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches('\0').trim();
        (!text.is_empty()).then(|| text.to_string())
    }

    /// Whole disks that could be a Pi's card: not ramdisks, zram, device-mapper or optical
    /// drives, and not empty (a card reader without a card reports size 0).
    pub fn candidate_disks(&self) -> Vec<Candidate> {
        let Ok(dir) = fs::read_dir(self.sysfs.join("block")) else {
            return Vec::new();
        };
        let mut out: Vec<Candidate> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let skip = ["ram", "zram", "dm-", "sr", "md", "nbd"];
                if skip.iter().any(|p| name.starts_with(p)) {
                    return None;
                }
                let base = e.path();
                let sectors: u64 = read_trim(&base.join("size"))?.parse().ok()?;
                if sectors == 0 {
                    return None;
                }
                let model = [
                    read_trim(&base.join("device/vendor")).filter(|v| !v.starts_with("0x")),
                    read_trim(&base.join("device/model")),
                    read_trim(&base.join("device/name")),
                ]
                .into_iter()
                .flatten()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
                let removable = read_trim(&base.join("removable")).as_deref() == Some("1");
                Some(Candidate {
                    dev: Path::new("/dev").join(&name),
                    // sysfs counts 512-byte units whatever the logical sector size.
                    size_bytes: sectors * 512,
                    model,
                    removable,
                    transport: transport(&name, &base),
                })
            })
            .collect();
        out.sort_by(|a, b| a.dev.cmp(&b.dev));
        out
    }
}

/// The bus of a disk, from its name or where its sysfs entry leads (`/sys/block/sdb` is a link
/// into the device tree of the bus: `.../usb1/1-1/...`, `.../ata1/...`).
fn transport(name: &str, base: &Path) -> String {
    let by_name = [
        ("mmcblk", "sd"),
        ("nvme", "nvme"),
        ("vd", "virtio"),
        ("loop", "loop"),
    ];
    if let Some((_, t)) = by_name.iter().find(|(p, _)| name.starts_with(p)) {
        return t.to_string();
    }
    let real = fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let real = real.to_string_lossy();
    if real.contains("/usb") {
        "usb".into()
    } else if real.contains("/ata") {
        "sata".into()
    } else {
        String::new()
    }
}

fn read_trim(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fake_sysfs_and_model() {
        let root = std::env::temp_dir().join(format!("pifw-host-{}", std::process::id()));
        let sd = root.join("block/sdb");
        fs::create_dir_all(sd.join("device")).unwrap();
        fs::write(sd.join("size"), "62333952\n").unwrap();
        fs::write(sd.join("removable"), "1\n").unwrap();
        fs::write(sd.join("device/vendor"), "Generic \n").unwrap();
        fs::write(sd.join("device/model"), "STORAGE DEVICE\n").unwrap();
        let empty = root.join("block/sdc");
        fs::create_dir_all(&empty).unwrap();
        fs::write(empty.join("size"), "0\n").unwrap();
        fs::create_dir_all(root.join("block/zram0")).unwrap();
        fs::write(root.join("block/zram0/size"), "100\n").unwrap();
        fs::write(root.join("model"), b"Raspberry Pi 3 Model B Rev 1.2\0").unwrap();
        let host = Host {
            dt_model: root.join("model"),
            sysfs: root.clone(),
        };
        assert_eq!(
            host.dt_model().as_deref(),
            Some("Raspberry Pi 3 Model B Rev 1.2")
        );
        let disks = host.candidate_disks();
        assert_eq!(disks.len(), 1, "{disks:?}");
        assert_eq!(disks[0].dev, PathBuf::from("/dev/sdb"));
        assert_eq!(disks[0].size_bytes, 62333952 * 512);
        assert_eq!(disks[0].model, "Generic STORAGE DEVICE");
        assert!(disks[0].removable);
        assert_eq!(disks[0].transport, "");
        fs::remove_dir_all(&root).unwrap();
    }
}
