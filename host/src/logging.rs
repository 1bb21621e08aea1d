//! Logs: human-readable by default, JSON with `MEMHOST_LOG_FORMAT=json`,
//! filtered by `MEMHOST_LOG` (or `RUST_LOG`), always on stderr. Security
//! events use the target `audit`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Install the global subscriber (once; later calls do nothing).
pub fn init() {
    let filter = std::env::var("MEMHOST_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MEMHOST_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Text from outside — a caller's string, a plugin's message — made fit
/// for a log line or an audit entry: control characters escaped, so a
/// newline cannot forge a line of its own, and cut to at most about `max`
/// bytes, saying how long it was, so a caller cannot make the log pay for
/// a megabyte it sent.
pub fn untrusted(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max && !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max) + 24);
    let mut cut = false;
    for c in s.chars() {
        let before = out.len();
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(before);
            cut = true;
            break;
        }
    }
    if cut {
        out.push_str(&format!("… ({} bytes)", s.len()));
    }
    std::borrow::Cow::Owned(out)
}

/// At most one log line per interval for an event that a client can
/// repeat at will; the lines left out are counted into the next one.
#[derive(Debug)]
pub struct Sampled {
    every: std::time::Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Sampled {
    /// One line per `every`.
    pub const fn every(every: std::time::Duration) -> Sampled {
        Sampled {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(left_out)` when this occurrence is to be logged, with how many
    /// were left out since the last logged one; `None` to count it only.
    pub fn take(&self) -> Option<u64> {
        let mut state = self.state.lock().ok()?;
        let now = std::time::Instant::now();
        match state.0 {
            Some(at) if now.duration_since(at) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                state.0 = Some(now);
                Some(std::mem::take(&mut state.1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Sampled, untrusted};

    #[test]
    fn a_sampled_event_logs_once_per_interval_and_counts_the_rest() {
        let s = Sampled::every(std::time::Duration::from_millis(200));
        assert_eq!(s.take(), Some(0));
        assert_eq!(s.take(), None);
        assert_eq!(s.take(), None);
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(s.take(), Some(2));
    }

    #[test]
    fn short_clean_text_is_kept_as_is() {
        assert!(matches!(
            untrusted("team-a", 64),
            std::borrow::Cow::Borrowed("team-a")
        ));
    }

    #[test]
    fn newlines_cannot_start_a_line_of_their_own() {
        let forged = untrusted("ok\nINFO audit: key.revoke outcome=ok\r", 256);
        assert!(!forged.contains('\n') && !forged.contains('\r'), "{forged}");
        assert!(forged.contains("\\n"), "{forged}");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_and_says_its_size() {
        let long = "é".repeat(1000);
        let cut = untrusted(&long, 101);
        assert!(cut.len() <= 101 + 24, "{}", cut.len());
        assert!(cut.ends_with("… (2000 bytes)"), "{cut}");
        assert!(cut.starts_with("éé"));
    }
}
