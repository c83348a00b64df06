//! The Pi's `config.txt`: parsing, conditional sections, includes, effective settings per board.
//!
//! Pure: text in, values out. Includes are resolved through a caller-supplied reader, so this
//! module never touches the disk; it never panics on any input. The caller caps the size of
//! each file it hands over; this module caps include nesting ([`MAX_INCLUDE_DEPTH`]) and count
//! ([`MAX_INCLUDES`]) and refuses include cycles.
//!
//! # The format, and where each rule comes from
//!
//! raspberrypi/documentation `config_txt/what_is_config_txt.adoc` ("File Format", "include"):
//! one `property=value` per line; a comment is a line *starting* with `#`; entries are cut at
//! 98 characters; `include <file>` inserts that file in place and is NOT honoured by
//! `bootcode.bin` nor the Pi 4 EEPROM bootloader (also raspberrypi/firmware#1641, #1332).
//! `config_txt/boot.adoc`: `initramfs <files> <address>` takes a space, not `=`; `os_prefix`
//! is prepended to kernel, initramfs, cmdline and dtb names (not to `armstub`), an absolute
//! path (`/name`) bypasses it, and `upstream_kernel=1` defaults it to `upstream/`.
//! `config_txt/conditional.adoc`: the filters (module `filter`).
//!
//! Decisions where the documentation is silent, each reported as a finding rather than guessed
//! away:
//! - A `#` after a value is NOT a comment: the docs only define whole-line comments, so
//!   `kernel=u-boot.bin # note` is recorded with the `#` in the value and flagged
//!   (`configtxt-inline-comment`): the firmware may look for a file with that name.
//! - Whitespace around `=` is kept in the key and value as written and flagged
//!   (`configtxt-space-around-equals`): the firmware matches keys exactly, so `kernel = x` most
//!   likely sets nothing, and [`Effective::get`]`("kernel")` does not see it either.
//! - Leading and trailing whitespace of a line, and the `\r` of CRLF line ends, are dropped.
//! - An unknown section filter leaves the filters in force unchanged (flagged).
//! - An `include` under a filter is read only when that filter holds (observed on Pi 3,
//!   LibreELEC/LibreELEC.tv#389): its lines carry the include line's filters in
//!   [`Setting::include_filters`]. Filters set inside an included file stay in force after it,
//!   as with textual insertion; when that happens under a gated include the result is flagged as
//!   approximate (`configtxt-include-changes-filters`).
//!
//! # Two readers of the same file
//!
//! `start.elf` evaluates the filters ([`ConfigTxt::effective`]). `bootcode.bin` (Pi 3 and
//! earlier) reads a few keys itself, from `config.txt` only, and evaluates no filter at all
//! (raspberrypi/firmware#1076, #1593): [`ConfigTxt::bootcode_view`].
//!
//! Must not: read files, print, or decide which board the card is for.

pub mod edit;
mod filter;
pub mod merge;
mod query;

pub use query::{DeviceTree, KernelFamily};

use crate::finding::Finding;
use serde::Serialize;

/// How deep `include` may nest (an include inside `config.txt` is depth 1).
pub const MAX_INCLUDE_DEPTH: usize = 4;

/// How many `include` lines are followed in total, whatever their nesting.
pub const MAX_INCLUDES: usize = 16;

/// Characters of a line the firmware reads; the rest is ignored ("98-character line length
/// limit (previously 78)", `what_is_config_txt.adoc`).
pub const LINE_LIMIT: usize = 98;

/// Keys `bootcode.bin` reads for itself, without evaluating filters (raspberrypi/firmware#1076,
/// popcornmix's list), plus `start_cd`, which selects the start file and so must be read there
/// too (undocumented key, seen in the field).
pub const BOOTCODE_KEYS: &[&str] = &[
    "gpu_mem",
    "gpu_mem_256",
    "gpu_mem_512",
    "gpu_mem_1024",
    "total_mem",
    "require_total_mem",
    "startx",
    "start_x",
    "start_debug",
    "start_cd",
    "boot_partition",
    "legacy_mapping",
    "bootcode_delay",
    "force_pvt",
    "uart_2ndstage",
    "start_file",
    "fixup_file",
];

/// Keys that may appear many times, every occurrence counting in order (not "last wins").
pub const REPEATABLE_KEYS: &[&str] = &[
    "dtoverlay",
    "dtparam",
    "device_tree_overlay",
    "device_tree_param",
    "gpio",
];

/// One `key=value` setting as written, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// As written: whitespace before `=` is kept (and flagged). `initramfs` for the
    /// space-separated `initramfs <files> <address>` line.
    pub key: String,
    /// As written after `=`, trailing whitespace removed. For `initramfs`, `<files> <address>`.
    pub value: String,
    /// File the line is in (`config.txt` or an included file).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// The section filters in force for this line, e.g. `["pi3"]`, `[]` for unconditional.
    pub filters: Vec<String>,
    /// Filters in force at the `include` line(s) that pulled this file in, outermost first;
    /// they must hold too. Empty in the top-level file.
    pub include_filters: Vec<String>,
    /// Filters among the above that pifw cannot evaluate offline (`EDID=…`, `HDMI:1`, `gpio4=1`,
    /// serial, boot variables; in [`Effective`] also `board-type=` when the caller gave none):
    /// the setting applies only if they hold at boot. Empty means unconditional for this view.
    pub unknown_conditions: Vec<String>,
}

impl Setting {
    /// Whether the setting depends on something only the running board knows.
    pub fn is_conditional(&self) -> bool {
        !self.unknown_conditions.is_empty()
    }
}

/// A parsed config.txt with includes expanded in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigTxt {
    /// Name of the top-level file as given to [`parse`].
    pub file: String,
    pub settings: Vec<Setting>,
    /// Section headers seen, in order, e.g. `["pi3", "pi4", "all"]` (without brackets).
    pub sections: Vec<String>,
    /// Files pulled in with `include` and found.
    pub includes: Vec<String>,
    /// Parse problems: unknown filters, missing includes, malformed lines.
    pub findings: Vec<Finding>,
}

/// The settings that apply to one board, after evaluating its section filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// Settings that apply (or may apply: see [`Setting::unknown_conditions`]), in file order.
    /// Last value wins per key, except for [`REPEATABLE_KEYS`].
    pub settings: Vec<Setting>,
}

impl Effective {
    /// The effective value of `key`, if set: the last occurrence wins. A conditional setting
    /// counts; use [`Effective::last`] to see whether it is conditional.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.last(key).map(|s| s.value.as_str())
    }

    /// The setting that gives `key` its value, with its origin and conditions.
    pub fn last(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().rev().find(|s| s.key == key)
    }

    /// Every value of a repeatable key (`dtoverlay`, `dtparam`), in order.
    pub fn all_of(&self, key: &str) -> Vec<&str> {
        self.settings
            .iter()
            .filter(|s| s.key == key)
            .map(|s| s.value.as_str())
            .collect()
    }

    /// The settings that may give `key` its value at boot: the last unconditional one, and every
    /// conditional one after it (any of them wins if its conditions hold). In file order.
    pub fn candidates(&self, key: &str) -> Vec<&Setting> {
        let of_key: Vec<&Setting> = self.settings.iter().filter(|s| s.key == key).collect();
        let start = of_key
            .iter()
            .rposition(|s| !s.is_conditional())
            .unwrap_or(0);
        of_key.get(start..).map(<[_]>::to_vec).unwrap_or_default()
    }
}

/// Parses `text` (the content of `name`). `include` returns the content of an included file by
/// name, or `None` when the card lacks it.
pub fn parse(name: &str, text: &str, include: &mut dyn FnMut(&str) -> Option<String>) -> ConfigTxt {
    let mut parser = Parser {
        include,
        out: ConfigTxt {
            file: name.to_string(),
            settings: Vec::new(),
            sections: Vec::new(),
            includes: Vec::new(),
            findings: Vec::new(),
        },
        state: filter::State::default(),
        stack: vec![fat_name(name)],
        followed: 0,
    };
    parser.file(name, text, &[]);
    parser.out
}

impl ConfigTxt {
    /// Settings in force for a board whose model filters are `board_filters` (e.g. `["pi3"]` for
    /// a Pi 3B; `["pi3", "pi3+"]` for a 3B+), as start.elf evaluates them.
    ///
    /// `board_filters` lists every model filter the board answers to, per the documented table:
    /// 3B `["pi3"]`; 3B+ and 3A+ `["pi3", "pi3+"]`; CM3 `["pi3", "cm3"]`; Zero 2 W
    /// `["pi0", "pi0w", "pi02"]` (NOT `pi3`); 4B `["pi4"]`; 400 `["pi4", "pi400"]`; CM4
    /// `["pi4", "cm4"]`. Add `"board-type=0xNN"` to let `[board-type=…]` sections be decided.
    /// The evaluation is for a normal boot: `[tryboot]` and `[none]` sections never apply;
    /// filters only the running board can decide leave the setting in, marked conditional.
    pub fn effective(&self, board_filters: &[&str]) -> Effective {
        let settings = self
            .settings
            .iter()
            .filter_map(|s| {
                let mut unknown: Vec<String> = Vec::new();
                for f in s.include_filters.iter().chain(&s.filters) {
                    match filter::evaluate(f, board_filters) {
                        filter::Verdict::Fails => return None,
                        filter::Verdict::Unknown if !unknown.contains(f) => unknown.push(f.clone()),
                        _ => {}
                    }
                }
                Some(Setting {
                    unknown_conditions: unknown,
                    ..s.clone()
                })
            })
            .collect();
        Effective { settings }
    }

    /// Settings as bootcode.bin reads them: conditional sections NOT evaluated
    /// (raspberrypi/firmware#1076), for `start_file`, `fixup_file`, `boot_partition`, ...
    ///
    /// Only [`BOOTCODE_KEYS`], only from the top-level file (bootcode.bin ignores `include`),
    /// every line counting whatever section it is in: `start_file=` under `[pi4]` is what a
    /// Pi 3 loads. Applies to boards that boot through bootcode.bin (Pi 3 and earlier).
    pub fn bootcode_view(&self) -> Effective {
        let settings = self
            .settings
            .iter()
            .filter(|s| s.file == self.file && BOOTCODE_KEYS.contains(&s.key.as_str()))
            .map(|s| Setting {
                unknown_conditions: Vec::new(),
                ..s.clone()
            })
            .collect();
        Effective { settings }
    }
}

/// Walks one file, then the files it includes, appending to `out`.
struct Parser<'a> {
    include: &'a mut dyn FnMut(&str) -> Option<String>,
    out: ConfigTxt,
    state: filter::State,
    /// Files being read, outermost first, as FAT compares names (case-insensitively).
    stack: Vec<String>,
    /// `include` lines followed so far.
    followed: usize,
}

impl Parser<'_> {
    fn file(&mut self, name: &str, text: &str, gate: &[String]) {
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let entry = self.cut(name, line, raw).trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            if let Some(header) = entry.strip_prefix('[') {
                self.section(name, line, header);
            } else if let Some(target) = directive(entry, "include") {
                self.include(name, line, target, gate);
            } else if let Some(args) = directive(entry, "initramfs") {
                self.setting(name, line, "initramfs", args, gate);
            } else if let Some((key, value)) = entry.split_once('=') {
                self.key_value(name, line, key, value, gate);
            } else {
                self.finding(Finding::warning(
                    "configtxt-malformed-line",
                    format!("{name} line {line}: `{entry}` is neither a setting, a section nor an include; the firmware ignores it"),
                ));
            }
        }
    }

    /// Cuts a line at the firmware's limit, flagging what is lost.
    fn cut<'t>(&mut self, name: &str, line: usize, raw: &'t str) -> &'t str {
        if raw.len() <= LINE_LIMIT {
            return raw;
        }
        let mut end = LINE_LIMIT;
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        let (kept, lost) = raw.split_at(end);
        if kept.trim_start().starts_with('#') {
            // Some firmware read past the limit as a new line (raspberrypi/firmware#1669): a
            // setting in the tail of a long comment would then take effect.
            if lost.contains('=') {
                self.finding(Finding::warning(
                    "configtxt-line-too-long",
                    format!("{name} line {line}: comment longer than {LINE_LIMIT} characters with `=` past the limit; some firmware reads the tail as a setting"),
                ).advice("split the comment over several lines"));
            }
        } else if !lost.trim().is_empty() {
            self.finding(Finding::warning(
                "configtxt-line-too-long",
                format!("{name} line {line}: longer than {LINE_LIMIT} characters; the firmware ignores `{}`", lost.trim()),
            ));
        }
        kept
    }

    fn section(&mut self, name: &str, line: usize, header: &str) {
        let Some((cond, rest)) = header.split_once(']') else {
            self.finding(Finding::warning(
                "configtxt-malformed-line",
                format!("{name} line {line}: section header `[{header}` has no closing `]`"),
            ));
            return;
        };
        if !rest.trim().is_empty() {
            self.finding(Finding::warning(
                "configtxt-malformed-line",
                format!(
                    "{name} line {line}: text after `[{cond}]` (`{}`)",
                    rest.trim()
                ),
            ));
        }
        self.out.sections.push(cond.to_string());
        if !self.state.apply(cond) {
            self.finding(
                Finding::warning(
                    "configtxt-unknown-filter",
                    format!("{name} line {line}: unknown section filter `[{cond}]`; pifw assumes the firmware ignores it and keeps the filters in force"),
                )
                .advice("check the spelling against the Raspberry Pi conditional filter documentation (filters are case-sensitive)"),
            );
        }
    }

    fn key_value(&mut self, name: &str, line: usize, key: &str, value: &str, gate: &[String]) {
        if key.trim().is_empty() {
            self.finding(Finding::warning(
                "configtxt-malformed-line",
                format!("{name} line {line}: `={value}` has no key"),
            ));
            return;
        }
        if key != key.trim_end() || value != value.trim_start() {
            self.finding(Finding::warning(
                "configtxt-space-around-equals",
                format!("{name} line {line}: whitespace around `=` in `{key}={value}`; the firmware matches keys exactly and most likely ignores this line"),
            ).advice(format!("write `{}={}`", key.trim(), value.trim())));
        }
        if value.starts_with('#') || value.contains(" #") || value.contains("\t#") {
            self.finding(Finding::warning(
                "configtxt-inline-comment",
                format!("{name} line {line}: `#` inside the value of `{key}`; config.txt only has whole-line comments, so it is part of the value"),
            ).advice("move the comment to a line of its own"));
        }
        if key == "initramfs" {
            self.finding(Finding::warning(
                "configtxt-initramfs-syntax",
                format!("{name} line {line}: `initramfs={value}`; the documented syntax is `initramfs <file> <address>` without `=`"),
            ));
        }
        self.setting(name, line, key, value, gate);
    }

    fn setting(&mut self, name: &str, line: usize, key: &str, value: &str, gate: &[String]) {
        let filters = self.state.names();
        let unknown_conditions = gate
            .iter()
            .chain(&filters)
            .filter(|f| filter::is_runtime_only(f))
            .fold(Vec::new(), |mut acc: Vec<String>, f| {
                if !acc.contains(f) {
                    acc.push(f.clone());
                }
                acc
            });
        self.out.settings.push(Setting {
            key: key.to_string(),
            value: value.to_string(),
            file: name.to_string(),
            line,
            filters,
            include_filters: gate.to_vec(),
            unknown_conditions,
        });
    }

    fn include(&mut self, name: &str, line: usize, target: &str, gate: &[String]) {
        let key = fat_name(target);
        if self.stack.contains(&key) {
            let chain = self.stack.join(" -> ");
            self.finding(Finding::error(
                "configtxt-include-cycle",
                format!("{name} line {line}: `include {target}` closes a cycle ({chain} -> {key}); not followed"),
            ));
            return;
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            self.finding(Finding::warning(
                "configtxt-include-too-deep",
                format!("{name} line {line}: `include {target}` nests deeper than {MAX_INCLUDE_DEPTH}; pifw does not follow it"),
            ));
            return;
        }
        if self.followed >= MAX_INCLUDES {
            self.finding(Finding::warning(
                "configtxt-too-many-includes",
                format!("{name} line {line}: more than {MAX_INCLUDES} includes; pifw does not follow `include {target}`"),
            ));
            return;
        }
        self.followed += 1;
        let Some(text) = (self.include)(target) else {
            self.finding(Finding::warning(
                "configtxt-include-missing",
                format!("{name} line {line}: `include {target}` names a file the partition lacks; its settings are not applied"),
            ));
            return;
        };
        self.out.includes.push(target.to_string());
        let mut inner_gate = gate.to_vec();
        inner_gate.extend(self.state.names());
        let before = self.state.clone();
        self.stack.push(key);
        self.file(target, &text, &inner_gate);
        self.stack.pop();
        if !inner_gate.is_empty() && self.state != before {
            self.finding(Finding::info(
                "configtxt-include-changes-filters",
                format!("{name} line {line}: `include {target}` sits under [{}] and changes the section filters; pifw's reading of the lines after it is approximate on boards where that include is skipped", inner_gate.join("] [")),
            ).advice("put `[all]` before the include and at the end of the included file"));
        }
    }

    fn finding(&mut self, finding: Finding) {
        self.out.findings.push(finding);
    }
}

/// `include file` / `initramfs files addr`: the keyword, whitespace, then the arguments.
fn directive<'l>(entry: &'l str, keyword: &str) -> Option<&'l str> {
    let rest = entry.strip_prefix(keyword)?;
    rest.starts_with([' ', '\t']).then(|| rest.trim())
}

/// A file name as the FAT partition resolves it: case-insensitive, relative to the root.
fn fat_name(name: &str) -> String {
    name.trim_start_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
