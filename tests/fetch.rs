//! Fetching against a local HTTP server that misbehaves on purpose (tests/fetch_support), with
//! archives made by Python's zipfile and tarfile and the real Debian packages cached by
//! scripts/fetch-blobs. Hashes are computed by `sha256sum`, not by the code under test. No test
//! touches the internet.

mod common;
mod fetch_support;

use fetch_support::debian::{self, TestArchive, serve, test_archive_with};
use fetch_support::{Reply, Server};
use pifw::fetch::{
    self, FetchError, FetchOptions, Limits, NoProgress, Progress, debian_mirror_from_apt,
    from_path, obtain,
};
use pifw::manifest::{Manifests, Release, ReleaseFile, ReleaseKind, Source, SourceKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const UBOOT_DEB: &str = "u-boot-rpi_2023.01+dfsg-2+deb12u3_arm64.deb";
const UBOOT_POOL: &str = "pool/main/u/u-boot/u-boot-rpi_2023.01+dfsg-2+deb12u3_arm64.deb";
const UBOOT_RPI3_SHA: &str = "ab6647b5621e5220b2e8e09a274e19c063a86df14426aa86e6a62d6655ec01cd";

fn options(cache: &TempDir) -> FetchOptions {
    let mut opts = FetchOptions::new(cache.path());
    opts.timeout = Duration::from_secs(5);
    opts
}

/// Files in `<cache>/<sub>`.
fn files_in(cache: &TempDir, sub: &str) -> Vec<String> {
    match std::fs::read_dir(cache.path().join(sub)) {
        Ok(entries) => entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn file(dest: &str, data: &[u8], member: Option<&str>) -> ReleaseFile {
    ReleaseFile {
        dest: dest.to_string(),
        size: data.len() as u64,
        sha256: common::sha256sum(data),
        boards: Vec::new(),
        build: None,
        member: member.map(str::to_string),
    }
}

fn source(kind: SourceKind, location: &str, archive: Option<&[u8]>) -> Source {
    Source {
        kind,
        location: location.to_string(),
        sha256: archive.map(common::sha256sum),
        size: archive.map(|a| a.len() as u64),
        provenance: "made by the test".into(),
        verified: false,
        verified_on: None,
    }
}

fn release(files: Vec<ReleaseFile>, sources: Vec<Source>) -> Release {
    Release {
        kind: ReleaseKind::Firmware,
        version: "1.20990101".into(),
        flavour: "test".into(),
        project: None,
        description: "test release".into(),
        members_pinned: true,
        note: None,
        files,
        sources,
        origin: "tests/fetch.rs".into(),
    }
}

/// A release with one file `start.elf` of `data`, served per file from `server`.
fn url_release(server: &Server, data: &[u8]) -> Release {
    release(
        vec![file("start.elf", data, None)],
        vec![source(SourceKind::Url, &server.url("/fw/{file}"), None)],
    )
}

#[derive(Default)]
struct Recorder {
    starts: Vec<(String, Option<u64>)>,
    last: u64,
    finished: usize,
}

impl Progress for Recorder {
    fn start(&mut self, url: &str, total: Option<u64>) {
        self.starts.push((url.to_string(), total));
    }
    fn advance(&mut self, done: u64) {
        self.last = done;
    }
    fn finish(&mut self) {
        self.finished += 1;
    }
}

#[test]
fn a_good_download_is_cached_and_the_second_call_stays_offline() {
    let server = Server::start();
    let data = payload(300_000, 1);
    server.route("/fw/start.elf", Reply::Body(data.clone()));
    let cache = tempfile::tempdir().expect("cache dir");
    let opts = options(&cache);
    let rel = url_release(&server, &data);
    let want = [&rel.files[0]];

    let mut progress = Recorder::default();
    let got = obtain(&opts, &rel, &want, &mut progress).expect("download");
    assert_eq!(got.len(), 1);
    let (f, v) = &got[0];
    assert_eq!(f.dest, "start.elf");
    assert_eq!(v.sha256, common::sha256sum(&data));
    assert_eq!(v.size, data.len() as u64);
    assert_eq!(v.path, cache.path().join("sha256").join(&v.sha256));
    assert_eq!(std::fs::read(&v.path).expect("cached"), data);
    assert_eq!(server.requests(), 1);
    assert_eq!(
        progress.starts,
        [(server.url("/fw/start.elf"), Some(data.len() as u64))]
    );
    assert_eq!((progress.last, progress.finished), (data.len() as u64, 1));
    assert!(files_in(&cache, "tmp").is_empty());

    let again = obtain(&opts, &rel, &want, &mut NoProgress).expect("from the cache");
    assert_eq!(again[0].1, *v);
    assert_eq!(server.requests(), 1, "a cache hit made a request");

    // Offline, the cache still answers.
    let offline = FetchOptions {
        offline: true,
        ..opts.clone()
    };
    assert_eq!(
        obtain(&offline, &rel, &want, &mut NoProgress).expect("offline hit")[0].1,
        *v
    );

    // A damaged entry is noticed, dropped and downloaded again.
    std::fs::write(&v.path, b"damaged").expect("damage the entry");
    let healed = obtain(&opts, &rel, &want, &mut NoProgress).expect("re-download");
    assert_eq!(std::fs::read(&healed[0].1.path).expect("cached"), data);
    assert_eq!(server.requests(), 2);
}

#[test]
fn wrong_bytes_are_a_hash_mismatch_naming_both_hashes_and_nothing_is_cached() {
    let server = Server::start();
    let data = payload(50_000, 2);
    let wrong = payload(50_000, 3);
    server.route("/fw/start.elf", Reply::Body(wrong.clone()));
    let cache = tempfile::tempdir().expect("cache dir");
    let rel = url_release(&server, &data);

    let err =
        obtain(&options(&cache), &rel, &[&rel.files[0]], &mut NoProgress).expect_err("wrong bytes");
    let text = err.to_string();
    match err {
        FetchError::HashMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, common::sha256sum(&data));
            assert_eq!(actual, common::sha256sum(&wrong));
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    for needle in [
        common::sha256sum(&data),
        common::sha256sum(&wrong),
        server.url("/fw/start.elf"),
    ] {
        assert!(text.contains(&needle), "{needle} not in {text}");
    }
    assert!(files_in(&cache, "sha256").is_empty());
    assert!(files_in(&cache, "tmp").is_empty());
}

#[test]
fn a_wrong_size_is_refused_before_the_body_is_read() {
    let server = Server::start();
    let data = payload(10_000, 4);
    server.route("/fw/start.elf", Reply::Body(payload(10_001, 4)));
    let cache = tempfile::tempdir().expect("cache dir");
    let rel = url_release(&server, &data);
    match obtain(&options(&cache), &rel, &[&rel.files[0]], &mut NoProgress) {
        Err(FetchError::SizeMismatch {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (10_000, 10_001)),
        other => panic!("expected a size mismatch, got {other:?}"),
    }
    assert!(files_in(&cache, "sha256").is_empty());
}

#[test]
fn a_truncated_body_is_an_error_and_nothing_is_cached() {
    let server = Server::start();
    let data = payload(200_000, 5);
    server.route(
        "/fw/start.elf",
        Reply::Truncate {
            body: data.clone(),
            send: 70_000,
        },
    );
    let cache = tempfile::tempdir().expect("cache dir");
    let rel = url_release(&server, &data);
    let err =
        obtain(&options(&cache), &rel, &[&rel.files[0]], &mut NoProgress).expect_err("truncated");
    match &err {
        FetchError::Truncated {
            url,
            expected,
            received,
            ..
        } => {
            assert_eq!(url, &server.url("/fw/start.elf"));
            assert_eq!(*expected, Some(200_000));
            assert!(*received <= 70_000, "{err}");
        }
        other => panic!("expected a truncated download, got {other}"),
    }
    assert!(err.to_string().contains("ended early"), "{err}");
    assert!(files_in(&cache, "sha256").is_empty());
    assert!(files_in(&cache, "tmp").is_empty());
}

#[test]
fn a_stalled_server_times_out() {
    let server = Server::start();
    let data = payload(100_000, 6);
    server.route(
        "/fw/start.elf",
        Reply::Stall {
            body: data.clone(),
            send: 1000,
            sleep: Duration::from_secs(20),
        },
    );
    let cache = tempfile::tempdir().expect("cache dir");
    let mut opts = options(&cache);
    opts.timeout = Duration::from_secs(1);
    let rel = url_release(&server, &data);
    let started = Instant::now();
    let err = obtain(&opts, &rel, &[&rel.files[0]], &mut NoProgress).expect_err("stalled");
    // Far below the server's 20 s stall: the 1 s read timeout fired.
    assert!(started.elapsed() < Duration::from_secs(15), "{err}");
    match &err {
        FetchError::Timeout { url, after, .. } => {
            assert_eq!(url, &server.url("/fw/start.elf"));
            assert_eq!(*after, Duration::from_secs(1));
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(files_in(&cache, "sha256").is_empty());
    assert!(files_in(&cache, "tmp").is_empty());
}

#[test]
fn offline_miss_names_the_artifact_and_the_way_out() {
    let server = Server::start();
    let data = payload(1000, 7);
    server.route("/fw/start.elf", Reply::Body(data.clone()));
    let cache = tempfile::tempdir().expect("cache dir");
    let mut opts = options(&cache);
    opts.offline = true;
    let rel = url_release(&server, &data);
    let err = obtain(&opts, &rel, &[&rel.files[0]], &mut NoProgress).expect_err("offline");
    assert!(matches!(err, FetchError::Offline { .. }), "{err}");
    let text = err.to_string();
    for needle in [
        "start.elf of firmware test 1.20990101",
        "--offline",
        "--from",
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    assert_eq!(server.requests(), 0);
}

#[test]
fn every_failed_source_is_reported() {
    let server = Server::start();
    let data = payload(1000, 8);
    let mut rel = url_release(&server, &data);
    rel.files[0].member = Some("boot/start.elf".into());
    rel.sources
        .push(source(SourceKind::Deb, "pool/x/x.deb", Some(b"deb")));
    let cache = tempfile::tempdir().expect("cache dir");
    let err = obtain(&options(&cache), &rel, &[&rel.files[0]], &mut NoProgress)
        .expect_err("no source works");
    let text = err.to_string();
    assert!(matches!(err, FetchError::AllSourcesFailed { .. }), "{text}");
    assert!(text.contains("answered 404"), "{text}");
    assert!(text.contains("--debian-mirror URL"), "{text}");
}

/// The u-boot-rpi 2023.01 package from the blob cache, and the embedded release it pins.
fn uboot_deb() -> (Vec<u8>, Release) {
    let path = common::blob_cache().join("debs").join(UBOOT_DEB);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/test (it fetches the blobs)",
            path.display()
        )
    });
    let manifests = Manifests::embedded().expect("embedded manifests");
    let rel = manifests
        .release(ReleaseKind::UBoot, "2023.01+dfsg-2+deb12u3")
        .expect("pinned release")
        .clone();
    (bytes, rel)
}

#[test]
fn a_real_debian_package_yields_its_pinned_uboot() {
    let (deb, rel) = uboot_deb();
    assert_eq!(rel.sources[0].location, UBOOT_POOL);
    let server = Server::start();
    server.route(&format!("/debian/{UBOOT_POOL}"), Reply::Body(deb.clone()));
    let cache = tempfile::tempdir().expect("cache dir");
    let mut opts = options(&cache);

    let rpi3: Vec<&ReleaseFile> = rel
        .files
        .iter()
        .filter(|f| f.build.as_deref() == Some("rpi_3"))
        .collect();
    assert_eq!(rpi3.len(), 1);
    let err = obtain(&opts, &rel, &rpi3, &mut NoProgress).expect_err("no mirror set");
    assert!(matches!(err, FetchError::NoMirror { .. }), "{err}");
    assert!(err.to_string().contains(UBOOT_POOL), "{err}");
    assert_eq!(server.requests(), 0);

    opts.debian_mirror = Some(server.url("/debian/"));
    let got = obtain(&opts, &rel, &rpi3, &mut NoProgress).expect("from the deb");
    assert_eq!(got[0].0.dest, "u-boot-rpi3.bin");
    assert_eq!(got[0].1.sha256, UBOOT_RPI3_SHA);
    let bytes = std::fs::read(&got[0].1.path).expect("cached member");
    assert_eq!(bytes.len(), 573160);
    assert_eq!(common::sha256sum(&bytes), UBOOT_RPI3_SHA);
    assert_eq!(server.paths(), [format!("/debian/{UBOOT_POOL}")]);
    // The package itself is cached under its own hash.
    assert!(
        cache
            .path()
            .join("sha256")
            .join(common::sha256sum(&deb))
            .is_file()
    );

    // The other two builds come from the cached package: no request.
    let all: Vec<&ReleaseFile> = rel.files.iter().collect();
    let got = obtain(&opts, &rel, &all, &mut NoProgress).expect("all three");
    assert_eq!(server.requests(), 1);
    for (f, v) in &got {
        let bytes = std::fs::read(&v.path).expect("cached member");
        assert_eq!(common::sha256sum(&bytes), f.sha256, "{}", f.dest);
    }
}

/// Runs a Python script that writes an archive to argv[1] and returns its bytes.
fn python_archive(dir: &TempDir, name: &str, script: &str) -> (PathBuf, Vec<u8>) {
    let path = dir.path().join(name);
    common::run_ok(common::cmd("python3").arg("-c").arg(script).arg(&path));
    let bytes = std::fs::read(&path).expect("archive written");
    (path, bytes)
}

#[test]
fn a_zip_member_outside_the_archive_is_refused() {
    let work = tempfile::tempdir().expect("work dir");
    let (path, zip) = python_archive(
        &work,
        "evil.zip",
        "import sys, zipfile\n\
         z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n\
         z.writestr('good.bin', b'good')\n\
         z.writestr('../evil', b'evil')\n\
         z.close()\n",
    );
    let server = Server::start();
    server.route("/evil.zip", Reply::Body(zip.clone()));
    let rel = release(
        vec![file("good.bin", b"good", Some("good.bin"))],
        vec![source(
            SourceKind::Zip,
            &server.url("/evil.zip"),
            Some(&zip),
        )],
    );
    let cache = tempfile::tempdir().expect("cache dir");
    let opts = options(&cache);
    let err = obtain(&opts, &rel, &[&rel.files[0]], &mut NoProgress).expect_err("refused");
    match &err {
        FetchError::UnsafeMember { member, .. } => assert_eq!(member, "../evil"),
        other => panic!("expected an unsafe member, got {other}"),
    }
    // Only the (pinned) zip itself reached the cache, not its member.
    assert_eq!(files_in(&cache, "sha256"), [common::sha256sum(&zip)]);

    let err = from_path(&path, &Manifests::default(), &opts).expect_err("refused");
    assert!(matches!(err, FetchError::UnsafeMember { .. }), "{err}");
}

#[test]
fn a_zip_bomb_is_refused() {
    let work = tempfile::tempdir().expect("work dir");
    let (_, zip) = python_archive(
        &work,
        "bomb.zip",
        "import sys, zipfile\n\
         z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n\
         z.writestr('bomb.bin', bytes(2 << 20))\n\
         z.close()\n",
    );
    assert!(zip.len() < 100_000, "deflate makes zeros small");
    let server = Server::start();
    server.route("/bomb.zip", Reply::Body(zip.clone()));
    let zeros = vec![0u8; 2 << 20];
    let rel = release(
        vec![file("bomb.bin", &zeros, Some("bomb.bin"))],
        vec![source(
            SourceKind::Zip,
            &server.url("/bomb.zip"),
            Some(&zip),
        )],
    );
    let cache = tempfile::tempdir().expect("cache dir");
    let mut opts = options(&cache);
    opts.limits = Limits {
        max_member: 1 << 20,
        ..Limits::default()
    };
    let err = obtain(&opts, &rel, &[&rel.files[0]], &mut NoProgress).expect_err("bomb");
    match &err {
        FetchError::ArchiveLimit { what, limit, .. } => {
            assert_eq!(what, "member bomb.bin");
            assert_eq!(*limit, 1 << 20);
        }
        other => panic!("expected a limit error, got {other}"),
    }
    assert!(files_in(&cache, "tmp").is_empty());
}

#[test]
fn the_decompressed_total_of_an_archive_is_capped() {
    let work = tempfile::tempdir().expect("work dir");
    let (path, _) = python_archive(
        &work,
        "many.zip",
        "import sys, zipfile\n\
         z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n\
         for i in range(4):\n    z.writestr(f'part{i}.bin', bytes([i]) * (600 << 10))\n\
         z.close()\n",
    );
    let cache = tempfile::tempdir().expect("cache dir");
    let mut opts = options(&cache);
    opts.limits = Limits {
        max_member: 1 << 20,
        max_total: 2 << 20,
        max_members: 10,
    };
    let err = from_path(&path, &Manifests::default(), &opts).expect_err("over the total");
    match &err {
        FetchError::ArchiveLimit { what, limit, .. } => {
            assert_eq!(what, "the archive's decompressed total");
            assert_eq!(*limit, 2 << 20);
        }
        other => panic!("expected a limit error, got {other}"),
    }
    opts.limits.max_total = 3 << 20;
    opts.limits.max_members = 3;
    let err = from_path(&path, &Manifests::default(), &opts).expect_err("too many");
    assert!(err.to_string().contains("number of members"), "{err}");
}

#[test]
fn tar_links_are_skipped_and_escaping_names_refused() {
    let work = tempfile::tempdir().expect("work dir");
    let (_, linked) = python_archive(
        &work,
        "linked.tar.gz",
        "import sys, tarfile, io\n\
         t = tarfile.open(sys.argv[1], 'w:gz')\n\
         i = tarfile.TarInfo('./boot/start.elf'); i.type = tarfile.SYMTYPE; i.linkname = '/etc/passwd'\n\
         t.addfile(i)\n\
         d = b'real bytes'\n\
         i = tarfile.TarInfo('./boot/real.elf'); i.size = len(d)\n\
         t.addfile(i, io.BytesIO(d))\n\
         t.close()\n",
    );
    let (_, escaping) = python_archive(
        &work,
        "escaping.tar.xz",
        "import sys, tarfile, io\n\
         t = tarfile.open(sys.argv[1], 'w:xz')\n\
         d = b'evil'\n\
         i = tarfile.TarInfo('../evil'); i.size = len(d)\n\
         t.addfile(i, io.BytesIO(d))\n\
         t.close()\n",
    );
    let server = Server::start();
    server.route("/linked.tar.gz", Reply::Body(linked.clone()));
    server.route("/escaping.tar.xz", Reply::Body(escaping.clone()));
    let cache = tempfile::tempdir().expect("cache dir");
    let opts = options(&cache);

    let real = file("real.elf", b"real bytes", Some("boot/real.elf"));
    let link = file("start.elf", b"/etc/passwd", Some("boot/start.elf"));
    let rel = release(
        vec![real, link],
        vec![source(
            SourceKind::Tar,
            &server.url("/linked.tar.gz"),
            Some(&linked),
        )],
    );
    let got = obtain(&opts, &rel, &[&rel.files[0]], &mut NoProgress).expect("regular member");
    assert_eq!(
        std::fs::read(&got[0].1.path).expect("cached"),
        b"real bytes"
    );
    match obtain(&opts, &rel, &[&rel.files[1]], &mut NoProgress) {
        Err(FetchError::MemberMissing { member, .. }) => assert_eq!(member, "boot/start.elf"),
        other => panic!("a symlink must not count as the member: {other:?}"),
    }

    let rel = release(
        vec![file("evil", b"evil", Some("evil"))],
        vec![source(
            SourceKind::Tar,
            &server.url("/escaping.tar.xz"),
            Some(&escaping),
        )],
    );
    match obtain(&opts, &rel, &[&rel.files[0]], &mut NoProgress) {
        Err(FetchError::UnsafeMember { member, .. }) => assert_eq!(member, "../evil"),
        other => panic!("expected an unsafe member, got {other:?}"),
    }
}

#[test]
fn from_path_identifies_the_uboot_builds_in_a_real_package() {
    let (deb, rel) = uboot_deb();
    let work = tempfile::tempdir().expect("work dir");
    let deb_path = work.path().join(UBOOT_DEB);
    std::fs::write(&deb_path, &deb).expect("copy the deb");
    let cache = tempfile::tempdir().expect("cache dir");
    let opts = options(&cache);
    let manifests = Manifests::embedded().expect("embedded manifests");

    let found = from_path(&deb_path, &manifests, &opts).expect("identify");
    let first = &found.artifacts[0];
    assert_eq!(first.name, deb_path.display().to_string());
    assert_eq!(first.archive_of, [rel.label()]);
    assert!(!first.is_pinned());

    for pinned in &rel.files {
        let member = pinned.member.as_deref().expect("deb member");
        let name = format!("{}:{member}", deb_path.display());
        let a = found
            .artifacts
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(a.sha256, pinned.sha256);
        assert_eq!(a.size, pinned.size);
        assert_eq!(a.matches.len(), 1);
        assert_eq!(a.matches[0].release, rel.label());
        assert_eq!(a.matches[0].dest, pinned.dest);
        assert_eq!(a.path, cache.path().join("sha256").join(&pinned.sha256));
        assert_eq!(
            common::sha256sum(&std::fs::read(&a.path).expect("cached")),
            pinned.sha256
        );
    }
    // Everything else in the package (docs, changelog) is listed, unpinned, readable.
    let unpinned: Vec<_> = found.artifacts[1..]
        .iter()
        .filter(|a| !a.is_pinned())
        .collect();
    assert!(!unpinned.is_empty());
    for a in unpinned {
        assert_eq!(
            common::sha256sum(&std::fs::read(&a.path).expect("scratch copy")),
            a.sha256,
            "{}",
            a.name
        );
    }

    // The cached package now serves obtain offline.
    let offline = FetchOptions {
        offline: true,
        ..opts.clone()
    };
    let all: Vec<&ReleaseFile> = rel.files.iter().collect();
    assert_eq!(
        obtain(&offline, &rel, &all, &mut NoProgress)
            .expect("offline")
            .len(),
        3
    );
}

#[test]
fn from_path_reports_an_unknown_file_as_unpinned() {
    let work = tempfile::tempdir().expect("work dir");
    let unknown = work.path().join("mystery.bin");
    std::fs::write(&unknown, payload(4096, 9)).expect("write");
    let known = common::uboot_rpi3(common::UBOOT_OLD);
    std::fs::copy(&known, work.path().join("u-boot.bin")).expect("copy");
    let cache = tempfile::tempdir().expect("cache dir");
    let manifests = Manifests::embedded().expect("embedded manifests");

    let found = from_path(&unknown, &manifests, &options(&cache)).expect("identify");
    assert_eq!(found.artifacts.len(), 1);
    let a = &found.artifacts[0];
    assert!(!a.is_pinned());
    assert_eq!(a.path, unknown);
    assert_eq!(a.sha256, common::sha256sum(&payload(4096, 9)));
    assert!(files_in(&cache, "sha256").is_empty());

    let found = from_path(work.path(), &manifests, &options(&cache)).expect("directory");
    let names: Vec<(&Path, bool)> = found
        .artifacts
        .iter()
        .map(|a| (Path::new(&a.name), a.is_pinned()))
        .collect();
    assert_eq!(
        names,
        [
            (work.path().join("mystery.bin").as_path(), false),
            (work.path().join("u-boot.bin").as_path(), true),
        ]
    );
    assert_eq!(found.artifacts[1].matches[0].dest, "u-boot-rpi3.bin");
    // A plain file, pinned or not, is used where it is: no copy of its bytes is written.
    assert_eq!(found.artifacts[1].path, work.path().join("u-boot.bin"));
    assert_eq!(
        found.artifacts[1].sha256,
        common::sha256sum(&std::fs::read(&known).unwrap())
    );
    assert!(files_in(&cache, "sha256").is_empty());
    assert!(files_in(&cache, "tmp").is_empty());
}

#[test]
fn apt_sources_name_the_debian_mirror() {
    let root = tempfile::tempdir().expect("root");
    let apt = root.path().join("etc/apt");
    std::fs::create_dir_all(apt.join("sources.list.d")).expect("mkdir");
    assert_eq!(debian_mirror_from_apt(root.path()), None);

    std::fs::write(
        apt.join("sources.list.d/debian.sources"),
        "Types: deb\nURIs: http://deb822.example/debian/\nSuites: bookworm\n\
         Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )
    .expect("write");
    std::fs::write(
        apt.join("sources.list.d/a-other.list"),
        "deb https://packages.example/repo stable main\n",
    )
    .expect("write");
    assert_eq!(
        debian_mirror_from_apt(root.path()).as_deref(),
        Some("http://deb822.example/debian")
    );

    std::fs::write(
        apt.join("sources.list"),
        "# main archive\ndeb [arch=arm64] https://oneline.example/debian bookworm main\n",
    )
    .expect("write");
    assert_eq!(
        debian_mirror_from_apt(root.path()).as_deref(),
        Some("https://oneline.example/debian")
    );
    assert_eq!(debian_mirror_from_apt(&root.path().join("missing")), None);
}

#[test]
fn unpinned_downloads_must_be_https() {
    assert!(fetch::check_url("https://example.org/x.zip", false).is_ok());
    assert!(fetch::check_url("http://example.org/x.zip", false).is_err());
    assert!(fetch::check_url("http://example.org/x.zip", true).is_ok());
}

/// Runs `f` on another thread and fails the test if it takes longer than `secs`: a guard
/// that blocks (opening a FIFO) must show up as a failure, not as a hung test run.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("still running after {secs}s: it blocked"))
}

#[test]
fn from_a_fifo_or_a_device_is_refused_at_once() {
    let work = tempfile::tempdir().expect("work dir");
    let fifo = work.path().join("u-boot.bin");
    common::run_ok(common::cmd("mkfifo").arg(&fifo));
    let cache = tempfile::tempdir().expect("cache dir");
    let opts = options(&cache);
    let path = fifo.clone();
    let err = within(10, move || {
        from_path(&path, &Manifests::default(), &opts).expect_err("a FIFO")
    });
    match &err {
        FetchError::NotRegular { kind, .. } => assert_eq!(kind, "a FIFO (named pipe)"),
        other => panic!("expected NotRegular, got {other}"),
    }
    assert!(err.to_string().contains("regular file"), "{err}");

    let opts = options(&cache);
    let err = within(10, move || {
        from_path(Path::new("/dev/zero"), &Manifests::default(), &opts).expect_err("a device")
    });
    assert!(err.to_string().contains("a character device"), "{err}");

    // In a directory, a FIFO is passed over (it is not a file), the regular files are read.
    std::fs::write(work.path().join("config.txt"), b"arm_64bit=1\n").expect("write");
    let opts = options(&cache);
    let dir = work.path().to_path_buf();
    let found = within(10, move || {
        from_path(&dir, &Manifests::default(), &opts).expect("directory")
    });
    let names: Vec<String> = found.artifacts.iter().map(|a| a.name.clone()).collect();
    assert_eq!(
        names,
        [work.path().join("config.txt").display().to_string()]
    );
    assert!(files_in(&cache, "tmp").is_empty());
}

#[test]
fn a_file_larger_than_any_firmware_is_refused_before_reading() {
    let work = tempfile::tempdir().expect("work dir");
    // Sparse: 300 MiB that take no disk space, made by coreutils.
    let big = work.path().join("start.elf");
    common::run_ok(common::cmd("truncate").arg("-s").arg("300M").arg(&big));
    let cache = tempfile::tempdir().expect("cache dir");
    let err = from_path(&big, &Manifests::default(), &options(&cache)).expect_err("too big");
    match &err {
        FetchError::TooLarge { size, limit, .. } => {
            assert_eq!((*size, *limit), (300 << 20, 256 << 20));
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains("256 MiB"), "the message says the cap: {text}");
    assert!(files_in(&cache, "tmp").is_empty());
    assert!(files_in(&cache, "sha256").is_empty());
}

#[test]
fn absolute_and_backslash_escaping_zip_names_are_refused() {
    let work = tempfile::tempdir().expect("work dir");
    for (name, member) in [
        ("absolute.zip", "/etc/passwd"),
        ("backslash.zip", "boot\\\\..\\\\..\\\\evil"),
        ("drive.zip", "C:/evil"),
    ] {
        let (path, _) = python_archive(
            &work,
            name,
            &format!(
                "import sys, zipfile\n\
                 z = zipfile.ZipFile(sys.argv[1], 'w')\n\
                 z.writestr('good.bin', b'good')\n\
                 z.writestr(zipfile.ZipInfo('{member}'), b'evil')\n\
                 z.close()\n"
            ),
        );
        let cache = tempfile::tempdir().expect("cache dir");
        let err = from_path(&path, &Manifests::default(), &options(&cache)).expect_err(name);
        match &err {
            FetchError::UnsafeMember { member: m, .. } => {
                assert_eq!(m, &member.replace("\\\\", "\\"), "{name}")
            }
            other => panic!("{name}: expected an unsafe member, got {other}"),
        }
        assert!(files_in(&cache, "tmp").is_empty(), "{name}");
    }
}

#[test]
fn an_unsized_download_cannot_grow_the_cache_past_the_cap() {
    let body = payload(3 << 20, 7);
    let server = Server::start();
    server.route("/fw.tar", Reply::Body(body.clone()));
    let mut src = source(SourceKind::Tar, &server.url("/fw.tar"), Some(&body));
    src.size = None; // a manifest may pin an archive by sha256 alone
    let rel = release(vec![file("start.elf", b"x", Some("start.elf"))], vec![src]);
    let cache = tempfile::tempdir().expect("cache dir");
    let mut opts = options(&cache);
    opts.limits.max_total = 2 << 20;
    let err = obtain(&opts, &rel, &[&rel.files[0]], &mut NoProgress).expect_err("over the cap");
    match &err {
        FetchError::ArchiveLimit { what, limit, .. } => {
            assert_eq!((what.as_str(), *limit), ("the download", 2 << 20));
        }
        other => panic!("expected the download cap, got {other}"),
    }
    assert!(err.to_string().contains("2 MiB"), "{err}");
    assert!(files_in(&cache, "tmp").is_empty());
    assert!(files_in(&cache, "sha256").is_empty());
}

/// `dir` (holding `usr/...`) packed by GNU tar and compressed by the zstd CLI.
fn tar_zst(work: &TempDir, dir: &Path) -> PathBuf {
    let out = work.path().join("fw.tar.zst");
    common::run_ok(
        common::cmd("tar")
            .arg("--zstd")
            .arg("-cf")
            .arg(&out)
            .arg("-C")
            .arg(dir)
            .arg("."),
    );
    let head = std::fs::read(&out).expect("tar.zst")[..4].to_vec();
    assert_eq!(head, [0x28, 0xb5, 0x2f, 0xfd], "tar --zstd wrote zstd");
    out
}

#[test]
fn a_tar_zst_serves_obtain_and_from_path() {
    let work = tempfile::tempdir().expect("work dir");
    let tree = work.path().join("tree");
    let start = payload(300_000, 3);
    std::fs::create_dir_all(tree.join("boot")).expect("mkdir");
    std::fs::write(tree.join("boot/start.elf"), &start).expect("write");
    let archive = tar_zst(&work, &tree);
    let bytes = std::fs::read(&archive).expect("read");

    let server = Server::start();
    server.route("/fw.tar.zst", Reply::Body(bytes.clone()));
    let rel = release(
        vec![file("start.elf", &start, Some("boot/start.elf"))],
        vec![source(
            SourceKind::Tar,
            &server.url("/fw.tar.zst"),
            Some(&bytes),
        )],
    );
    let cache = tempfile::tempdir().expect("cache dir");
    let got = obtain(&options(&cache), &rel, &[&rel.files[0]], &mut NoProgress).expect("zstd tar");
    assert_eq!(std::fs::read(&got[0].1.path).expect("cached"), start);

    let found = from_path(&archive, &Manifests::default(), &options(&cache)).expect("from");
    let member = format!("{}:boot/start.elf", archive.display());
    let a = found
        .artifacts
        .iter()
        .find(|a| a.name == member)
        .unwrap_or_else(|| panic!("{member} not listed"));
    assert_eq!(a.sha256, common::sha256sum(&start));
}

/// The u-boot-rpi 2023.01 package rebuilt by dpkg-deb with zstd members (as Ubuntu ships
/// packages): unpacked with `dpkg-deb -R`, packed again with `dpkg-deb -b -Zzstd`.
fn zstd_repack(work: &TempDir) -> PathBuf {
    let src = common::blob_cache().join("debs").join(UBOOT_DEB);
    let tree = work.path().join("tree");
    common::run_ok(common::cmd("dpkg-deb").arg("-R").arg(&src).arg(&tree));
    let out = work.path().join("u-boot-rpi_zstd.deb");
    common::run_ok(
        common::cmd("dpkg-deb")
            .arg("--root-owner-group")
            .arg("-Zzstd")
            .arg("-b")
            .arg(&tree)
            .arg(&out),
    );
    // The ar member headers name the compression (deb(5)).
    let bytes = std::fs::read(&out).expect("repacked deb");
    for member in [&b"control.tar.zst"[..], b"data.tar.zst"] {
        assert!(
            bytes.windows(member.len()).any(|w| w == member),
            "{} has no {} member",
            out.display(),
            String::from_utf8_lossy(member)
        );
    }
    out
}

#[test]
fn a_deb_repacked_with_zstd_yields_the_same_pinned_uboot() {
    let (_, rel) = uboot_deb();
    let work = tempfile::tempdir().expect("work dir");
    let deb = zstd_repack(&work);
    let cache = tempfile::tempdir().expect("cache dir");
    let manifests = Manifests::embedded().expect("embedded manifests");
    let found = from_path(&deb, &manifests, &options(&cache)).expect("zstd deb");
    for pinned in &rel.files {
        let member = pinned.member.as_deref().expect("deb member");
        let name = format!("{}:{member}", deb.display());
        let a = found
            .artifacts
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(
            (a.sha256.as_str(), a.size),
            (pinned.sha256.as_str(), pinned.size)
        );
        assert_eq!(a.matches[0].release, rel.label());
    }
}

// ---------------------------------------------------------------------------------------
// A Debian archive on 127.0.0.1 (tests/fetch_support/debian.rs): the real u-boot-rpi 2025.01
// package, its `Packages` made by dpkg-scanpackages, an `InRelease` clearsigned by gpg with a
// key generated for the test.

const UBOOT_NEW_DEB: &str = "u-boot-rpi_2025.01-3+deb13u1_arm64.deb";

fn resolve(
    server: &Server,
    a: &TestArchive,
    cache: &TempDir,
) -> Result<
    (
        fetch::IndexedPackage,
        fetch::Verified,
        fetch::ArchiveProvenance,
    ),
    FetchError,
> {
    let mirror = server.url("/debian");
    let archive = fetch::Archive {
        mirror: &mirror,
        suite: "test",
        component: "main",
        arch: "arm64",
        keyring: &a.keyring,
    };
    fetch::resolve_package(&options(cache), &archive, "u-boot-rpi", &mut NoProgress)
}

#[test]
fn a_signed_archive_resolves_the_newest_package_and_caches_only_the_deb() {
    let a = test_archive_with(UBOOT_NEW_DEB);
    let server = Server::start();
    serve(&server, &a, &a.in_release, &a.packages_xz, &a.deb);
    let cache = tempfile::tempdir().expect("cache");
    let (pkg, deb, prov) = resolve(&server, &a, &cache).expect("resolves");
    assert_eq!(pkg.version, "2025.01-3+deb13u1");
    assert_eq!(pkg.filename, a.deb_path);
    assert_eq!(deb.sha256, common::sha256sum(&a.deb));
    assert_eq!(prov.verified_by, "the Debian archive signature");
    assert_eq!(prov.signing_key, debian::fingerprint(&a.home));
    assert_eq!(prov.suite, "test");
    assert_eq!(prov.deb_sha256, common::sha256sum(&a.deb));
    assert_eq!(
        files_in(&cache, "sha256"),
        [common::sha256sum(&a.deb)],
        "the .deb, nothing else (the index stays out of the cache)"
    );
    assert!(files_in(&cache, "tmp").is_empty());

    // The verified package yields the pinned U-Boot builds like any other .deb.
    let manifests = Manifests::embedded().expect("manifests");
    let found = from_path(&deb.path, &manifests, &options(&cache)).expect("members");
    assert!(
        found
            .artifacts
            .iter()
            .any(|x| x.matches.iter().any(|m| m.version == "2025.01-3+deb13u1")),
        "no pinned member"
    );
}

#[test]
fn a_wrong_signature_a_tampered_index_or_a_wrong_deb_is_refused() {
    let a = test_archive_with(UBOOT_NEW_DEB);

    // Signed by a key that is not in the keyring.
    let server = Server::start();
    serve(&server, &a, &a.evil_in_release(), &a.packages_xz, &a.deb);
    let cache = tempfile::tempdir().expect("cache");
    match resolve(&server, &a, &cache) {
        Err(FetchError::Signature { message, .. }) => {
            assert!(message.contains("no signature"), "{message}")
        }
        other => panic!("expected a signature error, got {other:?}"),
    }
    assert!(files_in(&cache, "sha256").is_empty());
    assert!(files_in(&cache, "tmp").is_empty());

    // The signed text changed after signing (one hash digit).
    serve(&server, &a, &a.forged_in_release(), &a.packages_xz, &a.deb);
    let err = resolve(&server, &a, &cache).expect_err("forged");
    assert!(matches!(err, FetchError::Signature { .. }), "{err}");
    assert!(files_in(&cache, "sha256").is_empty());

    // A Packages index other than the one the signed Release names.
    let mut tampered = a.packages_xz.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    serve(&server, &a, &a.in_release, &tampered, &a.deb);
    let err = resolve(&server, &a, &cache).expect_err("tampered index");
    assert!(matches!(err, FetchError::HashMismatch { .. }), "{err}");
    assert!(files_in(&cache, "sha256").is_empty());
    assert!(files_in(&cache, "tmp").is_empty());

    // A .deb other than the one the index names (the older release, same path).
    let other = std::fs::read(common::blob_cache().join("debs").join(UBOOT_DEB)).expect("deb");
    serve(&server, &a, &a.in_release, &a.packages_xz, &other);
    let err = resolve(&server, &a, &cache).expect_err("wrong deb");
    assert!(
        matches!(
            err,
            FetchError::HashMismatch { .. } | FetchError::SizeMismatch { .. }
        ),
        "{err}"
    );
    assert!(
        files_in(&cache, "sha256").is_empty(),
        "neither the wrong .deb nor the index is cached"
    );
    assert!(files_in(&cache, "tmp").is_empty());
}

const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The `InRelease` files apt on this machine already fetched (no network here), verified with
/// the system's Debian keyring: real RSA signatures by primary keys and subkeys.
#[test]
fn the_system_apt_inrelease_verifies_with_the_debian_keyring() {
    let lists: Vec<PathBuf> = std::fs::read_dir("/var/lib/apt/lists")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with("_InRelease"))
                .collect()
        })
        .unwrap_or_default();
    if lists.is_empty() || !Path::new(DEBIAN_KEYRING).is_file() {
        eprintln!(
            "SKIPPED the_system_apt_inrelease_verifies_with_the_debian_keyring: no \
             /var/lib/apt/lists/*_InRelease or no {DEBIAN_KEYRING} (run apt-get update on a \
             Debian machine with debian-archive-keyring)"
        );
        return;
    }
    let mut verified = 0;
    for path in &lists {
        let text = std::fs::read_to_string(path).expect("InRelease");
        if !text.contains("Origin: Debian") {
            continue;
        }
        let signed = fetch::verify_signed_text(&text, Path::new(DEBIAN_KEYRING), "apt")
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(signed.contains("SHA256:"), "{}", path.display());
        let forged = text.replacen("Origin: Debian", "Origin: Debiam", 1);
        let err = fetch::verify_signed_text(&forged, Path::new(DEBIAN_KEYRING), "apt")
            .expect_err("a changed signed text must not verify");
        assert!(matches!(err, FetchError::Signature { .. }), "{err}");
        verified += 1;
    }
    assert!(verified > 0, "no Debian InRelease among {lists:?}");
}

/// Opt-in (`cargo test --test fetch -- --ignored real_debian_archive`): resolves u-boot-rpi
/// from the Debian mirror the apt sources name, with the real keyring. It downloads the
/// suite's arm64 `Packages` index (tens of MiB), so it is never part of the default run; when
/// asked for without a mirror in the apt sources it fails, saying so.
#[test]
#[ignore = "opt-in: uses the network (the real Debian archive)"]
fn opt_in_the_real_debian_archive_resolves_u_boot_rpi() {
    let mirror = debian_mirror_from_apt(Path::new("/"))
        .expect("no Debian archive in the apt sources: this opt-in test needs one");
    let cache = tempfile::tempdir().expect("cache");
    let archive = fetch::Archive {
        mirror: &mirror,
        suite: "bookworm",
        component: "main",
        arch: "arm64",
        keyring: Path::new(DEBIAN_KEYRING),
    };
    let (pkg, deb, _) =
        fetch::resolve_package(&options(&cache), &archive, "u-boot-rpi", &mut NoProgress)
            .expect("resolves against the real archive");
    assert!(pkg.version.starts_with("2023.01"), "{pkg:?}");
    let found = from_path(&deb.path, &Manifests::default(), &options(&cache)).expect("members");
    assert!(
        found
            .artifacts
            .iter()
            .any(|a| a.name.ends_with("rpi_3/u-boot.bin")),
        "no rpi_3 build in {}",
        pkg.filename
    );
}
