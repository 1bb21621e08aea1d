//! Progress of long commands on stderr: a bar with counts, rate and ETA on
//! a terminal; on anything else (a log, a pipe, CI) a plain line when a
//! step starts, every ten seconds while it runs, and when it ends.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// What is counted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unit {
    /// Bytes (shown as KiB/MiB/GiB).
    Bytes,
    /// Things, named in the label (memories, rows).
    Items,
}

/// One step's progress.
pub(crate) struct Progress {
    label: String,
    unit: Unit,
    started: Instant,
    bar: Option<ProgressBar>,
    /// When the last plain line was printed, and the last total seen.
    plain: Mutex<(Instant, u64)>,
}

const PLAIN_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    /// Start a step (its total may be learned later, with [`Progress::set`]).
    pub(crate) fn start(label: &str, unit: Unit) -> Progress {
        let now = Instant::now();
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = match unit {
                Unit::Bytes => {
                    "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, ETA {eta}"
                }
                Unit::Items => "{msg} [{bar:30}] {human_pos}/{human_len} {per_sec}, ETA {eta}",
            };
            let bar = ProgressBar::new(0).with_message(label.to_string());
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        if bar.is_none() {
            eprintln!("{label}…");
        }
        Progress {
            label: label.to_string(),
            unit,
            started: now,
            bar,
            plain: Mutex::new((now, 0)),
        }
    }

    fn amount(&self, n: u64) -> String {
        match self.unit {
            Unit::Bytes => HumanBytes(n).to_string(),
            Unit::Items => n.to_string(),
        }
    }

    /// `done` of `total` so far (0: not known).
    pub(crate) fn set(&self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            if total == 0 {
                bar.unset_length();
            } else {
                bar.set_length(total);
            }
            bar.set_position(done);
            return;
        }
        let Ok(mut plain) = self.plain.lock() else {
            return;
        };
        plain.1 = total;
        if plain.0.elapsed() >= PLAIN_EVERY {
            plain.0 = Instant::now();
            match (done * 100).checked_div(total) {
                Some(pct) => eprintln!(
                    "{}: {} of {} ({pct}%)",
                    self.label,
                    self.amount(done),
                    self.amount(total)
                ),
                None => eprintln!("{}: {} so far", self.label, self.amount(done)),
            }
        }
    }

    /// The step is over: `message` says how it ended.
    pub(crate) fn finish(self, message: &str) {
        let took = self.started.elapsed();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{}: {message} in {:.1} s", self.label, took.as_secs_f64());
    }
}
