//! The intent record: what one transaction is about to change, stored on the card itself.
//!
//! Owns the journal's format and its integrity check. The journal is the content of the file
//! `PIFW.JNL` in the root directory (an 8.3 name, so one directory slot and no long-name
//! entries):
//!
//! ```text
//! PIFWJNL1\n
//! <sha256 of the JSON, 64 lowercase hex>\n
//! <JSON of Journal>
//! ```
//!
//! Anything that does not parse, or whose JSON does not hash to the header, is a torn journal.
//! The JSON rejects unknown fields, so a journal from a future format is refused, not half
//! understood. The journal names its own clusters (`journal_first`, `journal_clusters`, always
//! one contiguous run) so that recovery can recognise its clusters from a deleted directory
//! entry (see [`crate::txn`]). Must not do I/O.

use serde::{Deserialize, Serialize};

pub(crate) const MAGIC: &[u8] = b"PIFWJNL1\n";
/// `DIR_Name` of the journal file.
pub(crate) const SHORT_NAME: &[u8; 11] = b"PIFW    JNL";
pub(crate) const FORMAT_VERSION: u32 = 1;

/// What happens to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Replace,
    Remove,
    Unchanged,
}

/// One cluster chain as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Chain {
    pub first_cluster: u32,
    pub size: u64,
    pub sha256: String,
    /// `(first cluster, length)` runs, in chain order.
    pub runs: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRecord {
    pub path: String,
    pub action: Action,
    pub old: Option<Chain>,
    pub new: Option<Chain>,
}

/// One 32-byte directory slot: its byte offset in the partition, its bytes before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SlotRecord {
    pub offset: u64,
    pub old: String,
    pub new: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Journal {
    pub version: u32,
    pub txn_id: String,
    /// The journal file's own clusters: `journal_clusters` clusters from `journal_first`.
    pub journal_first: u32,
    pub journal_clusters: u32,
    /// Byte offset of the journal's directory slot.
    pub journal_slot: u64,
    pub files: Vec<FileRecord>,
    /// Slot switches, in the order they are written (grouped by sector).
    pub slots: Vec<SlotRecord>,
    /// Directory growth: `(last cluster of the directory, zeroed cluster appended to it)`.
    pub grow: Vec<(u32, u32)>,
}

/// Why bytes are not a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Torn(pub String);

impl Journal {
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail (no maps with non-string keys).
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(crate::digest::sha256_hex(&json).as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&json);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Journal, Torn> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| Torn("no PIFWJNL1 header".into()))?;
        if rest.len() < 65 || rest[64] != b'\n' {
            return Err(Torn("no checksum line".into()));
        }
        let (sum, json) = (&rest[..64], &rest[65..]);
        let actual = crate::digest::sha256_hex(json);
        if sum != actual.as_bytes() {
            return Err(Torn(format!(
                "checksum {} does not match the content ({actual})",
                String::from_utf8_lossy(sum)
            )));
        }
        let j: Journal =
            serde_json::from_slice(json).map_err(|e| Torn(format!("unreadable JSON: {e}")))?;
        if j.version != FORMAT_VERSION {
            return Err(Torn(format!("format version {}", j.version)));
        }
        Ok(j)
    }
}

pub(crate) use crate::digest::{hex, unhex32};

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Journal {
        Journal {
            version: FORMAT_VERSION,
            txn_id: "t1".into(),
            journal_first: 100,
            journal_clusters: 1,
            journal_slot: 4096,
            files: vec![FileRecord {
                path: "start.elf".into(),
                action: Action::Replace,
                old: None,
                new: Some(Chain {
                    first_cluster: 7,
                    size: 3,
                    sha256: "ab".into(),
                    runs: vec![(7, 1)],
                }),
            }],
            slots: vec![SlotRecord {
                offset: 4128,
                old: hex(&[0u8; 32]),
                new: hex(&[1u8; 32]),
            }],
            grow: vec![],
        }
    }

    #[test]
    fn round_trips_and_any_flipped_byte_is_torn() {
        let bytes = sample().encode();
        assert_eq!(Journal::decode(&bytes), Ok(sample()));
        for i in [0, 10, 80, bytes.len() - 2] {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(Journal::decode(&b).is_err(), "byte {i}");
        }
        assert!(
            Journal::decode(&bytes[..bytes.len() - 1]).is_err(),
            "cut short"
        );
        assert_eq!(unhex32(&hex(&[7u8; 32])), Some([7u8; 32]));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let j = sample();
        let mut v = serde_json::to_value(&j).expect("value");
        v["extra"] = serde_json::json!(1);
        let json = serde_json::to_vec(&v).expect("json");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(crate::digest::sha256_hex(&json).as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(&json);
        let err = Journal::decode(&bytes).expect_err("unknown field");
        assert!(err.0.contains("extra"), "{err:?}");
    }
}
