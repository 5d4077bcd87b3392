//! Progress bars on standard error, drawn only on a terminal (scripts and pipes see none).

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-counting bar for `total` bytes.
pub fn bar(total: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(message.to_owned());
    bar
}
