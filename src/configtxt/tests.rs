//! Tests for the config.txt parser and its views, on configurations met in the field.

use super::*;

fn no_includes(_: &str) -> Option<String> {
    None
}

fn parse_one(text: &str) -> ConfigTxt {
    parse("config.txt", text, &mut no_includes)
}

/// Parses with includes served from `files` (name, content).
fn parse_with(text: &str, files: &[(&str, &str)]) -> ConfigTxt {
    let mut reader = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| t.to_string())
    };
    parse("config.txt", text, &mut reader)
}

fn codes(cfg: &ConfigTxt) -> Vec<&str> {
    cfg.findings.iter().map(|f| f.code.as_str()).collect()
}

/// nixpkgs sd-image-aarch64.nix's config.txt.
const NIXOS: &str = "[pi3]
kernel=u-boot-rpi3.bin

[pi02]
kernel=u-boot-rpi3.bin

[pi4]
kernel=u-boot-rpi4.bin
enable_gic=1
armstub=armstub8-gic.bin

# Otherwise the resolution will be weird in most cases, compared to
# what the pi3 firmware does by default.
disable_overscan=1

# Supported in newer board revisions
arm_boost=1

[cm4]
# Enable host mode on the 2711 built-in XHCI USB controller.
# This line should be removed if the legacy DWC2 controller is required
# (e.g. for USB device mode) or if USB support is not required.
otg_mode=1

[all]
# Boot in 64-bit mode.
arm_64bit=1

# U-Boot needs this to work, regardless of whether UART is actually used or not.
# Look in arch/arm/mach-bcm283x/Kconfig in the U-Boot tree to see if this is still
# a requirement in the future.
enable_uart=1

# Prevent the firmware from smashing the framebuffer setup done by the mainline kernel
# when attempting to show low-voltage or overtemperature warnings.
avoid_warnings=1
";

#[test]
fn nixos_on_pi3() {
    let cfg = parse_one(NIXOS);
    assert!(cfg.findings.is_empty(), "{:?}", cfg.findings);
    assert_eq!(cfg.sections, ["pi3", "pi02", "pi4", "cm4", "all"]);
    let eff = cfg.effective(&["pi3"]);
    let kernel = eff.last("kernel").expect("kernel is set for a Pi 3");
    assert_eq!((kernel.value.as_str(), kernel.line), ("u-boot-rpi3.bin", 2));
    assert_eq!(kernel.filters, ["pi3"]);
    assert!(!kernel.is_conditional());
    assert!(eff.arm_64bit());
    assert_eq!(eff.get("enable_uart"), Some("1"));
    assert_eq!(eff.get("avoid_warnings"), Some("1"));
    assert_eq!(eff.get("enable_gic"), None);
    assert_eq!(eff.armstub(), None);
    assert_eq!(eff.get("otg_mode"), None);
    assert_eq!(eff.kernel_path(KernelFamily::Armv7), "u-boot-rpi3.bin");
    assert_eq!(
        eff.start_files(false),
        ("start.elf".to_string(), "fixup.dat".to_string())
    );
    assert_eq!(eff.cmdline_file(), "cmdline.txt");
    assert_eq!(eff.device_tree(), DeviceTree::Default);
}

#[test]
fn nixos_on_pi4_and_cm4() {
    let cfg = parse_one(NIXOS);
    let pi4 = cfg.effective(&["pi4"]);
    assert_eq!(pi4.get("kernel"), Some("u-boot-rpi4.bin"));
    assert_eq!(pi4.armstub().as_deref(), Some("armstub8-gic.bin"));
    assert_eq!(pi4.get("enable_gic"), Some("1"));
    assert_eq!(pi4.get("disable_overscan"), Some("1"));
    assert_eq!(pi4.get("arm_boost"), Some("1"));
    assert_eq!(pi4.get("otg_mode"), None);
    assert!(pi4.arm_64bit());
    assert_eq!(
        pi4.start_files(true),
        ("start4.elf".to_string(), "fixup4.dat".to_string())
    );

    let cm4 = cfg.effective(&["pi4", "cm4"]);
    assert_eq!(cm4.get("otg_mode"), Some("1"));
    assert_eq!(cm4.get("kernel"), Some("u-boot-rpi4.bin"));
    assert_eq!(cm4.armstub().as_deref(), Some("armstub8-gic.bin"));
    // The [cm4] section replaced [pi4]: otg_mode is under cm4 alone.
    assert_eq!(
        cm4.last("otg_mode").map(|s| s.filters.clone()),
        Some(vec!["cm4".to_string()])
    );
}

#[test]
fn nixos_zero2w_takes_the_pi02_section_not_pi3() {
    // Per conditional.adoc the Zero 2 W answers to [pi0], [pi0w] and [pi02], not [pi3].
    let cfg = parse_one(NIXOS);
    let zero2 = cfg.effective(&["pi0", "pi0w", "pi02"]);
    let kernel = zero2.last("kernel").expect("kernel is set for a Zero 2 W");
    assert_eq!((kernel.value.as_str(), kernel.line), ("u-boot-rpi3.bin", 5));
    assert_eq!(zero2.all_of("kernel").len(), 1);
    // A 3B+ sees [pi3] only once: [pi02] replaced the model filter.
    let b3plus = cfg.effective(&["pi3", "pi3+"]);
    assert_eq!(b3plus.last("kernel").map(|s| s.line), Some(2));
    // A Pi 1 gets no kernel= at all and falls back to the default name.
    let pi1 = cfg.effective(&["pi1"]);
    assert_eq!(pi1.get("kernel"), None);
    assert_eq!(pi1.kernel_path(KernelFamily::Armv6), "kernel.img");
}

const PFTF_RPI3_KEYS: &[(&str, &str)] = &[
    ("arm_64bit", "1"),
    ("disable_commandline_tags", "2"),
    ("disable_overscan", "1"),
    ("enable_uart", "1"),
    ("uart_2ndstage", "1"),
    ("armstub", "RPI_EFI.fd"),
    ("device_tree_address", "0x1f0000"),
    ("device_tree_end", "0x200000"),
];

fn pftf_text(eol: &str) -> String {
    let mut text = format!("# UEFI firmware{eol}");
    for (k, v) in PFTF_RPI3_KEYS {
        text.push_str(&format!("{k}={v}{eol}"));
    }
    text
}

#[test]
fn pftf_crlf_parses_like_lf() {
    let crlf = parse_one(&pftf_text("\r\n"));
    let lf = parse_one(&pftf_text("\n"));
    assert_eq!(crlf, lf);
    assert!(crlf.findings.is_empty(), "{:?}", crlf.findings);
    let eff = crlf.effective(&["pi3"]);
    for (k, v) in PFTF_RPI3_KEYS {
        assert_eq!(eff.get(k), Some(*v), "{k}");
    }
    assert!(eff.settings.iter().all(|s| !s.value.contains('\r')));
    assert_eq!(eff.armstub().as_deref(), Some("RPI_EFI.fd"));
    assert_eq!(
        eff.get("device_tree_address").and_then(query::int_value),
        Some(0x1f0000)
    );
    assert_eq!(crlf.bootcode_view().get("uart_2ndstage"), Some("1"));
    assert_eq!(crlf.bootcode_view().get("armstub"), None);
}

const RPI_OS: &str = "dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
arm_64bit=1
disable_overscan=1

[cm4]
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host

[all]
dtoverlay=disable-bt
include extraconfig.txt
enable_uart=1
";

const EXTRA: &str = "# local additions\ndtoverlay=i2c-rtc,ds3231\ndtparam=i2c_arm=on\n";

#[test]
fn raspberry_pi_os_with_repeats_sections_and_include() {
    let cfg = parse_with(RPI_OS, &[("extraconfig.txt", EXTRA)]);
    assert!(cfg.findings.is_empty(), "{:?}", cfg.findings);
    assert_eq!(cfg.includes, ["extraconfig.txt"]);

    let pi4 = cfg.effective(&["pi4"]);
    assert_eq!(
        pi4.all_of("dtoverlay"),
        ["vc4-kms-v3d", "disable-bt", "i2c-rtc,ds3231"]
    );
    assert_eq!(pi4.all_of("dtparam"), ["audio=on", "i2c_arm=on"]);
    assert_eq!(pi4.get("otg_mode"), None);
    assert_eq!(pi4.get("enable_uart"), Some("1"));
    let rtc = pi4.settings.iter().find(|s| s.value == "i2c-rtc,ds3231");
    let rtc = rtc.expect("included overlay is applied");
    assert_eq!((rtc.file.as_str(), rtc.line), ("extraconfig.txt", 2));
    assert_eq!(
        pi4.overlay_paths(),
        [
            "overlays/vc4-kms-v3d.dtbo",
            "overlays/disable-bt.dtbo",
            "overlays/i2c-rtc.dtbo"
        ]
    );

    let cm4 = cfg.effective(&["pi4", "cm4"]);
    assert_eq!(cm4.get("otg_mode"), Some("1"));
    let cm5 = cfg.effective(&["pi5", "cm5"]);
    assert_eq!(
        cm5.all_of("dtoverlay"),
        [
            "vc4-kms-v3d",
            "dwc2,dr_mode=host",
            "disable-bt",
            "i2c-rtc,ds3231"
        ]
    );
}

#[test]
fn none_blocks_until_all() {
    let cfg = parse_one("[none]\nkernel=a.img\n[pi3]\nkernel=b.img\n[all]\ncmdline=c.txt\n");
    let eff = cfg.effective(&["pi3"]);
    assert_eq!(eff.get("kernel"), None);
    assert_eq!(eff.get("cmdline"), Some("c.txt"));
    assert_eq!(cfg.settings[1].filters, ["none", "pi3"]);
}

#[test]
fn same_type_filter_replaces_without_all() {
    let cfg = parse_one("[pi3]\nkernel=three.img\n[pi4]\nkernel=four.img\nenable_gic=1\n");
    let pi3 = cfg.effective(&["pi3"]);
    assert_eq!(pi3.all_of("kernel"), ["three.img"]);
    assert_eq!(pi3.get("enable_gic"), None);
    let pi4 = cfg.effective(&["pi4"]);
    assert_eq!(pi4.all_of("kernel"), ["four.img"]);
    assert_eq!(
        pi4.last("enable_gic").map(|s| s.filters.clone()),
        Some(vec!["pi4".to_string()])
    );
}

#[test]
fn different_types_combine_and_unknowns_are_marked() {
    let text = "kernel=k1.img\n[pi4]\n[EDID=DEL-DELL_U2422H]\nkernel=k2.img\n[tryboot]\nkernel=k3.img\n[all]\nhdmi_mode=4\n";
    let cfg = parse_one(text);
    let pi3 = cfg.effective(&["pi3"]);
    assert_eq!(pi3.get("kernel"), Some("k1.img"));
    let pi4 = cfg.effective(&["pi4"]);
    // [tryboot] replaced nothing of another type: EDID and pi4 still hold, tryboot never does.
    assert_eq!(pi4.all_of("kernel"), ["k1.img", "k2.img"]);
    let k2 = pi4.last("kernel").expect("kernel set");
    assert_eq!(k2.unknown_conditions, ["EDID=DEL-DELL_U2422H"]);
    let candidates: Vec<&str> = pi4
        .candidates("kernel")
        .iter()
        .map(|s| s.value.as_str())
        .collect();
    assert_eq!(candidates, ["k1.img", "k2.img"]);
    assert!(!pi4.last("hdmi_mode").expect("set").is_conditional());
}

#[test]
fn board_type_filter_needs_the_callers_board_type() {
    let cfg = parse_one("[board-type=0x11]\narm_boost=1\n");
    let unknown = cfg.effective(&["pi4"]);
    assert_eq!(
        unknown
            .last("arm_boost")
            .map(|s| s.unknown_conditions.clone()),
        Some(vec!["board-type=0x11".to_string()])
    );
    assert_eq!(
        cfg.effective(&["pi4", "board-type=0x11"]).get("arm_boost"),
        Some("1")
    );
    assert_eq!(
        cfg.effective(&["pi4", "pi400", "board-type=0x13"])
            .get("arm_boost"),
        None
    );
}

#[test]
fn bootcode_sees_start_file_in_any_section_but_not_includes() {
    let text = "[pi4]\nstart_file=start4x.elf\nfixup_file=fixup4x.dat\nkernel=k4.img\n[all]\ninclude more.txt\n";
    let cfg = parse_with(text, &[("more.txt", "gpu_mem=16\n")]);
    let boot = cfg.bootcode_view();
    assert_eq!(
        boot.start_files(false),
        ("start4x.elf".to_string(), "fixup4x.dat".to_string())
    );
    assert_eq!(boot.get("kernel"), None);
    assert_eq!(boot.get("gpu_mem"), None);
    assert_eq!(
        boot.last("start_file").map(|s| s.filters.clone()),
        Some(vec!["pi4".to_string()])
    );
    // start.elf on a Pi 3 skips the [pi4] section but reads the include.
    let pi3 = cfg.effective(&["pi3"]);
    assert_eq!(pi3.get("start_file"), None);
    assert_eq!(pi3.get("gpu_mem"), Some("16"));
}

#[test]
fn start_file_variants() {
    let pair =
        |text: &str, soc_is_2711: bool| parse_one(text).bootcode_view().start_files(soc_is_2711);
    let p = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(pair("start_x=1\n", false), p("start_x.elf", "fixup_x.dat"));
    assert_eq!(pair("start_x=1\n", true), p("start4x.elf", "fixup4x.dat"));
    assert_eq!(
        pair("start_debug=1\n", false),
        p("start_db.elf", "fixup_db.dat")
    );
    assert_eq!(
        pair("start_debug=1\n", true),
        p("start4db.elf", "fixup4db.dat")
    );
    assert_eq!(
        pair("gpu_mem=16\n", false),
        p("start_cd.elf", "fixup_cd.dat")
    );
    assert_eq!(
        pair("start_cd=1\n", true),
        p("start4cd.elf", "fixup4cd.dat")
    );
    assert_eq!(
        pair("gpu_mem=64\nstart_x=0\n", false),
        p("start.elf", "fixup.dat")
    );
    assert_eq!(
        pair("start_x=1\nfixup_file=f.dat\n", false),
        p("start_x.elf", "f.dat")
    );
}

#[test]
fn kernel_defaults_per_family() {
    let plain = parse_one("").effective(&["pi4"]);
    let arm64 = parse_one("arm_64bit=1\n").effective(&["pi4"]);
    assert_eq!(plain.kernel_path(KernelFamily::Armv6), "kernel.img");
    assert_eq!(plain.kernel_path(KernelFamily::Armv7), "kernel7.img");
    assert_eq!(plain.kernel_path(KernelFamily::Bcm2711), "kernel7l.img");
    assert_eq!(plain.kernel_path(KernelFamily::Bcm2712), "kernel_2712.img");
    assert_eq!(arm64.kernel_path(KernelFamily::Armv6), "kernel.img");
    assert_eq!(arm64.kernel_path(KernelFamily::Armv7), "kernel8.img");
    assert_eq!(arm64.kernel_path(KernelFamily::Bcm2711), "kernel8.img");
}

#[test]
fn os_prefix_applies_to_os_files_only() {
    let text = "os_prefix=nixos/\nkernel=u-boot.bin\ninitramfs initrd.img,extra.img followkernel\ncmdline=cmd.txt\ndevice_tree=my.dtb\narmstub=/stub.bin\n";
    let eff = parse_one(text).effective(&["pi3"]);
    assert_eq!(eff.os_prefix(), Some("nixos/"));
    assert_eq!(eff.kernel_path(KernelFamily::Armv7), "nixos/u-boot.bin");
    assert_eq!(eff.initramfs(), ["nixos/initrd.img", "nixos/extra.img"]);
    assert_eq!(eff.cmdline_file(), "nixos/cmd.txt");
    assert_eq!(
        eff.device_tree(),
        DeviceTree::File("nixos/my.dtb".to_string())
    );
    assert_eq!(eff.armstub().as_deref(), Some("stub.bin"));

    let absolute = parse_one("os_prefix=a/\nkernel=/shared.img\n").effective(&[]);
    assert_eq!(absolute.kernel_path(KernelFamily::Armv7), "shared.img");
    let upstream = parse_one("upstream_kernel=1\narm_64bit=1\n").effective(&[]);
    assert_eq!(
        upstream.kernel_path(KernelFamily::Armv7),
        "upstream/kernel8.img"
    );
    let no_dt = parse_one("device_tree=\n").effective(&[]);
    assert_eq!(no_dt.device_tree(), DeviceTree::Disabled);
}

#[test]
fn initramfs_space_syntax_and_misuse() {
    let cfg = parse_one("initramfs initrd.img 0x00800000\nramfsfile=a.cpio,b.cpio\n");
    assert_eq!(cfg.settings[0].key, "initramfs");
    assert_eq!(cfg.settings[0].value, "initrd.img 0x00800000");
    // The later ramfsfile= line names the files.
    assert_eq!(cfg.effective(&[]).initramfs(), ["a.cpio", "b.cpio"]);
    let misuse = parse_one("initramfs=initrd.img\n");
    assert_eq!(codes(&misuse), ["configtxt-initramfs-syntax"]);
}

#[test]
fn include_cycle_is_refused() {
    let cfg = parse_with(
        "a=1\ninclude b.txt\n",
        &[
            ("b.txt", "b=1\ninclude C.TXT\n"),
            ("c.txt", "c=1\ninclude CONFIG.TXT\ninclude c.txt\n"),
        ],
    );
    assert_eq!(cfg.includes, ["b.txt", "C.TXT"]);
    assert_eq!(
        codes(&cfg),
        ["configtxt-include-cycle", "configtxt-include-cycle"]
    );
    let keys: Vec<&str> = cfg.settings.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
}

#[test]
fn include_depth_and_count_are_capped() {
    let files: Vec<(String, String)> = (1..=10)
        .map(|i| {
            (
                format!("f{i}.txt"),
                format!("k{i}=1\ninclude f{}.txt\n", i + 1),
            )
        })
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let cfg = parse_with("include f1.txt\n", &files);
    let keys: Vec<&str> = cfg.settings.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["k1", "k2", "k3", "k4"]);
    assert_eq!(codes(&cfg), ["configtxt-include-too-deep"]);

    let many = "include x.txt\n".repeat(MAX_INCLUDES + 3);
    let cfg = parse_with(&many, &[("x.txt", "x=1\n")]);
    assert_eq!(cfg.settings.len(), MAX_INCLUDES);
    assert_eq!(cfg.findings.len(), 3);
    assert!(
        codes(&cfg)
            .iter()
            .all(|c| *c == "configtxt-too-many-includes")
    );
}

#[test]
fn missing_include_is_reported() {
    let cfg = parse_one("include usercfg.txt\nkernel=k.img\n");
    assert_eq!(codes(&cfg), ["configtxt-include-missing"]);
    assert!(cfg.includes.is_empty());
    assert_eq!(cfg.effective(&[]).get("kernel"), Some("k.img"));
}

#[test]
fn include_under_a_filter_is_gated() {
    let cfg = parse_with(
        "[pi4]\ninclude pi4.txt\n[all]\n",
        &[("pi4.txt", "arm_boost=1\n[all]\nx=1\n")],
    );
    assert_eq!(cfg.effective(&["pi3"]).get("arm_boost"), None);
    assert_eq!(cfg.effective(&["pi3"]).get("x"), None);
    let pi4 = cfg.effective(&["pi4"]);
    assert_eq!(pi4.get("arm_boost"), Some("1"));
    let x = pi4.last("x").expect("x applies on a Pi 4");
    assert_eq!(
        (x.filters.len(), x.include_filters.clone()),
        (0, vec!["pi4".to_string()])
    );
    assert_eq!(codes(&cfg), ["configtxt-include-changes-filters"]);
}

#[test]
fn oddities_are_recorded_and_flagged() {
    let text = "kernel = spaced.img\ncmdline=cmd.txt # my cmdline\n[pi9]\nhello\n[pi3\n=1\n";
    let cfg = parse_one(text);
    assert_eq!(
        codes(&cfg),
        [
            "configtxt-space-around-equals",
            "configtxt-inline-comment",
            "configtxt-unknown-filter",
            "configtxt-malformed-line",
            "configtxt-malformed-line",
            "configtxt-malformed-line",
        ]
    );
    let eff = cfg.effective(&["pi3"]);
    assert_eq!(eff.get("kernel"), None);
    assert_eq!(eff.get("kernel "), Some(" spaced.img"));
    assert_eq!(eff.get("cmdline"), Some("cmd.txt # my cmdline"));
    assert_eq!(cfg.sections, ["pi9"]);
    // The unknown [pi9] changed nothing: the line after it is unconditional.
    assert!(cfg.settings.iter().all(|s| s.filters.is_empty()));
}

#[test]
fn long_lines_are_cut_at_the_firmware_limit() {
    let value = "a".repeat(120);
    let cfg = parse_one(&format!("cmdline={value}\n"));
    assert_eq!(cfg.settings[0].value.len(), LINE_LIMIT - "cmdline=".len());
    assert_eq!(codes(&cfg), ["configtxt-line-too-long"]);

    let comment = format!("#{}force_turbo=1\n", " ".repeat(100));
    assert_eq!(codes(&parse_one(&comment)), ["configtxt-line-too-long"]);
    // A multi-byte character straddling the limit does not split.
    let wide = format!("kk={}\n", "é".repeat(80));
    let cfg = parse_one(&wide);
    assert!(cfg.settings[0].value.chars().all(|c| c == 'é'));
}

#[test]
fn garbage_never_panics() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"[]=#\r\n \tinclude initramfs pi3 all none 0x gpio4=1 HDMI:1 a\xff\x00";
    for round in 0..200 {
        let bytes: Vec<u8> = (0..(next() % 2000))
            .map(|_| {
                let r = next();
                if round % 2 == 0 {
                    r as u8
                } else {
                    alphabet[(r % alphabet.len() as u64) as usize]
                }
            })
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        let mut reader = |_: &str| Some(text.to_string());
        let cfg = parse("config.txt", &text, &mut reader);
        let lines = text.split('\n').count();
        assert!(cfg.settings.iter().all(|s| s.line >= 1 && s.line <= lines));
        let eff = cfg.effective(&["pi3"]);
        let _ = (eff.start_files(false), eff.kernel_path(KernelFamily::Armv7));
        let _ = (eff.initramfs(), eff.overlay_paths(), cfg.bootcode_view());
    }
    let huge = format!("{}\n{}", "x".repeat(1 << 20), "[".repeat(1 << 16));
    let cfg = parse_one(&huge);
    assert_eq!(
        codes(&cfg),
        [
            "configtxt-line-too-long",
            "configtxt-malformed-line",
            "configtxt-line-too-long",
            "configtxt-malformed-line"
        ]
    );
}
