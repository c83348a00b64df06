//! Downloads: one blocking HTTP client (rustls with ring, no OpenSSL) and the streaming,
//! verifying download into the cache.
//!
//! Owns the mapping from what a server does to what the user reads: a wrong status, a body
//! shorter than its Content-Length, a server that stops sending (the timeout bounds every
//! single read, so a slow download that keeps moving is not cut off), an announced size that
//! contradicts the pin.

use super::cache::{Cache, Pin};
use super::{FetchError, Progress, Verified, check_url};
use std::io::{self, Read};
use std::time::Duration;

pub(crate) struct Http {
    client: reqwest::blocking::Client,
    timeout: Duration,
    /// The most bytes one download without a size pin may bring (a size pin caps it at the
    /// pin instead).
    max_unsized: u64,
}

impl Http {
    pub fn new(timeout: Duration, max_unsized: u64) -> Result<Http, FetchError> {
        // reqwest is built without a crypto provider of its own (`rustls-no-provider`): it uses
        // the process default and panics when there is none. An Err here means another part of
        // the process installed one first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("pifw/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(FetchError::Client)?;
        Ok(Http {
            client,
            timeout,
            max_unsized,
        })
    }

    /// A small unpinned text document (an archive's `InRelease`), into memory: at most `max`
    /// bytes, UTF-8. The caller verifies it before believing a word of it.
    pub fn get_small(&self, url: &str, max: u64) -> Result<String, FetchError> {
        check_url(url, true)?;
        let network = |source: reqwest::Error| FetchError::Network {
            url: url.to_string(),
            source,
        };
        let response = self.client.get(url).send().map_err(network)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let mut body = Vec::new();
        io::Read::take(response, max.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| FetchError::Truncated {
                url: url.to_string(),
                expected: None,
                received: body.len() as u64,
                cause: e.to_string(),
            })?;
        if body.len() as u64 > max {
            return Err(FetchError::ArchiveLimit {
                archive: url.to_string(),
                what: "the document".into(),
                limit: max,
            });
        }
        String::from_utf8(body).map_err(|_| FetchError::Archive {
            archive: url.to_string(),
            message: "not UTF-8 text".into(),
        })
    }

    /// Downloads `url` into the cache if its bytes match `pin`. `what` names the artifact in
    /// errors.
    pub fn download(
        &self,
        url: &str,
        pin: Pin<'_>,
        what: &str,
        cache: &Cache,
        progress: &mut dyn Progress,
    ) -> Result<Verified, FetchError> {
        check_url(url, true)?;
        let network = |source: reqwest::Error| {
            if source.is_timeout() {
                FetchError::Timeout {
                    url: url.to_string(),
                    after: self.timeout,
                    received: 0,
                }
            } else {
                FetchError::Network {
                    url: url.to_string(),
                    source,
                }
            }
        };
        let mut response = self.client.get(url).send().map_err(network)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let announced = response.content_length();
        if let (Some(expected), Some(actual)) = (pin.size, announced)
            && expected != actual
        {
            return Err(FetchError::SizeMismatch {
                what: what.to_string(),
                origin: url.to_string(),
                expected,
                actual,
            });
        }

        if pin.size.is_none() && announced.is_some_and(|n| n > self.max_unsized) {
            return Err(FetchError::ArchiveLimit {
                archive: url.to_string(),
                what: "the download".into(),
                limit: self.max_unsized,
            });
        }
        progress.start(url, pin.size.or(announced));
        // A body longer than the pin is cut off one byte past it: enough to prove the mismatch
        // without letting a hostile server fill the disk.
        // Without a size pin, the cap on one archive bounds it the same way.
        let limit = pin.size.unwrap_or(self.max_unsized).saturating_add(1);
        let mut body = io::Read::take(&mut response, limit);
        let staged = cache.stage(&mut body, &mut |done| progress.advance(done));
        progress.finish();
        let staged = staged.map_err(|(e, received)| {
            if is_timeout(&e) {
                FetchError::Timeout {
                    url: url.to_string(),
                    after: self.timeout,
                    received,
                }
            } else {
                FetchError::Truncated {
                    url: url.to_string(),
                    expected: announced,
                    received,
                    cause: e.to_string(),
                }
            }
        })?;
        if pin.size.is_none() && staged.size > self.max_unsized {
            return Err(FetchError::ArchiveLimit {
                archive: url.to_string(),
                what: "the download".into(),
                limit: self.max_unsized,
            });
        }
        if let Some(expected) = announced
            && staged.size < expected
        {
            return Err(FetchError::Truncated {
                url: url.to_string(),
                expected: announced,
                received: staged.size,
                cause: "the connection closed".into(),
            });
        }
        cache.store(staged, pin, what, url)
    }
}

/// Whether an error from reading a blocking response body is reqwest's read timeout.
fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
            .is_some_and(reqwest::Error::is_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_recognised_through_the_io_wrapper() {
        assert!(is_timeout(&io::Error::new(io::ErrorKind::TimedOut, "slow")));
        assert!(!is_timeout(&io::Error::other("reset")));
        assert!(!is_timeout(&io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed"
        )));
    }
}
