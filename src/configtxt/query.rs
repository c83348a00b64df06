//! Questions status asks of the effective settings: which files will the firmware load from
//! the FAT partition?
//!
//! Each answer is a path relative to the partition root, with `os_prefix` applied where the
//! firmware applies it (kernel, initramfs, cmdline, dtb: raspberrypi/documentation
//! `config_txt/boot.adoc`, "os_prefix"). The firmware drops `os_prefix` when the kernel and dtb
//! are missing under it; these functions return the prefixed path the firmware tries first, and
//! status decides what a missing file means.
//!
//! Must not: look at the partition. Which view to ask is the caller's choice: the start/fixup
//! pair comes from [`super::ConfigTxt::bootcode_view`] on boards with bootcode.bin (Pi 3 and
//! earlier), everything else from [`super::ConfigTxt::effective`].

use super::Effective;
use serde::Serialize;

/// Which default kernel name a board's firmware uses when `kernel=` is absent
/// (`config_txt/boot.adoc`, "kernel" and "arm_64bit").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KernelFamily {
    /// Pi 1, Zero, Zero W, CM1: `kernel.img`. No 64-bit mode, so `arm_64bit` is ignored here.
    Armv6,
    /// Pi 2, 3, 3+, Zero 2 W, CM3, CM3+: `kernel7.img`, or `kernel8.img` with `arm_64bit=1`.
    Armv7,
    /// BCM2711: Pi 4, 400, CM4, CM4S: `kernel7l.img`, or `kernel8.img` with `arm_64bit=1`.
    Bcm2711,
    /// BCM2712: Pi 5, 500, CM5: `kernel_2712.img` (64-bit only). Assumption: this revision of
    /// the docs does not cover the Pi 5; the firmware is reported to fall back to `kernel8.img`.
    Bcm2712,
}

/// What `device_tree=` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum DeviceTree {
    /// Not set: the firmware picks the board's own dtb (caller knows its name).
    Default,
    /// `device_tree=` with an empty value: no device tree is loaded.
    Disabled,
    /// This file instead of the board's default, `os_prefix` applied.
    File(String),
}

impl Effective {
    /// The value of a non-empty setting.
    fn nonempty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// Whether an integer setting is set and non-zero. Values are read as the firmware's C
    /// parser would: leading digits (decimal or `0x` hex), the rest ignored
    /// (raspberrypi/firmware#1669 shows `force_turbo=1" text` taken as 1).
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).and_then(int_value).is_some_and(|v| v != 0)
    }

    /// `arm_64bit=1` (any non-zero value): start the ARM cores in 64-bit mode.
    pub fn arm_64bit(&self) -> bool {
        self.flag("arm_64bit")
    }

    /// The prefix for OS files: `os_prefix=`, else `upstream/` when `upstream_kernel=1`.
    pub fn os_prefix(&self) -> Option<&str> {
        self.nonempty("os_prefix")
            .or_else(|| self.flag("upstream_kernel").then_some("upstream/"))
    }

    /// An OS file name with `os_prefix` applied; a leading `/` bypasses the prefix.
    fn os_file(&self, name: &str) -> String {
        match name.strip_prefix('/') {
            Some(absolute) => absolute.to_string(),
            None => format!("{}{name}", self.os_prefix().unwrap_or("")),
        }
    }

    /// The VideoCore firmware pair `(start, fixup)` loaded for this configuration.
    ///
    /// `start_file`/`fixup_file` win when set (each on its own). Otherwise, assumptions (the docs
    /// do not rank them): a GPU memory split under 32 MB (`gpu_mem=16`, raspberrypi/firmware#984)
    /// or the undocumented `start_cd=1` selects the cut-down firmware; else `start_debug=1`
    /// the debug one; else `start_x=1` (or its alias `startx`) the camera/codec one. Only
    /// `gpu_mem` is considered, not `gpu_mem_256/512/1024`, which depend on the RAM size.
    /// On BCM2711 the names carry a `4`: `start4.elf`, `start4x.elf`, `start4db.elf`,
    /// `start4cd.elf` (the docs add that `start4x.elf` is used "if present").
    pub fn start_files(&self, soc_is_2711: bool) -> (String, String) {
        let cut_down = self.flag("start_cd")
            || self
                .get("gpu_mem")
                .and_then(int_value)
                .is_some_and(|mb| (0..32).contains(&mb));
        let variant = if cut_down {
            "cd"
        } else if self.flag("start_debug") {
            "db"
        } else if self.flag("start_x") || self.flag("startx") {
            "x"
        } else {
            ""
        };
        let (start, fixup) = match (soc_is_2711, variant) {
            (true, v) => (format!("start4{v}.elf"), format!("fixup4{v}.dat")),
            (false, "") => ("start.elf".to_string(), "fixup.dat".to_string()),
            (false, v) => (format!("start_{v}.elf"), format!("fixup_{v}.dat")),
        };
        (
            self.nonempty("start_file").map_or(start, str::to_string),
            self.nonempty("fixup_file").map_or(fixup, str::to_string),
        )
    }

    /// The kernel (or U-Boot, or whatever `kernel=` names) the firmware loads, `os_prefix`
    /// applied. Without `kernel=`, the family's default name: `kernel8.img` when
    /// `arm_64bit` is set on a 64-bit capable family (assumption: `arm_64bit` defaults to 0,
    /// as this revision of the docs says for all platforms).
    pub fn kernel_path(&self, family: KernelFamily) -> String {
        if let Some(kernel) = self.nonempty("kernel") {
            return self.os_file(kernel);
        }
        let name = match family {
            KernelFamily::Armv6 => "kernel.img",
            KernelFamily::Armv7 if self.arm_64bit() => "kernel8.img",
            KernelFamily::Armv7 => "kernel7.img",
            KernelFamily::Bcm2711 if self.arm_64bit() => "kernel8.img",
            KernelFamily::Bcm2711 => "kernel7l.img",
            KernelFamily::Bcm2712 => "kernel_2712.img",
        };
        self.os_file(name)
    }

    /// The ARM stub named by `armstub=` (e.g. pftf's `RPI_EFI.fd`), if any. Not an OS file:
    /// `os_prefix` does not apply. Without it the firmware uses its built-in stub.
    pub fn armstub(&self) -> Option<String> {
        self.nonempty("armstub")
            .map(|s| s.trim_start_matches('/').to_string())
    }

    /// What `device_tree=` asks for.
    pub fn device_tree(&self) -> DeviceTree {
        match self.get("device_tree") {
            None => DeviceTree::Default,
            Some("") => DeviceTree::Disabled,
            Some(name) => DeviceTree::File(self.os_file(name)),
        }
    }

    /// The kernel command line file: `cmdline=`, default `cmdline.txt`, `os_prefix` applied.
    pub fn cmdline_file(&self) -> String {
        self.os_file(self.nonempty("cmdline").unwrap_or("cmdline.txt"))
    }

    /// The initramfs file(s) loaded, `os_prefix` applied: from the last
    /// `initramfs <files> <address>` or `ramfsfile=<files>` line (both take a comma-separated
    /// list of files).
    pub fn initramfs(&self) -> Vec<String> {
        let Some(last) = self
            .settings
            .iter()
            .rev()
            .find(|s| s.key == "initramfs" || s.key == "ramfsfile")
        else {
            return Vec::new();
        };
        let files = if last.key == "initramfs" {
            last.value.split_whitespace().next().unwrap_or("")
        } else {
            last.value.as_str()
        };
        files
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| self.os_file(f))
            .collect()
    }

    /// The overlay files `dtoverlay=` lines load: `${overlay_prefix}name.dtbo`, default prefix
    /// `overlays/`. `os_prefix` is not applied: the firmware applies it to overlays only when
    /// `${os_prefix}${overlay_prefix}README` exists, which status checks on the partition.
    pub fn overlay_paths(&self) -> Vec<String> {
        let prefix = self.nonempty("overlay_prefix").unwrap_or("overlays/");
        self.settings
            .iter()
            .filter(|s| s.key == "dtoverlay" || s.key == "device_tree_overlay")
            .filter_map(|s| {
                let name = s.value.split([',', ':']).next().unwrap_or("").trim();
                (!name.is_empty()).then(|| format!("{prefix}{name}.dtbo"))
            })
            .collect()
    }
}

/// Reads the leading integer of a value like C's `strtol(s, NULL, 0)` minus octal: optional
/// `-`, then `0x` hex digits or decimal digits; anything after them is ignored. `None` when no
/// digit leads or the number overflows.
pub(crate) fn int_value(value: &str) -> Option<i64> {
    let (negative, rest) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (radix, digits) = match rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
        Some(hex) => (16, hex),
        None => (10, rest),
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    let magnitude = i64::from_str_radix(digits.get(..end)?, radix).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_value_reads_leading_number() {
        assert_eq!(int_value("1"), Some(1));
        assert_eq!(int_value("0x1f0000"), Some(0x1f0000));
        assert_eq!(int_value("1\" other text"), Some(1));
        assert_eq!(int_value("-2"), Some(-2));
        assert_eq!(int_value("on"), None);
        assert_eq!(int_value(""), None);
        assert_eq!(int_value("0x"), None);
        assert_eq!(int_value("99999999999999999999"), None);
    }
}
