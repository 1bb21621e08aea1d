//! What a redactor returns, applied to the text: spans anywhere (past the
//! end, reversed, inside a character, overlapping), labels and
//! replacements of any size. The host applies what it can and never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memhost::plugins::{Finding, apply_findings};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let cut = (n as usize).min(rest.len());
    let (text, spans) = rest.split_at(cut);
    let text = String::from_utf8_lossy(text);
    let findings: Vec<Finding> = spans
        .chunks(3)
        .map(|c| Finding {
            start: u32::from(c[0]),
            end: u32::from(*c.get(1).unwrap_or(&0)),
            label: "x".repeat(usize::from(*c.get(2).unwrap_or(&0)) % 8),
            replacement: "[R]".into(),
        })
        .collect();
    let _ = apply_findings(&text, &findings);
});
