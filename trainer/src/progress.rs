//! Progress: bars on a terminal, plain lines otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Whether stderr is a terminal (bars) or not (plain lines).
pub fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// A bar of `len` steps with `prefix`, or a hidden one off a terminal.
pub fn bar(len: u64, prefix: String) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}
