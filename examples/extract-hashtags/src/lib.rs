//! Example extractor: `#hashtags` become tags, `@mentions` become people.

use memhost_sdk::{Entity, Extraction, Extractor, Result};

/// The extractor. Stateless.
pub struct Hashtags;

fn word_after(text: &str, start: usize) -> &str {
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Tags and mentioned people in `text`, each once, in order of appearance.
pub fn extract(text: &str) -> Extraction {
    let mut out = Extraction::default();
    for (i, c) in text.char_indices() {
        let at_word_start = text[..i]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        if !at_word_start || (c != '#' && c != '@') {
            continue;
        }
        let word = word_after(text, i + 1);
        if word.is_empty() {
            continue;
        }
        if c == '#' {
            let tag = word.to_lowercase();
            if !out.tags.contains(&tag) {
                out.tags.push(tag);
            }
        } else if !out.entities.iter().any(|e| e.name == word) {
            out.entities.push(Entity::new(word, "person"));
        }
    }
    out
}

impl Extractor for Hashtags {
    fn new() -> Result<Self> {
        Ok(Hashtags)
    }

    fn extract(&self, text: &str) -> Result<Extraction> {
        Ok(extract(text))
    }
}

memhost_sdk::register_extractor!(Hashtags);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_mentions() {
        let e = extract("Ask @ada about #Rust and #wasm, not email@example.com #rust");
        assert_eq!(e.tags, ["rust", "wasm"]);
        assert_eq!(e.entities.len(), 1);
        assert_eq!(e.entities[0].name, "ada");
        assert_eq!(e.entities[0].kind, "person");
    }
}
