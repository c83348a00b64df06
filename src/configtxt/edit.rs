//! Editing `config.txt`: set one key for one model section, leaving every other byte alone.
//!
//! [`set_kernel_for`] (used by `pifw update-uboot` for `kernel=`, and fit for any key that
//! start.elf reads) changes the file as little as it can, in this order of preference:
//!
//! 1. The section's filters are in force at a `key=` line (the last such line, since the last
//!    one wins): its value is replaced in place; leading whitespace and the line end are kept.
//! 2. A section header puts exactly those filters in force, but no line sets the key: the line
//!    is inserted right after the first such header.
//! 3. No such section, and the file has an `[all]` header where only model filters are in
//!    force (the usual layout: model sections first, then `[all]`, as in NixOS and Raspberry
//!    Pi OS): `[pi3]` and the line are inserted before the first such `[all]`. The new
//!    `[pi3]` replaces the model filter in force there, and that `[all]` resets it, so no
//!    other line changes meaning.
//! 4. Otherwise (no `[all]`, e.g. pftf's flat file): appended at the end as `[pi3]`, the line,
//!    then `[all]`, so that a line someone later appends to the file stays unconditional; an
//!    `[all]` goes first too when a non-model filter (`[HDMI:1]`, `[none]`) is in force at the
//!    end of the file.
//!
//! "The same filters" means the filter state start.elf would have (module `filter`): `[pi3]`
//! after `[HDMI:1]` is a different section from a bare `[pi3]`. New lines use the file's line
//! ending (CRLF when the first line break is CRLF). The same value already in place gives
//! `changed: false` and the text unchanged.
//!
//! The result is checked with [`super::parse`], not trusted: for every model filter
//! combination in [`BOARDS`], a board the section applies to must see the new value and
//! nothing else changed, and every other board's effective settings must be unchanged. When a
//! later line overrides the key for the section's boards (e.g. `kernel=` under a later
//! `[all]`), the edit is refused, naming that line: pifw does not guess which the user meant.
//!
//! Limits: `include`d files are not read (their lines are the same before and after, but one
//! could override the key; the caller checks the card's effective view). Keys bootcode.bin
//! reads ([`super::BOOTCODE_KEYS`]) are refused: bootcode.bin ignores sections, so a
//! per-section value would apply to every board that boots through it.
//!
//! Must not: read or write files. Text in, text out.

use super::filter::{self, Kind, Section, State};
use super::{BOOTCODE_KEYS, ConfigTxt, LINE_LIMIT, parse};

/// Model filter combinations the check covers: each board's documented set (see
/// [`super::ConfigTxt::effective`]), plus each model filter alone.
pub const BOARDS: &[&[&str]] = &[
    &["pi1"],
    &["pi2"],
    &["pi3"],
    &["pi3", "pi3+"],
    &["pi3", "cm3"],
    &["pi3", "cm3+"],
    &["pi0"],
    &["pi0", "pi0w"],
    &["pi0", "pi0w", "pi02"],
    &["pi4"],
    &["pi4", "pi400"],
    &["pi4", "cm4"],
    &["pi4", "cm4s"],
    &["pi5"],
    &["pi5", "pi500"],
    &["pi5", "cm5"],
    &["pi3+"],
    &["pi400"],
    &["cm4"],
    &["cm4s"],
    &["pi0w"],
    &["pi02"],
    &["pi500"],
    &["cm5"],
    &["cm0"],
    &["cm1"],
    &["cm3"],
    &["cm3+"],
];

/// The outcome of an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub new_text: String,
    pub changed: bool,
    /// One sentence for the plan, e.g. `config.txt line 2: [pi3] kernel=a -> kernel=b`.
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("`{key}` is not a config.txt key pifw can set (letters, digits and `_` only)")]
    BadKey { key: String },
    #[error("`{key}={value}`: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: &'static str,
    },
    #[error(
        "[{filters}] is not a section pifw can edit: give one or more different model filters such as `pi3`, `pi3+`, `pi02`"
    )]
    BadSection { filters: String },
    #[error(
        "`{key}` is read by bootcode.bin, which ignores sections: setting it under [{filters}] would affect every board that boots through bootcode.bin"
    )]
    BootcodeKey { key: String, filters: String },
    #[error(
        "config.txt line {line} (`{text}`) sets `{key}` again for boards that match [{filters}], so the change would not take effect; edit that line by hand or move it into a model section"
    )]
    Overridden {
        key: String,
        filters: String,
        line: usize,
        text: String,
    },
    #[error(
        "the edit would change the effective settings of a board answering to [{board}] ({what}); not applied"
    )]
    SideEffect { board: String, what: String },
}

/// Sets `key=value` for the boards `section_filters` selects (e.g. `["pi3"]`), keeping every
/// other line byte for byte. See the module doc for where the line goes and what is checked.
pub fn set_kernel_for(
    text: &str,
    section_filters: &[&str],
    key: &str,
    value: &str,
) -> Result<Edit, EditError> {
    let filters = section_filters.join("][");
    validate(key, value, &filters)?;
    let target = target_state(section_filters, &filters)?;
    let eol = if text.split('\n').next().is_some_and(|l| l.ends_with('\r')) && text.contains('\n') {
        "\r\n"
    } else {
        "\n"
    };
    let lines = scan(text);
    let new_line = format!("{key}={value}");
    let header: String = section_filters.iter().map(|f| format!("[{f}]")).collect();

    let (new_text, description) = if let Some(l) = lines
        .iter()
        .rev()
        .find(|l| l.state == target && l.key.as_deref() == Some(key))
    {
        let old_value = l.value.as_deref().unwrap_or("");
        if old_value == value {
            verify(text, text, section_filters, key, value, &filters)?;
            return Ok(Edit {
                new_text: text.to_string(),
                changed: false,
                description: format!(
                    "config.txt line {}: {header} {key}={value} already",
                    l.number
                ),
            });
        }
        let indent = &l.content[..l.content.len() - l.content.trim_start().len()];
        let replaced = format!("{indent}{new_line}{}", l.ending);
        (
            splice(text, &lines, l.index, Some(&replaced), ""),
            format!(
                "config.txt line {}: {header} {key}={old_value} -> {new_line}",
                l.number
            ),
        )
    } else if let Some(l) = lines.iter().find(|l| l.is_header && l.state == target) {
        let ending = if l.ending.is_empty() { eol } else { "" };
        let inserted = format!("{}{ending}{new_line}{eol}", l.raw);
        (
            splice(text, &lines, l.index, Some(&inserted), ""),
            format!(
                "config.txt: add {new_line} under {header} at line {}",
                l.number + 1
            ),
        )
    } else if let Some(l) = lines.iter().find(|l| {
        l.is_header
            && l.header.as_deref() == Some("all")
            && l.before.model_only()
            && l.before.with(section_filters) == target
    }) {
        let inserted = format!("{header}{eol}{new_line}{eol}");
        (
            splice(text, &lines, l.index, None, &inserted),
            format!(
                "config.txt: add {header} {new_line} before [all] at line {}",
                l.number
            ),
        )
    } else {
        let end_state = lines.last().map(|l| l.state.clone()).unwrap_or_default();
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(eol);
        }
        if !end_state.model_only() {
            out.push_str(&format!("[all]{eol}"));
        }
        out.push_str(&format!("{header}{eol}{new_line}{eol}[all]{eol}"));
        (
            out,
            format!("config.txt: append {header} {new_line} at the end, then [all]"),
        )
    };
    verify(text, &new_text, section_filters, key, value, &filters)?;
    Ok(Edit {
        new_text,
        changed: true,
        description,
    })
}

fn validate(key: &str, value: &str, filters: &str) -> Result<(), EditError> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(EditError::BadKey {
            key: key.to_string(),
        });
    }
    let bad = |reason| EditError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    if value.contains(['\n', '\r', '\0']) {
        return Err(bad("a value cannot contain a line break or NUL"));
    }
    if value != value.trim() {
        return Err(bad(
            "leading or trailing whitespace would be part of the value",
        ));
    }
    if value.contains('#') {
        return Err(bad(
            "config.txt has no inline comments: `#` would be part of the value",
        ));
    }
    if key.len() + 1 + value.len() > LINE_LIMIT {
        return Err(bad(
            "the line would be longer than the firmware reads (98 characters)",
        ));
    }
    if BOOTCODE_KEYS.contains(&key) {
        return Err(EditError::BootcodeKey {
            key: key.to_string(),
            filters: filters.to_string(),
        });
    }
    Ok(())
}

/// The filter state a section made of `section_filters` puts in force after `[all]`. Only
/// model names (not `board-type=`), none replacing another.
fn target_state(section_filters: &[&str], filters: &str) -> Result<Filters, EditError> {
    let bad = || EditError::BadSection {
        filters: filters.to_string(),
    };
    if section_filters.is_empty() {
        return Err(bad());
    }
    let mut state = State::default();
    for f in section_filters {
        if filter::classify(f) != Section::Filter(Kind::Model) || f.starts_with("board-type=") {
            return Err(bad());
        }
        state.apply(f);
    }
    // Two model filters replace each other, so `[pi3][pi4]` is just `[pi4]`: refuse it.
    if state.names().len() != section_filters.len() {
        return Err(bad());
    }
    Ok(Filters(state))
}

/// A filter state that can be compared and asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Filters(State);

impl Filters {
    fn model_only(&self) -> bool {
        self.0
            .names()
            .iter()
            .all(|n| filter::classify(n) == Section::Filter(Kind::Model))
    }

    fn with(&self, section_filters: &[&str]) -> Filters {
        let mut s = self.0.clone();
        for f in section_filters {
            s.apply(f);
        }
        Filters(s)
    }
}

/// One line of the file as the editor sees it.
#[derive(Debug)]
struct Line<'t> {
    /// 0-based index into the line list.
    index: usize,
    /// 1-based line number.
    number: usize,
    /// The line with its ending.
    raw: &'t str,
    /// Without the ending.
    content: &'t str,
    /// `\n`, `\r\n`, or empty for a last line without one.
    ending: &'t str,
    is_header: bool,
    /// The filter between the brackets, for a header.
    header: Option<String>,
    /// Filters in force before this line.
    before: Filters,
    /// Filters in force after this line (for a setting: the ones it is under).
    state: Filters,
    /// For `key=value` lines: the key exactly as written (no whitespace allowed around it).
    key: Option<String>,
    value: Option<String>,
}

/// Walks the file with the parser's rules for headers (see `super::Parser::file`).
fn scan(text: &str) -> Vec<Line<'_>> {
    let mut state = Filters::default();
    let mut out = Vec::new();
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let content = raw
            .strip_suffix('\n')
            .map(|c| c.strip_suffix('\r').unwrap_or(c))
            .unwrap_or(raw);
        let ending = &raw[content.len()..];
        let mut end = content.len().min(LINE_LIMIT);
        while !content.is_char_boundary(end) {
            end -= 1;
        }
        let entry = content[..end].trim();
        let before = state.clone();
        let mut line = Line {
            index,
            number: index + 1,
            raw,
            content,
            ending,
            is_header: false,
            header: None,
            before,
            state: state.clone(),
            key: None,
            value: None,
        };
        if let Some(h) = entry.strip_prefix('[') {
            if let Some((cond, _)) = h.split_once(']') {
                state.0.apply(cond);
                line.is_header = true;
                line.header = Some(cond.to_string());
                line.state = state.clone();
            }
        } else if !entry.starts_with('#')
            && let Some((k, v)) = entry.split_once('=')
        {
            line.key = Some(k.to_string());
            line.value = Some(v.trim_end().to_string());
        }
        out.push(line);
    }
    out
}

/// `text` with line `index` replaced by `replacement` (or kept when `None`), and `before`
/// inserted in front of it.
fn splice(
    text: &str,
    lines: &[Line<'_>],
    index: usize,
    replacement: Option<&str>,
    before: &str,
) -> String {
    let mut out = String::with_capacity(text.len() + before.len() + 64);
    for l in lines {
        if l.index == index {
            out.push_str(before);
            out.push_str(replacement.unwrap_or(l.raw));
        } else {
            out.push_str(l.raw);
        }
    }
    out
}

/// The settings of a view as start.elf uses them, without their line numbers (which shift).
fn view(
    cfg: &ConfigTxt,
    board: &[&str],
    skip_key: Option<&str>,
) -> Vec<(String, String, Vec<String>)> {
    cfg.effective(board)
        .settings
        .into_iter()
        .filter(|s| Some(s.key.as_str()) != skip_key)
        .map(|s| (s.key, s.value, s.unknown_conditions))
        .collect()
}

fn verify(
    old: &str,
    new: &str,
    section_filters: &[&str],
    key: &str,
    value: &str,
    filters: &str,
) -> Result<(), EditError> {
    let before = parse("config.txt", old, &mut |_| None);
    let after = parse("config.txt", new, &mut |_| None);
    for board in BOARDS {
        let selected = section_filters
            .iter()
            .all(|f| filter::evaluate(f, board) == filter::Verdict::Holds);
        let side_effect = |what: String| EditError::SideEffect {
            board: board.join("]["),
            what,
        };
        if selected {
            let eff = after.effective(board);
            let last = eff.last(key);
            if last.map(|s| s.value.as_str()) != Some(value)
                || last.is_some_and(|s| s.is_conditional())
            {
                let (line, text) = last
                    .map(|s| (s.line, format!("{}={}", s.key, s.value)))
                    .unwrap_or_default();
                return Err(EditError::Overridden {
                    key: key.to_string(),
                    filters: filters.to_string(),
                    line,
                    text,
                });
            }
            if view(&before, board, Some(key)) != view(&after, board, Some(key)) {
                return Err(side_effect(format!("settings other than `{key}` changed")));
            }
        } else if view(&before, board, None) != view(&after, board, None) {
            return Err(side_effect("it is not selected by the section".to_string()));
        }
    }
    let codes = |c: &ConfigTxt| {
        c.findings
            .iter()
            .map(|f| f.code.clone())
            .collect::<Vec<_>>()
    };
    if codes(&before) != codes(&after) {
        return Err(EditError::SideEffect {
            board: "all".to_string(),
            what: format!(
                "parse findings changed: {:?} -> {:?}",
                codes(&before),
                codes(&after)
            ),
        });
    }
    let boot = |c: &ConfigTxt| view_of(&c.bootcode_view().settings);
    if boot(&before) != boot(&after) {
        return Err(EditError::SideEffect {
            board: "bootcode.bin".to_string(),
            what: "its view of config.txt changed".to_string(),
        });
    }
    Ok(())
}

fn view_of(settings: &[super::Setting]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator's texts: one source of truth for what the fixture images hold.
    const MKIMAGES: &str = include_str!("../../scripts/mkimages");

    /// A `NAME = """\` ... `"""` string of scripts/mkimages.
    fn triple_quoted(name: &str) -> String {
        let start = format!("{name} = \"\"\"\\\n");
        let rest = &MKIMAGES[MKIMAGES.find(&start).expect("constant in mkimages") + start.len()..];
        let body = &rest[..rest.find("\"\"\"").expect("closing quotes")];
        assert!(!body.contains('\\'), "escapes would need decoding");
        body.to_string()
    }

    fn nixos() -> String {
        triple_quoted("NIXOS_CONFIG_TXT")
    }

    fn rpios() -> String {
        triple_quoted("RPIOS_CONFIG_TXT")
    }

    /// pftf's CRLF config.txt: `"\r\n".join([...]) + "\r\n"` in mkimages.
    fn pftf() -> String {
        let start = "PFTF_CONFIG_TXT = \"\\r\\n\".join([\n";
        let rest = &MKIMAGES[MKIMAGES.find(start).expect("PFTF_CONFIG_TXT") + start.len()..];
        let body = &rest[..rest.find("])").expect("end of list")];
        let lines: Vec<&str> = body
            .lines()
            .map(|l| l.trim().trim_end_matches(',').trim_matches('"'))
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 8, "{lines:?}");
        format!("{}\r\n", lines.join("\r\n"))
    }

    fn kernel(text: &str, board: &[&str]) -> Option<String> {
        parse("config.txt", text, &mut |_| None)
            .effective(board)
            .get("kernel")
            .map(str::to_string)
    }

    /// Lines of `new` not in `old` and vice versa, by position after aligning the common
    /// prefix and suffix.
    fn diff(old: &str, new: &str) -> (Vec<String>, Vec<String>) {
        let a: Vec<&str> = old.split_inclusive('\n').collect();
        let b: Vec<&str> = new.split_inclusive('\n').collect();
        let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        let suf = a[pre..]
            .iter()
            .rev()
            .zip(b[pre..].iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        (
            a[pre..a.len() - suf]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            b[pre..b.len() - suf]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    }

    #[test]
    fn nixos_same_value_changes_nothing() {
        let text = nixos();
        let edit = set_kernel_for(&text, &["pi3"], "kernel", "u-boot-rpi3.bin").unwrap();
        assert!(!edit.changed);
        assert_eq!(edit.new_text, text);
    }

    #[test]
    fn nixos_replaces_the_pi3_line_only() {
        let text = nixos();
        let edit = set_kernel_for(&text, &["pi3"], "kernel", "u-boot-2025.bin").unwrap();
        assert!(edit.changed);
        assert_eq!(
            diff(&text, &edit.new_text),
            (
                vec!["kernel=u-boot-rpi3.bin\n".to_string()],
                vec!["kernel=u-boot-2025.bin\n".to_string()]
            )
        );
        assert_eq!(
            edit.description,
            "config.txt line 2: [pi3] kernel=u-boot-rpi3.bin -> kernel=u-boot-2025.bin"
        );
        assert_eq!(
            kernel(&edit.new_text, &["pi3"]).as_deref(),
            Some("u-boot-2025.bin")
        );
        assert_eq!(
            kernel(&edit.new_text, &["pi0", "pi0w", "pi02"]).as_deref(),
            Some("u-boot-rpi3.bin"),
            "the Zero 2 W has its own [pi02] section"
        );
        assert_eq!(
            kernel(&edit.new_text, &["pi4"]).as_deref(),
            Some("u-boot-rpi4.bin")
        );
    }

    #[test]
    fn nixos_new_section_goes_before_the_first_all() {
        let text = nixos();
        let edit = set_kernel_for(&text, &["pi3+"], "kernel", "u-boot-rpi3-b-plus.bin").unwrap();
        let (removed, added) = diff(&text, &edit.new_text);
        assert!(removed.is_empty(), "{removed:?}");
        assert_eq!(added, ["[pi3+]\n", "kernel=u-boot-rpi3-b-plus.bin\n"]);
        let at = edit.new_text.find("[pi3+]").unwrap();
        assert!(edit.new_text[at..].contains("\n[all]\n# Boot in 64-bit mode."));
        assert_eq!(
            kernel(&edit.new_text, &["pi3", "pi3+"]).as_deref(),
            Some("u-boot-rpi3-b-plus.bin")
        );
        assert_eq!(
            kernel(&edit.new_text, &["pi3"]).as_deref(),
            Some("u-boot-rpi3.bin")
        );
        // Every board's other settings, compared by the editor's own check, and here by hand
        // for the one the new header sits closest to: [cm4] keeps otg_mode.
        let cfg = parse("config.txt", &edit.new_text, &mut |_| None);
        assert_eq!(cfg.effective(&["pi4", "cm4"]).get("otg_mode"), Some("1"));
        assert_eq!(cfg.effective(&["pi3", "pi3+"]).get("otg_mode"), None);
    }

    #[test]
    fn rpios_section_before_its_first_all() {
        let text = rpios();
        let edit = set_kernel_for(&text, &["pi3"], "kernel", "u-boot.bin").unwrap();
        assert_eq!(
            diff(&text, &edit.new_text).1,
            ["[pi3]\n", "kernel=u-boot.bin\n"]
        );
        assert_eq!(
            kernel(&edit.new_text, &["pi3"]).as_deref(),
            Some("u-boot.bin")
        );
        for board in BOARDS.iter().filter(|b| !b.contains(&"pi3")) {
            assert_eq!(
                kernel(&edit.new_text, board),
                kernel(&text, board),
                "{board:?}"
            );
        }
    }

    #[test]
    fn pftf_crlf_is_appended_to_with_crlf() {
        let text = pftf();
        let edit = set_kernel_for(&text, &["pi3"], "kernel", "u-boot.bin").unwrap();
        assert!(edit.new_text.starts_with(&text), "original bytes kept");
        assert_eq!(
            &edit.new_text[text.len()..],
            "[pi3]\r\nkernel=u-boot.bin\r\n[all]\r\n"
        );
        assert_eq!(
            edit.new_text.matches('\n').count(),
            edit.new_text.matches("\r\n").count(),
            "no bare LF"
        );
        assert_eq!(
            kernel(&edit.new_text, &["pi3"]).as_deref(),
            Some("u-boot.bin")
        );
        let cfg = parse("config.txt", &edit.new_text, &mut |_| None);
        assert_eq!(
            cfg.effective(&["pi3"]).armstub().as_deref(),
            Some("RPI_EFI.fd")
        );
        assert_eq!(kernel(&edit.new_text, &["pi4"]), None);

        // In place, CRLF kept on the edited line.
        let again = set_kernel_for(&edit.new_text, &["pi3"], "kernel", "u-boot-2.bin").unwrap();
        assert_eq!(
            diff(&edit.new_text, &again.new_text),
            (
                vec!["kernel=u-boot.bin\r\n".into()],
                vec!["kernel=u-boot-2.bin\r\n".into()]
            )
        );
    }

    #[test]
    fn inserts_under_an_existing_section_without_the_key() {
        let text = "[pi3]\ndtoverlay=disable-bt\n[all]\nenable_uart=1";
        let edit = set_kernel_for(text, &["pi3"], "kernel", "u.bin").unwrap();
        assert_eq!(
            edit.new_text,
            "[pi3]\nkernel=u.bin\ndtoverlay=disable-bt\n[all]\nenable_uart=1"
        );
        // Last line without a line end, appended to.
        let edit = set_kernel_for("arm_64bit=1", &["pi02"], "kernel", "u.bin").unwrap();
        assert_eq!(edit.new_text, "arm_64bit=1\n[pi02]\nkernel=u.bin\n[all]\n");
        let edit = set_kernel_for("", &["pi3"], "kernel", "u.bin").unwrap();
        assert_eq!(edit.new_text, "[pi3]\nkernel=u.bin\n[all]\n");
    }

    #[test]
    fn a_combined_section_is_not_the_plain_one() {
        // [pi3] under [HDMI:1] only applies with that monitor: not the section asked for.
        let text = "[HDMI:1]\n[pi3]\nkernel=a.bin\n";
        let edit = set_kernel_for(text, &["pi3"], "kernel", "b.bin").unwrap();
        assert_eq!(
            edit.new_text,
            "[HDMI:1]\n[pi3]\nkernel=a.bin\n[all]\n[pi3]\nkernel=b.bin\n[all]\n"
        );
        let eff = parse("config.txt", &edit.new_text, &mut |_| None).effective(&["pi3"]);
        assert_eq!(eff.last("kernel").map(|s| s.is_conditional()), Some(false));
        assert_eq!(eff.get("kernel"), Some("b.bin"));
    }

    #[test]
    fn a_later_override_is_refused_with_its_line() {
        let text = "[pi3]\nkernel=a.bin\n[all]\nkernel=b.bin\n";
        let err = set_kernel_for(text, &["pi3"], "kernel", "c.bin").unwrap_err();
        assert_eq!(
            err,
            EditError::Overridden {
                key: "kernel".into(),
                filters: "pi3".into(),
                line: 4,
                text: "kernel=b.bin".into()
            }
        );
        assert!(
            err.to_string()
                .starts_with("config.txt line 4 (`kernel=b.bin`)")
        );
        // Same value in place but overridden: not "unchanged", an error.
        assert!(set_kernel_for(text, &["pi3"], "kernel", "a.bin").is_err());
    }

    #[test]
    fn refuses_bad_input() {
        let t = "[all]\n";
        assert!(matches!(
            set_kernel_for(t, &["pi3"], "ker nel", "x"),
            Err(EditError::BadKey { .. })
        ));
        for v in ["a\nb", " x", "x # note", &"x".repeat(100)] {
            assert!(
                matches!(
                    set_kernel_for(t, &["pi3"], "kernel", v),
                    Err(EditError::BadValue { .. })
                ),
                "{v:?}"
            );
        }
        for f in [
            &["all"][..],
            &["bogus"],
            &["HDMI:1"],
            &["pi3", "pi4"],
            &[],
            &["board-type=0x8"],
        ] {
            assert!(
                matches!(
                    set_kernel_for(t, f, "kernel", "x"),
                    Err(EditError::BadSection { .. })
                ),
                "{f:?}"
            );
        }
        assert!(matches!(
            set_kernel_for(t, &["pi3"], "start_file", "start_x.elf"),
            Err(EditError::BootcodeKey { .. })
        ));
    }

    #[test]
    fn every_other_board_is_unchanged_on_every_fixture() {
        for (name, text) in [("nixos", nixos()), ("rpios", rpios()), ("pftf", pftf())] {
            for filters in [&["pi3"][..], &["pi02"], &["pi3+"], &["pi4"], &["cm4"]] {
                let edit = set_kernel_for(&text, filters, "kernel", "new.bin")
                    .unwrap_or_else(|e| panic!("{name} {filters:?}: {e}"));
                let old = parse("config.txt", &text, &mut |_| None);
                let new = parse("config.txt", &edit.new_text, &mut |_| None);
                for board in BOARDS {
                    let selected = filters.iter().all(|f| board.contains(f));
                    let (o, n) = (view(&old, board, None), view(&new, board, None));
                    if selected {
                        assert_eq!(kernel(&edit.new_text, board).as_deref(), Some("new.bin"));
                        assert_eq!(
                            view(&old, board, Some("kernel")),
                            view(&new, board, Some("kernel")),
                            "{name} {filters:?} {board:?}"
                        );
                    } else {
                        assert_eq!(o, n, "{name} {filters:?} {board:?}");
                    }
                }
            }
        }
    }
}
