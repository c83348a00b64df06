//! The read path assembled: disk → partition table → FAT → identification → boot chain →
//! findings, as one serialisable [`Report`].
//!
//! Pure with respect to the outside world: it reads the disk it is handed (through a reader
//! whose writes fail) and the manifests, and returns data. The command layer opens targets and
//! prints. The report is the `--json` schema (versioned by [`SCHEMA`]); see
//! `docs/status-json.md`.

use crate::bls;
use crate::configtxt::{self, ConfigTxt, KernelFamily};
use crate::disk::table::{self, FirmwarePartition, Layout, TableKind};
use crate::fat::{self, FatInfo, FileEntry, Inventory};
use crate::finding::{Finding, Severity};
use crate::manifest::{Board, Manifests, ReleaseKind};
use crate::probe::{self, Probe};
use fscommon::StreamSlice;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};

/// Version of the `--json` schema. Bumped on any incompatible change; fields are only added
/// within a version.
pub const SCHEMA: u32 = 1;

/// Largest `config.txt`/`cmdline.txt` pifw reads (the firmware's own limits are far lower).
const SMALL_FILE_CAP: u64 = 256 * 1024;

/// Below this, a firmware partition cannot serve systemd-boot with NixOS kernels: systemd-boot
/// copies every generation's kernel and initrd onto this partition.
const SYSTEMD_BOOT_MIN_BYTES: u64 = 256 * 1024 * 1024;

/// Findings from [`table::locate_firmware`] that apply to the Pi 3 family's boot ROM only.
const PI3_ROM_CODES: [&str; 4] = [
    "pure-gpt-unbootable-pi3",
    "firmware-type-0xef",
    "firmware-wrong-type",
    "firmware-not-slot1",
];

/// How the board was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum BoardChoice {
    /// `--board` on the command line.
    Given { id: String },
    /// Read from the running Pi's device tree.
    DeviceTree { id: String, model: String },
    /// Not known: the report covers every board the card serves.
    Unknown,
}

impl BoardChoice {
    pub fn id(&self) -> Option<&str> {
        match self {
            BoardChoice::Given { id } | BoardChoice::DeviceTree { id, .. } => Some(id),
            BoardChoice::Unknown => None,
        }
    }
}

/// `--board` names no board the manifests know.
#[derive(Debug, thiserror::Error)]
#[error("unknown board '{id}'; pifw knows: {known}")]
pub struct UnknownBoard {
    pub id: String,
    /// The known board ids, `, `-joined.
    pub known: String,
}

/// Which board a report is for: `given` (`--board`) wins; else, for a block device, the
/// running Pi's own device tree (`dt_model`, asked only then: an image file on a Pi is usually
/// for some other board, so it is inferred from the card instead).
pub fn resolve_board(
    manifests: &Manifests,
    given: Option<&str>,
    kind: crate::disk::target::TargetKind,
    dt_model: impl FnOnce() -> Option<String>,
) -> Result<BoardChoice, UnknownBoard> {
    if let Some(id) = given {
        if manifests.board(id).is_none() {
            let ids: Vec<&str> = manifests.boards.iter().map(|b| b.id.as_str()).collect();
            return Err(UnknownBoard {
                id: id.to_string(),
                known: ids.join(", "),
            });
        }
        return Ok(BoardChoice::Given { id: id.to_string() });
    }
    if kind == crate::disk::target::TargetKind::BlockDevice
        && let Some(model) = dt_model()
        && let Some(b) = manifests.board_by_dt_model(&model)
    {
        return Ok(BoardChoice::DeviceTree {
            id: b.id.clone(),
            model,
        });
    }
    Ok(BoardChoice::Unknown)
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub pifw_version: &'static str,
    pub target: TargetInfo,
    pub table: TableReport,
    /// The firmware partition, when one was found.
    pub firmware: Option<FirmwareReport>,
    pub board: BoardChoice,
    /// Boards the boot chains below were worked out for (all known boards when none was
    /// chosen, grouped by identical chains).
    pub chains: Vec<ChainReport>,
    /// Identified releases on the card, one line each.
    pub versions: Vec<VersionLine>,
    pub findings: Vec<Finding>,
    pub health: Health,
    /// Mounted partitions of the target and what a change would do about them; absent for an
    /// image file no loop device uses (filled in by the status command, not by [`inspect`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounts: Option<MountsReport>,
    /// Files on the card a backed-up change installed from a Debian archive release, with how
    /// they were verified (filled in by the status command from the backups, see
    /// [`crate::backup::provenance_of`]; absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub provenance: Vec<crate::backup::FileProvenance>,
}

/// What is mounted from the target, and whether a change would need to unmount something.
#[derive(Debug, Clone, Serialize)]
pub struct MountsReport {
    pub mounted: Vec<MountedPartition>,
    /// Mount points a change would unmount and mount back (the firmware partition's).
    pub change_unmounts: Vec<String>,
    /// Why a change would be refused now, when it would (a process uses the firmware
    /// partition, a loop device over the image, ...).
    pub change_refused: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MountedPartition {
    /// e.g. `/dev/mmcblk0p1`.
    pub device: String,
    pub mount_point: String,
    pub fstype: String,
    pub firmware: bool,
}

impl Report {
    /// What differs between this report and `now`, a later read of the same card, in the
    /// terms a plan depends on: the partition table (kind, ids, every entry) and the firmware
    /// partition (place, files by path, size and sha256, directories). Empty when a plan made
    /// from `self` still describes the card. Findings and identification are not compared.
    pub fn changes_since(&self, now: &Report) -> Vec<String> {
        let mut out = Vec::new();
        let table = |r: &Report| serde_json::to_string(&r.table).unwrap_or_default();
        if table(self) != table(now) || self.target.size_bytes != now.target.size_bytes {
            out.push("the partition table".to_string());
        }
        let place = |r: &Report| r.firmware.as_ref().map(|f| (f.offset_bytes, f.size_bytes));
        if place(self) != place(now) {
            out.push("the firmware partition's place".to_string());
        }
        let files = |r: &Report| -> std::collections::BTreeMap<String, (u64, String)> {
            r.firmware
                .iter()
                .flat_map(|f| &f.files)
                .map(|f| (f.path.to_ascii_lowercase(), (f.size, f.sha256.clone())))
                .collect()
        };
        let (before, after) = (files(self), files(now));
        let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
        names.sort();
        names.dedup();
        let differ: Vec<&str> = names
            .into_iter()
            .filter(|n| before.get(*n) != after.get(*n))
            .map(String::as_str)
            .collect();
        match differ.len() {
            0 => {}
            1..=4 => out.push(differ.join(", ")),
            n => out.push(format!(
                "{}, and {} more files",
                differ[..3].join(", "),
                n - 3
            )),
        }
        let dirs = |r: &Report| {
            let mut d: Vec<String> = r
                .firmware
                .iter()
                .flat_map(|f| &f.dirs)
                .map(|d| d.to_ascii_lowercase())
                .collect();
            d.sort();
            d
        };
        if dirs(self) != dirs(now) {
            out.push("the directories".to_string());
        }
        out
    }

    /// The firmware partition's file at `path`, matched case-insensitively as the firmware
    /// and FAT match names.
    pub fn card_file(&self, path: &str) -> Option<&FileReport> {
        self.firmware
            .as_ref()?
            .files
            .iter()
            .find(|f| f.path.eq_ignore_ascii_case(path))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    pub path: String,
    pub kind: crate::disk::target::TargetKind,
    pub size_bytes: u64,
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub kind: TableKind,
    /// MBR disk signature as `0x` + 8 hex digits.
    pub disk_signature: Option<String>,
    pub disk_guid: Option<String>,
    /// The partitions as Linux and U-Boot see them: the GPT's when the disk has a valid GPT,
    /// else the MBR's.
    pub partitions: Vec<PartitionReport>,
    /// The raw MBR entries, when the disk has an MBR (for a hybrid, what the Pi's ROM sees).
    pub mbr_entries: Vec<PartitionReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub number: u32,
    /// `mbr` or `gpt`.
    pub source: &'static str,
    pub start_lba: u64,
    pub sectors: u64,
    /// MBR: `0x0b`; GPT: the type GUID.
    #[serde(rename = "type")]
    pub type_: String,
    pub bootable: bool,
    pub name: Option<String>,
    /// What Linux calls it: `<disk-id>-NN` on MBR, the partition GUID (lowercase) on GPT.
    pub partuuid: String,
    /// Filesystem found by its magic: `vfat`, `ext4`, or none.
    pub filesystem: Option<&'static str>,
    pub firmware: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FirmwareReport {
    pub mbr_slot: Option<u32>,
    pub gpt_index: Option<u32>,
    pub type_byte: Option<String>,
    pub offset_bytes: u64,
    pub size_bytes: u64,
    pub pi3_rom_bootable: bool,
    /// FAT facts; absent when the partition is not a readable FAT.
    pub fat: Option<FatInfo>,
    pub fat_type: Option<String>,
    pub label: Option<String>,
    pub free_bytes: Option<u64>,
    /// The card's own id (`PIFW-ID.TXT`, see [`crate::backup::card_id`]): absent until pifw
    /// first changes the card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_id: Option<String>,
    pub files: Vec<FileReport>,
    pub dirs: Vec<String>,
    /// What systemd-boot would find here (Boot Loader Specification entries and
    /// `loader/loader.conf`), whatever the card boots today; absent when the FAT is unreadable.
    pub bls: Option<bls::Esp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// What the manifests say this file is, when its hash is pinned.
    pub identified: Option<Identity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub kind: ReleaseKind,
    pub version: String,
    pub flavour: String,
    /// U-Boot defconfig, for U-Boot builds.
    pub build: Option<String>,
    /// The name the release gives this file (may differ from the name on the card).
    pub release_name: String,
}

impl Identity {
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            ReleaseKind::Firmware => "Pi firmware",
            ReleaseKind::UBoot => "U-Boot",
            ReleaseKind::Uefi => "pftf UEFI",
        };
        let mut s = format!("{kind} {}, {}", self.version, self.flavour);
        if let Some(b) = &self.build {
            s.push_str(&format!(" build, {b}"));
        }
        s
    }
}

/// One identified release present on the card, and the files that belong to it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionLine {
    pub kind: ReleaseKind,
    pub version: String,
    pub flavour: String,
    pub build: Option<String>,
    pub files: Vec<String>,
}

/// What a boot chain hands over to after the Pi firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ChainKind {
    #[serde(rename = "u-boot")]
    UBoot,
    #[serde(rename = "uefi")]
    Uefi,
    #[serde(rename = "linux")]
    Linux,
    #[serde(rename = "unknown")]
    Unknown,
}

impl ChainKind {
    /// The word status and `--json` use.
    pub fn as_str(self) -> &'static str {
        match self {
            ChainKind::UBoot => "u-boot",
            ChainKind::Uefi => "uefi",
            ChainKind::Linux => "linux",
            ChainKind::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ChainKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One boot chain, shared by the boards listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub boards: Vec<String>,
    /// `u-boot`, `uefi`, `linux`, or `unknown`.
    pub kind: ChainKind,
    pub stages: Vec<Stage>,
    /// Every firmware stage's file is present (up to the kernel or the EFI loader; what the
    /// loader goes on to is judged by `efi`).
    pub complete: bool,
    /// For a UEFI chain: what the EFI loader will start.
    pub efi: Option<EfiChain>,
    /// The versions this chain runs, by component (`firmware`, `u-boot`, `uefi`): a pinned
    /// release's version, else what the bytes say (a U-Boot banner; a start*.elf's build date
    /// as `1.YYYYMMDD`). What the known-issues table is matched against.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<ReleaseKind, String>,
}

/// The UEFI chain past `EFI/BOOT/BOOTAA64.EFI`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EfiChain {
    /// What the loader is: `systemd-boot`, `grub`, `uki`, `unknown`, or `none` (absent).
    pub loader: &'static str,
    /// systemd-boot: the id of the entry it starts by default, when one is listed.
    pub default_entry: Option<String>,
    /// The title of what will boot, when pifw could follow the chain to one.
    pub boots: Option<String>,
    /// The chain reaches an OS kernel whose files are all on the card. `None` when pifw
    /// cannot follow it (GRUB with its configuration on another partition, an unknown loader).
    pub reaches_os: Option<bool>,
    /// GRUB: where it looks for `grub.cfg`.
    pub grub: Option<GrubChain>,
}

/// Where a GRUB at the fallback path looks for its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrubChain {
    /// The prefix built into the image (`/EFI/debian`), when it has one pifw can read.
    pub prefix: Option<String>,
    /// The image carries an early configuration of its own.
    pub embedded_config: bool,
    /// Paths on this partition GRUB tries, in order.
    pub candidates: Vec<String>,
    /// The first candidate present on the card.
    pub found: Option<String>,
    /// GRUB looks for its configuration on another partition, which pifw does not read.
    pub elsewhere: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// `rom`, `eeprom`, `bootcode`, `start`, `fixup`, `armstub`, `kernel`, `loader`, `os`.
    pub role: &'static str,
    pub file: Option<String>,
    pub present: bool,
    /// What it is: release identity, probed content, or a note.
    pub what: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// No warnings or errors.
    Ok,
    Warnings,
    Errors,
}

/// Reads everything there is to know about a disk. `disk` must be positioned anywhere; its
/// writes are expected to fail (the command layer passes a [`crate::disk::target::ReadOnly`]).
pub fn inspect<D: Read + Write + Seek>(
    disk: &mut D,
    target: TargetInfo,
    manifests: &Manifests,
    board: BoardChoice,
) -> anyhow::Result<Report> {
    let mut findings = Vec::new();
    let layout = table::read_layout(disk, target.size_bytes)?;
    findings.extend(layout.findings.iter().cloned());
    let fw = table::locate_firmware(&layout, &mut findings);
    // The ROM rules are a Pi 3's; a Pi 4 boots from GPT and from other partition types, so for
    // a card known to be for a Pi 4 they are information, not errors.
    if let Some(b) = board.id().and_then(|id| manifests.board(id))
        && is_2711(b)
    {
        for f in findings
            .iter_mut()
            .filter(|f| PI3_ROM_CODES.contains(&f.code.as_str()))
        {
            f.severity = Severity::Info;
        }
    }
    let table = table_report(disk, &layout, fw.as_ref());

    let mut firmware = None;
    let mut card = Card::default();
    if let Some(fw) = &fw {
        let (report, c) = read_firmware(disk, target.size_bytes, fw, manifests, &mut findings);
        firmware = Some(report);
        card = c;
    }

    let boards: Vec<&Board> = match board.id() {
        Some(id) => manifests.board(id).into_iter().collect(),
        None => manifests.boards.iter().collect(),
    };
    let mut chains: Vec<ChainReport> = Vec::new();
    if card.readable {
        for b in &boards {
            let (chain, chain_findings) = boot_chain(b, &card, &layout, manifests);
            match chains
                .iter_mut()
                .find(|c| c.kind == chain.kind && c.stages == chain.stages)
            {
                Some(c) => c.boards.push(b.id.clone()),
                None => chains.push(chain),
            }
            for f in chain_findings {
                merge_board_finding(&mut findings, f, &b.id);
            }
        }
        // A board-less read reports only the chains the card actually serves (the ones with
        // every file present), unless it serves none, in which case all are shown.
        if board.id().is_none() && chains.iter().any(|c| c.complete) {
            let served: Vec<String> = chains
                .iter()
                .filter(|c| c.complete)
                .flat_map(|c| c.boards.clone())
                .collect();
            // Problems of boards the card was evidently not made for are not its problems;
            // say once, as information, which boards it does not serve and why.
            findings.retain(|f| !is_board_finding_outside(f, &served));
            for c in chains.iter().filter(|c| !c.complete) {
                let missing: Vec<&str> = c
                    .stages
                    .iter()
                    .filter(|s| !s.present)
                    .filter_map(|s| s.file.as_deref())
                    .collect();
                findings.push(Finding::info(
                    "board-not-served",
                    format!(
                        "the card does not serve {}: it lacks {}",
                        c.boards.join(", "),
                        missing.join(", ")
                    ),
                ));
            }
            chains.retain(|c| c.complete);
        }
        let all: Vec<String> = boards.iter().map(|b| b.id.clone()).collect();
        untag_universal(&mut findings, &all);
        card_findings(&card, &layout, fw.as_ref(), &mut findings);
    }

    let versions = version_lines(firmware.as_ref());
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let health = match findings.iter().map(|f| f.severity).max() {
        Some(Severity::Error) => Health::Errors,
        Some(Severity::Warning) => Health::Warnings,
        _ => Health::Ok,
    };
    Ok(Report {
        schema: SCHEMA,
        pifw_version: env!("CARGO_PKG_VERSION"),
        target,
        table,
        firmware,
        board,
        chains,
        versions,
        findings,
        health,
        mounts: None,
        provenance: Vec::new(),
    })
}

/// What was read off the firmware partition, for the chain and card checks.
#[derive(Default)]
struct Card {
    readable: bool,
    files: BTreeMap<String, FileReport>,
    probes: BTreeMap<String, Probe>,
    /// Build dates (`1.YYYYMMDD`) of the start*.elf files no pin identifies, by lowercase path.
    vc_dates: BTreeMap<String, String>,
    /// The UEFI variable store found inside a pftf `RPI_EFI.fd`, by lowercase path.
    nv_stores: BTreeMap<String, crate::uefi::NvStore>,
    config: Option<ConfigTxt>,
    cmdline: Option<String>,
    size_bytes: u64,
    /// Boot Loader Specification view of the partition.
    esp: bls::Esp,
    /// What a GRUB at the fallback path was built with.
    grub: Option<probe::GrubImage>,
    /// The fallback loader's PE sections (a UKI there boots by itself).
    loader_pe: Option<probe::PeImage>,
}

impl Card {
    /// Looks a path up the way the firmware does: FAT is case-insensitive.
    fn file(&self, path: &str) -> Option<&FileReport> {
        self.files.get(&path.to_ascii_lowercase())
    }
}

fn read_firmware<D: Read + Write + Seek>(
    disk: &mut D,
    disk_bytes: u64,
    fw: &FirmwarePartition,
    manifests: &Manifests,
    findings: &mut Vec<Finding>,
) -> (FirmwareReport, Card) {
    let mut report = FirmwareReport {
        mbr_slot: fw.mbr_slot,
        gpt_index: fw.gpt_index,
        type_byte: fw.type_byte.map(|t| format!("0x{t:02x}")),
        offset_bytes: fw.offset_bytes,
        size_bytes: fw.size_bytes,
        pi3_rom_bootable: fw.pi3_rom_bootable,
        fat: None,
        fat_type: None,
        label: None,
        free_bytes: None,
        card_id: None,
        files: Vec::new(),
        dirs: Vec::new(),
        bls: None,
    };
    let mut card = Card {
        size_bytes: fw.size_bytes,
        ..Card::default()
    };
    // A truncated image ends inside the partition: read what is there; the FAT checker then
    // reports a volume that does not fit.
    let end = (fw.offset_bytes + fw.size_bytes).min(disk_bytes);
    let mut part = match StreamSlice::new(&mut *disk, fw.offset_bytes.min(end), end) {
        Ok(p) => p,
        Err(e) => {
            findings.push(Finding::error(
                "firmware-unreadable",
                format!("cannot read the firmware partition: {e}"),
            ));
            return (report, card);
        }
    };
    let info = match fat::check(&mut part) {
        Ok((info, fat_findings)) => {
            findings.extend(fat_findings);
            info
        }
        Err(e) => {
            findings.push(
                Finding::error(
                    "firmware-fat-unreadable",
                    format!("firmware partition: {e}"),
                )
                .advice(
                    "pifw will not read or change this volume. Copy the files off with \
                         mtools if you can, then check it with fsck.fat on a copy.",
                ),
            );
            return (report, card);
        }
    };
    report.fat_type = Some(
        serde_json::to_value(info.fat_type)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
    );
    report.label = info.label.clone();
    report.free_bytes = Some(info.free_bytes);
    report.fat = Some(info);

    // An interrupted pifw change leaves its journal (PIFW.JNL) in the root directory, or
    // leftovers that only pifw can tell from a damaged volume's lost clusters.
    let needed = crate::txn::recovery_needed(&mut part);
    if matches!(needed, Ok(Some(_))) || matches!(needed, Err(crate::txn::TxnError::Unsafe { .. })) {
        advise_recover_not_fsck(findings);
    }
    match &needed {
        Err(e @ crate::txn::TxnError::Unsafe { .. }) => findings.push(
            Finding::error("recovery-unsafe", e.to_string())
                .advice("do not write to this card; keep a copy of the partition (dd) and ask for help with the evidence above"),
        ),
        Ok(Some(crate::txn::RecoverOutcome::Nothing)) => findings.push(
            Finding::warning(
                "interrupted-change-leftovers",
                "a pifw change was interrupted before its journal took effect (or while removing it); no file was changed, but its clusters are still allocated",
            )
            .advice("run `pifw recover` on this card (from any machine); do not run fsck.fat -a instead"),
        ),
        _ => {}
    }
    if let Ok(Some(p)) = crate::txn::pending(&mut part) {
        let would = match p.would {
            crate::txn::RecoverOutcome::RolledBack | crate::txn::RecoverOutcome::DiscardedTorn => {
                "put the old files back"
            }
            _ => "finish it",
        };
        findings.push(
            Finding::error(
                "interrupted-change",
                format!(
                    "a pifw change ({}, {} files) was interrupted before it finished",
                    p.txn_id,
                    p.files.len()
                ),
            )
            .advice(format!(
                "run `pifw recover` on this card (from any machine); it will {would}. Do not run fsck.fat -a first: it frees or salvages the change's new clusters, and recovery may then have to refuse"
            )),
        );
    }

    let inv: Inventory = match fat::inventory(&mut part) {
        Ok(inv) => inv,
        Err(e) => {
            findings.push(Finding::error(
                "firmware-fat-unreadable",
                format!("listing the firmware partition: {e}"),
            ));
            return (report, card);
        }
    };
    card.readable = true;
    for FileEntry { path, size, sha256 } in inv.files {
        let identified = identify(manifests, &sha256, &path);
        let fr = FileReport {
            path,
            size,
            sha256,
            identified,
        };
        card.files.insert(fr.path.to_ascii_lowercase(), fr.clone());
        report.files.push(fr);
    }
    report.dirs = inv.dirs;

    match fat::read_small_file(&mut part, "config.txt", SMALL_FILE_CAP) {
        Ok(Some(bytes)) => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let mut include = |name: &str| {
                fat::read_small_file(&mut part, name, SMALL_FILE_CAP)
                    .ok()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            };
            let cfg = configtxt::parse("config.txt", &text, &mut include);
            findings.extend(cfg.findings.iter().cloned());
            card.config = Some(cfg);
        }
        Ok(None) => {}
        Err(e) => findings.push(Finding::error(
            "config-unreadable",
            format!("config.txt: {e}"),
        )),
    }
    if let Ok(Some(bytes)) = fat::read_small_file(&mut part, "cmdline.txt", SMALL_FILE_CAP) {
        card.cmdline = Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    let id_file = crate::backup::card_id::FILE_NAME;
    if card.files.contains_key(&id_file.to_ascii_lowercase()) {
        let bytes = fat::read_small_file(&mut part, id_file, crate::backup::card_id::MAX_BYTES);
        report.card_id = bytes
            .ok()
            .flatten()
            .and_then(|b| crate::backup::card_id::parse(&b));
        if report.card_id.is_none() {
            findings.push(
                Finding::info(
                    "card-id-foreign",
                    format!("{id_file} is not pifw's card identity file; pifw leaves it alone, and matches this card's backups by what each change left"),
                )
                .advice(format!("rename or remove {id_file} if it is not yours, and pifw gives the card an identity with its next change")),
            );
        }
    }
    // Probe the binaries a chain may hand over to, when no manifest pin says what they are.
    let to_probe: Vec<String> = card
        .files
        .values()
        .filter(|f| f.identified.is_none() && worth_probing(&f.path))
        .map(|f| f.path.clone())
        .collect();
    for path in to_probe {
        if let Ok(Some(p)) = fat::with_file(&mut part, &path, |r| probe::probe(r)) {
            card.probes.insert(path.to_ascii_lowercase(), p);
        }
    }
    // An unpinned start*.elf is dated by its build, for the known-issues table.
    let to_date: Vec<String> = card
        .files
        .values()
        .filter(|f| f.identified.is_none() && is_start_file(&f.path))
        .map(|f| f.path.clone())
        .collect();
    for path in to_date {
        if let Ok(Some(Some((y, m, d)))) =
            fat::with_file(&mut part, &path, |r| table::convert::vc_build_date(r))
        {
            card.vc_dates
                .insert(path.to_ascii_lowercase(), format!("1.{y:04}{m:02}{d:02}"));
        }
    }
    // pftf's firmware file carries its own settings: say so, so a changed hash after a
    // settings save is not mistaken for damage.
    if let Ok(Some(fd)) = fat::read_small_file(&mut part, "RPI_EFI.fd", crate::uefi::MAX_FD)
        && let Some(store) = crate::uefi::find_nv_store(&fd)
    {
        if !store.variables.is_empty() {
            findings.push(
                Finding::info(
                    "uefi-settings-saved",
                    format!(
                        "RPI_EFI.fd holds {} saved UEFI settings ({}; variable store at {:#x}); its hash differs from the release's for that reason",
                        store.variables.len(),
                        store.variables.join(", "),
                        store.offset
                    ),
                )
                .advice("pifw switch uefi --version V carries the settings into another pftf release"),
            );
        }
        card.nv_stores.insert("rpi_efi.fd".into(), store);
    }
    // What the EFI loader would go on to: BLS entries, a GRUB's built-in prefix, a UKI.
    let mut src = FatEsp {
        part: &mut part,
        card: &mut card,
    };
    let esp = bls::read_esp(&mut src);
    card.esp = esp;
    if card.file(FALLBACK_LOADER).is_some() {
        let stored = card
            .file(FALLBACK_LOADER)
            .map(|f| f.path.clone())
            .unwrap_or_default();
        if card.probes.get(&stored.to_ascii_lowercase()) == Some(&Probe::Grub) {
            card.grub = fat::with_file(&mut part, &stored, |r| probe::grub_image(r))
                .ok()
                .flatten()
                .flatten();
        }
        card.loader_pe = fat::with_file(&mut part, &stored, |r| probe::pe_image(r))
            .ok()
            .flatten()
            .flatten();
    }
    report.bls = Some(card.esp.clone());
    (report, card)
}

/// The fallback path the UEFI firmware starts (pftf keeps no boot entries of its own).
pub const FALLBACK_LOADER: &str = "EFI/BOOT/BOOTAA64.EFI";

/// The firmware partition as [`bls::read_esp`] reads it.
struct FatEsp<'a, P: Read + Seek> {
    part: &'a mut P,
    card: &'a mut Card,
}

impl<P: Read + Seek> bls::EspSource for FatEsp<'_, P> {
    fn files(&self) -> Vec<(String, u64)> {
        self.card
            .files
            .values()
            .map(|f| (f.path.clone(), f.size))
            .collect()
    }

    fn read_text(&mut self, path: &str) -> Option<String> {
        fat::read_small_file(self.part, path, bls::TEXT_CAP)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn read_pe(&mut self, path: &str) -> Option<probe::PeImage> {
        fat::with_file(self.part, path, |r| probe::pe_image(r))
            .ok()
            .flatten()
            .flatten()
    }

    fn describe(&mut self, path: &str) -> Option<String> {
        let key = path.to_ascii_lowercase();
        if let Some(id) = self.card.file(path).and_then(|f| f.identified.as_ref()) {
            return Some(id.describe());
        }
        if !self.card.probes.contains_key(&key)
            && let Ok(Some(p)) = fat::with_file(self.part, path, |r| probe::probe(r))
        {
            self.card.probes.insert(key.clone(), p);
        }
        match self.card.probes.get(&key) {
            Some(Probe::Unknown) | None => None,
            Some(p) => Some(p.describe()),
        }
    }

    fn kernels(&self) -> Vec<String> {
        self.card
            .files
            .values()
            .filter(|f| {
                self.card.probes.get(&f.path.to_ascii_lowercase()) == Some(&Probe::LinuxArm64)
            })
            .map(|f| f.path.clone())
            .collect()
    }
}

/// Files whose content tells what they are: anything config.txt can hand control to, and EFI
/// binaries.
fn is_start_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !lower.contains('/') && lower.starts_with("start") && lower.ends_with(".elf")
}

fn worth_probing(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let top_level = !lower.contains('/');
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    (top_level && (lower.ends_with(".bin") || lower.ends_with(".img") || lower.ends_with(".fd")))
        || lower.ends_with(".efi")
        // Kernels a boot entry may name: `vmlinuz-6.1.0-50-arm64`, `Image`, `...-linux-...`.
        || name.starts_with("vmlinu")
        || name == "image"
        || name.contains("linux")
}

fn identify(manifests: &Manifests, sha256: &str, path: &str) -> Option<Identity> {
    let matches = manifests.identify(sha256);
    // The same bytes can be pinned by several releases (an unchanged bootcode.bin across two
    // tags, say): prefer the one whose file name matches, then the newest.
    let name = path.rsplit('/').next().unwrap_or(path);
    let best = matches
        .iter()
        .find(|m| m.file.dest.eq_ignore_ascii_case(name))
        .or_else(|| matches.first())?;
    Some(Identity {
        kind: best.release.kind,
        version: best.release.version.clone(),
        flavour: best.release.flavour.clone(),
        build: best.file.build.clone(),
        release_name: best.file.dest.clone(),
    })
}

fn table_report<D: Read + Seek>(
    disk: &mut D,
    layout: &Layout,
    fw: Option<&FirmwarePartition>,
) -> TableReport {
    let sig = layout.mbr.as_ref().map(|m| m.disk_signature);
    let fw_start = fw.map(|f| f.offset_bytes / table::SECTOR);
    let mut mbr_entries = Vec::new();
    if let Some(mbr) = &layout.mbr {
        for e in &mbr.entries {
            mbr_entries.push(PartitionReport {
                number: e.slot,
                source: "mbr",
                start_lba: e.start_lba,
                sectors: e.sectors,
                type_: format!("0x{:02x}", e.type_byte),
                bootable: e.bootable,
                name: None,
                partuuid: format!("{:08x}-{:02x}", mbr.disk_signature, e.slot),
                filesystem: if e.type_byte == 0xee {
                    None
                } else {
                    sniff_fs(disk, e.start_lba * table::SECTOR)
                },
                firmware: fw.is_some_and(|f| f.mbr_slot == Some(e.slot)),
            });
        }
    }
    let partitions = match &layout.gpt {
        Some(gpt) if gpt.primary_valid || gpt.backup_valid => gpt
            .entries
            .iter()
            .map(|e| PartitionReport {
                number: e.index,
                source: "gpt",
                start_lba: e.first_lba,
                sectors: e.last_lba + 1 - e.first_lba.min(e.last_lba + 1),
                type_: e.type_guid.clone(),
                // Legacy BIOS bootable attribute (UEFI spec, bit 2): what U-Boot's distro
                // boot looks for on GPT.
                bootable: e.attributes & 0b100 != 0,
                name: (!e.name.is_empty()).then(|| e.name.clone()),
                partuuid: e.unique_guid.to_ascii_lowercase(),
                filesystem: sniff_fs(disk, e.first_lba * table::SECTOR),
                firmware: fw_start == Some(e.first_lba),
            })
            .collect(),
        _ => mbr_entries
            .iter()
            .filter(|p| p.type_ != "0xee")
            .cloned()
            .collect(),
    };
    TableReport {
        kind: layout.kind,
        disk_signature: sig.map(|s| format!("0x{s:08x}")),
        disk_guid: layout.gpt.as_ref().map(|g| g.disk_guid.clone()),
        partitions,
        mbr_entries,
    }
}

/// Recognises a filesystem by its magic, like `blkid` does for the two that matter here.
fn sniff_fs<D: Read + Seek>(disk: &mut D, offset: u64) -> Option<&'static str> {
    let mut buf = [0u8; 1084];
    disk.seek(SeekFrom::Start(offset)).ok()?;
    disk.read_exact(&mut buf).ok()?;
    // ext2/3/4: superblock at +1024, s_magic 0xEF53 at +56 (little-endian).
    if buf[1080..1082] == [0x53, 0xef] {
        return Some("ext4");
    }
    // FAT: boot signature and a FAT type string in the BPB (FAT12/16 at 54, FAT32 at 82).
    if buf[510..512] == [0x55, 0xaa] && (&buf[54..57] == b"FAT" || &buf[82..85] == b"FAT") {
        return Some("vfat");
    }
    None
}

fn is_2711(board: &Board) -> bool {
    board.soc.to_ascii_lowercase().contains("2711")
}

/// Works out the boot chain for one board and the findings that belong to that board.
fn boot_chain(
    board: &Board,
    card: &Card,
    layout: &Layout,
    manifests: &Manifests,
) -> (ChainReport, Vec<Finding>) {
    let mut stages = Vec::new();
    let mut findings = Vec::new();
    let filters: Vec<&str> = board.config_filters.iter().map(String::as_str).collect();
    let empty = configtxt::parse("config.txt", "", &mut |_| None);
    let cfg = card.config.as_ref().unwrap_or(&empty);
    let eff = cfg.effective(&filters);
    let pi4 = is_2711(board);

    let stage = |role: &'static str, file: &str, what: Option<String>| {
        let present = card.file(file).is_some();
        Stage {
            role,
            file: Some(file.to_string()),
            present,
            what: what.or_else(|| describe_file(card, file)),
        }
    };

    if pi4 {
        stages.push(Stage {
            role: "eeprom",
            file: None,
            present: true,
            what: Some("bootloader in the board's EEPROM (not on the card)".into()),
        });
    } else {
        stages.push(Stage {
            role: "rom",
            file: None,
            present: true,
            what: Some("boot ROM: MBR slot 1 FAT".into()),
        });
        stages.push(stage("bootcode", "bootcode.bin", None));
    }

    // bootcode.bin reads start_file/fixup_file ignoring sections (raspberrypi/firmware#1076);
    // the Pi 4 EEPROM evaluates them like start.elf does.
    let (start, fixup) = if pi4 {
        eff.start_files(true)
    } else {
        cfg.bootcode_view().start_files(false)
    };
    stages.push(stage("start", &start, None));
    stages.push(stage("fixup", &fixup, None));
    check_pair(card, &start, &fixup, &mut findings);

    let armstub = eff.armstub();
    let kernel = eff.kernel_path(if pi4 {
        KernelFamily::Bcm2711
    } else {
        KernelFamily::Armv7
    });

    let mut kind = ChainKind::Unknown;
    let mut efi = None;
    if let Some(stub) = &armstub {
        let is_uefi = identity_kind(card, stub) == Some(ReleaseKind::Uefi)
            || stub.eq_ignore_ascii_case("RPI_EFI.fd")
            || card.probes.get(&stub.to_ascii_lowercase()) == Some(&Probe::UefiFirmwareVolume);
        stages.push(stage("armstub", stub, None));
        if is_uefi {
            kind = ChainKind::Uefi;
        }
    }
    if kind == ChainKind::Uefi {
        let loader = FALLBACK_LOADER;
        let s = stage("loader", loader, None);
        if !s.present {
            findings.push(
                Finding::warning(
                    "uefi-no-loader",
                    format!("the UEFI firmware will find no boot loader at {loader}"),
                )
                .advice("install one with pifw switch uefi --bootloader, or boot from USB"),
            );
        }
        let present = s.present;
        stages.push(s);
        if present {
            let (chain, more, f) = efi_chain(card);
            stages.extend(more);
            findings.extend(f);
            efi = Some(chain);
        } else {
            efi = Some(EfiChain {
                loader: "none",
                default_entry: None,
                boots: None,
                reaches_os: Some(false),
                grub: None,
            });
        }
    } else {
        let s = stage("kernel", &kernel, None);
        kind = match (
            identity_kind(card, &kernel),
            card.probes.get(&kernel.to_ascii_lowercase()),
        ) {
            (Some(ReleaseKind::UBoot), _) | (_, Some(Probe::UBoot { .. })) => ChainKind::UBoot,
            (_, Some(Probe::LinuxArm64)) => ChainKind::Linux,
            _ if s.present => ChainKind::Unknown,
            _ => ChainKind::Unknown,
        };
        stages.push(s);
        if kind == ChainKind::UBoot {
            stages.push(Stage {
                role: "os",
                file: None,
                present: true,
                what: Some(extlinux_note(layout, card)),
            });
        }
    }

    let mut components = BTreeMap::new();
    if let Some(v) = firmware_version(card, &start) {
        components.insert(ReleaseKind::Firmware, v);
    }
    match kind {
        ChainKind::UBoot => {
            if let Some(v) = uboot_version(card, &kernel) {
                components.insert(ReleaseKind::UBoot, v);
            }
        }
        ChainKind::Uefi => {
            if let Some(id) = armstub
                .as_deref()
                .and_then(|a| card.file(a)?.identified.clone())
            {
                components.insert(ReleaseKind::Uefi, id.version);
            }
        }
        _ => {}
    }
    let state = crate::manifest::BootComponents {
        board: board.id.clone(),
        versions: components.clone(),
    };
    for issue in manifests.known_issues_for(&state) {
        findings.push(
            Finding::warning(&issue.finding_code(), issue.describe(&state)).advice(&issue.fix),
        );
    }

    for s in stages.iter().filter(|s| !is_past_loader(s.role)) {
        if let (Some(file), false) = (&s.file, s.present) {
            findings.push(
                Finding::error(
                    "missing-boot-file",
                    format!(
                        "{} ({}) is named by the boot chain but the card lacks it",
                        file, s.role
                    ),
                )
                .advice(format!(
                    "copy {file} onto the firmware partition, or fix config.txt"
                )),
            );
        }
    }
    let complete = stages
        .iter()
        .filter(|s| !is_past_loader(s.role))
        .all(|s| s.present);
    (
        ChainReport {
            boards: vec![board.id.clone()],
            kind,
            stages,
            complete,
            efi,
            components,
        },
        findings,
    )
}

/// Stages past the EFI loader, which `efi_chain` judges with findings of its own.
fn is_past_loader(role: &str) -> bool {
    matches!(role, "entry" | "linux" | "initrd" | "devicetree" | "config")
}

/// What NixOS needs to put entries and kernels on this partition (systemd-boot), and the
/// way back.
const NIXOS_SYSTEMD_BOOT_ADVICE: &str = "boot the OS once more the old way (pifw switch uboot) and let it write its entries here first. NixOS: boot.loader.systemd-boot.enable = true; boot.loader.efi.canTouchEfiVariables = false; boot.loader.generic-extlinux-compatible.enable = false; mount this partition at /boot (fileSystems.\"/boot\" = { device = \"/dev/disk/by-label/LABEL\"; fsType = \"vfat\"; }); then nixos-rebuild boot, which writes loader/entries/*.conf and the kernels here. Other distributions: bootctl install and kernel-install add";

/// Follows the UEFI chain past `EFI/BOOT/BOOTAA64.EFI`: the stages it reaches and the
/// findings on the way.
fn efi_chain(card: &Card) -> (EfiChain, Vec<Stage>, Vec<Finding>) {
    let mut stages = Vec::new();
    let mut findings = Vec::new();
    let key = FALLBACK_LOADER.to_ascii_lowercase();
    let probe = card.probes.get(&key);
    let is_uki = card
        .loader_pe
        .as_ref()
        .is_some_and(|pe| pe.osrel.is_some() && pe.sections.iter().any(|(n, _)| n == ".linux"));
    let loader = match probe {
        Some(Probe::SystemdBoot { .. }) => "systemd-boot",
        Some(Probe::Grub) => "grub",
        _ if is_uki => "uki",
        _ => "unknown",
    };
    let mut chain = EfiChain {
        loader,
        default_entry: None,
        boots: None,
        reaches_os: None,
        grub: None,
    };
    let label = "the firmware partition";
    match loader {
        "systemd-boot" => {
            let esp = &card.esp;
            for e in esp.entries.iter().filter(|e| !e.listed) {
                findings.push(
                    Finding::warning(
                        "uefi-entry-skipped",
                        format!(
                            "boot entry {} {}",
                            e.path,
                            e.problem.as_deref().unwrap_or("is skipped by systemd-boot")
                        ),
                    )
                    .advice("put the files it names on this partition (paths are relative to its root), or remove the entry"),
                );
            }
            match esp.default_boot() {
                None => {
                    let skipped = esp.entries.len();
                    stages.push(Stage {
                        role: "entry",
                        file: None,
                        present: false,
                        what: Some("no boot entry".into()),
                    });
                    chain.reaches_os = Some(false);
                    findings.push(
                        Finding::error(
                            "uefi-no-boot-entry",
                            format!(
                                "systemd-boot will find nothing to boot on {label}: {}; the Pi stops at systemd-boot's empty menu",
                                if skipped == 0 {
                                    "no loader/entries/*.conf, no EFI/Linux/*.efi".to_string()
                                } else {
                                    format!("{skipped} entry file(s), none it can list (see below)")
                                }
                            ),
                        )
                        .advice(NIXOS_SYSTEMD_BOOT_ADVICE),
                    );
                }
                Some(e) => {
                    chain.default_entry = Some(e.id.clone());
                    chain.boots = Some(e.shown_title().to_string());
                    chain.reaches_os = Some(e.bootable);
                    let reason = esp
                        .default_reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default();
                    stages.push(Stage {
                        role: "entry",
                        file: Some(e.path.clone()),
                        present: true,
                        what: Some(format!("\"{}\", the default entry{reason}", e.shown_title())),
                    });
                    for f in &e.files {
                        stages.push(Stage {
                            role: match f.role {
                                "linux" | "efi" => "linux",
                                "initrd" => "initrd",
                                _ => "devicetree",
                            },
                            file: Some(f.found.clone().unwrap_or_else(|| bls::normalise(&f.path))),
                            present: f.present(),
                            what: f.what.clone(),
                        });
                    }
                    if !e.bootable {
                        findings.push(
                            Finding::error(
                                "uefi-entry-broken",
                                format!(
                                    "the default boot entry {} {}",
                                    e.path,
                                    e.problem.as_deref().unwrap_or("cannot boot")
                                ),
                            )
                            .advice("put the files it names on this partition (paths are relative to its root); on NixOS nixos-rebuild boot writes them again"),
                        );
                    }
                    for other in esp.listed().filter(|o| o.id != e.id && !o.bootable) {
                        findings.push(Finding::warning(
                            "uefi-entry-broken",
                            format!(
                                "boot entry {} {}",
                                other.path,
                                other.problem.as_deref().unwrap_or("cannot boot")
                            ),
                        ));
                    }
                }
            }
        }
        "grub" => {
            let g = grub_chain(card);
            match &g.found {
                Some(found) => stages.push(Stage {
                    role: "config",
                    file: Some(found.clone()),
                    present: true,
                    what: Some("GRUB configuration (pifw does not follow it further)".into()),
                }),
                None if g.elsewhere => findings.push(Finding::info(
                    "grub-config-elsewhere",
                    format!(
                        "GRUB looks for its configuration on another partition ({}); pifw does not read it, so it cannot tell what GRUB will boot",
                        g.prefix.as_deref().unwrap_or("found by a search in its built-in configuration")
                    ),
                )),
                None => {
                    stages.push(Stage {
                        role: "config",
                        file: g.candidates.first().cloned(),
                        present: false,
                        what: None,
                    });
                    chain.reaches_os = Some(false);
                    findings.push(
                        Finding::error(
                            "grub-no-config",
                            format!(
                                "GRUB will find no grub.cfg: it looks for {} on {label}, and none is there; it stops at its grub> prompt",
                                g.candidates.join(", ")
                            ),
                        )
                        .advice("install the OS's GRUB configuration there (NixOS: boot.loader.grub with efiSupport and efiInstallAsRemovable, then nixos-rebuild boot), or go back with pifw switch uboot"),
                    );
                }
            }
            if g.found.is_some() {
                // pifw reads no further than grub.cfg's presence.
                chain.reaches_os = None;
            }
            chain.grub = Some(g);
        }
        "uki" => {
            let title = card
                .loader_pe
                .as_ref()
                .map(|pe| bls::type2(FALLBACK_LOADER, Some(pe)).shown_title().to_string());
            chain.boots = title;
            chain.reaches_os = Some(true);
        }
        _ => findings.push(Finding::info(
            "uefi-loader-unknown",
            format!("pifw does not recognise {FALLBACK_LOADER}, so it cannot follow the boot chain past it"),
        )),
    }
    (chain, stages, findings)
}

/// Where GRUB at the fallback path looks for `grub.cfg`, from the prefix and early
/// configuration built into it. Debian's monolithic grubaa64.efi has prefix `/EFI/debian` and
/// an early configuration that sources `$prefix/arm64-efi/grub.cfg`, `$prefix/grub.cfg`, else
/// `$cmdpath/grub.cfg` (the directory it was started from, `EFI/BOOT`).
fn grub_chain(card: &Card) -> GrubChain {
    let img = card.grub.clone().unwrap_or_default();
    let (candidates, elsewhere) = img.config_candidates();
    let found = candidates
        .iter()
        .find_map(|c| card.file(c).map(|f| f.path.clone()));
    GrubChain {
        prefix: img.prefix,
        embedded_config: img.config.is_some(),
        candidates,
        found,
        elsewhere,
    }
}

fn identity_kind(card: &Card, path: &str) -> Option<ReleaseKind> {
    card.file(path)?.identified.as_ref().map(|i| i.kind)
}

fn describe_file(card: &Card, path: &str) -> Option<String> {
    let f = card.file(path)?;
    if let Some(id) = &f.identified {
        return Some(id.describe());
    }
    // A firmware file with an EDK2 variable store is UEFI firmware whatever its hash: the
    // firmware writes its settings back into it, so a card's copy never matches a release.
    if let Some(s) = card.nv_stores.get(&path.to_ascii_lowercase()) {
        let settings = match s.variables.len() {
            0 => "no settings saved".to_string(),
            n => format!("{n} settings saved: {}", s.variables.join(", ")),
        };
        return Some(format!(
            "UEFI firmware, build not pinned; variable store at {:#x}, {settings}",
            s.offset
        ));
    }
    match card.probes.get(&path.to_ascii_lowercase()) {
        Some(Probe::Unknown) | None => Some("unknown build".to_string()),
        Some(p) => Some(format!("{} (not pinned)", p.describe())),
    }
}

/// start.elf and fixup.dat must come from the same firmware release.
fn check_pair(card: &Card, start: &str, fixup: &str, findings: &mut Vec<Finding>) {
    let (Some(s), Some(f)) = (card.file(start), card.file(fixup)) else {
        return;
    };
    match (&s.identified, &f.identified) {
        (Some(a), Some(b)) if a.version != b.version => findings.push(
            Finding::error(
                "start-fixup-mismatch",
                format!(
                    "{start} is firmware {} but {fixup} is firmware {}; they must match",
                    a.version, b.version
                ),
            )
            .advice("run pifw update-firmware to install a matching set"),
        ),
        (Some(_), Some(_)) => {}
        _ => findings.push(Finding::warning(
            "start-fixup-unknown",
            format!("{start}/{fixup} match no known release, so pifw cannot tell whether they belong together"),
        )),
    }
}

/// The firmware version of a chain's start file: its pinned release, else its build date.
fn firmware_version(card: &Card, start: &str) -> Option<String> {
    let f = card.file(start)?;
    match &f.identified {
        Some(id) if id.kind == ReleaseKind::Firmware => Some(id.version.clone()),
        Some(_) => None,
        None => card.vc_dates.get(&start.to_ascii_lowercase()).cloned(),
    }
}

fn uboot_version(card: &Card, path: &str) -> Option<String> {
    let f = card.file(path)?;
    if let Some(id) = &f.identified {
        return Some(id.version.clone());
    }
    match card.probes.get(&path.to_ascii_lowercase())? {
        Probe::UBoot { version } => Some(version.clone()),
        _ => None,
    }
}

/// Where U-Boot's distro boot will look for extlinux.conf: partitions marked bootable, else
/// every partition, in order.
fn extlinux_note(layout: &Layout, card: &Card) -> String {
    let on_fat = ["extlinux/extlinux.conf", "boot/extlinux/extlinux.conf"]
        .iter()
        .find(|p| card.file(p).is_some());
    if let Some(p) = on_fat {
        return format!("extlinux: /{p} on the firmware partition");
    }
    let bootable: Vec<String> = match (&layout.gpt, &layout.mbr) {
        // U-Boot's distro boot on a GPT disk scans the partitions with the legacy-BIOS-
        // bootable attribute and, measured with 2023.01 in QEMU, EFI System partitions too.
        (Some(g), _) if layout.kind != TableKind::Mbr => g
            .entries
            .iter()
            .filter(|e| {
                e.attributes & 0b100 != 0
                    || e.type_guid
                        .eq_ignore_ascii_case("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
            })
            .map(|e| e.index.to_string())
            .collect(),
        (_, Some(m)) => m
            .entries
            .iter()
            .filter(|e| e.bootable)
            .map(|e| e.slot.to_string())
            .collect(),
        _ => Vec::new(),
    };
    if bootable.is_empty() {
        "extlinux: U-Boot scans every partition for /extlinux/extlinux.conf or /boot/extlinux/extlinux.conf".into()
    } else {
        format!(
            "extlinux: U-Boot scans partition {} (bootable, in this order)",
            bootable.join(", ")
        )
    }
}

/// Findings about the card as a whole rather than one board's chain.
fn card_findings(
    card: &Card,
    layout: &Layout,
    fw: Option<&FirmwarePartition>,
    findings: &mut Vec<Finding>,
) {
    let uses_systemd_boot = card.file("loader/loader.conf").is_some()
        || card
            .probes
            .get("efi/boot/bootaa64.efi")
            .is_some_and(|p| matches!(p, Probe::SystemdBoot { .. }));
    if uses_systemd_boot && card.size_bytes < SYSTEMD_BOOT_MIN_BYTES {
        findings.push(
            Finding::warning(
                "firmware-too-small-for-systemd-boot",
                format!(
                    "systemd-boot keeps every NixOS generation's kernel and initrd on this {} MiB partition; it needs at least {} MiB",
                    card.size_bytes >> 20,
                    SYSTEMD_BOOT_MIN_BYTES >> 20
                ),
            )
            .advice("grow the firmware partition, or keep U-Boot with extlinux on the root partition"),
        );
    }
    if let Some(cmdline) = &card.cmdline {
        check_cmdline_root(cmdline, layout, findings);
    }
    if let Some(fw) = fw
        && !fw.pi3_rom_bootable
        && findings.iter().all(|f| f.severity != Severity::Error)
    {
        findings.push(Finding::warning(
            "firmware-not-pi3-bootable",
            "a Pi 3's boot ROM would not boot this partition",
        ));
    }
}

/// `root=PARTUUID=...` in cmdline.txt must name a partition on this card, or Linux waits
/// forever for its root.
fn check_cmdline_root(cmdline: &str, layout: &Layout, findings: &mut Vec<Finding>) {
    let Some(want) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("root=PARTUUID="))
    else {
        return;
    };
    let want = want.to_ascii_lowercase();
    let mut known: Vec<String> = Vec::new();
    if let Some(m) = &layout.mbr {
        known.extend(
            m.entries
                .iter()
                .map(|e| format!("{:08x}-{:02x}", m.disk_signature, e.slot)),
        );
    }
    if let Some(g) = &layout.gpt {
        known.extend(g.entries.iter().map(|e| e.unique_guid.to_ascii_lowercase()));
    }
    // On a disk Linux reads as GPT (protective or hybrid), MBR-style ids no longer exist.
    let linux_sees_gpt = matches!(layout.kind, TableKind::Gpt | TableKind::Hybrid);
    let mbr_style = want.len() == 11 && want.as_bytes()[8] == b'-';
    if !known.contains(&want) || (linux_sees_gpt && mbr_style) {
        findings.push(
            Finding::error(
                "cmdline-root-missing",
                format!("cmdline.txt has root=PARTUUID={want}, which names no partition Linux will see on this card"),
            )
            .advice("fix root= in cmdline.txt (see the partuuid column of pifw status --json)"),
        );
    }
}

/// Board-specific findings are tagged with the boards they apply to: the same finding from
/// several boards becomes one, listing them all.
fn merge_board_finding(findings: &mut Vec<Finding>, f: Finding, board: &str) {
    let tag = |boards: &str| format!("[{boards}] ");
    if let Some(existing) = findings.iter_mut().find(|e| {
        e.code == f.code && e.message.split_once("] ").map(|(_, m)| m) == Some(f.message.as_str())
    }) {
        let (head, rest) = existing
            .message
            .split_once("] ")
            .map(|(h, r)| (h.trim_start_matches('[').to_string(), r.to_string()))
            .unwrap_or_default();
        existing.message = format!("{}{rest}", tag(&format!("{head}, {board}")));
        return;
    }
    let mut f = f;
    f.message = format!("{}{}", tag(board), f.message);
    findings.push(f);
}

/// A finding that holds for every board evaluated needs no board tag.
fn untag_universal(findings: &mut [Finding], all: &[String]) {
    for f in findings {
        let Some((boards, rest)) = f.message.strip_prefix('[').and_then(|m| m.split_once("] "))
        else {
            continue;
        };
        let tagged: Vec<&str> = boards.split(", ").collect();
        if !all.is_empty() && all.iter().all(|b| tagged.contains(&b.as_str())) {
            f.message = rest.to_string();
        }
    }
}

fn is_board_finding_outside(f: &Finding, served: &[String]) -> bool {
    let Some(inner) = f.message.strip_prefix('[') else {
        return false;
    };
    let Some((boards, _)) = inner.split_once("] ") else {
        return false;
    };
    !boards.split(", ").any(|b| served.iter().any(|s| s == b))
}

fn version_lines(fw: Option<&FirmwareReport>) -> Vec<VersionLine> {
    let mut out: Vec<VersionLine> = Vec::new();
    for f in fw.map(|f| f.files.as_slice()).unwrap_or_default() {
        let Some(id) = &f.identified else { continue };
        match out.iter_mut().find(|v| {
            v.kind == id.kind
                && v.version == id.version
                && v.flavour == id.flavour
                && v.build == id.build
        }) {
            Some(v) => v.files.push(f.path.clone()),
            None => out.push(VersionLine {
                kind: id.kind,
                version: id.version.clone(),
                flavour: id.flavour.clone(),
                build: id.build.clone(),
                files: vec![f.path.clone()],
            }),
        }
    }
    out
}

/// While pifw's own leftovers are on the card, the FAT findings they cause get one piece of
/// advice, `pifw recover`, instead of fsck's: `fsck.fat -a` would free (or salvage into
/// FSCKnnnn.REC) the clusters an interrupted change needs to finish or undo itself.
fn advise_recover_not_fsck(findings: &mut [Finding]) {
    for f in findings.iter_mut() {
        if matches!(
            f.code.as_str(),
            "fat-lost-clusters" | "fat-copies-differ" | "fat-fsinfo-stale"
        ) {
            f.advice = Some(
                "left by an interrupted pifw change: run `pifw recover`, which frees them and makes the FAT copies agree. Do not run fsck.fat -a first".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_findings_merge_and_filter() {
        let mut v = Vec::new();
        merge_board_finding(&mut v, Finding::error("x", "thing"), "pi4b");
        merge_board_finding(&mut v, Finding::error("x", "thing"), "cm4");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].message, "[pi4b, cm4] thing");
        assert!(is_board_finding_outside(&v[0], &["pi3b".into()]));
        assert!(!is_board_finding_outside(&v[0], &["cm4".into()]));
    }
}
