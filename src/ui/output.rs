//! Terminal output helpers: colour when it helps, plain text otherwise, wrapping to the
//! terminal's width, and the process-wide output settings of `--quiet`, `--verbose` and
//! `--color` ([`init`], read by [`Paint`], [`note`], [`verbose`] and the progress bars).

use crate::cli::ColorChoice;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

/// How much pifw says beside its results, set once from the command line.
#[derive(Debug, Clone, Copy)]
struct Settings {
    color: ColorChoice,
    quiet: bool,
    verbose: bool,
    json: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn settings() -> Settings {
    SETTINGS.get().copied().unwrap_or(Settings {
        color: ColorChoice::Auto,
        quiet: false,
        verbose: false,
        json: false,
    })
}

/// Records `--color`, `--quiet`, `--verbose` and `--json` for the rest of the process (first
/// call wins).
pub fn init(color: ColorChoice, quiet: bool, verbose: bool, json: bool) {
    let _ = SETTINGS.set(Settings {
        color,
        quiet,
        verbose,
        json,
    });
}

/// `--quiet`: no notes, no progress; results and errors only.
pub fn quiet() -> bool {
    settings().quiet
}

/// `--verbose`: also what is read and written, and how long each step took.
pub fn verbose() -> bool {
    settings().verbose && !settings().quiet
}

/// A note for the user on stderr (not part of the result); silent with `--quiet`.
pub fn note(msg: impl std::fmt::Display) {
    if !quiet() {
        eprintln!("{msg}");
    }
}

/// A `--verbose` detail on stderr.
pub fn detail(msg: impl std::fmt::Display) {
    if verbose() {
        eprintln!("  {msg}");
    }
}

/// Whether progress bars may be drawn: stderr is a terminal, and neither `--quiet` nor
/// `--json` asked for silence.
pub fn progress_allowed() -> bool {
    !settings().json && !quiet() && std::io::stderr().is_terminal()
}

/// `text` as printed at column `first_col`: wrapped to the terminal's width with
/// continuation lines indented by `indent`, when stdout is a terminal; unchanged in a pipe
/// (scripts and tests read whole lines).
pub fn fit_terminal(text: &str, first_col: usize, indent: usize) -> String {
    if std::io::stdout().is_terminal() && first_col + text.chars().count() > width() {
        wrap(text, first_col, indent, width())
    } else {
        text.to_string()
    }
}

/// Columns of the terminal on stdout (`COLUMNS` first), else 80.
pub fn width() -> usize {
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|&c| c >= 20)
    {
        return c;
    }
    terminal_width().unwrap_or(80)
}

fn terminal_width() -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; a non-terminal fd makes it fail.
    let rc = unsafe {
        nix::libc::ioctl(
            std::io::stdout().as_raw_fd(),
            nix::libc::TIOCGWINSZ,
            &mut ws,
        )
    };
    (rc == 0 && ws.ws_col >= 20).then_some(usize::from(ws.ws_col))
}

/// Colours for stdout: `--color always` forces them; `--color never`, `NO_COLOR`
/// (no-color.org) and `TERM=dumb` turn them off; `auto` (the default) colours a terminal only.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    on: bool,
}

impl Paint {
    pub fn stdout() -> Paint {
        Paint {
            on: color_on(settings().color, std::io::stdout().is_terminal()),
        }
    }

    /// The same decision for stderr (prompts, progress, errors).
    pub fn stderr() -> Paint {
        Paint {
            on: color_on(settings().color, std::io::stderr().is_terminal()),
        }
    }

    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.wrap("31", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.wrap("33", s)
    }
    pub fn green(&self, s: &str) -> String {
        self.wrap("32", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
}

fn color_on(choice: ColorChoice, terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && !no_color && !dumb,
    }
}

/// The `--json` documents of this run, in order, pretty-printed ([`json`]); printed by
/// [`flush_json`].
static JSON: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Adds `v` to this command's `--json` output. Nothing is printed until [`flush_json`]:
/// a command prints one JSON document, however many changes it ran.
pub fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let doc = serde_json::to_string_pretty(v)?;
    JSON.lock().unwrap_or_else(|e| e.into_inner()).push(doc);
    Ok(())
}

/// Prints the `--json` output collected by [`json`], once, at the end of the command (also
/// after a failure, so the steps done are seen): one document as it is; several (a run of
/// changes: `switch uefi --hybrid`, `switch uboot` or `rollback` undoing several backups) as
/// one object, `{"schema": 1, "target": ..., "steps": [...]}`, the target named as in the
/// first step.
pub fn flush_json() -> anyhow::Result<()> {
    let docs = std::mem::take(&mut *JSON.lock().unwrap_or_else(|e| e.into_inner()));
    let text = match docs.as_slice() {
        [] => return Ok(()),
        [one] => one.clone(),
        many => steps(many)?,
    };
    let mut o = std::io::stdout().lock();
    writeln!(o, "{text}")?;
    o.flush()?;
    Ok(())
}

/// Several pretty-printed documents as the one `{schema, target, steps}` object, in
/// serde_json's pretty layout (two spaces a level: each step indented by four).
fn steps(docs: &[String]) -> anyhow::Result<String> {
    let first: serde_json::Value = serde_json::from_str(&docs[0])?;
    let target = first
        .get("target")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let steps: Vec<String> = docs
        .iter()
        .map(|d| {
            d.lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    Ok(format!(
        "{{\n  \"schema\": {},\n  \"target\": {},\n  \"steps\": [\n{}\n  ]\n}}",
        super::SCHEMA,
        serde_json::to_string(&target)?,
        steps.join(",\n")
    ))
}

/// Human size: `30.0 MiB`, `512 B`.
pub fn size(bytes: u64) -> String {
    crate::change::size(bytes)
}

/// Wraps `text` to `width` columns; continuation lines start with `indent` spaces.
pub fn wrap(text: &str, first_col: usize, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut col = first_col;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if col > indent && col + 1 + len > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            col = indent;
        } else if !out.is_empty() {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_choice() {
        // The flag wins over NO_COLOR and the terminal check; auto never colours a pipe.
        assert!(color_on(ColorChoice::Always, false));
        assert!(!color_on(ColorChoice::Never, true));
        assert!(!color_on(ColorChoice::Auto, false));
    }

    #[test]
    fn sizes() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(30 * 1024 * 1024), "30.0 MiB");
        assert_eq!(size(1536), "1.5 KiB");
    }

    #[test]
    fn steps_are_one_pretty_document() {
        let docs: Vec<String> = [
            serde_json::json!({"target": "a.img", "n": [1, 2]}),
            serde_json::json!({"target": "a.img", "m": {}}),
        ]
        .iter()
        .map(|d| serde_json::to_string_pretty(d).unwrap())
        .collect();
        let one = steps(&docs).unwrap();
        let want = serde_json::json!({
            "schema": 1,
            "target": "a.img",
            "steps": [{"target": "a.img", "n": [1, 2]}, {"target": "a.img", "m": {}}],
        });
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&one).unwrap(),
            want
        );
        // The layout is serde_json's own pretty printing of the same object, keys in order.
        #[derive(serde::Serialize)]
        struct Steps<'a> {
            schema: u32,
            target: &'a str,
            steps: &'a serde_json::Value,
        }
        let pretty = serde_json::to_string_pretty(&Steps {
            schema: 1,
            target: "a.img",
            steps: &want["steps"],
        });
        assert_eq!(one, pretty.unwrap());
    }

    #[test]
    fn wraps_within_width() {
        let w = wrap(&"word ".repeat(40), 10, 10, 40);
        for (i, line) in w.lines().enumerate() {
            let col0 = if i == 0 { 10 } else { 0 };
            assert!(col0 + line.chars().count() <= 40, "{line:?}");
        }
        assert!(w.lines().count() > 1);
    }
}
