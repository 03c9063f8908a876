//! Progress bars for large transfers and spinners for long server-side work, drawn on standard error only when it is a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Transfers at or below this size finish quickly enough that a bar would only flicker.
pub(crate) const MIN_BYTES: u64 = 8 * 1024 * 1024;

/// A byte-counting bar for a transfer of `total` bytes; hidden for small transfers and when
/// standard error is not a terminal.
pub(crate) fn bar(total: u64, label: &'static str) -> ProgressBar {
    if total <= MIN_BYTES || !super::stderr_is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{msg:>9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    ProgressBar::new(total)
        .with_style(style)
        .with_message(label)
}

/// A spinner with `label` and the time spent, for a call whose length is unknown (a collection
/// pass, a verification); hidden when standard error is not a terminal.
pub(crate) fn spinner(label: &'static str) -> ProgressBar {
    if !super::stderr_is_terminal() {
        return ProgressBar::hidden();
    }
    let style =
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("the template is valid");
    let spinner = ProgressBar::new_spinner()
        .with_style(style)
        .with_message(label);
    // Redrawn on a timer: the call in progress reports nothing until it returns.
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}
