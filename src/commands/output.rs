//! Terminal output helpers: colour when it helps, plain text otherwise, 80-column wrapping.

use std::io::IsTerminal;

/// Colours for stdout: on for a terminal, off when `NO_COLOR` is set (no-color.org), for
/// `TERM=dumb`, and whenever stdout is not a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    on: bool,
}

impl Paint {
    pub fn stdout() -> Paint {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Paint {
            on: std::io::stdout().is_terminal() && !no_color && !dumb,
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
    fn sizes() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(30 * 1024 * 1024), "30.0 MiB");
        assert_eq!(size(1536), "1.5 KiB");
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
