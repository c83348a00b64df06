//! Device primitives below both `disk` (which writes tables) and `txn` (which writes files):
//! durability points, a partition window, and fault injection.
//!
//! Owns the [`Durable`] trait (the explicit "make everything written so far survive a power
//! cut" point the engine calls), a partition window over any durable device ([`Slice`]), and
//! three test instruments that wrap any device: [`FaultyDevice`], which lets the first `k`
//! writes through and then behaves like a power cut (no later write reaches the disk, each
//! fails with an error); [`Unsynced`], which remembers the writes since the last sync so that a
//! test can lose any subset of them at the cut (a disk cache that reorders writes between
//! flushes); and [`WriteLog`], which records every write's offset and length. Must not buffer:
//! each `write` call goes to the inner device as one write, so the count the engine sees is the
//! count the disk sees.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

/// A device whose writes can be made durable.
pub trait Durable {
    /// Makes every write so far durable (`fsync` for files and block devices).
    fn sync(&mut self) -> io::Result<()>;
}

impl Durable for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

impl<T> Durable for Cursor<T> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: Durable + ?Sized> Durable for &mut T {
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
}

/// The byte range `start..end` of a device, seen as a device of its own (a partition).
/// Like `fscommon::StreamSlice`, plus [`Durable`], which it forwards to the whole device.
pub struct Slice<T> {
    inner: T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<T: Seek> Slice<T> {
    pub fn new(inner: T, start: u64, end: u64) -> io::Result<Self> {
        if end < start {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slice end {end} before its start {start}"),
            ));
        }
        Ok(Slice {
            inner,
            start,
            len: end - start,
            pos: 0,
        })
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: Read + Seek> Read for Slice<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = self.len.saturating_sub(self.pos).min(buf.len() as u64) as usize;
        if max == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.read(&mut buf[..max])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<T: Write + Seek> Write for Slice<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let max = self.len.saturating_sub(self.pos).min(buf.len() as u64) as usize;
        if max == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("write past the end of the partition ({} bytes)", self.len),
            ));
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.write(&buf[..max])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Seek> Seek for Slice<T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the partition start",
            )
        })?;
        self.pos = target;
        Ok(target)
    }
}

impl<T: Durable> Durable for Slice<T> {
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
}

/// A device that loses power after `limit` writes: those go through, every later write fails
/// (nothing of it reaches the inner device), as do later syncs. Counts writes and syncs.
pub struct FaultyDevice<T> {
    inner: T,
    limit: Option<u64>,
    writes: u64,
    syncs: u64,
}

impl<T> FaultyDevice<T> {
    /// Cuts after `limit` writes; `None` never cuts (to count a full run).
    pub fn new(inner: T, limit: Option<u64>) -> Self {
        FaultyDevice {
            inner,
            limit,
            writes: 0,
            syncs: 0,
        }
    }

    /// Writes that reached the device.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Syncs that happened before the cut.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Whether the power is off.
    pub fn cut(&self) -> bool {
        self.limit.is_some_and(|l| self.writes >= l)
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn power_cut() -> io::Error {
        io::Error::other("simulated power cut")
    }
}

impl<T: Read> Read for FaultyDevice<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<T: Seek> Seek for FaultyDevice<T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<T: Write> Write for FaultyDevice<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cut() {
            return Err(Self::power_cut());
        }
        self.inner.write_all(buf)?;
        self.writes += 1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.cut() {
            return Err(Self::power_cut());
        }
        self.inner.flush()
    }
}

impl<T: Durable> Durable for FaultyDevice<T> {
    fn sync(&mut self) -> io::Result<()> {
        if self.cut() {
            return Err(Self::power_cut());
        }
        self.syncs += 1;
        self.inner.sync()
    }
}

/// Remembers every write since the last [`Durable::sync`] (its offset, the bytes it replaced and
/// the bytes it wrote) so that a test can play a disk cache that persisted only some of them
/// when the power went: [`Unsynced::lose`] puts back the state of the last sync and replays
/// the kept writes in order. Writes reach the inner device at once (reads see them); put it
/// under a [`FaultyDevice`] so that a sync after the cut fails and keeps the record.
pub struct Unsynced<T> {
    inner: T,
    pos: u64,
    pending: Vec<(u64, Vec<u8>, Vec<u8>)>,
}

impl<T> Unsynced<T> {
    pub fn new(inner: T) -> Self {
        Unsynced {
            inner,
            pos: 0,
            pending: Vec::new(),
        }
    }

    /// Writes since the last sync.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: Write + Seek> Unsynced<T> {
    /// Loses the pending writes whose indexes (0 = the oldest since the last sync) are in
    /// `lost`: the device ends up as if only the others had reached it. Forgets the record.
    pub fn lose(&mut self, lost: &[usize]) -> io::Result<()> {
        for (off, old, _) in self.pending.iter().rev() {
            self.inner.seek(SeekFrom::Start(*off))?;
            self.inner.write_all(old)?;
        }
        for (i, (off, _, new)) in self.pending.iter().enumerate() {
            if !lost.contains(&i) {
                self.inner.seek(SeekFrom::Start(*off))?;
                self.inner.write_all(new)?;
            }
        }
        self.pending.clear();
        Ok(())
    }
}

impl<T: Read + Seek> Read for Unsynced<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.seek(SeekFrom::Start(self.pos))?;
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<T: Seek> Seek for Unsynced<T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(pos)?;
        Ok(self.pos)
    }
}

impl<T: Read + Write + Seek> Write for Unsynced<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut old = vec![0u8; buf.len()];
        self.inner.seek(SeekFrom::Start(self.pos))?;
        let mut got = 0;
        while got < old.len() {
            match self.inner.read(&mut old[got..])? {
                0 => break,
                n => got += n,
            }
        }
        old.truncate(got);
        self.inner.seek(SeekFrom::Start(self.pos))?;
        let n = self.inner.write(buf)?;
        old.truncate(n);
        self.pending.push((self.pos, old, buf[..n].to_vec()));
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Durable> Durable for Unsynced<T> {
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()?;
        self.pending.clear();
        Ok(())
    }
}

/// Records `(offset, length)` of every write that reaches the inner device.
pub struct WriteLog<T> {
    inner: T,
    pos: u64,
    log: Vec<(u64, u64)>,
}

impl<T> WriteLog<T> {
    pub fn new(inner: T) -> Self {
        WriteLog {
            inner,
            pos: 0,
            log: Vec::new(),
        }
    }

    pub fn log(&self) -> &[(u64, u64)] {
        &self.log
    }

    /// Total bytes written.
    pub fn bytes_written(&self) -> u64 {
        self.log.iter().map(|&(_, n)| n).sum()
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: Read> Read for WriteLog<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<T: Seek> Seek for WriteLog<T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(pos)?;
        Ok(self.pos)
    }
}

impl<T: Write> Write for WriteLog<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.log.push((self.pos, n as u64));
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Durable> Durable for WriteLog<T> {
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
}

/// A device that tells `on` how many bytes each read and write moved (progress bars count
/// through it); everything else passes through.
pub struct Counted<'a, T> {
    inner: T,
    on: &'a dyn Fn(usize),
}

impl<'a, T> Counted<'a, T> {
    pub fn new(inner: T, on: &'a dyn Fn(usize)) -> Counted<'a, T> {
        Counted { inner, on }
    }
}

impl<T: Read> Read for Counted<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on)(n);
        Ok(n)
    }
}

impl<T: Write> Write for Counted<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.on)(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Seek> Seek for Counted<'_, T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<T: Durable> Durable for Counted<'_, T> {
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faulty_device_stops_everything_after_the_cut() {
        let mut d = FaultyDevice::new(Cursor::new(vec![0u8; 8]), Some(2));
        d.write_all(b"ab").expect("1");
        d.sync().expect("sync before the cut");
        d.write_all(b"cd").expect("2");
        assert!(d.write_all(b"ef").is_err());
        assert!(d.sync().is_err());
        assert!(d.write_all(b"gh").is_err());
        assert_eq!((d.writes(), d.syncs()), (2, 1));
        assert_eq!(d.into_inner().into_inner(), b"abcd\0\0\0\0");
    }

    #[test]
    fn unsynced_loses_any_subset_of_the_writes_since_the_last_sync() {
        let mut d = FaultyDevice::new(Unsynced::new(Cursor::new(vec![0u8; 8])), Some(4));
        d.write_all(b"ab").expect("1");
        d.sync().expect("sync");
        d.seek(SeekFrom::Start(1)).expect("seek");
        d.write_all(b"XY").expect("2");
        d.write_all(b"cd").expect("3");
        d.seek(SeekFrom::Start(2)).expect("seek");
        d.write_all(b"Z").expect("4, overlapping 2");
        assert!(d.sync().is_err(), "cut");
        let mut u = d.into_inner();
        assert_eq!(u.pending(), 3);
        let mut read = [0u8; 8];
        u.seek(SeekFrom::Start(0)).expect("seek");
        u.read_exact(&mut read).expect("reads see every write");
        assert_eq!(&read, b"aXZcd\0\0\0");
        // The cache kept the third write but lost the first two after the sync.
        u.lose(&[0, 1]).expect("lose");
        assert_eq!(u.into_inner().into_inner(), b"abZ\0\0\0\0\0");
    }

    #[test]
    fn slice_and_write_log_see_partition_offsets() {
        let mut s = Slice::new(Cursor::new(vec![0u8; 16]), 4, 12).expect("slice");
        let mut w = WriteLog::new(&mut s);
        w.seek(SeekFrom::Start(2)).expect("seek");
        w.write_all(b"xyz").expect("write");
        assert_eq!(w.log(), &[(2, 3)]);
        assert_eq!(w.bytes_written(), 3);
        s.seek(SeekFrom::Start(7)).expect("seek");
        assert!(s.write_all(b"12").is_err(), "past the end");
        let all = s.into_inner().into_inner();
        assert_eq!(&all[6..9], b"xyz");
        assert_eq!(all[12..], [0, 0, 0, 0]);
    }
}

/// A power cut for tests that drive the built binary, set from the environment.
///
/// With `PIFW_TEST_CUT_AFTER_WRITES=k`, the first `k` writes this process makes to a card
/// (through [`crate::disk::lock::WriteTarget`], whatever handle) go through and every later
/// write and sync fails, as if the power went after `k` writes. With
/// `PIFW_TEST_CUT_LOSE_UNSYNCED=1` as well, the writes since the last sync are undone at the
/// cut: a disk cache that had persisted none of them. Without the variable nothing happens
/// (one check of a cached `None` per write). The variables are for tests only; an unknown or
/// unparsable value disables the cut.
pub mod env_cut {
    use std::fs::OpenOptions;
    use std::io;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    struct State {
        limit: u64,
        lose_unsynced: bool,
        writes: u64,
        cut: bool,
        /// `(path, offset, bytes replaced)` of each write since the last sync.
        unsynced: Vec<(PathBuf, u64, Vec<u8>)>,
    }

    static STATE: Mutex<Option<Option<State>>> = Mutex::new(None);

    fn with<T>(f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<Option<T>> {
        let mut g = STATE.lock().unwrap_or_else(|p| p.into_inner());
        let s = g.get_or_insert_with(|| {
            let limit = std::env::var("PIFW_TEST_CUT_AFTER_WRITES")
                .ok()?
                .parse()
                .ok()?;
            Some(State {
                limit,
                lose_unsynced: std::env::var("PIFW_TEST_CUT_LOSE_UNSYNCED").is_ok_and(|v| v == "1"),
                writes: 0,
                cut: false,
                unsynced: Vec::new(),
            })
        });
        match s {
            Some(s) => f(s).map(Some),
            None => Ok(None),
        }
    }

    fn power_cut() -> io::Error {
        io::Error::other("simulated power cut (PIFW_TEST_CUT_AFTER_WRITES)")
    }

    /// Called before `len` bytes are written at `offset` of `path`; an error means the power
    /// is off and nothing may be written.
    pub fn before_write(
        path: &Path,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> io::Result<()> {
        with(|s| {
            if s.cut || s.writes >= s.limit {
                if !s.cut {
                    s.cut = true;
                    if s.lose_unsynced {
                        for (p, off, old) in s.unsynced.drain(..).rev() {
                            OpenOptions::new()
                                .write(true)
                                .open(&p)?
                                .write_all_at(&old, off)?;
                        }
                    }
                }
                return Err(power_cut());
            }
            if s.lose_unsynced {
                let size = file.metadata()?.len();
                let n = (len as u64).min(size.saturating_sub(offset)) as usize;
                let mut old = vec![0u8; n];
                file.read_exact_at(&mut old, offset)?;
                s.unsynced.push((path.to_path_buf(), offset, old));
            }
            s.writes += 1;
            Ok(())
        })
        .map(|_| ())
    }

    /// Called before a sync: fails once the power is off, else forgets the unsynced writes.
    pub fn before_sync() -> io::Result<()> {
        with(|s| {
            if s.cut {
                return Err(power_cut());
            }
            s.unsynced.clear();
            Ok(())
        })
        .map(|_| ())
    }
}
