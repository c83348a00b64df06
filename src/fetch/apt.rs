//! A default Debian mirror from the host's apt sources.
//!
//! Owns reading `etc/apt/sources.list`, `etc/apt/sources.list.d/*.list` (one-line format,
//! sources.list(5)) and `etc/apt/sources.list.d/*.sources` (deb822 format) under a root
//! directory, and picking the first `deb` URI whose path ends in `/debian`: the base of the
//! Debian archive, the directory that holds `pool/`. It only reads; unreadable files are
//! skipped (this is a default, not a requirement).

use std::path::Path;

/// The first Debian archive URI in the apt sources under `root` (`/` on a live system), without
/// a trailing slash.
pub fn debian_mirror_from_apt(root: &Path) -> Option<String> {
    let apt = root.join("etc/apt");
    if let Ok(text) = std::fs::read_to_string(apt.join("sources.list"))
        && let Some(uri) = one_line(&text)
    {
        return Some(uri);
    }
    let mut files: Vec<_> = std::fs::read_dir(apt.join("sources.list.d"))
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .collect();
    files.sort();
    files.into_iter().find_map(|path| {
        let text = std::fs::read_to_string(&path).ok()?;
        match path.extension()?.to_str()? {
            "list" => one_line(&text),
            "sources" => deb822(&text),
            _ => None,
        }
    })
}

/// A Debian archive base URI: http(s), path ending in `/debian`.
fn archive_base(uri: &str) -> Option<String> {
    let uri = uri.trim_end_matches('/');
    let (scheme, _) = uri.split_once("://")?;
    (matches!(scheme, "http" | "https") && uri.ends_with("/debian")).then(|| uri.to_string())
}

/// `deb [options] URI suite [component...]` lines.
fn one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb")?;
        if !rest.starts_with([' ', '\t']) {
            return None; // deb-src
        }
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            rest = rest.split_once(']')?.1.trim_start();
        }
        archive_base(rest.split_whitespace().next()?)
    })
}

/// deb822 stanzas: `Types:` must include `deb`, `Enabled: no` skips one, `URIs:` may list
/// several.
fn deb822(text: &str) -> Option<String> {
    let mut stanzas = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            stanzas.push(Vec::new());
        } else if !line.starts_with('#') {
            stanzas.last_mut()?.push(line);
        }
    }
    stanzas.into_iter().find_map(|lines| {
        let field = |name: &str| -> Option<String> {
            let mut value: Option<String> = None;
            for line in &lines {
                if line.starts_with([' ', '\t']) {
                    // A continuation line belongs to the field before it.
                    if let Some(v) = value.as_mut() {
                        v.push(' ');
                        v.push_str(line.trim());
                    }
                    continue;
                }
                if value.is_some() {
                    break;
                }
                let Some((key, val)) = line.split_once(':') else {
                    continue;
                };
                if key.trim().eq_ignore_ascii_case(name) {
                    value = Some(val.trim().to_string());
                }
            }
            value
        };
        if !field("Types")?.split_whitespace().any(|t| t == "deb") {
            return None;
        }
        if field("Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            return None;
        }
        field("URIs")?.split_whitespace().find_map(archive_base)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_skips_comments_sources_and_non_archives() {
        let text = "# deb http://old.example/debian bookworm main\n\
                    deb-src http://src.example/debian bookworm main\n\
                    deb http://security.example/debian-security bookworm-security main\n\
                    deb cdrom:[Debian]/ bookworm main\n\
                    deb [arch=arm64 signed-by=/k.gpg] https://mirror.example/debian/ bookworm main\n\
                    deb http://late.example/debian bookworm main\n";
        assert_eq!(
            one_line(text).as_deref(),
            Some("https://mirror.example/debian")
        );
        assert_eq!(one_line("deb http://x.example/ubuntu noble main\n"), None);
    }

    #[test]
    fn deb822_honours_types_enabled_and_lists() {
        let text = "# comment\n\
                    Types: deb-src\n\
                    URIs: http://src.example/debian\n\
                    Suites: bookworm\n\
                    \n\
                    Types: deb\n\
                    URIs: http://off.example/debian\n\
                    Enabled: no\n\
                    \n\
                    Types: deb deb-src\n\
                    URIs: http://security.example/debian-security\n \
                    http://two.example/debian/\n\
                    Suites: bookworm\n";
        assert_eq!(deb822(text).as_deref(), Some("http://two.example/debian"));
        assert_eq!(deb822("Types: deb\nSuites: x\n"), None);
    }
}
