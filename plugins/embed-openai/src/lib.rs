//! Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI,
//! Ollama, vLLM, LM Studio, TEI). See README.md for the configuration.

use std::time::Duration;

use memhost_sdk::http::Request;
use memhost_sdk::{Embedder, Error, ModelInfo, Result};
use serde::Deserialize;

/// The embedder.
pub struct OpenAi {
    url: String,
    model: String,
    dimensions: u32,
    api_key: Option<String>,
    max_batch: u32,
    retries: u32,
    send_dimensions: bool,
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

fn number(key: &str, default: Option<u32>, range: std::ops::RangeInclusive<u32>) -> Result<u32> {
    match (memhost_sdk::config(key), default) {
        (None, Some(d)) => Ok(d),
        (None, None) => Err(Error::Config(format!("{key} is required"))),
        (Some(v), _) => match v.trim().parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(Error::Config(format!(
                "{key} must be a number from {} to {}, not \"{v}\"",
                range.start(),
                range.end()
            ))),
        },
    }
}

/// Parse an answer: one vector per text, in input order, each `dimensions`
/// long.
pub fn parse(body: &[u8], texts: usize, dimensions: u32) -> Result<Vec<Vec<f32>>> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        Error::Other(format!(
            "the endpoint's answer is not an embeddings list: {e}"
        ))
    })?;
    if answer.data.len() != texts {
        return Err(Error::Other(format!(
            "the endpoint returned {} vectors for {texts} texts",
            answer.data.len()
        )));
    }
    let mut items = answer.data;
    if items.iter().all(|i| i.index.is_some()) {
        items.sort_by_key(|i| i.index);
        // Exactly 0..n, or vectors would be matched to the wrong texts.
        if items.iter().enumerate().any(|(n, i)| i.index != Some(n)) {
            return Err(Error::Other(
                "the endpoint's answer has duplicate or missing indexes".into(),
            ));
        }
    } else if items.iter().any(|i| i.index.is_some()) {
        return Err(Error::Other(
            "the endpoint's answer gives an index for some vectors only".into(),
        ));
    }
    for item in &items {
        if item.embedding.len() != dimensions as usize {
            return Err(Error::Other(format!(
                "dimension mismatch: the endpoint returned {} dimensions, the configuration says {dimensions}",
                item.embedding.len()
            )));
        }
    }
    Ok(items.into_iter().map(|i| i.embedding).collect())
}

/// How long to wait before retry `attempt` (0-based): `Retry-After` if the
/// server gave one (capped), else 250 ms doubling.
pub fn backoff(attempt: u32, retry_after: Option<&str>) -> Duration {
    let cap = Duration::from_secs(5);
    match retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(secs) => Duration::from_secs(secs).min(cap),
        None => (Duration::from_millis(250) * 2u32.saturating_pow(attempt)).min(cap),
    }
}

impl OpenAi {
    fn request(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut body = serde_json::json!({ "model": self.model, "input": texts });
        if self.send_dimensions {
            body["dimensions"] = self.dimensions.into();
        }
        let body = serde_json::to_vec(&body).map_err(|e| Error::Other(e.to_string()))?;
        let mut attempt = 0;
        loop {
            let mut req = Request::post(&self.url)
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(key) = &self.api_key {
                req = req.header("authorization", format!("Bearer {key}"));
            }
            let response = req.send()?;
            match response.status {
                200..=299 => return parse(&response.body, texts.len(), self.dimensions),
                429 | 500..=599 if attempt < self.retries => {
                    std::thread::sleep(backoff(attempt, response.header("retry-after")));
                    attempt += 1;
                }
                status => {
                    let excerpt: String = String::from_utf8_lossy(&response.body)
                        .chars()
                        .take(200)
                        .collect();
                    return Err(Error::Other(format!(
                        "{} answered {status} after {} attempt(s): {excerpt}",
                        self.url,
                        attempt + 1
                    )));
                }
            }
        }
    }
}

impl Embedder for OpenAi {
    fn new() -> Result<Self> {
        let base = memhost_sdk::require_config("base_url")?;
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(Error::Config(format!(
                "base_url must start with https:// or http://, not \"{base}\""
            )));
        }
        Ok(OpenAi {
            url: format!("{}/embeddings", base.trim_end_matches('/')),
            model: memhost_sdk::require_config("model")?,
            dimensions: number("dimensions", None, 1..=65_536)?,
            api_key: memhost_sdk::config("api_key").filter(|k| !k.is_empty()),
            max_batch: number("max_batch", Some(64), 1..=2048)?,
            retries: number("retries", Some(3), 0..=10)?,
            send_dimensions: memhost_sdk::config("send_dimensions").is_some_and(|v| v == "true"),
        })
    }

    fn model(&self) -> Result<ModelInfo> {
        Ok(ModelInfo {
            id: self.model.clone(),
            dimensions: self.dimensions,
            max_batch: self.max_batch,
        })
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.request(texts)
    }
}

memhost_sdk::register_embedder!(OpenAi);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_ordered_by_index_and_checked() {
        let body = br#"{"data":[{"embedding":[0.5,0.5],"index":1},{"embedding":[1,0],"index":0}],"model":"m"}"#;
        assert_eq!(
            parse(body, 2, 2).unwrap(),
            vec![vec![1.0, 0.0], vec![0.5, 0.5]]
        );
        let err = parse(body, 2, 3).unwrap_err().to_string();
        assert!(
            err.contains("returned 2 dimensions") && err.contains("says 3"),
            "{err}"
        );
        assert!(
            parse(body, 3, 2)
                .unwrap_err()
                .to_string()
                .contains("2 vectors for 3 texts")
        );
        assert!(
            parse(b"<html>", 1, 2)
                .unwrap_err()
                .to_string()
                .contains("not an embeddings list")
        );
        let twice = br#"{"data":[{"embedding":[1,0],"index":0},{"embedding":[0,1],"index":0}]}"#;
        assert!(
            parse(twice, 2, 2)
                .unwrap_err()
                .to_string()
                .contains("duplicate or missing")
        );
    }

    #[test]
    fn backoff_doubles_and_honours_retry_after() {
        assert_eq!(backoff(0, None), Duration::from_millis(250));
        assert_eq!(backoff(2, None), Duration::from_secs(1));
        assert_eq!(backoff(9, None), Duration::from_secs(5));
        assert_eq!(backoff(0, Some("2")), Duration::from_secs(2));
        assert_eq!(backoff(0, Some("3600")), Duration::from_secs(5));
    }
}
