//! The views of `pifw manifests list|show`: boards, releases, and what the Debian archive
//! offers, as text or as their `--json` documents.

use super::output;
use crate::manifest::{Board, Manifests, Release, ReleaseKind};
use std::io::Write;

/// `manifests list`: the boards and releases pifw knows, and the archive's offers.
pub fn list(json: bool, m: &Manifests, archive: &ArchiveListing) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(m)?;
        if let serde_json::Value::Object(map) = &mut v {
            map.insert("archive".into(), serde_json::to_value(archive)?);
        }
        return output::json(&v);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "Boards")?;
    for b in &m.boards {
        writeln!(out, "  {:<10} {} ({})", b.id, b.name, b.soc)?;
    }
    for kind in [ReleaseKind::Firmware, ReleaseKind::UBoot, ReleaseKind::Uefi] {
        writeln!(out, "Releases: {}", kind_arg(kind))?;
        for r in m.releases_of(kind) {
            writeln!(out, "  {}", release_line(r))?;
        }
    }
    render_archive(&mut out, archive)?;
    Ok(())
}

/// `manifests show BOARD`.
pub fn board(json: bool, b: &Board) -> anyhow::Result<()> {
    if json {
        return output::json(b);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} ({})", b.name, b.id)?;
    writeln!(out, "  SoC            {}", b.soc)?;
    writeln!(out, "  device tree    {}", b.dt_models.join(" | "))?;
    writeln!(out, "  config.txt     [{}]", b.config_filters.join("] ["))?;
    writeln!(out, "  dtbs           {}", b.dtbs.join(", "))?;
    writeln!(out, "  U-Boot builds  {}", b.uboot_builds.join(", "))?;
    writeln!(
        out,
        "  UEFI           {}",
        b.uefi.as_deref().unwrap_or("none")
    )?;
    Ok(())
}

/// `manifests show KIND [VERSION]`: the releases, their sources and pinned files.
pub fn releases(json: bool, releases: &[&Release]) -> anyhow::Result<()> {
    if json {
        return output::json(&releases);
    }
    let mut out = std::io::stdout().lock();
    for r in releases {
        writeln!(out, "{}", release_line(r))?;
        writeln!(out, "  from {}", r.origin)?;
        for s in &r.sources {
            writeln!(
                out,
                "  source {:?} {} [{}] {}",
                s.kind,
                s.location,
                if s.verified { "verified" } else { "UNVERIFIED" },
                s.provenance
            )?;
            if let Some(h) = &s.sha256 {
                writeln!(out, "         sha256 {h}")?;
            }
        }
        for f in &r.files {
            writeln!(
                out,
                "  {:<24} {:>9}  {}  {}",
                f.dest,
                f.size,
                &f.sha256[..16.min(f.sha256.len())],
                f.build.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

/// What `manifests list` says about the Debian archive: the offers, or why it did not look.
#[derive(Debug, serde::Serialize)]
pub struct ArchiveListing {
    /// The mirror asked, when one was.
    pub mirror: Option<String>,
    /// Why the archive was not asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_looked: Option<String>,
    pub offers: Vec<crate::debian_source::Offer>,
}

fn render_archive(out: &mut dyn Write, a: &ArchiveListing) -> std::io::Result<()> {
    match (&a.mirror, &a.not_looked) {
        (_, Some(why)) => {
            writeln!(out, "Debian archive: not looked at: {why}")?;
            return Ok(());
        }
        (Some(m), None) => writeln!(out, "Debian archive: {m}")?,
        (None, None) => return Ok(()),
    }
    for o in &a.offers {
        match (&o.debian_version, &o.error) {
            (Some(v), _) => writeln!(
                out,
                "  {:<8} {:<14} {v}  {}; InRelease signed by key {}",
                o.suite,
                o.package,
                if o.in_manifests {
                    "in the manifests"
                } else {
                    "NOT in the manifests (pifw update-* --from-debian takes it)"
                },
                o.signing_key.as_deref().unwrap_or("?")
            )?,
            (None, e) => writeln!(
                out,
                "  {:<8} {:<14} could not look: {}",
                o.suite,
                o.package,
                e.as_deref().unwrap_or("?")
            )?,
        }
    }
    Ok(())
}

fn release_line(r: &Release) -> String {
    let verified = if r.sources.iter().any(|s| s.verified) {
        ""
    } else {
        "  (unverified pin)"
    };
    let files = if r.files.is_empty() {
        "no file pins".to_string()
    } else {
        format!("{} files", r.files.len())
    };
    format!(
        "{} ({}, {files}){verified}\n      {}",
        r.version, r.flavour, r.description
    )
}

pub fn kind_arg(k: ReleaseKind) -> &'static str {
    match k {
        ReleaseKind::Firmware => "firmware",
        ReleaseKind::UBoot => "u-boot",
        ReleaseKind::Uefi => "uefi",
    }
}
