//! Shared helpers: where the built plugins are, how to lay out a plugin
//! directory, and a log capture for asserting what the host logged.
#![allow(dead_code)]

pub mod people;
pub mod server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use memhost::plugins::{PluginRegistry, PluginSettings};
use memhost::runtime::{Runtime, RuntimeConfig};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// What a Python driver (an MCP client, a browser) printed, one JSON
/// object per step, by its `step`; fails with its stderr if it failed.
pub fn steps(
    out: &std::process::Output,
    what: &str,
) -> std::collections::HashMap<String, serde_json::Value> {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Plugins staged by `cargo xtask plugins` (served by default, or optional).
pub fn staged(name: &str) -> PathBuf {
    let optional = root().join("target/plugins-optional").join(name);
    if optional.join("plugin.toml").is_file() {
        return optional;
    }
    let dir = root().join("target/plugins").join(name);
    assert!(
        dir.join("plugin.toml").is_file(),
        "{} is missing: run `cargo xtask plugins` first (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

/// The model files `cargo xtask plugins` fetched into `target/models/NAME`.
fn fetched_model(name: &str) -> PathBuf {
    let dir = root().join("target/models").join(name);
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run `cargo xtask plugins` first (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

/// The all-MiniLM-L6-v2 files `cargo xtask plugins` fetched for embed-local.
pub fn minilm_dir() -> PathBuf {
    fetched_model("all-minilm-l6-v2")
}

/// The potion-base-8M files `cargo xtask plugins` fetched for embed-static
/// (with model2vec's own vectors of 16 sentences, `reference-*`).
pub fn potion_dir() -> PathBuf {
    fetched_model("potion-base-8m")
}

/// Paraphrases must be closer under `e` than an unrelated sentence, by
/// `margin` in cosine.
pub fn assert_meaning_decides_what_is_close(e: &memhost::plugins::Embedder, margin: f32) {
    let v = e
        .embed(&[
            "How do I bake bread at home?".into(),
            "A recipe for making a sourdough loaf in your kitchen".into(),
            "The stock market fell sharply on Tuesday".into(),
        ])
        .unwrap();
    let near = cosine(&v[0], &v[1]);
    let far = cosine(&v[0], &v[2]);
    assert!(near > far + margin, "paraphrase {near}, unrelated {far}");
}

/// Plugin settings granting the embedder `id` its model directory (none:
/// no grant).
pub fn model_grant(id: &str, model: Option<PathBuf>) -> memhost::plugins::PluginSettings {
    let mut settings = memhost::plugins::PluginSettings::default();
    settings.grants.insert(
        id.into(),
        memhost::plugins::Grant {
            read_only_dirs: model
                .map(|m| std::collections::BTreeMap::from([("/model".to_string(), m)]))
                .unwrap_or_default(),
            ..memhost::plugins::Grant::default()
        },
    );
    settings
}

/// The cosine of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// The `memhost.toml` grants the shipped embedders need: their models,
/// read-only (embed-local: all-MiniLM-L6-v2, embed-static: potion-base-8M).
pub fn embedder_grants() -> String {
    format!(
        "[plugins.grants.embed-local]\nread_only_dirs = {{ \"/model\" = \"{}\" }}\n\n\
         [plugins.grants.embed-static]\nread_only_dirs = {{ \"/model\" = \"{}\" }}\n",
        minilm_dir().display(),
        potion_dir().display()
    )
}

/// A built adversarial fixture, e.g. `fixture("loop")`.
pub fn fixture(name: &str) -> PathBuf {
    let path = root()
        .join("target/fixtures")
        .join(format!("fixture_{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask plugins` first (or `cargo xtask test`)",
        path.display()
    );
    path
}

/// The wasm file of a staged plugin.
pub fn staged_wasm(name: &str, file: &str) -> PathBuf {
    staged(name).join(file)
}

/// Write `<parent>/<id>/plugin.toml` for `wasm` (copied in) and return the
/// plugin directory. `extra` is appended to the manifest (limits,
/// capabilities).
pub fn plugin_dir(parent: &Path, id: &str, kind: &str, wasm: &Path, extra: &str) -> PathBuf {
    plugin_dir_with_api(parent, id, kind, "0.2.0", wasm, extra)
}

/// Like [`plugin_dir`] with an explicit `api`.
pub fn plugin_dir_with_api(
    parent: &Path,
    id: &str,
    kind: &str,
    api: &str,
    wasm: &Path,
    extra: &str,
) -> PathBuf {
    let dir = parent.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(wasm, dir.join("plugin.wasm")).unwrap();
    std::fs::write(
        dir.join("plugin.toml"),
        format!(
            "id = \"{id}\"\nname = \"{id}\"\nversion = \"0.1.0\"\nkind = \"{kind}\"\napi = \"{api}\"\nwasm = \"plugin.wasm\"\n{extra}\n"
        ),
    )
    .unwrap();
    dir
}

/// A registry with the given settings and an optional precompile cache.
pub fn registry(settings: PluginSettings, cache: Option<&Path>) -> PluginRegistry {
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: cache.map(Path::to_path_buf),
        ..RuntimeConfig::default()
    })
    .unwrap();
    PluginRegistry::new(runtime, settings).unwrap()
}

/// Everything logged (through `tracing`) by this test process.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Capture logs for the whole test process (installed once).
pub fn capture_logs() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug,cranelift=warn,wasmtime=warn")
            .with_ansi(false)
            .with_target(true)
            .with_writer(move || writer.clone())
            .init();
        logs
    })
    .clone()
}

/// A new age X25519 recipient (`age1…`), from `age-keygen` (Debian's
/// `age` package), whose identity is thrown away.
pub fn age_recipient() -> String {
    let made = std::process::Command::new("age-keygen")
        .output()
        .expect("age-keygen (Debian package age) must be installed");
    String::from_utf8_lossy(&made.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .expect("age-keygen prints the public key")
}

/// A new age identity file `dir/export-key.txt` (by `age-keygen`) and its
/// recipient.
pub fn age_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("export-key.txt");
    let made = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen (Debian package age) must be installed");
    assert!(made.status.success());
    let recipient = String::from_utf8_lossy(&made.stderr)
        .split_whitespace()
        .last()
        .expect("age-keygen names the public key")
        .to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (key, recipient)
}

/// `age -d -i key -o plain file`: the stock tool opens it.
pub fn age_decrypt(key: &Path, file: &Path, plain: &Path) {
    let out = std::process::Command::new("age")
        .args(["-d", "-i"])
        .arg(key)
        .arg("-o")
        .arg(plain)
        .arg(file)
        .output()
        .expect("age (Debian package age) must be installed");
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unix ms now.
pub fn now_ms() -> i64 {
    memhost::clock::now_ms()
}
