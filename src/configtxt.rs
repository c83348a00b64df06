//! The Pi's `config.txt`: parsing, conditional sections, includes, effective settings per board.
//!
//! OWNED BY: the config.txt work. This file is a stub with the agreed interface.
//!
//! Pure: works on text; includes are resolved through a caller-supplied reader so this module
//! never touches the disk.

use crate::finding::Finding;
use serde::Serialize;

/// One `key=value` setting as written, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub key: String,
    pub value: String,
    /// File the line is in (`config.txt` or an included file).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// The section filters in force for this line, e.g. `["pi3"]`, `[]` for unconditional.
    pub filters: Vec<String>,
}

/// A parsed config.txt with includes expanded in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigTxt {
    pub settings: Vec<Setting>,
    /// Section headers seen, in order, e.g. `["pi3", "pi4", "all"]` (without brackets).
    pub sections: Vec<String>,
    /// Files pulled in with `include`.
    pub includes: Vec<String>,
    /// Parse problems: unknown filters, missing includes, malformed lines.
    pub findings: Vec<Finding>,
}

/// The settings that apply to one board, after evaluating its section filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// Last value wins per key, among lines whose filters match the board.
    pub settings: Vec<Setting>,
}

impl Effective {
    /// The effective value of `key`, if set.
    pub fn get(&self, _key: &str) -> Option<&str> {
        unimplemented!()
    }
}

/// Parses `text` (the content of `name`). `include` returns the content of an included file by
/// name, or `None` when the card lacks it.
pub fn parse(
    _name: &str,
    _text: &str,
    _include: &mut dyn FnMut(&str) -> Option<String>,
) -> ConfigTxt {
    unimplemented!("config.txt parser")
}

impl ConfigTxt {
    /// Settings in force for a board whose model filters are `board_filters` (e.g. `["pi3"]` for
    /// a Pi 3B; `["pi3", "pi3+"]` for a 3B+), as start.elf evaluates them.
    pub fn effective(&self, _board_filters: &[&str]) -> Effective {
        unimplemented!()
    }

    /// Settings as bootcode.bin reads them: conditional sections NOT evaluated
    /// (raspberrypi/firmware#1076), for `start_file`, `fixup_file`, `boot_partition`, ...
    pub fn bootcode_view(&self) -> Effective {
        unimplemented!()
    }
}
