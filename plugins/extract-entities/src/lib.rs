//! The entity extractor memhost binds new namespaces to when it is loaded:
//! rules, not a model — microseconds per memory, nothing to download. What
//! each rule finds is in [`scan`]'s table; the times a text refers to, placed
//! from when it was said, in [`when`]'s.

pub mod scan;
pub mod when;

use memhost_sdk::{Entity, EventTime, ExtractContext, Extraction, Extractor, Result};

/// The extractor. Stateless.
pub struct Entities;

/// What the rules find in `text`, said at `observed_at` (Unix ms), in the
/// contract's shape.
pub fn extract(text: &str, observed_at: i64) -> Extraction {
    let found = scan::scan(text);
    Extraction {
        entities: found
            .entities
            .into_iter()
            .map(|e| Entity::new(&e.name, e.kind))
            .collect(),
        facts: Vec::new(),
        tags: found.tags,
        event_times: when::times(text, observed_at)
            .into_iter()
            .map(|w| EventTime {
                text: w.text,
                start: w.start,
                end: w.end,
            })
            .collect(),
    }
}

impl Extractor for Entities {
    fn new() -> Result<Self> {
        Ok(Entities)
    }

    fn extract_in_context(&self, text: &str, context: &ExtractContext) -> Result<Extraction> {
        Ok(extract(text, context.observed_at))
    }
}

memhost_sdk::register_extractor!(Entities);
