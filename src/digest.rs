//! sha256 in one place: lowercase hex, streaming over readers, and a reader that hashes what
//! passes through it.
//!
//! Every digest pifw prints, stores in a manifest, journal or backup, or compares with a pin is
//! the lowercase hex produced here, so two modules can never disagree about a hash's spelling.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// Buffer for streaming hashes: large enough that a Pi 3's SD reader is the limit, small
/// enough to stay out of the way on a 1 GB machine.
const CHUNK: usize = 256 * 1024;

/// Lowercase hex, two digits per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The 32 bytes of a lowercase or uppercase 64-digit hex digest; `None` for anything else.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// sha256 of `bytes`, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// sha256 and length of everything `reader` yields.
pub fn hash_reader(reader: &mut dyn Read) -> io::Result<(String, u64)> {
    let mut hashing = Hashing::new(reader);
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(hashing.finish())
}

/// A reader that hashes and counts what passes through it.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The hex digest and byte count of what was read so far.
    pub fn finish(self) -> (String, u64) {
        (hex(&self.hasher.finalize()), self.len)
    }

    /// Reads the rest (hashing it too), then [`Hashing::finish`].
    pub fn drain(mut self) -> io::Result<(String, u64)> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(self.finish())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn unhex32_round_trips_and_refuses_bad_input() {
        assert_eq!(unhex32(&hex(&[7u8; 32])), Some([7u8; 32]));
        assert_eq!(unhex32("00"), None);
        assert_eq!(unhex32(&"zz".repeat(32)), None);
    }

    #[test]
    fn streaming_and_whole_agree_with_a_known_digest() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), want);
        assert_eq!(
            hash_reader(&mut &b"abc"[..]).unwrap(),
            (want.to_string(), 3)
        );
        let mut h = Hashing::new(&b"abc"[..]);
        let mut first = [0u8; 1];
        h.read_exact(&mut first).unwrap();
        assert_eq!(h.drain().unwrap(), (want.to_string(), 3));
    }
}
