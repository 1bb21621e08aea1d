//! Example embedder: a feature-hashed bag of words.
//!
//! Not semantic — "car" and "automobile" share nothing — but deterministic,
//! fast and offline, which makes it a good embedder for tests and a short
//! example of the [`Embedder`] trait. Words are lowercased alphanumeric runs;
//! each adds ±1 to one of `dimensions` buckets (FNV-1a hash); the vector is
//! L2-normalised.
//!
//! Configuration: `dimensions` (default 256, 8–4096).

use memhost_sdk::{Embedder, Error, ModelInfo, Result};

/// The embedder.
pub struct HashingEmbedder {
    dimensions: usize,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl HashingEmbedder {
    /// An embedder producing vectors of `dimensions` floats.
    pub fn with_dimensions(dimensions: usize) -> Self {
        HashingEmbedder { dimensions }
    }

    /// The vector for one text.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dimensions];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let h = fnv1a(word.to_lowercase().as_bytes());
            let bucket = (h % self.dimensions as u64) as usize;
            v[bucket] += if h >> 63 == 0 { 1.0 } else { -1.0 };
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

impl Embedder for HashingEmbedder {
    fn new() -> Result<Self> {
        let dimensions = match memhost_sdk::config("dimensions") {
            None => 256,
            Some(d) => match d.trim().parse::<usize>() {
                Ok(n) if (8..=4096).contains(&n) => n,
                _ => {
                    return Err(Error::Config(format!(
                        "dimensions must be a number from 8 to 4096, not \"{d}\""
                    )));
                }
            },
        };
        Ok(Self::with_dimensions(dimensions))
    }

    fn model(&self) -> Result<ModelInfo> {
        Ok(ModelInfo {
            id: format!("hashing-bow-{}", self.dimensions),
            dimensions: self.dimensions as u32,
            max_batch: 256,
        })
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

memhost_sdk::register_embedder!(HashingEmbedder);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_words_same_vector_unit_length() {
        let e = HashingEmbedder::with_dimensions(64);
        let a = e.vector("Rust and wasm");
        let b = e.vector("wasm AND rust");
        assert_eq!(a, b);
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(e.vector("").iter().all(|x| *x == 0.0));
    }
}
