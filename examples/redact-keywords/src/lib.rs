//! Example redactor: hides every occurrence of terms the operator lists.
//!
//! Configuration (granted by the operator): `terms`, a comma-separated list
//! of words or phrases, matched case-insensitively (ASCII). Each occurrence
//! becomes `[REDACTED]` with the label `keyword`.

use memhost_sdk::{Finding, Redactor, Result};

/// The redactor: the configured terms, lowercased.
pub struct KeywordRedactor {
    terms: Vec<String>,
}

impl KeywordRedactor {
    /// A redactor for the given comma-separated terms.
    pub fn with_terms(terms: &str) -> Self {
        KeywordRedactor {
            terms: terms
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect(),
        }
    }

    /// Every occurrence of every term in `text`.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let haystack = text.to_ascii_lowercase();
        let mut findings = Vec::new();
        for term in &self.terms {
            for (start, m) in haystack.match_indices(term.as_str()) {
                findings.push(Finding::new(
                    start,
                    start + m.len(),
                    "keyword",
                    "[REDACTED]",
                ));
            }
        }
        findings
    }
}

impl Redactor for KeywordRedactor {
    fn new() -> Result<Self> {
        // No grant means no terms: the plugin then finds nothing, and says so.
        let terms = memhost_sdk::config("terms").unwrap_or_default();
        if terms.trim().is_empty() {
            memhost_sdk::debug("no \"terms\" configured; nothing will be redacted");
        }
        Ok(Self::with_terms(&terms))
    }

    fn redact(&self, text: &str) -> Result<Vec<Finding>> {
        Ok(self.find(text))
    }
}

memhost_sdk::register_redactor!(KeywordRedactor);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_term_case_insensitively() {
        let r = KeywordRedactor::with_terms("project x, Falcon");
        let text = "Project X ships with falcon; FALCON is late";
        let spans: Vec<_> = r
            .find(text)
            .iter()
            .map(|f| &text[f.start as usize..f.end as usize])
            .collect();
        assert_eq!(spans, ["Project X", "falcon", "FALCON"]);
    }

    #[test]
    fn empty_terms_find_nothing() {
        assert!(
            KeywordRedactor::with_terms(" , ")
                .find("anything")
                .is_empty()
        );
    }
}
