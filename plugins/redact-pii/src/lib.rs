//! memhost's PII and secrets redactor.
//!
//! | label    | placeholder     | finds                                                                 |
//! |----------|-----------------|-----------------------------------------------------------------------|
//! | `secret` | `[PRIVATE KEY]` | `-----BEGIN … PRIVATE KEY-----` blocks                                |
//! | `secret` | `[SECRET]`      | API keys by prefix (`sk-`, `sk_live_`, `ghp_`, `github_pat_`, `AKIA`, `xoxb-`, `AIza`, `glpat-`, …) and high-entropy tokens |
//! | `email`  | `[EMAIL]`       | addresses with a dotted domain                                        |
//! | `iban`   | `[IBAN]`        | IBANs whose mod-97 checksum holds (spaces every 4 allowed)            |
//! | `card`   | `[CARD]`        | 13–19 digit card numbers with a card prefix that pass Luhn            |
//! | `ssn`    | `[SSN]`         | US SSNs written `AAA-GG-SSSS`, with valid area/group/serial           |
//! | `ip`     | `[IP]`          | IPv4 and IPv6 addresses                                               |
//! | `phone`  | `[PHONE]`       | international `+…` and national numbers of 7–15 digits                |
//! | `term`   | `[REDACTED]`    | the operator's `blocklist` (comma-separated, case-insensitive)        |
//!
//! Scanners are hand-written (no regex compilation per call: the host gives
//! redactors a fresh instance per call). They work on ASCII bytes, so every
//! span starts and ends on a character boundary.

use memhost_sdk::{Finding, Redactor, Result};

mod scan;

pub use scan::find_all;

/// The redactor: the operator's blocklist, lowercased.
pub struct PiiRedactor {
    blocklist: Vec<String>,
}

impl PiiRedactor {
    /// A redactor with the given comma-separated blocklist.
    pub fn with_blocklist(list: &str) -> Self {
        PiiRedactor {
            blocklist: list
                .split(',')
                .map(|t| t.trim().to_lowercase())
                .filter(|t| !t.is_empty())
                .collect(),
        }
    }

    /// Every finding in `text`.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let mut findings = find_all(text);
        let lower = text.to_ascii_lowercase();
        for term in &self.blocklist {
            // Lowercasing ASCII keeps byte offsets; a non-ASCII term is
            // matched as written.
            for (start, m) in lower.match_indices(term.as_str()) {
                findings.push(Finding::new(start, start + m.len(), "term", "[REDACTED]"));
            }
        }
        findings
    }
}

impl Redactor for PiiRedactor {
    fn new() -> Result<Self> {
        Ok(Self::with_blocklist(
            &memhost_sdk::config("blocklist").unwrap_or_default(),
        ))
    }

    fn redact(&self, text: &str) -> Result<Vec<Finding>> {
        Ok(self.find(text))
    }
}

memhost_sdk::register_redactor!(PiiRedactor);
