//! Progress bars on stderr (indicatif): bytes, rate and time left, for the long steps a user
//! would otherwise watch in silence: downloads, backing up the files a change replaces,
//! writing and reading back each transaction. Drawn only on a terminal, and never with
//! `--quiet` or `--json` ([`output::progress_allowed`]). The domain never draws: downloads
//! report through [`crate::fetch::Progress`]; the change executor reports the card's I/O
//! through its [`Reporter`](crate::change::exec::Reporter), which
//! [`Terminal`](super::change::Terminal) turns into a [`Meter`]'s bar.

use super::output;
use indicatif::{ProgressBar, ProgressStyle};
use std::cell::RefCell;

use std::rc::Rc;

/// A bar for a byte count: `label [=====>    ] 12.3 MiB/30.0 MiB 4.1 MiB/s 5s`, or a
/// spinner with the bytes so far when the total is unknown. `None` when bars are off.
pub fn bytes(label: &str, total: Option<u64>) -> Option<ProgressBar> {
    if !output::progress_allowed() {
        return None;
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:25}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg} {spinner} {binary_bytes} {binary_bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(label.to_string());
    Some(bar)
}

/// Download progress for [`crate::fetch`]: one bar per download, cleared when it ends; the
/// line it leaves says what was downloaded.
#[derive(Default)]
pub struct Download {
    bar: Option<ProgressBar>,
    url: String,
}

impl Download {
    pub fn new() -> Download {
        Download::default()
    }
}

impl crate::fetch::Progress for Download {
    fn start(&mut self, url: &str, total: Option<u64>) {
        self.url = url.to_string();
        let name = url.rsplit('/').next().unwrap_or(url);
        self.bar = bytes(&format!("downloading {name}"), total);
    }

    fn advance(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            let (done, secs) = (bar.position(), bar.elapsed().as_secs_f64());
            bar.finish_and_clear();
            output::note(format_args!(
                "downloaded {} ({} in {secs:.1} s)",
                self.url,
                output::size(done)
            ));
        }
    }
}

/// The bar the executor's reports move: started and finished around each step (backing up,
/// each transaction), advanced as the domain code reads and writes.
#[derive(Clone, Default)]
pub struct Meter(Rc<RefCell<Option<ProgressBar>>>);

impl Meter {
    /// A new bar for the next step; the previous one is cleared.
    pub fn start(&self, label: &str, total: u64) {
        self.finish();
        *self.0.borrow_mut() = bytes(label, Some(total));
    }

    /// Clears the bar (nothing stays on the terminal).
    pub fn finish(&self) {
        if let Some(bar) = self.0.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }

    pub fn add(&self, n: usize) {
        if let Some(bar) = self.0.borrow().as_ref() {
            let len = bar.length().unwrap_or(u64::MAX);
            bar.set_position((bar.position() + n as u64).min(len));
        }
    }
}
