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
                "the MBR and GPT disagree (a hybrid-unaware tool edited one of them); recreate \
                 the hybrid MBR from the GPT with gdisk (r, h) or `sgdisk -h`, which rewrites \
                 LBA 0 only (check which table is right first)",
            ),
        );
    }
}
