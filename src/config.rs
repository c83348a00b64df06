//! The configuration file and the directories pifw keeps state in.
//!
//! The file is TOML, every field optional, unknown fields refused (a misspelt `keep_backup`
//! must not silently mean "the default"):
//!
//! ```toml
//! debian_mirror = "http://mirror.example/debian"
//! keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
//! cache_dir = "/var/cache/pifw"
//! backup_dir = "~/pifw-backups"
//! keep_backups = 10
//! backups_on_card = true
//! ```
//!
//! Where things live ([`Env`] carries the inputs, so tests never touch the process
//! environment):
//!
//! | | user | root (euid 0) |
//! |---|---|---|
//! | config | `$XDG_CONFIG_HOME/pifw/config.toml` (`~/.config/...`) | `/etc/pifw/config.toml` if present, else the user path |
//! | cache | `$XDG_CACHE_HOME/pifw` (`~/.cache/pifw`) | `/var/cache/pifw` |
//! | backups | `$XDG_STATE_HOME/pifw/backups` (`~/.local/state/...`) | `/var/lib/pifw/backups` |
//!
//! `PIFW_CONFIG` names the file instead (then it must exist). An XDG variable that is not an
//! absolute path is ignored, as the XDG Base Directory specification says. Paths in the file
//! must be absolute or start with `~/`.
//!
//! Errors name the file, line, column and field, from the TOML parser's spans.
//!
//! [`set_backup_dir`] and [`load_for_run`] are the process's view: the file the environment
//! points at, with `--backup-dir` (this run only) over its `backup_dir`.
//!
//! Must not: create directories or print. Callers create what they use.

use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The Debian archive keyring the debian-archive-keyring package installs.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Default number of backups kept per card.
pub const DEFAULT_KEEP_BACKUPS: usize = 10;

/// The settings in force: the file's values over the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Debian mirror for Debian-packaged releases; `None`: take it from the apt sources.
    pub debian_mirror: Option<String>,
    /// OpenPGP keyring that must have signed a Debian archive's `InRelease` before pifw takes
    /// a package from it ([`DEFAULT_KEYRING`] unless the file names another).
    pub keyring: PathBuf,
    pub cache_dir: PathBuf,
    pub backup_dir: PathBuf,
    /// Backups kept per card by retention; at least 1.
    pub keep_backups: usize,
    /// Also copy each backup onto the card's FAT partition (`pifw/backups/`) when it fits.
    pub backups_on_card: bool,
    /// The file these came from; `None` when no file exists and defaults apply.
    pub file: Option<PathBuf>,
}

/// The inputs that decide the paths: the parts of the process environment pifw reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub root: bool,
    pub home: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub xdg_cache_home: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    /// `PIFW_CONFIG`.
    pub pifw_config: Option<PathBuf>,
    /// The system-wide file root reads (`/etc/pifw/config.toml`; a test points it elsewhere).
    pub etc_config: PathBuf,
}

impl Env {
    /// This process: effective uid and environment variables.
    pub fn from_process() -> Env {
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
        Env {
            root: nix::unistd::geteuid().is_root(),
            home: var("HOME"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            xdg_cache_home: var("XDG_CACHE_HOME"),
            xdg_state_home: var("XDG_STATE_HOME"),
            pifw_config: var("PIFW_CONFIG"),
            etc_config: PathBuf::from("/etc/pifw/config.toml"),
        }
    }

    /// `$VAR` if absolute, else `~/<fallback>`.
    fn xdg(&self, var: &Option<PathBuf>, fallback: &str) -> Result<PathBuf, ConfigError> {
        if let Some(dir) = var.as_ref().filter(|d| d.is_absolute()) {
            return Ok(dir.clone());
        }
        match &self.home {
            Some(home) if home.is_absolute() => Ok(home.join(fallback)),
            _ => Err(ConfigError::NoHome),
        }
    }

    /// The config file to read, and whether it must exist.
    pub fn config_path(&self) -> Result<(PathBuf, bool), ConfigError> {
        if let Some(path) = &self.pifw_config {
            return Ok((path.clone(), true));
        }
        if self.root && self.etc_config.is_file() {
            return Ok((self.etc_config.clone(), true));
        }
        Ok((
            self.xdg(&self.xdg_config_home, ".config")?
                .join("pifw/config.toml"),
            false,
        ))
    }

    /// Where downloads are cached by default.
    pub fn default_cache_dir(&self) -> Result<PathBuf, ConfigError> {
        if self.root {
            return Ok(PathBuf::from("/var/cache/pifw"));
        }
        Ok(self.xdg(&self.xdg_cache_home, ".cache")?.join("pifw"))
    }

    /// Where backups go by default.
    pub fn default_backup_dir(&self) -> Result<PathBuf, ConfigError> {
        if self.root {
            return Ok(PathBuf::from("/var/lib/pifw/backups"));
        }
        Ok(self
            .xdg(&self.xdg_state_home, ".local/state")?
            .join("pifw/backups"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {}{message}", file.display(), field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        field: Option<String>,
        message: String,
    },
    #[error(
        "HOME is not set (or not absolute), so pifw cannot place its files; set HOME or XDG_CONFIG_HOME, XDG_CACHE_HOME and XDG_STATE_HOME"
    )]
    NoHome,
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    debian_mirror: Option<Spanned<String>>,
    keyring: Option<Spanned<PathBuf>>,
    cache_dir: Option<Spanned<PathBuf>>,
    backup_dir: Option<Spanned<PathBuf>>,
    keep_backups: Option<Spanned<usize>>,
    backups_on_card: Option<bool>,
}

/// `--backup-dir` for this run, set once (by the command layer, before any command reads the
/// configuration).
static BACKUP_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `dir` (absolute from here) the backup directory of this run, over the
/// configuration's `backup_dir`.
pub fn set_backup_dir(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let abs =
        std::path::absolute(dir).with_context(|| format!("--backup-dir {}", dir.display()))?;
    let _ = BACKUP_DIR.set(abs);
    Ok(())
}

/// The configuration of this run: the file the process environment points at, with
/// `--backup-dir` ([`set_backup_dir`]) over the file's `backup_dir`.
pub fn load_for_run() -> anyhow::Result<Config> {
    use anyhow::Context;
    let mut cfg = Config::load(&Env::from_process()).context("reading the configuration file")?;
    if let Some(dir) = BACKUP_DIR.get() {
        cfg.backup_dir = dir.clone();
    }
    Ok(cfg)
}

impl Config {
    /// Reads the config file `env` points at, or the defaults when there is none.
    pub fn load(env: &Env) -> Result<Config, ConfigError> {
        let (path, required) = env.config_path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(env, &path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Config::defaults(env)
            }
            Err(source) => Err(ConfigError::Read { file: path, source }),
        }
    }

    /// Every setting at its default.
    pub fn defaults(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            debian_mirror: None,
            keyring: PathBuf::from(DEFAULT_KEYRING),
            cache_dir: env.default_cache_dir()?,
            backup_dir: env.default_backup_dir()?,
            keep_backups: DEFAULT_KEEP_BACKUPS,
            backups_on_card: true,
            file: None,
        })
    }

    /// Parses `text`, the content of `file`.
    pub fn parse(env: &Env, file: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |span: Option<Range<usize>>, field: Option<&str>, message: &str| {
            let (line, column) = span.map_or((1, 1), |s| line_column(text, s.start));
            ConfigError::Invalid {
                file: file.to_path_buf(),
                line,
                column,
                field: field
                    .map(str::to_string)
                    .or_else(|| key_at(text, line).map(str::to_string)),
                message: message.to_string(),
            }
        };
        let raw: File =
            toml::from_str(text).map_err(|e| invalid(e.span(), None, e.message().trim()))?;
        let mut config = Config::defaults(env)?;
        config.file = Some(file.to_path_buf());

        if let Some(mirror) = raw.debian_mirror {
            let url = mirror.get_ref().trim_end_matches('/');
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(
                    Some(mirror.span()),
                    Some("debian_mirror"),
                    "must be an http:// or https:// URL (packages are verified by hash either way)",
                ));
            }
            config.debian_mirror = Some(url.to_string());
        }
        for (value, name, slot) in [
            (raw.cache_dir, "cache_dir", &mut config.cache_dir),
            (raw.backup_dir, "backup_dir", &mut config.backup_dir),
            (raw.keyring, "keyring", &mut config.keyring),
        ] {
            let Some(value) = value else { continue };
            let path = value.get_ref();
            *slot = if let Ok(rest) = path.strip_prefix("~") {
                match &env.home {
                    Some(home) if home.is_absolute() => home.join(rest),
                    _ => {
                        return Err(invalid(
                            Some(value.span()),
                            Some(name),
                            "starts with `~` but HOME is not set",
                        ));
                    }
                }
            } else if path.is_absolute() {
                path.clone()
            } else {
                return Err(invalid(
                    Some(value.span()),
                    Some(name),
                    "must be an absolute path or start with `~/`",
                ));
            };
        }
        if let Some(keep) = raw.keep_backups {
            if *keep.get_ref() == 0 {
                return Err(invalid(
                    Some(keep.span()),
                    Some("keep_backups"),
                    "must be at least 1: the backup of the latest change is what undoes it",
                ));
            }
            config.keep_backups = *keep.get_ref();
        }
        if let Some(on_card) = raw.backups_on_card {
            config.backups_on_card = on_card;
        }
        Ok(config)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The key of a `key = value` line (1-based), when the line has one.
fn key_at(text: &str, line: usize) -> Option<&str> {
    let (key, _) = text.lines().nth(line - 1)?.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('#') && !key.starts_with('[')).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Env {
        Env {
            home: Some("/home/ann".into()),
            etc_config: "/nonexistent/etc/pifw/config.toml".into(),
            ..Env::default()
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(&user(), Path::new("/c/config.toml"), text)
    }

    #[test]
    fn default_paths_for_a_user_and_for_root() {
        let env = user();
        let c = Config::defaults(&env).unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/home/ann/.cache/pifw"));
        assert_eq!(
            c.backup_dir,
            PathBuf::from("/home/ann/.local/state/pifw/backups")
        );
        assert_eq!(c.keep_backups, 10);
        assert!(c.backups_on_card);
        assert_eq!(
            env.config_path().unwrap(),
            (PathBuf::from("/home/ann/.config/pifw/config.toml"), false)
        );

        let xdg = Env {
            xdg_config_home: Some("/x/conf".into()),
            xdg_cache_home: Some("/x/cache".into()),
            xdg_state_home: Some("/x/state".into()),
            ..user()
        };
        let c = Config::defaults(&xdg).unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/x/cache/pifw"));
        assert_eq!(c.backup_dir, PathBuf::from("/x/state/pifw/backups"));
        assert_eq!(
            xdg.config_path().unwrap().0,
            PathBuf::from("/x/conf/pifw/config.toml")
        );

        let relative = Env {
            xdg_state_home: Some("state".into()),
            ..user()
        };
        assert_eq!(
            relative.default_backup_dir().unwrap(),
            PathBuf::from("/home/ann/.local/state/pifw/backups"),
            "a relative XDG variable is ignored"
        );

        let root = Env {
            root: true,
            ..user()
        };
        let c = Config::defaults(&root).unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/var/cache/pifw"));
        assert_eq!(c.backup_dir, PathBuf::from("/var/lib/pifw/backups"));

        assert!(matches!(
            Config::defaults(&Env::default()),
            Err(ConfigError::NoHome)
        ));
    }

    #[test]
    fn root_reads_etc_when_present_and_pifw_config_wins() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc-config.toml");
        std::fs::write(&etc, "keep_backups = 3\n").unwrap();
        let root = Env {
            root: true,
            etc_config: etc.clone(),
            ..user()
        };
        let c = Config::load(&root).unwrap();
        assert_eq!((c.keep_backups, c.file), (3, Some(etc.clone())));

        let not_root = Env {
            etc_config: etc,
            ..user()
        };
        assert_eq!(
            Config::load(&not_root).unwrap(),
            Config::defaults(&not_root).unwrap()
        );

        let given = Env {
            pifw_config: Some(dir.path().join("missing.toml")),
            ..root
        };
        let err = Config::load(&given).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Read { file, .. } if file.ends_with("missing.toml")),
            "{err}"
        );
    }

    #[test]
    fn reads_every_field() {
        let c = parse(
            "debian_mirror = \"http://mirror.example/debian/\"\ncache_dir = \"/srv/cache\"\n\
             backup_dir = \"~/pifw-backups\"\nkeep_backups = 4\nbackups_on_card = false\n",
        )
        .unwrap();
        assert_eq!(
            c.debian_mirror.as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(c.cache_dir, PathBuf::from("/srv/cache"));
        assert_eq!(c.backup_dir, PathBuf::from("/home/ann/pifw-backups"));
        assert_eq!(c.keep_backups, 4);
        assert!(!c.backups_on_card);
        assert_eq!(c.file, Some(PathBuf::from("/c/config.toml")));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let err = parse("keep_backups = 3\nkeep_backup = 4\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("/c/config.toml:2:1: keep_backup: unknown field `keep_backup`"),
            "{text}"
        );

        let err = parse("\n\nkeep_backups = \"ten\"\n").unwrap_err();
        match &err {
            ConfigError::Invalid {
                line,
                column,
                field,
                ..
            } => assert_eq!(
                (*line, *column, field.as_deref()),
                (3, 16, Some("keep_backups"))
            ),
            other => panic!("{other:?}"),
        }

        let err = parse("cache_dir = \"relative/dir\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/c/config.toml:1:13: cache_dir: must be an absolute path or start with `~/`"
        );

        let err = parse("# retention\nkeep_backups = 0\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/c/config.toml:2:16: keep_backups: must be at least 1"),
            "{err}"
        );

        let err = parse("debian_mirror = \"ftp://x\"\n").unwrap_err();
        assert!(
            err.to_string().contains(":1:17: debian_mirror: must be an"),
            "{err}"
        );

        let err = parse("keep_backups = [\n").unwrap_err();
        assert!(err.to_string().starts_with("/c/config.toml:"), "{err}");
    }
}
