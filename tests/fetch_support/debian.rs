//! A Debian archive on 127.0.0.1 for the archive tests: real packages from the blob cache,
//! their `Packages` made by `dpkg-scanpackages` and compressed by `xz`, a `Release` listing
//! their sha256 (from `sha256sum`), clearsigned into `InRelease` by `gpg` with an Ed25519 key
//! generated for the test. A second key ("evil") signs what the keyring must refuse.

use super::{Reply, Server};
use crate::common;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// Suite name the test archive serves.
pub const SUITE: &str = "test";

/// A gpg home with a fresh Ed25519 signing key; returns (home, exported binary keyring).
pub fn gpg_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir(&home).expect("mkdir");
    common::run_ok(common::cmd("chmod").arg("700").arg(&home));
    common::run_ok(
        common::cmd("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--passphrase", "", "--quick-gen-key"])
            .arg(format!("pifw test {name} <{name}@test.invalid>"))
            .args(["ed25519", "sign", "never"]),
    );
    let keyring = dir.join(format!("{name}.gpg"));
    common::run_ok(
        common::cmd("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--export", "--output"])
            .arg(&keyring),
    );
    (home, keyring)
}

/// The fingerprint of the only key in a gpg home, as gpg prints it (uppercase hex).
pub fn fingerprint(home: &Path) -> String {
    let out = common::run_ok(common::cmd("gpg").env("GNUPGHOME", home).args([
        "--batch",
        "--with-colons",
        "--list-keys",
    ]));
    out.lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .expect("a fingerprint")
        .to_string()
}

pub fn clearsign(home: &Path, input: &Path, output: &Path) {
    common::run_ok(
        common::cmd("gpg")
            .env("GNUPGHOME", home)
            .args(["--batch", "--yes", "--clearsign", "--output"])
            .arg(output)
            .arg(input),
    );
}

/// One package of the archive: its component, pool directory and the cached `.deb`'s name.
pub struct Pkg {
    pub component: &'static str,
    pub pool: &'static str,
    pub deb: &'static str,
}

pub struct TestArchive {
    pub dir: TempDir,
    pub keyring: PathBuf,
    pub home: PathBuf,
    pub evil_home: PathBuf,
    /// The unsigned `Release`.
    pub release: PathBuf,
    pub in_release: Vec<u8>,
    /// The first package's component index (`Packages.xz`) and `.deb`.
    pub packages_xz: Vec<u8>,
    pub deb: Vec<u8>,
    pub deb_path: String,
    /// The other packages: (URL path under the mirror, bytes) of each index and `.deb`.
    pub others: Vec<(String, Vec<u8>)>,
}

/// An archive with one package in `main` (u-boot-rpi, the `.deb` named `deb`).
pub fn test_archive_with(deb: &'static str) -> TestArchive {
    test_archive_of(&[Pkg {
        component: "main",
        pool: "u/u-boot",
        deb,
    }])
}

/// An archive with `pkgs`, each in its own component (the first one's files are the
/// `packages_xz` / `deb` fields).
pub fn test_archive_of(pkgs: &[Pkg]) -> TestArchive {
    let dir = tempfile::tempdir().expect("archive dir");
    let root = dir.path().to_path_buf();
    let mut sha_lines = String::new();
    let mut components = Vec::new();
    let mut firsts: Option<(Vec<u8>, Vec<u8>, String)> = None;
    let mut others = Vec::new();
    for p in pkgs {
        let pool_dir = format!("pool/{}/{}", p.component, p.pool);
        std::fs::create_dir_all(root.join(&pool_dir)).expect("mkdir");
        let src = common::blob_cache().join("debs").join(p.deb);
        std::fs::copy(&src, root.join(&pool_dir).join(p.deb)).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/test (it fetches the blobs)",
                src.display()
            )
        });
        let packages = common::run_ok(common::cmd("dpkg-scanpackages").current_dir(&root).args([
            "--multiversion",
            &format!("pool/{}", p.component),
            "/dev/null",
        ]));
        assert!(packages.contains("Package: "), "{packages}");
        let index_dir = root.join(format!("dists/{SUITE}/{}/binary-arm64", p.component));
        std::fs::create_dir_all(&index_dir).expect("mkdir");
        std::fs::write(index_dir.join("Packages"), &packages).expect("write");
        common::run_ok(
            common::cmd("xz")
                .args(["-k", "-6"])
                .arg(index_dir.join("Packages")),
        );
        let xz = std::fs::read(index_dir.join("Packages.xz")).expect("xz");
        sha_lines.push_str(&format!(
            " {} {} {c}/binary-arm64/Packages\n {} {} {c}/binary-arm64/Packages.xz\n",
            common::sha256sum(packages.as_bytes()),
            packages.len(),
            common::sha256sum(&xz),
            xz.len(),
            c = p.component
        ));
        components.push(p.component);
        let deb_bytes = std::fs::read(&src).expect("deb");
        let deb_path = format!("{pool_dir}/{}", p.deb);
        if firsts.is_none() {
            firsts = Some((xz, deb_bytes, deb_path));
        } else {
            others.push((
                format!("dists/{SUITE}/{}/binary-arm64/Packages.xz", p.component),
                xz,
            ));
            others.push((deb_path, deb_bytes));
        }
    }
    let release = root.join(format!("dists/{SUITE}/Release"));
    std::fs::write(
        &release,
        format!(
            "Origin: pifw test\nSuite: {SUITE}\nArchitectures: arm64\nComponents: {}\nSHA256:\n{sha_lines}",
            components.join(" ")
        ),
    )
    .expect("write Release");
    let (home, keyring) = gpg_key(&root, "archive");
    let (evil_home, _) = gpg_key(&root, "evil");
    let in_release = root.join(format!("dists/{SUITE}/InRelease"));
    clearsign(&home, &release, &in_release);
    let (packages_xz, deb, deb_path) = firsts.expect("at least one package");
    TestArchive {
        in_release: std::fs::read(&in_release).expect("InRelease"),
        dir,
        keyring,
        home,
        evil_home,
        release,
        packages_xz,
        deb,
        deb_path,
        others,
    }
}

impl TestArchive {
    /// The first package's component.
    pub fn component(&self) -> &str {
        self.deb_path
            .split('/')
            .nth(1)
            .expect("pool/<component>/...")
    }

    /// The `InRelease` signed by the evil key (not in the keyring).
    pub fn evil_in_release(&self) -> Vec<u8> {
        let evil = self.release.with_file_name("InRelease.evil");
        clearsign(&self.evil_home, &self.release, &evil);
        std::fs::read(&evil).expect("evil")
    }

    /// The `InRelease` with one hex digit of the first index's sha256 changed after signing.
    pub fn forged_in_release(&self) -> Vec<u8> {
        let text = String::from_utf8(self.in_release.clone()).expect("utf-8");
        let sha = common::sha256sum(&self.packages_xz);
        let flipped = if sha.starts_with('0') { "1" } else { "0" };
        let forged = text.replacen(&sha, &format!("{flipped}{}", &sha[1..]), 1);
        assert_ne!(forged, text);
        forged.into_bytes()
    }
}

/// Routes the archive under `/debian` of `server`, with these bytes for the first package's
/// `InRelease`, index and `.deb` (the others as built).
pub fn serve(server: &Server, a: &TestArchive, in_release: &[u8], packages: &[u8], deb: &[u8]) {
    server.route(
        &format!("/debian/dists/{SUITE}/InRelease"),
        Reply::Body(in_release.to_vec()),
    );
    server.route(
        &format!(
            "/debian/dists/{SUITE}/{}/binary-arm64/Packages.xz",
            a.component()
        ),
        Reply::Body(packages.to_vec()),
    );
    server.route(
        &format!("/debian/{}", a.deb_path),
        Reply::Body(deb.to_vec()),
    );
    for (path, bytes) in &a.others {
        server.route(&format!("/debian/{path}"), Reply::Body(bytes.clone()));
    }
}
