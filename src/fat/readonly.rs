//! A read-only, read-caching stream adapter for handing a partition to `fatfs`.
//!
//! Owns two guarantees. First, nothing written through it reaches the partition: `fatfs` wants
//! `Read + Write + Seek` even to read, and writes on its own when dropped (FSInfo, dirty flag),
//! so every `write` here fails with `PermissionDenied` and is counted. Second, `fatfs` reads FAT
//! entries two or four bytes at a time, each after a seek, and file contents one cluster at a
//! time, alternating between the two. Small reads are served from a few cached windows (one
//! stays on the FAT while another moves through the data), so that each of those is not a
//! system call. Reads of a window or more pass straight through.

use std::cell::Cell;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

/// Cached window size. Reads smaller than this are served from a window.
const WINDOW: usize = 32 * 1024;
/// Number of windows, replaced least recently used first.
const SLOTS: usize = 4;

struct Window {
    /// Partition offset of `data[0]`.
    start: u64,
    data: Vec<u8>,
    /// Value of the adapter's use counter at the last hit.
    last_use: u64,
}

pub(crate) struct ReadOnly<R> {
    inner: R,
    len: u64,
    pos: u64,
    windows: Vec<Window>,
    uses: u64,
    /// Write attempts, shared so a caller can look after `fatfs` has consumed the adapter.
    write_attempts: Rc<Cell<u64>>,
}

impl<R: Read + Seek> ReadOnly<R> {
    /// Wraps `inner`; the adapter's position 0 is the start of `inner`.
    pub fn new(mut inner: R) -> io::Result<Self> {
        let len = inner.seek(SeekFrom::End(0))?;
        Ok(ReadOnly {
            inner,
            len,
            pos: 0,
            windows: Vec::with_capacity(SLOTS),
            uses: 0,
            write_attempts: Rc::new(Cell::new(0)),
        })
    }

    /// A handle on the count of refused writes.
    pub fn write_attempts(&self) -> Rc<Cell<u64>> {
        Rc::clone(&self.write_attempts)
    }

    /// Index of a window holding `self.pos`, loading one (replacing the least recently used)
    /// if none does.
    fn window_at_pos(&mut self) -> io::Result<usize> {
        self.uses += 1;
        let pos = self.pos;
        if let Some(i) = self
            .windows
            .iter()
            .position(|w| pos >= w.start && pos < w.start + w.data.len() as u64)
        {
            self.windows[i].last_use = self.uses;
            return Ok(i);
        }
        let start = pos - pos % WINDOW as u64;
        let n = (self.len - start).min(WINDOW as u64) as usize;
        let i = if self.windows.len() < SLOTS {
            self.windows.push(Window {
                start,
                data: vec![0; n],
                last_use: 0,
            });
            self.windows.len() - 1
        } else {
            self.windows
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.last_use)
                .map_or(0, |(i, _)| i)
        };
        let w = &mut self.windows[i];
        w.data.resize(n, 0);
        self.inner.seek(SeekFrom::Start(start))?;
        self.inner.read_exact(&mut w.data)?;
        w.start = start;
        w.last_use = self.uses;
        Ok(i)
    }
}

impl<R: Read + Seek> Read for ReadOnly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        if buf.len() >= WINDOW {
            self.inner.seek(SeekFrom::Start(self.pos))?;
            let max = (self.len - self.pos).min(buf.len() as u64) as usize;
            let n = self.inner.read(&mut buf[..max])?;
            self.pos += n as u64;
            return Ok(n);
        }
        let i = self.window_at_pos()?;
        let w = &self.windows[i];
        let lo = (self.pos - w.start) as usize;
        let n = buf.len().min(w.data.len() - lo);
        buf[..n].copy_from_slice(&w.data[lo..lo + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for ReadOnly<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let Some(target) = target else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            ));
        };
        self.pos = target;
        Ok(target)
    }
}

impl<R> Write for ReadOnly<R> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        self.write_attempts.set(self.write_attempts.get() + 1);
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "pifw opened this read-only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn small_and_large_reads_return_the_same_bytes_as_the_source() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut ro = ReadOnly::new(Cursor::new(data.clone())).expect("wrap");
        let mut got = Vec::new();
        // Alternate tiny and big reads across window boundaries, then seek back.
        let mut sizes = [3usize, 40_000, 2, 1, 4096, 70_000].iter().cycle();
        loop {
            let mut buf = vec![0u8; *sizes.next().expect("cycle")];
            let n = ro.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
        ro.seek(SeekFrom::Start(32_767)).expect("seek");
        let mut two = [0u8; 2];
        ro.read_exact(&mut two)
            .expect("read across the window edge");
        assert_eq!(two, [data[32_767], data[32_768]]);
        assert_eq!(ro.seek(SeekFrom::End(-1)).expect("seek"), 199_999);
    }

    #[test]
    fn writes_are_refused_and_counted() {
        let mut ro = ReadOnly::new(Cursor::new(vec![0u8; 10])).expect("wrap");
        let count = ro.write_attempts();
        let err = ro.write(b"x").expect_err("must refuse");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(count.get(), 1);
        assert!(ro.flush().is_ok());
    }
}
