//! The UEFI settings inside a pftf `RPI_EFI.fd`, and carrying them from one release to the next.
//!
//! The pftf firmware has no flash chip to keep its settings in, so it keeps them in the
//! firmware file itself: `RPI_EFI.fd` is a flash-device image whose last region is an EDK2
//! variable store, written back to the card when the user saves settings (pftf/RPi4#138,
//! #210). So a card's `RPI_EFI.fd` legitimately differs from the release's after a save, and
//! replacing the file with a new release's loses the settings unless the region is carried.
//!
//! # The layout (edk2-platforms `Platform/RaspberryPi/RPi3/RPi3.fdf`; RPi4 is alike)
//!
//! pftf RPi3 v1.50's FD is 0x1f0000 bytes; its non-volatile region starts at 0x1d0000 and
//! runs 0x20000 bytes (variable store 0xe000, event log at 0x1de000, fault-tolerant-write
//! working block at 0x1df000, spare at 0x1e0000); v1.12-v1.22 had a 0x200000 FD with the
//! region at 0x1e0000 (FIELD-NOTES, from RPi3.fdf). The region opens with a firmware-volume
//! header (`EFI_FIRMWARE_VOLUME_HEADER`, PI spec vol. 3 §3.2.1: zero
//! vector 16 bytes, `FileSystemGuid` at 16 = `gEfiSystemNvDataFvGuid`
//! FFF12B8D-7696-4C8B-A985-2747075B4F50, `FvLength` u64 at 32, `"_FVH"` at 40, attributes u32
//! at 44, `HeaderLength` u16 at 48, checksum u16 at 50 making the header's u16 sum zero), then
//! at `HeaderLength` a `VARIABLE_STORE_HEADER` (signature GUID: `gEfiAuthenticatedVariableGuid`
//! AAF32C78-947B-439A-A180-2E144EC37792 or `gEfiVariableGuid` DDCF3616-3275-4164-98B6-FE85707FFE7D;
//! size u32; format u8 = 0x5A; state u8 = 0xFE), then the variables (each starts 0x55AA, 4-byte
//! aligned), then the event log, the fault-tolerant-write working block and spare.
//!
//! pifw does not hard-code the offset: it looks for the NV firmware volume at every 4 KiB
//! boundary, checks its header checksum, and treats the whole `FvLength` as the settings
//! region. Carrying over copies the old file's region into the new file's bytes only when both
//! have the region at the same offset, with the same length and the same variable-store
//! format; otherwise [`carry_over`] says why it cannot, and the plan shows that reason.
//!
//! No real RPI_EFI.fd could be had where pifw is developed (pftf's releases cannot be
//! downloaded there): the layout above is the .fdf's, and the integration tests check this
//! module on files with that layout whose variables were written by an independent tool
//! (virt-fw-vars), not on pftf's own build.
//!
//! Must not: touch the card or print. Works on whole files in memory (an FD is 2 MiB, and
//! [`MAX_FD`] caps what is read).

use serde::Serialize;

/// Largest firmware file this module reads.
pub const MAX_FD: u64 = 16 * 1024 * 1024;

const FVH: &[u8; 4] = b"_FVH";
/// gEfiSystemNvDataFvGuid, as stored (little-endian fields).
const NV_DATA_FV: [u8; 16] = [
    0x8d, 0x2b, 0xf1, 0xff, 0x96, 0x76, 0x8b, 0x4c, 0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f, 0x50,
];
/// gEfiAuthenticatedVariableGuid.
const AUTH_VARS: [u8; 16] = [
    0x78, 0x2c, 0xf3, 0xaa, 0x7b, 0x94, 0x9a, 0x43, 0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92,
];
/// gEfiVariableGuid.
const PLAIN_VARS: [u8; 16] = [
    0x16, 0x36, 0xcf, 0xdd, 0x75, 0x32, 0x64, 0x41, 0x98, 0xb6, 0xfe, 0x85, 0x70, 0x7f, 0xfe, 0x7d,
];
const VAR_START: u16 = 0x55aa;
const VAR_ADDED: u8 = 0x3f;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreFormat {
    /// Variables with the authenticated header (60 bytes).
    Authenticated,
    /// Variables with the plain header (32 bytes).
    Plain,
}

/// The settings region of a firmware file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvStore {
    /// Byte offset of the NV firmware volume in the file.
    pub offset: u64,
    /// `FvLength`: the whole settings region (variables, event log, FTW blocks).
    pub length: u64,
    pub format: StoreFormat,
    /// Names of the live variables (state VAR_ADDED), in store order.
    pub variables: Vec<String>,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// Finds the settings region of `fd`, if it has one pifw recognises.
pub fn find_nv_store(fd: &[u8]) -> Option<NvStore> {
    (0..fd.len())
        .step_by(4096)
        .find_map(|off| nv_store_at(fd, off))
}

fn nv_store_at(fd: &[u8], off: usize) -> Option<NvStore> {
    let h = fd.get(off..)?;
    if h.get(40..44)? != FVH || h.get(16..32)? != NV_DATA_FV {
        return None;
    }
    let length = u64_at(h, 32)?;
    let header_len = u16_at(h, 48)? as usize;
    if length == 0 || length > h.len() as u64 || !(56..=4096).contains(&header_len) {
        return None;
    }
    let sum = (0..header_len / 2)
        .map(|i| u16_at(h, i * 2).unwrap_or(0))
        .fold(0u16, u16::wrapping_add);
    if sum != 0 {
        return None;
    }
    let store = h.get(header_len..length as usize)?;
    let format = match store.get(0..16)? {
        g if g == AUTH_VARS => StoreFormat::Authenticated,
        g if g == PLAIN_VARS => StoreFormat::Plain,
        _ => return None,
    };
    let store_size = (u32_at(store, 16)? as usize).min(store.len());
    let header = match format {
        StoreFormat::Authenticated => 60,
        StoreFormat::Plain => 32,
    };
    // NameSize, DataSize and the GUID sit at the end of either header.
    let (name_at, data_at) = (header - 24, header - 20);
    let mut variables = Vec::new();
    let mut p = 28;
    while p + header <= store_size {
        if u16_at(store, p)? != VAR_START {
            break;
        }
        let state = store[p + 2];
        let name_size = u32_at(store, p + name_at)? as usize;
        let data_size = u32_at(store, p + data_at)? as usize;
        let end = p
            .checked_add(header)?
            .checked_add(name_size)?
            .checked_add(data_size)?;
        if end > store_size {
            break;
        }
        if state == VAR_ADDED {
            let name: Vec<u16> = store[p + header..p + header + name_size]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            variables.push(String::from_utf16_lossy(&name));
        }
        p = (end + 3) & !3;
    }
    Some(NvStore {
        offset: off as u64,
        length,
        format,
        variables,
    })
}

/// What happened to the settings when a firmware file was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CarryOver {
    /// The old file's settings region was copied into the new file.
    pub carried: bool,
    /// Variables the old file held (live ones).
    pub variables: usize,
    /// Why not, when not carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Copies the settings region of `old` into `new` (in place) when both have it in the same
/// place and format; returns what was done and, if nothing, why.
pub fn carry_over(old: &[u8], new: &mut [u8]) -> CarryOver {
    let not = |variables, reason: String| CarryOver {
        carried: false,
        variables,
        reason: Some(reason),
    };
    let Some(o) = find_nv_store(old) else {
        return not(
            0,
            "the firmware on the card has no variable store pifw recognises".into(),
        );
    };
    let Some(n) = find_nv_store(new) else {
        return not(
            o.variables.len(),
            "the new firmware has no variable store pifw recognises".into(),
        );
    };
    if (o.offset, o.length, o.format) != (n.offset, n.length, n.format) {
        return not(
            o.variables.len(),
            format!(
                "the variable store moved (card: {:#x}+{:#x} {:?}, new: {:#x}+{:#x} {:?}); the settings must be made again in the firmware's setup",
                o.offset, o.length, o.format, n.offset, n.length, n.format
            ),
        );
    }
    if o.variables.is_empty() {
        return not(0, "no settings were saved on the card".into());
    }
    let (start, end) = (o.offset as usize, (o.offset + o.length) as usize);
    new[start..end].copy_from_slice(&old[start..end]);
    CarryOver {
        carried: true,
        variables: o.variables.len(),
        reason: None,
    }
}

/// Debian's arm64 kernel image (linux-image-6.1.0-50-arm64-unsigned 6.1.176-1,
/// `boot/vmlinuz-6.1.0-50-arm64`, an uncompressed arm64 Image), measured: what one kernel on
/// the partition costs. NixOS's aarch64 kernels could not be had here to measure.
pub const MEASURED_KERNEL_BYTES: u64 = 32_954_880;

/// An initrd, **estimated, not measured**: initrds are built on the installed system and none
/// could be had here. Taken low on purpose, so that pifw refuses only cards that cannot hold
/// even a small one.
pub const INITRD_ESTIMATE_BYTES: u64 = 16 * 1024 * 1024;

/// Which EFI loader `switch uefi --bootloader` installs (the domain's copy of the CLI choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    SystemdBoot,
    Grub,
}

/// Room on the firmware partition once the switch is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub partition_bytes: u64,
    /// Free space left after the switch's files are in (replaced files give theirs back).
    pub free_after: u64,
}

/// Free space after replacing or adding `changes` ((path, new size)) on the card `report`
/// describes.
pub fn room_after(report: &crate::status::Report, changes: &[(&str, u64)]) -> Option<Room> {
    let fw = report.firmware.as_ref()?;
    let free = fw.free_bytes?;
    let new: u64 = changes.iter().map(|(_, s)| s).sum();
    let old: u64 = changes
        .iter()
        .filter_map(|(p, _)| report.card_file(p).map(|f| f.size))
        .sum();
    Some(Room {
        partition_bytes: fw.size_bytes,
        free_after: (free + old).saturating_sub(new),
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

/// Why `switch uefi --bootloader` will not install a loader on this card.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error(
        "systemd-boot would find nothing to boot on this card ({why}): after the switch the Pi would stop at systemd-boot's empty menu{room}. Way forward, in this order, so the Pi can always boot: {forward}"
    )]
    NothingToBoot {
        why: String,
        room: String,
        forward: String,
    },
    #[error(
        "systemd-boot would find nothing to boot on this card ({why}), and the firmware partition is too small for the kernels it loads from there: {} with {} free after the switch, but one arm64 kernel and initrd need about {} ({} kernel, Debian 6.1 measured, + {} initrd, an estimate), and NixOS keeps one per generation; --allow-no-boot-entries does not change that. {}",
        mib(*partition), mib(*free_after), mib(*need), mib(MEASURED_KERNEL_BYTES), mib(INITRD_ESTIMATE_BYTES), GROW
    )]
    TooSmall {
        why: String,
        partition: u64,
        free_after: u64,
        need: u64,
    },
    #[error(
        "GRUB would find no grub.cfg: it looks for {} on the firmware partition and none is there, so it would stop at its grub> prompt. Way forward: let the OS install its GRUB configuration there first (NixOS: {NIXOS_GRUB}; nixos-rebuild boot), then run this again; or pass --allow-no-boot-entries to install the loader anyway (the card will not boot until a grub.cfg exists)",
        candidates.join(", ")
    )]
    GrubNoConfig { candidates: Vec<String> },
}

/// What does enlarge the FAT (and what does not).
const GROW: &str = "pifw does not enlarge the FAT: --hybrid --grow only adds room for the backup GPT at the end of an image. A bigger firmware partition means moving or shrinking the root partition and growing the FAT with tools outside pifw (parted/gparted with fatresize, on another machine, after a backup), or re-flashing with a bigger one; or use --bootloader grub, which reads kernels from the root filesystem";

const NIXOS_SYSTEMD_BOOT: &str = "boot.loader.systemd-boot.enable = true; boot.loader.efi.canTouchEfiVariables = false; boot.loader.generic-extlinux-compatible.enable = false; fileSystems.\"/boot\" = { device = \"/dev/disk/by-label/FIRMWARE\"; fsType = \"vfat\"; }";

const NIXOS_GRUB: &str = "boot.loader.grub = { enable = true; efiSupport = true; efiInstallAsRemovable = true; device = \"nodev\"; }; boot.loader.efi.efiSysMountPoint = \"/boot/firmware\" (mounted, not noauto)";

/// Decides whether installing `loader` leaves a card whose chain reaches an OS, before any
/// write. `esp` is what the card holds now (entries are not touched by the switch), `efi` the
/// loader's bytes (GRUB's built-in prefix says where it looks), `room` the space left after
/// the switch. `Ok` carries notes for the plan; with `allow_no_entries` a loader with nothing
/// to boot is installed, and the notes say loudly that the card will not boot.
pub fn loader_readiness(
    esp: &crate::bls::Esp,
    card_files: &[&str],
    loader: Loader,
    efi: &[u8],
    room: Option<Room>,
    allow_no_entries: bool,
) -> Result<Vec<String>, NotReady> {
    let one = MEASURED_KERNEL_BYTES + INITRD_ESTIMATE_BYTES;
    match loader {
        Loader::SystemdBoot => {
            if let Some(e) = esp.default_boot().filter(|e| e.bootable) {
                let mut notes = vec![format!(
                    "systemd-boot will start \"{}\" ({}), the default of {} boot entr{} on the card",
                    e.shown_title(),
                    e.path,
                    esp.listed().count(),
                    if esp.listed().count() == 1 {
                        "y"
                    } else {
                        "ies"
                    }
                )];
                let this: u64 = e.files.iter().filter_map(|f| f.size).sum();
                if let Some(r) = room
                    && r.free_after < this
                {
                    notes.push(format!(
                        "only {} stays free: the next kernel and initrd the OS writes ({} for this entry) will not fit beside these; free space on the firmware partition, or the OS's next update fails to write its boot entry",
                        mib(r.free_after),
                        mib(this)
                    ));
                }
                return Ok(notes);
            }
            let why = match esp.default_boot() {
                Some(e) => format!(
                    "its default entry {} {}",
                    e.path,
                    e.problem.as_deref().unwrap_or("cannot boot")
                ),
                None if esp.entries.is_empty() => {
                    "no loader/entries/*.conf, no EFI/Linux/*.efi".to_string()
                }
                None => esp
                    .entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e.path,
                            e.problem.as_deref().unwrap_or("is skipped")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            if let Some(r) = room
                && r.free_after < one
            {
                return Err(NotReady::TooSmall {
                    why,
                    partition: r.partition_bytes,
                    free_after: r.free_after,
                    need: one,
                });
            }
            if allow_no_entries {
                return Ok(vec![format!(
                    "--allow-no-boot-entries: THE CARD WILL NOT BOOT after this switch until the OS has put its boot entries and kernels on the firmware partition ({why}); until then the Pi stops at systemd-boot's empty menu"
                )]);
            }
            let room = room
                .map(|r| {
                    format!(
                        "; the partition is {} with {} free after the switch, and one arm64 kernel and initrd take about {} ({} Debian 6.1 kernel, measured, + {} initrd, an estimate)",
                        mib(r.partition_bytes),
                        mib(r.free_after),
                        mib(one),
                        mib(MEASURED_KERNEL_BYTES),
                        mib(INITRD_ESTIMATE_BYTES)
                    )
                })
                .unwrap_or_default();
            Err(NotReady::NothingToBoot {
                why,
                room,
                forward: format!(
                    "(1) while the card still boots the old way, let the OS put its entries and kernels on the firmware partition (NixOS: {NIXOS_SYSTEMD_BOOT}; then nixos-rebuild boot); (2) check with pifw status that loader/entries/ holds an entry whose files are all there; (3) run this again. To install the loader before the entries exist anyway (preparing a card in steps): --allow-no-boot-entries"
                ),
            })
        }
        Loader::Grub => {
            let img = crate::probe::grub_image(efi)
                .ok()
                .flatten()
                .unwrap_or_default();
            let (candidates, elsewhere) = img.config_candidates();
            if let Some(found) = candidates
                .iter()
                .find(|c| card_files.iter().any(|f| f.eq_ignore_ascii_case(c)))
            {
                return Ok(vec![format!(
                    "GRUB will read {found} on the firmware partition (pifw does not follow it further)"
                )]);
            }
            if elsewhere {
                return Ok(vec![format!(
                    "GRUB looks for its grub.cfg on another partition ({}); pifw cannot check that it is there",
                    img.prefix.as_deref().unwrap_or("found by a search")
                )]);
            }
            if allow_no_entries {
                return Ok(vec![format!(
                    "--allow-no-boot-entries: THE CARD WILL NOT BOOT after this switch until a grub.cfg exists at {}; until then GRUB stops at its grub> prompt",
                    candidates.join(" or ")
                )]);
            }
            Err(NotReady::GrubNoConfig { candidates })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FD_LEN: usize = 0x1f0000;
    const NV: usize = 0x1d0000;

    /// Unit-test input built by hand from the spec offsets: an FD laid out as pftf RPi3
    /// v1.50's RPi3.fdf (0x1f0000 bytes; NV firmware volume at 0x1d0000, 0x20000 long;
    /// variable store 0xe000), code region filled with `fill`, the given variables in an
    /// authenticated store. The integration tests use no pifw code for this: their variables
    /// are written by virt-fw-vars (tests/common).
    fn synthetic_fd(fill: u8, variables: &[(&str, &[u8])]) -> Vec<u8> {
        let mut fd = vec![fill; FD_LEN];
        let nv = NV;
        fd[nv..].fill(0xff);
        let mut h = vec![0u8; 0x48];
        h[16..32].copy_from_slice(&NV_DATA_FV);
        h[32..40].copy_from_slice(&0x20000u64.to_le_bytes());
        h[40..44].copy_from_slice(FVH);
        h[44..48].copy_from_slice(&0x0004feffu32.to_le_bytes());
        h[48..50].copy_from_slice(&0x48u16.to_le_bytes());
        h[54] = 0;
        h[55] = 2;
        h[56..60].copy_from_slice(&0x20u32.to_le_bytes());
        h[60..64].copy_from_slice(&0x1000u32.to_le_bytes());
        let sum = (0..0x24)
            .map(|i| u16::from_le_bytes([h[i * 2], h[i * 2 + 1]]))
            .fold(0u16, u16::wrapping_add);
        h[50..52].copy_from_slice(&(0u16.wrapping_sub(sum)).to_le_bytes());
        fd[nv..nv + 0x48].copy_from_slice(&h);
        let s = nv + 0x48;
        fd[s..s + 16].copy_from_slice(&AUTH_VARS);
        fd[s + 16..s + 20].copy_from_slice(&0xdfb8u32.to_le_bytes());
        fd[s + 20] = 0x5a;
        fd[s + 21] = 0xfe;
        fd[s + 22..s + 28].fill(0);
        let mut p = s + 28;
        for (name, data) in variables {
            let name16: Vec<u8> = name
                .encode_utf16()
                .chain([0])
                .flat_map(|c| c.to_le_bytes())
                .collect();
            let mut v = vec![0u8; 60];
            v[0..2].copy_from_slice(&VAR_START.to_le_bytes());
            v[2] = VAR_ADDED;
            v[4..8].copy_from_slice(&7u32.to_le_bytes());
            v[36..40].copy_from_slice(&(name16.len() as u32).to_le_bytes());
            v[40..44].copy_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&name16);
            v.extend_from_slice(data);
            fd[p..p + v.len()].copy_from_slice(&v);
            p = (p + v.len() + 3) & !3;
        }
        fd
    }

    #[test]
    fn finds_the_store_and_its_variables() {
        let fd = synthetic_fd(0x11, &[("BootOrder", &[1, 0]), ("Timeout", &[5, 0])]);
        let s = find_nv_store(&fd).expect("store");
        assert_eq!((s.offset, s.length), (0x1d0000, 0x20000));
        assert_eq!(s.format, StoreFormat::Authenticated);
        assert_eq!(s.variables, ["BootOrder", "Timeout"]);
    }

    #[test]
    fn a_broken_header_checksum_is_not_a_store() {
        let mut fd = synthetic_fd(0, &[]);
        fd[NV + 44] ^= 1;
        assert_eq!(find_nv_store(&fd), None);
    }

    #[test]
    fn carries_settings_into_a_new_release() {
        let old = synthetic_fd(0x11, &[("BootOrder", &[1, 0])]);
        let mut new = synthetic_fd(0x22, &[]);
        let c = carry_over(&old, &mut new);
        assert!(c.carried, "{c:?}");
        assert_eq!(c.variables, 1);
        assert_eq!(&new[..NV], &synthetic_fd(0x22, &[])[..NV]);
        assert_eq!(&new[NV..], &old[NV..]);
    }

    #[test]
    fn refuses_to_carry_into_a_moved_store_and_says_why() {
        let old = synthetic_fd(0x11, &[("BootOrder", &[1, 0])]);
        let mut new = vec![0u8; 0x10000];
        new.extend_from_slice(&synthetic_fd(0x22, &[]));
        let before = new.clone();
        let c = carry_over(&old, &mut new);
        assert!(!c.carried);
        assert!(c.reason.unwrap().contains("moved"));
        assert_eq!(new, before);
    }

    #[test]
    fn nothing_saved_means_nothing_to_carry() {
        let old = synthetic_fd(0x11, &[]);
        let mut new = synthetic_fd(0x22, &[]);
        let c = carry_over(&old, &mut new);
        assert!(!c.carried);
        assert_eq!(c.variables, 0);
    }

    fn esp(entries: Vec<crate::bls::Entry>) -> crate::bls::Esp {
        let default_entry = entries.iter().find(|e| e.listed).map(|e| e.id.clone());
        crate::bls::Esp {
            entries,
            default_entry,
            ..Default::default()
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn systemd_boot_with_nothing_to_boot_is_refused_unless_overridden() {
        let room = Some(Room {
            partition_bytes: 256 * MIB,
            free_after: 200 * MIB,
        });
        let e =
            loader_readiness(&esp(vec![]), &[], Loader::SystemdBoot, &[], room, false).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, NotReady::NothingToBoot { .. }), "{msg}");
        assert!(
            msg.contains("256.0 MiB") && msg.contains("nixos-rebuild boot"),
            "{msg}"
        );
        let notes =
            loader_readiness(&esp(vec![]), &[], Loader::SystemdBoot, &[], room, true).unwrap();
        assert!(notes[0].contains("THE CARD WILL NOT BOOT"), "{notes:?}");
    }

    #[test]
    fn a_partition_too_small_for_one_kernel_is_refused_even_with_the_override() {
        let room = Some(Room {
            partition_bytes: 30 * MIB,
            free_after: 5 * MIB,
        });
        for allow in [false, true] {
            let e = loader_readiness(&esp(vec![]), &[], Loader::SystemdBoot, &[], room, allow)
                .unwrap_err();
            assert!(matches!(e, NotReady::TooSmall { .. }));
            let msg = e.to_string();
            assert!(
                msg.contains("31.4 MiB kernel") && msg.contains("16.0 MiB initrd, an estimate")
            );
            assert!(msg.contains("--hybrid --grow only adds room for the backup GPT"));
        }
    }

    #[test]
    fn a_complete_default_entry_is_ready_and_room_for_the_next_is_checked() {
        let mut e = crate::bls::parse_type1("loader/entries/a.conf", "title A\nlinux /k\n");
        e.listed = true;
        e.bootable = true;
        e.files[0].found = Some("k".into());
        e.files[0].size = Some(40 * MIB);
        let tight = Some(Room {
            partition_bytes: 64 * MIB,
            free_after: 10 * MIB,
        });
        let notes =
            loader_readiness(&esp(vec![e]), &[], Loader::SystemdBoot, &[], tight, false).unwrap();
        assert!(notes[0].contains("will start \"A\""), "{notes:?}");
        assert!(notes[1].contains("will not fit"), "{notes:?}");
    }

    #[test]
    fn grub_needs_its_grub_cfg_on_the_card() {
        // No GRUB image to read: the default places.
        let e = loader_readiness(
            &esp(vec![]),
            &["config.txt"],
            Loader::Grub,
            &[],
            None,
            false,
        )
        .unwrap_err();
        assert!(matches!(e, NotReady::GrubNoConfig { .. }));
        let notes = loader_readiness(
            &esp(vec![]),
            &["EFI/debian/GRUB.CFG"],
            Loader::Grub,
            &[],
            None,
            false,
        )
        .unwrap();
        assert!(notes[0].contains("EFI/debian/grub.cfg"), "{notes:?}");
    }
}
