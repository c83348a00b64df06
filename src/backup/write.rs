//! Writing a backup: files stream into a hidden `.partial` zip, the manifest goes last, and
//! the zip is synced, renamed into place and read back before [`BackupWriter::finish`]
//! returns its path.

use super::{
    Backup, BackupError, CardIdentity, FILE_PREFIX, FILE_SUFFIX, FORMAT, FileRecord, FileState,
    Hashing, MANIFEST_NAME, Manifest, TableRegion, Tables, check_fat_path, drained, hex,
};
use chrono::{DateTime, Datelike, Timelike, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

/// A backup being written. Dropping it without [`BackupWriter::finish`] leaves the hidden
/// `.partial` file behind (never a file that looks like a finished backup).
pub struct BackupWriter {
    partial: PathBuf,
    final_path: PathBuf,
    /// Buffered: a file's bytes arrive a FAT cluster (2 KiB) at a time, and unbuffered each
    /// was its own write(2) (10984 of them for the 17-file firmware set).
    zip: ZipWriter<io::BufWriter<File>>,
    /// For the old files' contents: stored (see `create_at`).
    options: SimpleFileOptions,
    /// For the manifest and the table sectors: deflated. A few KiB of JSON and mostly-zero
    /// sectors (a GPT's empty entries) shrink for microseconds of CPU: `partition hybrid`'s
    /// backup of the NixOS image measured 1214 bytes instead of 35627 stored, which keeps its
    /// copy on a nearly full firmware partition within one cluster or two.
    small: SimpleFileOptions,
    manifest: Manifest,
    /// Lowercased paths recorded so far (FAT names are case-insensitive).
    seen: HashSet<String>,
}

impl BackupWriter {
    /// Starts a backup in `dir` (created if missing) for a change on `card` made by `command`.
    pub fn create(
        dir: &Path,
        card: CardIdentity,
        command: Vec<String>,
    ) -> Result<BackupWriter, BackupError> {
        Self::create_at(dir, card, command, Utc::now())
    }

    /// As [`BackupWriter::create`], at a given time (tests).
    pub fn create_at(
        dir: &Path,
        card: CardIdentity,
        command: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<BackupWriter, BackupError> {
        let id = backup_id(now, &command, &card);
        let name = format!("{FILE_PREFIX}{id}{FILE_SUFFIX}");
        let final_path = dir.join(&name);
        let partial = dir.join(format!(".{name}.partial"));
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BackupError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&partial)
            .map_err(io_err(&partial))?;
        let stamp = zip::DateTime::from_date_and_time(
            now.year().clamp(1980, 2107) as u16,
            now.month() as u8,
            now.day() as u8,
            now.hour() as u8,
            now.minute() as u8,
            now.second() as u8,
        )
        .unwrap_or_default();
        Ok(BackupWriter {
            partial,
            final_path,
            zip: ZipWriter::new(io::BufWriter::with_capacity(256 << 10, file)),
            options: SimpleFileOptions::default()
                // Stored, not deflated: measured on the 17-file Pi firmware set (21 MiB of old
                // files), deflate level 1 took 32% of the update's CPU (about 140 ms here, twice
                // the 72 ms the four transactions took to write and read back the new files)
                // and its inflate on the read-back another 10%, to save 8 MiB. Compression
                // must cost less than the write it protects; here it cost more. The card copy's
                // room was always planned for the stored size (`FilePlan::backup_bound`).
                .compression_method(CompressionMethod::Stored)
                .last_modified_time(stamp)
                .unix_permissions(0o644),
            small: SimpleFileOptions::default()
                .compression_method(CompressionMethod::Deflated)
                .compression_level(Some(6))
                .last_modified_time(stamp)
                .unix_permissions(0o644),
            manifest: Manifest {
                format: FORMAT,
                id,
                created: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                pifw_version: env!("CARGO_PKG_VERSION").to_string(),
                command,
                card,
                files: Vec::new(),
                dirs_absent_before: Vec::new(),
                tables: None,
                change: None,
                run: Some(run_id().to_string()),
                provenance: None,
            },
            seen: HashSet::new(),
        })
    }

    /// Records what kind of change this backup undoes.
    pub fn set_change(&mut self, kind: super::ChangeKind) {
        self.manifest.change = Some(kind.name().to_string());
    }

    /// Records how the files the change installs were verified (a Debian archive release).
    pub fn set_provenance(&mut self, provenance: crate::fetch::ArchiveProvenance) {
        self.manifest.provenance = Some(provenance);
    }

    /// The backup id (also in the file name).
    pub fn id(&self) -> &str {
        &self.manifest.id
    }

    /// Records the current content of `path` (a FAT path), streamed from `content`.
    /// `after` is what the change will leave there, when known (see the module doc).
    pub fn add_file(
        &mut self,
        path: &str,
        content: &mut dyn Read,
        after: Option<FileState>,
    ) -> Result<FileState, BackupError> {
        self.claim(path)?;
        self.zip
            .start_file(path, self.options)
            .map_err(|e| self.zip_err(e))?;
        let mut hashing = Hashing::new(content);
        io::copy(&mut hashing, &mut self.zip).map_err(|e| self.io_err(e))?;
        let before = drained(hashing).map_err(|e| self.io_err(e))?;
        self.manifest.files.push(FileRecord {
            path: path.to_string(),
            before: Some(before.clone()),
            after,
        });
        Ok(before)
    }

    /// Records that `path` does not exist yet: the change adds it, rollback removes it.
    pub fn add_absent(&mut self, path: &str, after: Option<FileState>) -> Result<(), BackupError> {
        self.claim(path)?;
        self.manifest.files.push(FileRecord {
            path: path.to_string(),
            before: None,
            after,
        });
        Ok(())
    }

    /// Records that the directory `path` does not exist yet (rollback removes it if empty).
    /// Record parents before children.
    pub fn add_absent_dir(&mut self, path: &str) -> Result<(), BackupError> {
        check_fat_path(path).map_err(|reason| self.bad_path(path, reason))?;
        self.manifest.dirs_absent_before.push(path.to_string());
        Ok(())
    }

    /// Saves raw partition-table regions: `(name, offset in bytes, bytes)`.
    pub fn set_tables(
        &mut self,
        sector_size: u32,
        disk_size_bytes: u64,
        regions: &[(&str, u64, &[u8])],
    ) -> Result<(), BackupError> {
        let mut out = Vec::new();
        for (name, offset, bytes) in regions {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(self.bad_path(name, "table region names are [A-Za-z0-9-]+"));
            }
            let region = TableRegion {
                name: name.to_string(),
                offset_bytes: *offset,
                size: bytes.len() as u64,
                sha256: crate::digest::sha256_hex(bytes),
            };
            self.zip
                .start_file(region.member(), self.small)
                .map_err(|e| self.zip_err(e))?;
            self.zip.write_all(bytes).map_err(|e| self.io_err(e))?;
            out.push(region);
        }
        self.manifest.tables = Some(Tables {
            sector_size,
            disk_size_bytes,
            regions: out,
        });
        Ok(())
    }

    /// Writes the manifest, completes and syncs the zip, moves it into place, and opens it
    /// again with [`Backup::open`] (every member re-hashed from the file). Returns its path.
    pub fn finish(mut self) -> Result<PathBuf, BackupError> {
        let json =
            serde_json::to_vec_pretty(&self.manifest).map_err(|e| BackupError::BadManifest {
                path: self.partial.clone(),
                reason: e.to_string(),
            })?;
        self.zip
            .start_file(MANIFEST_NAME, self.small)
            .map_err(|e| self.zip_err(e))?;
        self.zip.write_all(&json).map_err(|e| self.io_err(e))?;
        let partial = self.partial.clone();
        let file = self.zip.finish().map_err(|source| BackupError::Zip {
            path: partial.clone(),
            source,
        })?;
        let file = file.into_inner().map_err(|e| BackupError::Io {
            path: partial.clone(),
            source: e.into_error(),
        })?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BackupError::Io { path, source }
        };
        // Why this order: the data must be durable before the rename makes it look finished,
        // and the rename must be durable (directory synced) before a change relies on it.
        file.sync_all().map_err(io_err(&partial))?;
        drop(file);
        if self.final_path.exists() {
            return Err(BackupError::Io {
                path: self.final_path.clone(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "backup already exists"),
            });
        }
        fs::rename(&partial, &self.final_path).map_err(io_err(&self.final_path))?;
        if let Some(dir) = self.final_path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Backup::open_checked(&self.final_path, super::MemberCheck::Crc32)?;
        Ok(self.final_path)
    }

    fn claim(&mut self, path: &str) -> Result<(), BackupError> {
        check_fat_path(path).map_err(|reason| self.bad_path(path, reason))?;
        if !self.seen.insert(path.to_ascii_lowercase()) {
            return Err(BackupError::DuplicatePath {
                path: self.partial.clone(),
                name: path.to_string(),
            });
        }
        Ok(())
    }

    fn bad_path(&self, name: &str, reason: &'static str) -> BackupError {
        BackupError::BadPath {
            path: self.partial.clone(),
            name: name.to_string(),
            reason,
        }
    }

    fn io_err(&self, source: io::Error) -> BackupError {
        BackupError::Io {
            path: self.partial.clone(),
            source,
        }
    }

    fn zip_err(&self, source: zip::result::ZipError) -> BackupError {
        BackupError::Zip {
            path: self.partial.clone(),
            source,
        }
    }
}

/// This process's run id: the time it first asked and its pid, the same for every backup it
/// makes.
pub fn run_id() -> &'static str {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        format!(
            "{}-{}",
            Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
            std::process::id()
        )
    })
}

/// `YYYYMMDDTHHMMSSZ-xxxxxx`: sortable by time; the suffix keeps two backups of the same
/// second apart without a random number generator.
fn backup_id(now: DateTime<Utc>, command: &[String], card: &CardIdentity) -> String {
    let mut h = Sha256::new();
    h.update(now.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(command.join("\0").as_bytes());
    h.update(format!("{card:?}").as_bytes());
    let digest = hex(&h.finalize());
    // Milliseconds keep backups made within one second (a rollback right after an update,
    // `switch uboot` undoing several changes) in creation order: ids sort as strings.
    format!("{}-{}", now.format("%Y%m%dT%H%M%S%.3fZ"), &digest[..6])
}
