//! Progress bars for long work: steps with ETA, loss, accuracy and images/s (training and
//! search), or bytes with rate and ETA (downloads). They draw on stderr only when stderr is a
//! terminal and `--quiet` is off; otherwise they are silent and cost next to nothing.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const STEPS_TEMPLATE: &str =
    "{prefix:>10.bold} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} ETA {eta:>4} {msg}";
const BYTES_TEMPLATE: &str = "{prefix:>10.bold} [{elapsed_precise}] {wide_bar:.cyan/blue} \
     {bytes}/{total_bytes} {bytes_per_sec} ETA {eta:>4}";
const SPINNER_TEMPLATE: &str =
    "{prefix:>10.bold} [{elapsed_precise}] {spinner} {bytes} {bytes_per_sec}";

/// Whether bars should draw: not quiet and stderr is a terminal.
pub fn should_draw(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// "loss 0.4321  acc 87.50%  1234 img/s", leaving out what is unknown.
pub fn format_stats(loss: Option<f64>, acc: Option<f64>, images_per_sec: Option<f64>) -> String {
    let mut parts = Vec::new();
    if let Some(l) = loss {
        parts.push(format!("loss {l:.4}"));
    }
    if let Some(a) = acc {
        parts.push(format!("acc {:.2}%", 100.0 * a));
    }
    if let Some(r) = images_per_sec {
        parts.push(format!("{r:.0} img/s"));
    }
    parts.join("  ")
}

/// A progress bar over steps (batches) that tracks images/s and shows the latest loss and
/// accuracy.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    images: u64,
    message: String,
}

impl Progress {
    /// A bar of `len` steps labelled `prefix`; hidden when `quiet` or stderr is not a
    /// terminal.
    pub fn new(len: u64, prefix: &str, quiet: bool) -> Self {
        Self::with_target(len, prefix, should_draw(quiet), STEPS_TEMPLATE)
    }

    /// A bar that never draws (tests, library use).
    pub fn hidden(len: u64) -> Self {
        Self::with_target(len, "", false, STEPS_TEMPLATE)
    }

    /// A byte-count bar for a download of `total` bytes (a spinner when unknown).
    pub fn bytes(total: Option<u64>, prefix: &str, quiet: bool) -> Self {
        match total {
            Some(t) => Self::with_target(t, prefix, should_draw(quiet), BYTES_TEMPLATE),
            None => Self::with_target(0, prefix, should_draw(quiet), SPINNER_TEMPLATE),
        }
    }

    fn with_target(len: u64, prefix: &str, draw: bool, template: &str) -> Self {
        let target = if draw {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let style = ProgressStyle::with_template(template)
            .expect("progress templates are valid")
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(len), target)
            .with_style(style)
            .with_prefix(prefix.to_string());
        if draw {
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        Progress {
            bar,
            start: Instant::now(),
            images: 0,
            message: String::new(),
        }
    }

    /// Whether the bar draws.
    pub fn is_drawn(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// One step done that processed `images` images; `loss` and `acc` (a fraction) are the
    /// latest values, shown when given.
    pub fn step(&mut self, images: usize, loss: Option<f64>, acc: Option<f64>) {
        self.images += images as u64;
        self.message = format_stats(loss, acc, Some(self.images_per_sec()));
        self.bar.set_message(self.message.clone());
        self.bar.inc(1);
    }

    /// Advances by `n` without changing the statistics (bytes for a download bar).
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Sets the position (e.g. a resumed download's starting offset).
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    /// Steps (or bytes) done.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Images processed per second since the bar was created.
    pub fn images_per_sec(&self) -> f64 {
        let secs = self.start.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.images as f64 / secs
        } else {
            0.0
        }
    }

    /// Images processed so far.
    pub fn images(&self) -> u64 {
        self.images
    }

    /// The statistics shown last.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prints a line above the bar (or to stderr when the bar is hidden and `quiet` is off).
    pub fn note(&self, quiet: bool, line: &str) {
        if quiet {
            return;
        }
        if self.is_drawn() {
            self.bar.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// Stops the bar, leaving it on screen.
    pub fn finish(&self) {
        self.bar.finish();
    }

    /// Removes the bar from the screen.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_format() {
        assert_eq!(
            format_stats(Some(0.123456), Some(0.875), Some(1234.4)),
            "loss 0.1235  acc 87.50%  1234 img/s"
        );
        assert_eq!(format_stats(None, Some(0.5), None), "acc 50.00%");
        assert_eq!(format_stats(None, None, None), "");
    }

    #[test]
    fn hidden_bar_counts_steps_and_images() {
        let mut p = Progress::hidden(10);
        assert!(!p.is_drawn());
        std::thread::sleep(Duration::from_millis(5));
        p.step(64, Some(2.3), Some(0.1));
        p.step(64, Some(2.1), Some(0.2));
        assert_eq!(p.position(), 2);
        assert_eq!(p.images(), 128);
        assert!(p.images_per_sec() > 0.0);
        assert!(
            p.message().starts_with("loss 2.1000  acc 20.00%  "),
            "{}",
            p.message()
        );
        assert!(p.message().ends_with(" img/s"));
        p.finish();
    }

    #[test]
    fn quiet_never_draws() {
        assert!(!should_draw(true));
        assert!(!Progress::new(5, "x", true).is_drawn());
        assert!(!Progress::bytes(Some(5), "x", true).is_drawn());
        assert!(!Progress::bytes(None, "x", true).is_drawn());
    }
}
