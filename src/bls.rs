//! What systemd-boot will find on the firmware partition: the Boot Loader Specification
//! entries and `loader/loader.conf`, read the way systemd-boot 252 (Debian bookworm's) reads
//! them, so that pifw can say which entry a card will boot, or that it will boot none.
//!
//! # What systemd-boot does (src/boot/efi/boot.c)
//!
//! - `loader/loader.conf`: one `key value` per line (space or tab), `#` comments. pifw keeps
//!   `default` (a glob matched case-insensitively against entry ids) and `timeout`.
//! - Type #1 entries: every `loader/entries/*.conf` not starting with `auto-`. Keys `title`,
//!   `version`, `machine-id`, `sort-key`, `linux`, `initrd` (repeatable), `efi`, `devicetree`,
//!   `options`, `architecture`. Paths are relative to the root of the partition the entry is
//!   on, leading `/` optional. An entry without `linux`/`efi`, whose `linux`/`efi` file does
//!   not exist, or whose `architecture` is not `aa64` is **dropped silently**: it never shows
//!   in the menu. A missing `initrd` or `devicetree` leaves the entry in the menu, and booting
//!   it fails.
//! - Type #2 entries: every `EFI/Linux/*.efi` not starting with `auto-`, a unified kernel
//!   image (UKI): a PE file with an `.osrel` section (os-release: `PRETTY_NAME`, `NAME`, `ID`,
//!   `VERSION_ID`, ...) and the kernel in `.linux`. Without `.osrel` it is skipped.
//! - Ids are the file names, lower-cased, suffix included (`debian.conf`, `debian.efi`).
//! - Order: entries with a `sort-key` first (by sort-key, machine-id, then version newest
//!   first), then the rest; within each, by id, newest version first (`strverscmp`-like).
//!   The default is the first entry the `default` pattern matches, else the first entry.
//!   (EFI variables such as `LoaderEntryDefault` can override this; pftf's card keeps them in
//!   RPI_EFI.fd and pifw does not read them, which the report says.)
//!
//! Must not: touch the card or print. Input is the partition's file list and two readers
//! handed in by the caller ([`EspSource`]), so unit tests run on in-memory maps.

use serde::Serialize;
use std::cmp::Ordering;

/// Largest entry or `loader.conf` file read.
pub const TEXT_CAP: u64 = 64 * 1024;

/// What pifw needs from the partition; implemented by the status read path over the FAT.
pub trait EspSource {
    /// Every regular file: path as stored (`/`-separated, relative to the root) and size.
    fn files(&self) -> Vec<(String, u64)>;
    /// A small text file's content, by case-insensitive path; `None` if absent or too large.
    fn read_text(&mut self, path: &str) -> Option<String>;
    /// The PE sections of a file (names and sizes) and the content of `.osrel`; `None` if the
    /// file is absent or not a PE image.
    fn read_pe(&mut self, path: &str) -> Option<crate::probe::PeImage>;
    /// What a file is (e.g. "Linux kernel (arm64 Image)"), when its content says so.
    fn describe(&mut self, path: &str) -> Option<String>;
    /// Files already known to be arm64 Linux kernels (by content).
    fn kernels(&self) -> Vec<String>;
}

/// `loader/loader.conf`, the keys pifw uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoaderConf {
    pub path: String,
    /// The `default` glob, as written.
    pub default: Option<String>,
    /// `timeout`, as written (seconds, or `menu-force` and friends).
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryType {
    /// `loader/entries/*.conf`.
    Type1,
    /// `EFI/Linux/*.efi` (a unified kernel image).
    Type2,
}

/// A file an entry names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryFile {
    /// `linux`, `initrd`, `devicetree`, `efi`.
    pub role: &'static str,
    /// As written in the entry.
    pub path: String,
    /// The file as found on the partition (stored case), when present.
    pub found: Option<String>,
    pub size: Option<u64>,
    /// What the content is, when recognised.
    pub what: Option<String>,
}

impl EntryFile {
    pub fn present(&self) -> bool {
        self.found.is_some()
    }
}

/// One boot entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// What systemd-boot calls it: the file name, lower-cased.
    pub id: String,
    #[serde(rename = "type")]
    pub type_: EntryType,
    /// Path of the entry file (the `.conf`, or the UKI itself).
    pub path: String,
    pub title: Option<String>,
    pub version: Option<String>,
    pub sort_key: Option<String>,
    pub machine_id: Option<String>,
    pub options: Option<String>,
    /// Files the entry needs (type #1), in the order written.
    pub files: Vec<EntryFile>,
    /// systemd-boot lists it in its menu.
    pub listed: bool,
    /// Listed, and every file it names is present.
    pub bootable: bool,
    /// Why it is not listed or not bootable.
    pub problem: Option<String>,
}

impl Entry {
    /// The title systemd-boot shows (its `title`, else the id).
    pub fn shown_title(&self) -> &str {
        self.title.as_deref().unwrap_or(&self.id)
    }
}

/// Everything systemd-boot would read on this partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Esp {
    pub loader_conf: Option<LoaderConf>,
    /// Every entry file found, in systemd-boot's menu order (unlisted ones last).
    pub entries: Vec<Entry>,
    /// Id of the entry systemd-boot starts when nobody presses a key.
    pub default_entry: Option<String>,
    /// How the default was chosen, in words.
    pub default_reason: Option<String>,
    /// arm64 Linux kernel images anywhere on the partition (by content), whether or not an
    /// entry names them.
    pub kernels: Vec<String>,
}

impl Esp {
    pub fn default_boot(&self) -> Option<&Entry> {
        let id = self.default_entry.as_deref()?;
        self.entries.iter().find(|e| e.id == id)
    }

    pub fn listed(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.listed)
    }
}

fn lookup(files: &[(String, u64)], path: &str) -> Option<(String, u64)> {
    let want = normalise(path);
    files
        .iter()
        .find(|(p, _)| p.eq_ignore_ascii_case(&want))
        .cloned()
}

/// An entry's path as a path on the partition: `\` or `/` separated, leading separators
/// dropped (systemd-boot opens every path from the root of the entry's partition).
pub fn normalise(path: &str) -> String {
    path.trim()
        .replace('\\', "/")
        .split('/')
        .filter(|c| !c.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads loader.conf, the entries and the kernels of a partition.
pub fn read_esp(src: &mut dyn EspSource) -> Esp {
    let files = src.files();
    let mut esp = Esp::default();
    if let Some((path, _)) = lookup(&files, "loader/loader.conf")
        && let Some(text) = src.read_text(&path)
    {
        esp.loader_conf = Some(parse_loader_conf(&path, &text));
    }
    let in_dir = |dir: &str, suffix: &str| -> Vec<String> {
        let mut v: Vec<String> = files
            .iter()
            .filter_map(|(p, _)| {
                let (d, name) = p.rsplit_once('/')?;
                let lower = name.to_ascii_lowercase();
                (d.eq_ignore_ascii_case(dir)
                    && lower.ends_with(suffix)
                    && !lower.starts_with("auto-")
                    && !lower.starts_with('.'))
                .then(|| p.clone())
            })
            .collect();
        v.sort();
        v
    };
    for path in in_dir("loader/entries", ".conf") {
        let text = src.read_text(&path).unwrap_or_default();
        let mut e = parse_type1(&path, &text);
        resolve_files(&mut e, &files, src);
        esp.entries.push(e);
    }
    for path in in_dir("EFI/Linux", ".efi") {
        let pe = src.read_pe(&path);
        esp.entries.push(type2(&path, pe.as_ref()));
    }
    sort_entries(&mut esp.entries);
    let (default, reason) = select_default(&esp.entries, esp.loader_conf.as_ref());
    esp.default_entry = default;
    esp.default_reason = reason;
    esp.kernels = src.kernels();
    esp
}

/// `loader.conf`: `key value` lines.
pub fn parse_loader_conf(path: &str, text: &str) -> LoaderConf {
    let mut c = LoaderConf {
        path: path.to_string(),
        ..LoaderConf::default()
    };
    for (k, v) in key_values(text) {
        match k {
            "default" => c.default = Some(v.to_string()),
            "timeout" => c.timeout = Some(v.to_string()),
            _ => {}
        }
    }
    c
}

/// `key value` pairs, as systemd-boot's `line_get_key_value` splits them: leading blanks
/// skipped, `#` lines ignored, the key up to the first blank, the value the rest trimmed.
fn key_values(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            return None;
        }
        let (k, v) = l.split_once([' ', '\t']).unwrap_or((l, ""));
        let v = v.trim();
        // systemd-boot takes a value in double quotes without them.
        let v = v
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(v);
        (!v.is_empty()).then_some((k, v))
    })
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A type #1 entry, its files not yet looked up.
pub fn parse_type1(path: &str, text: &str) -> Entry {
    let mut e = Entry {
        id: file_name(path).to_ascii_lowercase(),
        type_: EntryType::Type1,
        path: path.to_string(),
        title: None,
        version: None,
        sort_key: None,
        machine_id: None,
        options: None,
        files: Vec::new(),
        listed: false,
        bootable: false,
        problem: None,
    };
    let mut loader: Option<EntryFile> = None;
    let mut initrds = Vec::new();
    let mut devicetree = None;
    let mut wrong_arch = None;
    let file = |role, v: &str| EntryFile {
        role,
        path: v.to_string(),
        found: None,
        size: None,
        what: None,
    };
    for (k, v) in key_values(text) {
        match k {
            "title" => e.title = Some(v.to_string()),
            "version" => e.version = Some(v.to_string()),
            "machine-id" => e.machine_id = Some(v.to_string()),
            "sort-key" => e.sort_key = Some(v.to_string()),
            "linux" => loader = Some(file("linux", v)),
            "efi" => loader = Some(file("efi", v)),
            "initrd" => initrds.push(file("initrd", v)),
            "devicetree" => devicetree = Some(file("devicetree", v)),
            "options" => {
                e.options = Some(match e.options.take() {
                    Some(o) => format!("{o} {v}"),
                    None => v.to_string(),
                })
            }
            "architecture" if !v.eq_ignore_ascii_case("aa64") => {
                wrong_arch = Some(v.to_string());
            }
            _ => {}
        }
    }
    match loader {
        Some(l) => e.files.push(l),
        None => e.problem = Some("names no `linux` (or `efi`) file".into()),
    }
    e.files.extend(initrds);
    e.files.extend(devicetree);
    if let Some(a) = wrong_arch {
        e.problem = Some(format!(
            "is for architecture {a}, not aa64: systemd-boot skips it"
        ));
    }
    e
}

fn resolve_files(e: &mut Entry, files: &[(String, u64)], src: &mut dyn EspSource) {
    for f in &mut e.files {
        if let Some((found, size)) = lookup(files, &f.path) {
            f.what = src.describe(&found);
            f.found = Some(found);
            f.size = Some(size);
        }
    }
    if e.problem.is_some() {
        return;
    }
    let Some(loader) = e.files.first() else {
        return;
    };
    if !loader.present() {
        e.problem = Some(format!(
            "names {} {}, which is not on the partition: systemd-boot leaves the entry out of its menu",
            loader.role, loader.path
        ));
        return;
    }
    e.listed = true;
    let missing: Vec<String> = e
        .files
        .iter()
        .filter(|f| !f.present())
        .map(|f| format!("{} {}", f.role, f.path))
        .collect();
    if missing.is_empty() {
        e.bootable = true;
    } else {
        e.problem = Some(format!(
            "names {}, not on the partition: the entry is in the menu but fails to boot",
            missing.join(", ")
        ));
    }
}

/// A type #2 entry from its PE sections.
pub fn type2(path: &str, pe: Option<&crate::probe::PeImage>) -> Entry {
    let mut e = Entry {
        id: file_name(path).to_ascii_lowercase(),
        type_: EntryType::Type2,
        path: path.to_string(),
        title: None,
        version: None,
        sort_key: None,
        machine_id: None,
        options: None,
        files: Vec::new(),
        listed: false,
        bootable: false,
        problem: None,
    };
    let Some(pe) = pe else {
        e.problem = Some("is not a PE image: systemd-boot skips it".into());
        return e;
    };
    let Some(osrel) = &pe.osrel else {
        e.problem = Some("has no .osrel section: systemd-boot skips it".into());
        return e;
    };
    let mut pretty = None;
    let mut name = None;
    let mut id = None;
    let mut version = None;
    let mut version_id = None;
    let mut build_id = None;
    let mut image_id = None;
    let mut image_version = None;
    for line in osrel.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim() {
            "PRETTY_NAME" => pretty = Some(v),
            "NAME" => name = Some(v),
            "ID" => id = Some(v),
            "VERSION" => version = Some(v),
            "VERSION_ID" => version_id = Some(v),
            "BUILD_ID" => build_id = Some(v),
            "IMAGE_ID" => image_id = Some(v),
            "IMAGE_VERSION" => image_version = Some(v),
            _ => {}
        }
    }
    e.title = pretty.or(name.clone()).or(id.clone()).or(image_id.clone());
    e.version = image_version.or(version).or(version_id).or(build_id);
    e.sort_key = image_id.or(id);
    if !pe.sections.iter().any(|(n, _)| n == ".linux") {
        e.problem = Some("has no .linux section: there is no kernel in it".into());
        return e;
    }
    e.listed = true;
    e.bootable = true;
    e
}

/// systemd-boot 252's menu order (see the module doc); entries it does not list go last.
pub fn sort_entries(entries: &mut [Entry]) {
    entries.sort_by(|a, b| {
        b.listed
            .cmp(&a.listed)
            .then_with(|| a.sort_key.is_none().cmp(&b.sort_key.is_none()))
            .then_with(|| match (&a.sort_key, &b.sort_key) {
                (Some(x), Some(y)) => x
                    .cmp(y)
                    .then_with(|| a.machine_id.cmp(&b.machine_id))
                    .then_with(|| {
                        verscmp(
                            b.version.as_deref().unwrap_or(""),
                            a.version.as_deref().unwrap_or(""),
                        )
                    }),
                _ => Ordering::Equal,
            })
            .then_with(|| verscmp(&b.id, &a.id))
    });
}

/// The entry systemd-boot starts by default, and why.
fn select_default(
    entries: &[Entry],
    conf: Option<&LoaderConf>,
) -> (Option<String>, Option<String>) {
    let listed: Vec<&Entry> = entries.iter().filter(|e| e.listed).collect();
    let first = listed.first().map(|e| e.id.clone());
    let Some(pattern) = conf.and_then(|c| c.default.as_deref()) else {
        return (
            first.clone(),
            first.map(|_| "loader.conf names no default: the first entry in menu order".into()),
        );
    };
    if pattern.starts_with('@') {
        return (
            first.clone(),
            Some(format!(
                "loader.conf says `default {pattern}`, kept in an EFI variable pifw does not read; without one, the first entry"
            )),
        );
    }
    // systemd-boot matches the id; later releases also the id without its suffix.
    let stem = |id: &str| id.rsplit_once('.').map_or(id, |(s, _)| s).to_string();
    if let Some(e) = listed
        .iter()
        .find(|e| glob_match(pattern, &e.id) || glob_match(pattern, &stem(&e.id)))
    {
        return (
            Some(e.id.clone()),
            Some(format!("loader.conf: default {pattern}")),
        );
    }
    (
        first.clone(),
        first.map(|_| {
            format!(
                "loader.conf's default {pattern} matches no entry: the first entry in menu order"
            )
        }),
    )
}

/// Case-insensitive glob with `*`, `?` and `[...]`, as systemd-boot's `efi_fnmatch`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    glob(&p, &t)
}

fn glob(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => (0..=t.len()).any(|i| glob(&p[1..], &t[i..])),
        Some('?') => !t.is_empty() && glob(&p[1..], &t[1..]),
        Some('[') => {
            let Some(close) = p.iter().skip(1).position(|&c| c == ']').map(|i| i + 1) else {
                return t.first() == Some(&'[') && glob(&p[1..], &t[1..]);
            };
            let Some(&c) = t.first() else { return false };
            let set = &p[1..close];
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit && glob(&p[close + 1..], &t[1..])
        }
        Some(&c) => t.first() == Some(&c) && glob(&p[1..], &t[1..]),
    }
}

/// Version comparison in the spirit of systemd's `strverscmp_improved`: runs of digits compare
/// as numbers, everything else as characters, `~` sorts before anything.
pub fn verscmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (Some(b'~'), Some(b'~')) => {}
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let na = trim_zeros(&a[..da]);
                let nb = trim_zeros(&b[..db]);
                let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if o != Ordering::Equal {
                    return o;
                }
                a = &a[da..];
                b = &b[db..];
                continue;
            }
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => {}
        }
        a = &a[1..];
        b = &b[1..];
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|&&c| c == b'0').count();
    &d[n..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::PeImage;
    use std::collections::BTreeMap;

    struct Mem {
        files: BTreeMap<String, Vec<u8>>,
        pes: BTreeMap<String, PeImage>,
    }

    impl EspSource for Mem {
        fn files(&self) -> Vec<(String, u64)> {
            self.files
                .iter()
                .map(|(p, b)| (p.clone(), b.len() as u64))
                .collect()
        }
        fn read_text(&mut self, path: &str) -> Option<String> {
            self.files
                .get(path)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        }
        fn read_pe(&mut self, path: &str) -> Option<PeImage> {
            self.pes.get(path).cloned()
        }
        fn describe(&mut self, path: &str) -> Option<String> {
            self.files
                .get(path)
                .filter(|b| b.starts_with(b"KERNEL"))
                .map(|_| "Linux kernel (arm64 Image)".into())
        }
        fn kernels(&self) -> Vec<String> {
            self.files
                .iter()
                .filter(|(_, b)| b.starts_with(b"KERNEL"))
                .map(|(p, _)| p.clone())
                .collect()
        }
    }

    fn mem(files: &[(&str, &str)]) -> Mem {
        Mem {
            files: files
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                .collect(),
            pes: BTreeMap::new(),
        }
    }

    const ENTRY: &str = "title Debian GNU/Linux 12\nversion 6.1.0-50-arm64\nlinux /debian/vmlinuz\ninitrd /debian/initrd.img\ndevicetree /debian/bcm2837-rpi-3-b.dtb\noptions root=PARTUUID=2178694e-02\noptions console=ttyS1,115200\n";

    #[test]
    fn a_complete_type1_entry_is_the_default() {
        let mut m = mem(&[
            ("loader/loader.conf", "timeout 3\ndefault debian*\n"),
            ("loader/entries/debian.conf", ENTRY),
            ("debian/vmlinuz", "KERNEL"),
            ("debian/initrd.img", "x"),
            ("debian/bcm2837-rpi-3-b.dtb", "x"),
        ]);
        let esp = read_esp(&mut m);
        assert_eq!(
            esp.loader_conf.as_ref().unwrap().timeout.as_deref(),
            Some("3")
        );
        let e = &esp.entries[0];
        assert!(e.listed && e.bootable, "{e:?}");
        assert_eq!(e.title.as_deref(), Some("Debian GNU/Linux 12"));
        assert_eq!(
            e.options.as_deref(),
            Some("root=PARTUUID=2178694e-02 console=ttyS1,115200")
        );
        assert_eq!(e.files.len(), 3);
        assert_eq!(
            e.files[0].what.as_deref(),
            Some("Linux kernel (arm64 Image)")
        );
        assert_eq!(esp.default_entry.as_deref(), Some("debian.conf"));
        assert_eq!(esp.kernels, ["debian/vmlinuz"]);
    }

    #[test]
    fn a_missing_kernel_drops_the_entry_and_a_missing_initrd_breaks_it() {
        let mut m = mem(&[
            ("loader/entries/a.conf", "title A\nlinux /a/vmlinuz\n"),
            (
                "loader/entries/b.conf",
                "title B\nlinux b/vmlinuz\ninitrd b/initrd\n",
            ),
            ("B/VMLINUZ", "KERNEL"),
        ]);
        let esp = read_esp(&mut m);
        let a = esp.entries.iter().find(|e| e.id == "a.conf").unwrap();
        assert!(!a.listed && !a.bootable);
        assert!(a.problem.as_ref().unwrap().contains("leaves the entry out"));
        let b = esp.entries.iter().find(|e| e.id == "b.conf").unwrap();
        assert!(b.listed && !b.bootable, "{b:?}");
        assert_eq!(b.files[0].found.as_deref(), Some("B/VMLINUZ"));
        assert!(b.problem.as_ref().unwrap().contains("initrd b/initrd"));
        // The only listed entry is the default even though it will fail.
        assert_eq!(esp.default_entry.as_deref(), Some("b.conf"));
    }

    #[test]
    fn no_entries_means_no_default() {
        let mut m = mem(&[("loader/loader.conf", "timeout 3\n")]);
        let esp = read_esp(&mut m);
        assert!(esp.entries.is_empty());
        assert_eq!(esp.default_entry, None);
    }

    #[test]
    fn order_and_default_follow_systemd_boot() {
        let mut m = mem(&[
            ("loader/loader.conf", "default nixos-generation-1*\n"),
            ("loader/entries/nixos-generation-9.conf", "linux k\n"),
            ("loader/entries/nixos-generation-10.conf", "linux k\n"),
            ("loader/entries/nixos-generation-1.conf", "linux k\n"),
            ("loader/entries/auto-x.conf", "linux k\n"),
            ("k", "KERNEL"),
        ]);
        let esp = read_esp(&mut m);
        let ids: Vec<&str> = esp.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "nixos-generation-10.conf",
                "nixos-generation-9.conf",
                "nixos-generation-1.conf"
            ]
        );
        // The first match in menu order: generation 10 matches `nixos-generation-1*` too.
        assert_eq!(
            esp.default_entry.as_deref(),
            Some("nixos-generation-10.conf")
        );
        let mut m = mem(&[
            ("loader/loader.conf", "default nope\n"),
            ("loader/entries/x.conf", "linux k\n"),
            ("k", "KERNEL"),
        ]);
        let esp = read_esp(&mut m);
        assert_eq!(esp.default_entry.as_deref(), Some("x.conf"));
        assert!(esp.default_reason.unwrap().contains("matches no entry"));
    }

    #[test]
    fn type2_needs_osrel_and_linux() {
        let pe = |osrel: Option<&str>, linux: bool| PeImage {
            sections: [(".osrel".to_string(), 10), (".text".to_string(), 10)]
                .into_iter()
                .chain(linux.then(|| (".linux".to_string(), 100)))
                .collect(),
            osrel: osrel.map(String::from),
        };
        let e = type2(
            "EFI/Linux/debian.efi",
            Some(&pe(
                Some(
                    "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
                ),
                true,
            )),
        );
        assert!(e.bootable);
        assert_eq!(e.title.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(e.version.as_deref(), Some("12"));
        assert!(!type2("EFI/Linux/x.efi", Some(&pe(Some("ID=x"), false))).listed);
        assert!(!type2("EFI/Linux/x.efi", Some(&pe(None, true))).listed);
        assert!(!type2("EFI/Linux/x.efi", None).listed);
    }

    #[test]
    fn globs_and_versions() {
        assert!(glob_match("Debian*", "debian-6.1.conf"));
        assert!(glob_match(
            "nixos-generation-[0-9]?.conf",
            "nixos-generation-42.conf"
        ));
        assert!(!glob_match("a?", "a"));
        assert_eq!(verscmp("gen-10", "gen-9"), Ordering::Greater);
        assert_eq!(verscmp("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(verscmp("abc", "abc"), Ordering::Equal);
        assert_eq!(verscmp("007", "7"), Ordering::Equal);
    }
}
