//! The question before a write: a whole line, answered with Enter.
//!
//! A single-key prompt confirmed `yes⏎` on its `y` and left `es⏎` for the shell to run, so the
//! answer is read as a line. Before writing to a block device the user types the device's name
//! (`sdb` or `/dev/sdb`) or `yes`, as disk tools ask before a destructive write: a `y` typed
//! on the wrong card is too easy. An image file takes `y` or `yes`. Anything else, an empty
//! line, or the end of input declines, and nothing is written.
//!
//! Asked only when stdin and stderr are both terminals; otherwise `--yes` is required (a
//! pipe cannot answer, and a prompt on stderr with stdin from a file would read the file).

use super::output::Paint;
use crate::cli::WriteArgs;
use crate::commands::UsageError;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Asks before writing to `target`, unless `--yes`; an error when not confirmed.
pub fn confirm(args: &WriteArgs, target: &Path) -> anyhow::Result<()> {
    if args.yes {
        return Ok(());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(UsageError(
            "no terminal to confirm on: pass --yes to write, or --dry-run to only see the plan (nothing was written)"
                .into(),
        )
        .into());
    }
    let device = std::fs::metadata(target)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    let paint = Paint::stderr();
    let question = if device {
        format!(
            "This writes to the block device {}. Type its name ({}) or yes to write: ",
            paint.bold(&target.display().to_string()),
            device_name(target)
        )
    } else {
        format!("Write these changes to {}? [y/N] ", target.display())
    };
    let mut err = std::io::stderr().lock();
    write!(err, "{question}")?;
    err.flush()?;
    drop(err);
    let mut line = String::new();
    let n = std::io::stdin().lock().read_line(&mut line)?;
    if n == 0 {
        // End of input (Ctrl-D): end the prompt's line before the error.
        eprintln!();
    }
    if accepts(&line, device.then_some(target)) {
        Ok(())
    } else if device {
        anyhow::bail!(
            "not confirmed (the answer was not {} or yes); nothing was written",
            device_name(target)
        )
    } else {
        anyhow::bail!("not confirmed; nothing was written")
    }
}

/// The short name of a device: `sdb` for `/dev/sdb`.
fn device_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Whether `line` confirms: for a device, its name, its path or `yes`; for a file, `y` or
/// `yes`. Case and surrounding blanks do not matter for yes; a device name must match exactly.
fn accepts(line: &str, device: Option<&Path>) -> bool {
    let answer = line.trim();
    if answer.eq_ignore_ascii_case("yes") {
        return true;
    }
    match device {
        Some(dev) => !answer.is_empty() && (answer == device_name(dev) || Path::new(answer) == dev),
        None => answer.eq_ignore_ascii_case("y"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_takes_y_or_yes() {
        for yes in ["y\n", "Y\n", "yes\n", " YES \n"] {
            assert!(accepts(yes, None), "{yes:?}");
        }
        for no in ["\n", "", "n\n", "ye\n", "yess\n", "sure\n"] {
            assert!(!accepts(no, None), "{no:?}");
        }
    }

    #[test]
    fn a_device_takes_its_name_or_yes() {
        let dev = Path::new("/dev/sdb");
        for yes in ["sdb\n", "/dev/sdb\n", "yes\n"] {
            assert!(accepts(yes, Some(dev)), "{yes:?}");
        }
        for no in ["y\n", "\n", "sda\n", "SDB\n", "/dev/sdb1\n", ""] {
            assert!(!accepts(no, Some(dev)), "{no:?}");
        }
    }
}
