//! Commands about pifw itself, hidden from the command list: shell completions and the man
//! page, both generated from the clap definitions in [`crate::cli`] so they match the parser.
//! The Debian package ships their output (scripts/package).

use crate::cli::{Cli, Shell};
use clap::CommandFactory;
use std::io::Write;

/// `pifw completions SHELL`: the completion script on stdout.
pub fn completions(shell: Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Into memory first: `generate` panics on a write error, and a closed pipe is not one
    // worth a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pifw", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// `pifw man`: the man page (section 1, roff) on stdout: the synopsis, the options, and a
/// section per command with its options, example and exit codes.
pub fn man() -> anyhow::Result<()> {
    let cmd = Cli::command();
    let mut page: Vec<u8> = Vec::new();
    let out = &mut page;
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    render_commands(out, &cmd, "pifw")?;
    if let Some(after) = cmd.get_after_help() {
        writeln!(
            out,
            ".SH \"EXAMPLES AND EXIT CODES\"\n.nf\n{}\n.fi",
            roff_text(&after.to_string())
        )?;
    }
    writeln!(
        out,
        ".SH ENVIRONMENT\n.TP\n\\fBNO_COLOR\\fR\nWhen set and not empty, no colours (as --color never), unless --color always.\n.TP\n\\fBPIFW_CONFIG\\fR\nThe configuration file to read instead of the default one."
    )?;
    man.render_version_section(out)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&page)?;
    stdout.flush()?;
    Ok(())
}

/// One `.SH` per command (`.SS` per subcommand): its about text, usage, options and
/// after-help (example and exit codes), in roff.
fn render_commands(out: &mut dyn Write, cmd: &clap::Command, prefix: &str) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{prefix} {}", sub.get_name());
        let heading = if prefix == "pifw" { ".SH" } else { ".SS" };
        writeln!(out, "{heading} \"{}\"", roff_escape(&name.to_uppercase()))?;
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(out, "{}", roff_text(&about.to_string()))?;
        }
        let mut sub_cmd = sub.clone().bin_name(name.clone());
        let usage = sub_cmd.render_usage().to_string();
        writeln!(out, ".PP\n.nf\n{}\n.fi", roff_text(usage.trim()))?;
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
        {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let label = match (arg.get_long(), arg.get_short()) {
                (Some(l), Some(s)) => format!("-{s}, --{l}"),
                (Some(l), None) => format!("--{l}"),
                (None, Some(s)) => format!("-{s}"),
                (None, None) => id.to_uppercase(),
            };
            writeln!(out, ".TP\n\\fB{}\\fR", roff_escape(&label))?;
            if let Some(help) = arg.get_help() {
                writeln!(out, "{}", roff_text(&help.to_string()))?;
            }
        }
        if let Some(after) = sub.get_after_help() {
            writeln!(out, ".PP\n.nf\n{}\n.fi", roff_text(&after.to_string()))?;
        }
        render_commands(out, sub, &name)?;
    }
    Ok(())
}

fn roff_escape(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// Text for a roff body: escaped, and no line starting with a control character.
fn roff_text(s: &str) -> String {
    s.lines()
        .map(|l| {
            let l = roff_escape(l);
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
