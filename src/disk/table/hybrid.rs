//! Hybrid GPT/MBR: an MBR holding an 0xEE entry plus up to three partitions mirrored from the
//! GPT, so MBR-only readers (the Pi 3 boot ROM) and GPT readers (Linux, UEFI) both find them.
//!
//! The rules follow gptfdisk, which creates these tables (gdisk(8), "hybrid MBR"): at most three
//! hybridised partitions; the 0xEE entry starts at LBA 1 and ends just before the first
//! hybridised partition (gdisk also offers variants, hence warnings only); every other MBR entry
//! must describe exactly the same sectors as a GPT entry. Hybrid-unaware tools edit one table
//! and not the other, so the two drift apart; that drift is what this module reports.

use super::{GptInfo, MbrEntry, MbrInfo, error_if, mbr::PROTECTIVE};
use crate::finding::Finding;

/// Most partitions gptfdisk mirrors into a hybrid MBR.
const MAX_HYBRIDISED: usize = 3;

pub(super) fn check(mbr: &MbrInfo, gpt: Option<&GptInfo>, findings: &mut Vec<Finding>) {
    let protective: Vec<&MbrEntry> = mbr
        .entries
        .iter()
        .filter(|e| e.type_byte == PROTECTIVE)
        .collect();
    let hybridised: Vec<&MbrEntry> = mbr
        .entries
        .iter()
        .filter(|e| e.type_byte != PROTECTIVE)
        .collect();

    let slots = |v: &[&MbrEntry]| {
        v.iter()
            .map(|e| format!("{} (type {:#04x})", e.slot, e.type_byte))
            .collect::<Vec<_>>()
            .join(", ")
    };
    findings.push(Finding::info(
        "hybrid-mbr",
        format!(
            "hybrid MBR: 0xEE in slot {}; mirrored into the MBR: slot {}",
            protective
                .iter()
                .map(|e| e.slot.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            slots(&hybridised)
        ),
    ));

    if protective.len() > 1 {
        findings.push(Finding::warning(
            "hybrid-multiple-protective",
            format!(
                "{} 0xEE entries in the MBR (slots {}); gdisk writes one",
                protective.len(),
                slots(&protective)
            ),
        ));
    }
    if hybridised.len() > MAX_HYBRIDISED {
        findings.push(Finding::warning(
            "hybrid-too-many",
            format!(
                "{} partitions mirrored into the hybrid MBR (slots {}); at most {MAX_HYBRIDISED} \
                 fit next to the 0xEE entry",
                hybridised.len(),
                slots(&hybridised)
            ),
        ));
    }

    let first_hybrid_start = hybridised
        .iter()
        .filter(|e| e.sectors > 0)
        .map(|e| e.start_lba)
        .min();
    if let (Some(ee), Some(first)) = (protective.first(), first_hybrid_start) {
        let ee_end = ee.start_lba + ee.sectors; // exclusive
        if ee.start_lba != 1 || ee_end != first {
            findings.push(
                Finding::warning(
                    "hybrid-protective-range",
                    format!(
                        "the 0xEE entry (slot {}) covers LBA {}..{}; gdisk's layout covers LBA \
                         1..{} (from LBA 1 to just before the first mirrored partition){}",
                        ee.slot,
                        ee.start_lba,
                        ee_end.saturating_sub(1),
                        first.saturating_sub(1),
                        if ee.start_lba != 1 {
                            "; not starting at LBA 1, Linux and UEFI read this disk as MBR only"
                        } else {
                            ""
                        }
                    ),
                )
                .advice(
                    "recreate the hybrid MBR with gdisk (r, h) or `sgdisk -h`; only LBA 0 changes",
                ),
            );
        }
    }

    let Some(gpt) = gpt else {
        return;
    };
    for m in &hybridised {
        let m_end = m.start_lba + m.sectors; // exclusive
        let exact = gpt
            .entries
            .iter()
            .find(|g| g.first_lba == m.start_lba && g.last_lba.checked_add(1) == Some(m_end));
        if exact.is_some() {
            continue;
        }
        let overlapping = gpt
            .entries
            .iter()
            .find(|g| g.first_lba < m_end && m.start_lba <= g.last_lba);
        let (how, contained) = match overlapping {
            Some(g) => {
                let g_sectors = (g.last_lba + 1).saturating_sub(g.first_lba);
                (
                    format!(
                        "GPT entry {} ({}) is LBA {}..{} ({} sectors)",
                        g.index, g.name, g.first_lba, g.last_lba, g_sectors
                    ),
                    g.first_lba <= m.start_lba && m_end <= g.last_lba + 1,
                )
            }
            None => ("no GPT entry covers these sectors".to_string(), false),
        };
        // An MBR view inside its GPT partition only hides the tail from MBR readers; one that
        // reaches past it exposes other data to anyone writing through the MBR.
        findings.push(
            Finding::new(
                error_if(!contained),
                "hybrid-drift",
                format!(
                    "MBR slot {} (type {:#04x}) is LBA {}..{} ({} sectors), but {how}",
                    m.slot,
                    m.type_byte,
                    m.start_lba,
                    m_end.saturating_sub(1),
                    m.sectors
                ),
            )
            .advice(
                "the MBR and GPT disagree (a hybrid-unaware tool edited one of them); check \
                 which table matches the file system, then recreate the hybrid MBR from the GPT \
                 with gdisk (r, h) or `sgdisk -h N:EE`, which rewrites LBA 0 only; sgdisk then \
                 sets slot 1's type to 0xEF or 0x07, so restore 0x0C afterwards",
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::TableKind;
    use super::super::testdisk::{BASIC_DATA, Disk, LINUX_FS, Part};
    use crate::finding::Severity;

    const TOTAL: u64 = 131072;

    /// The pftf / Zero 2 W layout: FAT in slot 1, 0xEE in slot 2 over LBA 1..2047.
    fn hybrid() -> Disk {
        let mut d = Disk::new(TOTAL);
        d.gpt(&[
            Part {
                type_guid: BASIC_DATA,
                first: 2048,
                last: 63487,
                name: "firmware",
            },
            Part {
                type_guid: LINUX_FS,
                first: 63488,
                last: TOTAL - 34,
                name: "root",
            },
        ]);
        d.mbr(1, 0, 0x0C, 2048, 61440);
        d.mbr(2, 0, 0xEE, 1, 2047);
        d
    }

    fn with_severity(d: &Disk) -> Vec<(String, Severity)> {
        d.layout()
            .findings
            .into_iter()
            .map(|f| (f.code, f.severity))
            .collect()
    }

    #[test]
    fn reads_a_hybrid_and_reports_the_protective_slot() {
        let d = hybrid();
        let layout = d.layout();
        assert_eq!(layout.kind, TableKind::Hybrid);
        assert_eq!(
            with_severity(&d),
            [("hybrid-mbr".to_string(), Severity::Info)]
        );
        assert_eq!(
            layout.findings[0].message,
            "hybrid MBR: 0xEE in slot 2; mirrored into the MBR: slot 1 (type 0x0c)"
        );
        assert_eq!(layout.gpt.expect("a GPT").entries.len(), 2);
    }

    #[test]
    fn mbr_entry_reaching_into_the_next_partition_is_drift_error() {
        let mut d = hybrid();
        d.mbr(1, 0, 0x0C, 2048, 65536);
        let f = with_severity(&d);
        assert_eq!(
            f,
            [
                ("hybrid-mbr".to_string(), Severity::Info),
                ("hybrid-drift".to_string(), Severity::Error)
            ]
        );
        let msg = &d.layout().findings[1].message;
        assert!(
            msg.contains("MBR slot 1 (type 0x0c) is LBA 2048..67583 (65536 sectors), but GPT entry 1 (firmware) is LBA 2048..63487 (61440 sectors)"),
            "{msg}"
        );
    }

    #[test]
    fn mbr_entry_inside_its_gpt_partition_is_drift_warning() {
        let mut d = hybrid();
        d.mbr(1, 0, 0x0C, 2048, 40960);
        assert_eq!(
            with_severity(&d),
            [
                ("hybrid-mbr".to_string(), Severity::Info),
                ("hybrid-drift".to_string(), Severity::Warning)
            ]
        );
    }

    #[test]
    fn mbr_entry_with_no_gpt_counterpart() {
        let mut d = hybrid();
        d.mbr(3, 0, 0x83, (TOTAL - 33) as u32, 10);
        let layout = d.layout();
        let drift: Vec<_> = layout
            .findings
            .iter()
            .filter(|f| f.code == "hybrid-drift")
            .collect();
        assert_eq!(drift.len(), 1);
        assert!(
            drift[0]
                .message
                .contains("no GPT entry covers these sectors")
        );
        assert_eq!(drift[0].severity, Severity::Error);
    }

    #[test]
    fn protective_entry_not_ending_before_the_first_hybrid() {
        let mut d = hybrid();
        d.mbr(2, 0, 0xEE, 1, 1000);
        assert_eq!(d.codes(), ["hybrid-mbr", "hybrid-protective-range"]);
        assert!(
            d.layout().findings[1]
                .message
                .contains("covers LBA 1..1000")
        );
    }
}
