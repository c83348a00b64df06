//! Stream decompression: gzip, xz and zstd, recognised by their magic bytes.
//!
//! Owns turning a compressed byte stream into a plain one, forward only, in fixed memory: the
//! callers (tar walks, `.deb` members, whole disk images) never seek in what comes out. It
//! must not cap anything itself: limits belong to whoever reads the result (archive members,
//! the spooled firmware partition of an image).
//!
//! zstd is decoded by `ruzstd` (pure Rust, like the gzip and xz decoders already in use, so the
//! binary needs no C library and cross-builds stay a `cargo build`). Its `StreamingDecoder`
//! reads one frame; [`ZstdReader`] walks every frame of the stream (pzstd and `zstd --format`
//! concatenations write several) and skips skippable frames, as the format allows (RFC 8878
//! §3.1.2), and checks each frame's content checksum when the frame carries one.

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use std::io::{self, BufRead, BufReader, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// The compression whose magic bytes start `head` (RFC 1952, the xz file format 1.2.1
    /// §2.1.1.1, RFC 8878 §3.1.1); `None` when none does.
    pub(crate) fn sniff(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Xz,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// The compression a file-name suffix names (`data.tar.zst` → zstd), for `.deb` members,
    /// which dpkg names by compression; `None` for an unknown suffix.
    pub(crate) fn from_suffix(suffix: &str) -> Option<Compression> {
        match suffix {
            "" => Some(Compression::None),
            ".gz" => Some(Compression::Gzip),
            ".xz" => Some(Compression::Xz),
            ".zst" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// A reader of what `reader` holds once decompressed.
pub(crate) fn decompressor<'a, R: Read + 'a>(
    compression: Compression,
    reader: R,
) -> Box<dyn Read + 'a> {
    let reader = BufReader::with_capacity(256 * 1024, reader);
    match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new(reader, true)),
        Compression::Zstd => Box::new(ZstdReader::new(reader)),
    }
}

/// Every zstd frame of a stream, decoded in order.
pub(crate) struct ZstdReader<R> {
    source: R,
    decoder: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdReader<R> {
    pub(crate) fn new(source: R) -> ZstdReader<R> {
        ZstdReader {
            source,
            decoder: FrameDecoder::new(),
            in_frame: false,
        }
    }

    /// Ends the current frame: its checksum, when it has one, must match what was decoded.
    fn end_frame(&mut self) -> io::Result<()> {
        self.in_frame = false;
        match (
            self.decoder.get_checksum_from_data(),
            self.decoder.get_calculated_checksum(),
        ) {
            (Some(stored), Some(computed)) if stored != computed => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "zstd frame checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                ),
            )),
            _ => Ok(()),
        }
    }
}

fn invalid(e: FrameDecoderError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.source.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.decoder.reset(&mut self.source) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let want = u64::from(length);
                        let skipped =
                            io::copy(&mut (&mut self.source).take(want), &mut io::sink())?;
                        if skipped != want {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "zstd: skippable frame cut short",
                            ));
                        }
                    }
                    Err(e) => return Err(invalid(e)),
                }
                continue;
            }
            if self.decoder.can_collect() > 0 {
                return self.decoder.read(buf);
            }
            if self.decoder.is_finished() {
                self.end_frame()?;
                continue;
            }
            self.decoder
                .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                .map_err(invalid)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// `data` compressed by the `zstd` command-line tool with `args`.
    fn zstd_cli(data: &[u8], args: &[&str]) -> Vec<u8> {
        let mut child = Command::new("zstd")
            .args(args)
            .args(["-c", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the zstd command (apt-get install zstd) is needed for this test");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = data.to_vec();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&input).expect("feeding zstd");
        });
        let out = child.wait_with_output().expect("zstd output");
        writer.join().expect("writer");
        assert!(out.status.success(), "zstd {args:?} failed");
        out.stdout
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 3 == 0 { 0 } else { x as u8 }
            })
            .collect()
    }

    fn decode(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decompressor(Compression::sniff(bytes), bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn the_zstd_cli_output_decodes_to_the_input() {
        let data = noise(3 << 20);
        let packed = zstd_cli(&data, &["-19", "--check"]);
        assert_eq!(Compression::sniff(&packed), Compression::Zstd);
        assert_eq!(decode(&packed).expect("decodes"), data);
    }

    #[test]
    fn concatenated_and_skippable_frames_are_all_read() {
        let (a, b) = (noise(100_000), b"second frame".to_vec());
        let mut packed = zstd_cli(&a, &["-3"]);
        // A skippable frame (magic 0x184D2A50, 5 bytes of payload) between two real ones.
        packed.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 5, 0, 0, 0, 1, 2, 3, 4, 5]);
        packed.extend(zstd_cli(&b, &["-3"]));
        assert_eq!(decode(&packed).expect("decodes"), [a, b].concat());
    }

    #[test]
    fn damage_is_an_error_not_silent_garbage() {
        let data = noise(200_000);
        let packed = zstd_cli(&data, &["-3", "--check"]);
        let truncated = &packed[..packed.len() / 2];
        assert!(decode(truncated).is_err(), "a truncated frame must fail");
        let mut flipped = packed.clone();
        let at = packed.len() - 2;
        flipped[at] ^= 0xff; // inside the content checksum
        let e = decode(&flipped).expect_err("a wrong checksum must fail");
        assert!(e.to_string().contains("checksum"), "{e}");
    }
}
