//! The entity extractor memhost binds new namespaces to when it is loaded:
//! rules, not a model — microseconds per memory, nothing to download. What each rule finds is in [`scan`]'s
//! table.

pub mod scan;

use memhost_sdk::{Entity, Extraction, Extractor, Result};

/// The extractor. Stateless.
pub struct Entities;

/// What the rules find in `text`, in the contract's shape.
pub fn extract(text: &str) -> Extraction {
    let found = scan::scan(text);
    Extraction {
        entities: found
            .entities
            .into_iter()
            .map(|e| Entity::new(&e.name, e.kind))
            .collect(),
        facts: Vec::new(),
        tags: found.tags,
    }
}

impl Extractor for Entities {
    fn new() -> Result<Self> {
        Ok(Entities)
    }

    fn extract(&self, text: &str) -> Result<Extraction> {
        Ok(extract(text))
    }
}

memhost_sdk::register_extractor!(Entities);
