//! A new boot chain's `config.txt` (pftf UEFI's) merged with the user's own settings.
//!
//! The result is the new file's lines as they are, then a block headed by [`KEPT_HEADER`]
//! holding the user's previous file line by line: section headers (`[pi4]`, `[all]`, ...) and
//! comments unchanged, settings unchanged unless they would fight the new chain, which are kept
//! as comments saying so. A setting fights when it is one of [`CHAIN_KEYS`] (what the firmware
//! loads and where: `kernel`, `armstub`, `device_tree_address`, ...) or sets a key the new
//! file sets. The block ends with `[all]` so nothing appended later by hand lands in a model
//! section by accident. Line ends follow the new file (pftf's uses CRLF).
//!
//! Why this shape: the firmware reads top to bottom and later lines win, so the user's lines
//! must not override the new chain; keeping them (rather than dropping them) in place, with
//! their sections, keeps what they meant (`dtoverlay=`, `gpu_mem=`, `hdmi_*`) and shows what
//! was turned off, so going back needs no guesswork (the old file is in the backup anyway).
//!
//! Must not: read files or print.

use super::LINE_LIMIT;

/// First line of the block of kept settings.
pub const KEPT_HEADER: &str = "# --- kept from the previous config.txt by pifw ---";

/// Keys that decide the boot chain; a user's value for one would undo the switch.
pub const CHAIN_KEYS: &[&str] = &[
    "kernel",
    "kernel_address",
    "kernel_old",
    "armstub",
    "arm_64bit",
    "arm_control",
    "os_prefix",
    "initramfs",
    "ramfsfile",
    "ramfsaddr",
    "device_tree",
    "device_tree_address",
    "device_tree_end",
    "disable_commandline_tags",
    "start_file",
    "fixup_file",
    "upstream_kernel",
    "enable_gic",
    "uart_2ndstage",
];

/// The merged file and which of the user's settings were turned off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub text: String,
    /// The user's lines commented out, as they were.
    pub disabled: Vec<String>,
    /// How many of the user's settings were kept in force.
    pub kept: usize,
}

fn key_of(line: &str) -> Option<String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') || t.starts_with('[') {
        return None;
    }
    let t: String = t.chars().take(LINE_LIMIT).collect();
    let key = match t.split_once('=') {
        Some((k, _)) => k.trim(),
        // `initramfs file addr` and `include file` take a space.
        None => t.split_whitespace().next().unwrap_or(""),
    };
    Some(key.to_ascii_lowercase())
}

/// `base` (the new chain's file) followed by what can be kept of `user`.
pub fn merge(base: &str, user: &str) -> Merged {
    let eol = if base.contains("\r\n") { "\r\n" } else { "\n" };
    let base_keys: Vec<String> = base.lines().filter_map(key_of).collect();
    let mut out = String::new();
    for line in base.lines() {
        out.push_str(line.trim_end_matches('\r'));
        out.push_str(eol);
    }
    let mut disabled = Vec::new();
    let mut kept = 0;
    // A file pifw merged before: the user's part is what follows the header, without the
    // closing `[all]` this function adds.
    let user = match user.find(KEPT_HEADER) {
        Some(i) => &user[i + KEPT_HEADER.len()..],
        None => user,
    };
    let mut user_lines: Vec<&str> = user.lines().map(|l| l.trim_end_matches('\r')).collect();
    while user_lines.last().is_some_and(|l| l.trim().is_empty()) {
        user_lines.pop();
    }
    if user_lines.last() == Some(&"[all]") {
        user_lines.pop();
    }
    while user_lines.first().is_some_and(|l| l.trim().is_empty()) {
        user_lines.remove(0);
    }
    if user_lines.iter().all(|l| l.trim().is_empty()) {
        return Merged {
            text: out,
            disabled,
            kept,
        };
    }
    out.push_str(eol);
    out.push_str(KEPT_HEADER);
    out.push_str(eol);
    for line in user_lines {
        match key_of(line) {
            Some(k) if k == "include" => {
                disabled.push(line.to_string());
                out.push_str(&format!(
                    "# pifw: off for UEFI (an include may set the boot chain): {line}"
                ));
            }
            Some(k) if CHAIN_KEYS.contains(&k.as_str()) || base_keys.contains(&k) => {
                disabled.push(line.to_string());
                out.push_str(&format!("# pifw: off for UEFI: {line}"));
            }
            Some(_) => {
                kept += 1;
                out.push_str(line);
            }
            None => out.push_str(line),
        }
        out.push_str(eol);
    }
    out.push_str("[all]");
    out.push_str(eol);
    Merged {
        text: out,
        disabled,
        kept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configtxt::parse;

    const PFTF: &str = "arm_64bit=1\r\nenable_uart=1\r\nuart_2ndstage=1\r\nenable_gic=1\r\narmstub=RPI_EFI.fd\r\ndisable_commandline_tags=1\r\ndisable_overscan=1\r\ndevice_tree_address=0x1f0000\r\ndevice_tree_end=0x200000\r\n";
    const NIXOS: &str = "[pi3]\nkernel=u-boot-rpi3.bin\n\n[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\narmstub=armstub8-gic.bin\n\n# Otherwise the resolution will be weird in most cases\ndisable_overscan=1\n\n[all]\narm_64bit=1\nenable_uart=1\navoid_warnings=1\ngpu_mem=64\n";

    #[test]
    fn the_uefi_chain_wins_and_the_rest_is_kept() {
        let m = merge(PFTF, NIXOS);
        let cfg = parse("config.txt", &m.text, &mut |_| None);
        for filters in [&["pi3"][..], &["pi4"][..]] {
            let e = cfg.effective(filters);
            assert_eq!(
                e.get("armstub"),
                Some("RPI_EFI.fd"),
                "{filters:?}\n{}",
                m.text
            );
            assert_eq!(e.get("kernel"), None, "{filters:?}\n{}", m.text);
            assert_eq!(e.get("gpu_mem"), Some("64"));
            assert_eq!(e.get("avoid_warnings"), Some("1"));
        }
        assert!(m.disabled.contains(&"kernel=u-boot-rpi3.bin".to_string()));
        assert_eq!(m.kept, 2, "{:?}", m);
        assert!(m.text.ends_with("[all]\r\n"));
        assert!(
            !m.text.replace("\r\n", "").contains('\n'),
            "mixed line ends"
        );
        assert!(m.text.contains("# Otherwise the resolution"));
    }

    #[test]
    fn merging_again_does_not_stack_blocks() {
        let once = merge(PFTF, NIXOS);
        let twice = merge(PFTF, &once.text);
        assert_eq!(twice.text, once.text);
    }

    #[test]
    fn an_empty_user_file_adds_nothing() {
        assert_eq!(merge(PFTF, "").text, PFTF);
    }
}
