//! `memhost plugin new`: a new plugin project that builds as it stands.
//!
//! | `--lang`         | kinds                       | written into `<dir>/<name>/`                                   |
//! |------------------|-----------------------------|----------------------------------------------------------------|
//! | `rust` (default) | all four                    | `Cargo.toml` (its own workspace, memhost-sdk by path), `plugin.toml`, `src/lib.rs` with unit tests, `README.md` |
//! | `python`         | policy, redactor, extractor | `app.py`, `test_app.py`, `plugin.toml`, `wit/` (the contract files its world needs), `README.md` |
//!
//! Python embedders are refused: the embedder world imports `wasi:http`,
//! whose WIT the scaffold does not carry.
//!
//! The templates are files under `cli/templates/`, compiled into the binary
//! and filled by plain `{{key}}` replacement. This module creates one
//! directory that did not exist and writes only inside it; on failure it
//! removes that directory again and nothing else.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::builder::PossibleValue;

use crate::plugins::PluginKind;
use crate::plugins::component::HOST_API;
use crate::plugins::manifest::valid_id;

/// The language a new plugin is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    /// Rust, with memhost-sdk.
    Rust,
    /// Python, compiled with componentize-py against the WIT contract.
    Python,
}

// `--kind` takes the names `plugin.toml` uses.
impl clap::ValueEnum for PluginKind {
    fn value_variants<'a>() -> &'a [Self] {
        &PluginKind::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()))
    }
}

/// The templates and the contract, compiled in: the binary scaffolds
/// without its source tree.
mod templates {
    pub(super) const PLUGIN_TOML: &str = include_str!("../templates/plugin.toml.tmpl");
    pub(super) const NOTES_POLICY: &str = include_str!("../templates/notes/policy.md.tmpl");
    pub(super) const NOTES_REDACTOR: &str = include_str!("../templates/notes/redactor.md.tmpl");
    pub(super) const NOTES_EMBEDDER: &str = include_str!("../templates/notes/embedder.md.tmpl");

    pub(super) const RUST_CARGO_TOML: &str = include_str!("../templates/rust/Cargo.toml.tmpl");
    pub(super) const RUST_README: &str = include_str!("../templates/rust/README.md.tmpl");
    pub(super) const RUST_POLICY: &str = include_str!("../templates/rust/policy.rs.tmpl");
    pub(super) const RUST_REDACTOR: &str = include_str!("../templates/rust/redactor.rs.tmpl");
    pub(super) const RUST_EXTRACTOR: &str = include_str!("../templates/rust/extractor.rs.tmpl");
    pub(super) const RUST_EMBEDDER: &str = include_str!("../templates/rust/embedder.rs.tmpl");

    pub(super) const PY_README: &str = include_str!("../templates/python/README.md.tmpl");
    pub(super) const PY_WORLDS: &str = include_str!("../templates/python/worlds.wit.tmpl");
    pub(super) const PY_TEST_SETUP: &str = include_str!("../templates/python/test_setup.py.tmpl");
    pub(super) const PY_POLICY: &str = include_str!("../templates/python/policy.py.tmpl");
    pub(super) const PY_TEST_POLICY: &str = include_str!("../templates/python/test_policy.py.tmpl");
    pub(super) const PY_REDACTOR: &str = include_str!("../templates/python/redactor.py.tmpl");
    pub(super) const PY_TEST_REDACTOR: &str =
        include_str!("../templates/python/test_redactor.py.tmpl");
    pub(super) const PY_EXTRACTOR: &str = include_str!("../templates/python/extractor.py.tmpl");
    pub(super) const PY_TEST_EXTRACTOR: &str =
        include_str!("../templates/python/test_extractor.py.tmpl");

    // The contract files a Python plugin's world needs, copied verbatim.
    pub(super) const WIT_TYPES: &str =
        include_str!("../../../../wit/deps/memhost-plugin-0.1.0/types.wit");
    pub(super) const WIT_HOST: &str =
        include_str!("../../../../wit/deps/memhost-plugin-0.1.0/host.wit");
    pub(super) const WIT_POLICY: &str =
        include_str!("../../../../wit/deps/memhost-plugin-0.1.0/policy.wit");
    pub(super) const WIT_REDACTOR: &str =
        include_str!("../../../../wit/deps/memhost-plugin-0.1.0/redactor.wit");
    pub(super) const WIT_EXTRACTOR: &str =
        include_str!("../../../../wit/deps/memhost-plugin-0.1.0/extractor.wit");
}

/// Where the SDK was in the source tree this binary was built from.
const BUILT_SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// Ids Cargo or rustc would reject as a crate name (keywords, the standard
/// library's crates) or that would depend on themselves. The scaffold would
/// not build, so they are refused up front.
const RESERVED_CRATE_NAMES: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "memhost-sdk",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// One file of a new plugin: its path inside the plugin directory (with
/// `/`) and its text.
type NewFile = (String, String);

/// Create `<parent>/<name>/` holding a new `kind` plugin written in `lang`,
/// and print on stderr what was made and what to run next. Returns the new
/// directory.
pub(crate) fn new_plugin(
    kind: PluginKind,
    lang: Lang,
    parent: &Path,
    sdk: Option<&Path>,
    name: &str,
) -> anyhow::Result<PathBuf> {
    if !valid_id(name) {
        bail!(
            "\"{name}\" is not a plugin id: use 1-64 lowercase letters, digits or -, starting with a letter (e.g. my-policy)"
        );
    }
    let files = match lang {
        Lang::Rust => {
            if RESERVED_CRATE_NAMES.contains(&name) {
                bail!(
                    "\"{name}\" cannot be a Rust crate name (a keyword or a standard crate); choose another id"
                );
            }
            rust_files(kind, name, &sdk_dir(sdk)?)?
        }
        Lang::Python => python_files(kind, name)?,
    };
    let dest = parent.join(name);
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    // create_dir, not create_dir_all: it fails if the directory exists, so
    // an existing plugin is never written over, even in a race.
    match std::fs::create_dir(&dest) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => bail!(
            "{} already exists; choose another name or --dir (nothing was written)",
            dest.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dest.display())),
    }
    if let Err(e) = write_files(&dest, &files) {
        // The directory is ours, made a moment ago: leave nothing
        // half-written behind.
        let _ = std::fs::remove_dir_all(&dest);
        return Err(e);
    }
    let language = match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
    };
    eprintln!(
        "created {kind} plugin \"{name}\" ({language}) in {}:",
        dest.display()
    );
    for (path, _) in &files {
        eprintln!("  {path}");
    }
    eprintln!("next:\n  cd {}", dest.display());
    for step in next_steps(kind, lang, name) {
        eprintln!("  {step}");
    }
    Ok(dest)
}

fn write_files(dest: &Path, files: &[NewFile]) -> anyhow::Result<()> {
    for (path, text) in files {
        let path = dest.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The commands that build, test and check the new plugin, run from its
/// directory.
fn next_steps(kind: PluginKind, lang: Lang, name: &str) -> Vec<String> {
    let wasm = wasm_file(name);
    let mut steps = match lang {
        Lang::Rust => vec![
            "cargo test".to_string(),
            "cargo build --release --target wasm32-wasip2".to_string(),
            format!("cp target/wasm32-wasip2/release/{wasm} ."),
        ],
        Lang::Python => vec![
            "python3 -m unittest".to_string(),
            format!(
                "componentize-py -d wit -w memhost:plugin/{kind}-plugin componentize app -o {wasm}"
            ),
        ],
    };
    steps.push("memhost plugin check .".to_string());
    steps
}

/// The memhost-sdk directory a Rust plugin depends on: `--sdk`, else the SDK
/// of the source tree this binary was built from, if it is still there.
/// Absolute, because Cargo.toml resolves a relative path from the plugin's
/// directory, not from where the command ran.
fn sdk_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let candidate = given.unwrap_or(Path::new(BUILT_SDK_DIR));
    if let Ok(dir) = std::fs::canonicalize(candidate)
        && is_sdk(&dir)
    {
        return Ok(dir);
    }
    match given {
        Some(p) => bail!(
            "{} is not the memhost-sdk directory (no Cargo.toml of memhost-sdk there); pass --sdk <memhost checkout>/sdk",
            p.display()
        ),
        None => bail!(
            "memhost-sdk is no longer at {BUILT_SDK_DIR}, where the source tree this memhost was built from had it; pass --sdk <memhost checkout>/sdk"
        ),
    }
}

fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .is_ok_and(|text| text.contains("name = \"memhost-sdk\""))
}

/// The wasm file the build produces: Cargo names it after the crate, with
/// `_` for `-`.
fn wasm_file(name: &str) -> String {
    format!("{}.wasm", name.replace('-', "_"))
}

/// What every template may use. `kind_notes` and `test_setup` come first:
/// they hold placeholders of their own, filled by the entries after them.
fn values(kind: PluginKind, lang: Lang, name: &str) -> Vec<(&'static str, String)> {
    let notes = match kind {
        PluginKind::Policy => templates::NOTES_POLICY,
        PluginKind::Redactor => templates::NOTES_REDACTOR,
        PluginKind::Embedder => templates::NOTES_EMBEDDER,
        PluginKind::Extractor => "",
    };
    let (timeout_ms, memory_mb, limits_note) = match (lang, kind) {
        (Lang::Rust, PluginKind::Embedder) => (5000, 64, ""),
        (Lang::Rust, _) => (100, 16, ""),
        (Lang::Python, _) => (
            1000,
            128,
            "# A componentize-py component carries the Python interpreter: it needs more\n\
             # memory than a Rust plugin and is slower to start a fresh instance.\n",
        ),
    };
    vec![
        ("kind_notes", notes.to_string()),
        ("test_setup", templates::PY_TEST_SETUP.to_string()),
        ("limits_note", limits_note.to_string()),
        ("name", name.to_string()),
        ("kind", kind.as_str().to_string()),
        // A Python plugin's world is copied from the 0.1 contract.
        (
            "api",
            match lang {
                Lang::Rust => HOST_API.to_string(),
                Lang::Python => "0.1.0".to_string(),
            },
        ),
        ("wasm", wasm_file(name)),
        ("timeout_ms", timeout_ms.to_string()),
        ("memory_mb", memory_mb.to_string()),
    ]
}

/// `template` with every `{{key}}` of `values` replaced, in order.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

fn rust_files(kind: PluginKind, name: &str, sdk: &Path) -> anyhow::Result<Vec<NewFile>> {
    let sdk = sdk.to_str().with_context(|| {
        format!(
            "the SDK path {} is not UTF-8, which Cargo.toml cannot hold; pass --sdk with a UTF-8 path",
            sdk.display()
        )
    })?;
    let lib = match kind {
        PluginKind::Policy => templates::RUST_POLICY,
        PluginKind::Redactor => templates::RUST_REDACTOR,
        PluginKind::Extractor => templates::RUST_EXTRACTOR,
        PluginKind::Embedder => templates::RUST_EMBEDDER,
    };
    let mut v = values(kind, Lang::Rust, name);
    // A TOML string, quoted and escaped by the TOML writer.
    v.push(("sdk", toml::Value::String(sdk.to_string()).to_string()));
    Ok(vec![
        ("Cargo.toml".into(), fill(templates::RUST_CARGO_TOML, &v)),
        ("plugin.toml".into(), fill(templates::PLUGIN_TOML, &v)),
        ("src/lib.rs".into(), fill(lib, &v)),
        ("README.md".into(), fill(templates::RUST_README, &v)),
    ])
}

fn python_files(kind: PluginKind, name: &str) -> anyhow::Result<Vec<NewFile>> {
    let (app, test, interface) = match kind {
        PluginKind::Policy => (
            templates::PY_POLICY,
            templates::PY_TEST_POLICY,
            templates::WIT_POLICY,
        ),
        PluginKind::Redactor => (
            templates::PY_REDACTOR,
            templates::PY_TEST_REDACTOR,
            templates::WIT_REDACTOR,
        ),
        PluginKind::Extractor => (
            templates::PY_EXTRACTOR,
            templates::PY_TEST_EXTRACTOR,
            templates::WIT_EXTRACTOR,
        ),
        PluginKind::Embedder => bail!(
            "Python embedders are not scaffolded: the embedder world imports wasi:http, whose WIT this scaffold does not carry; use --lang rust, or build against memhost's wit/ directory with its deps/"
        ),
    };
    let v = values(kind, Lang::Python, name);
    Ok(vec![
        ("app.py".into(), fill(app, &v)),
        ("test_app.py".into(), fill(test, &v)),
        ("plugin.toml".into(), fill(templates::PLUGIN_TOML, &v)),
        ("README.md".into(), fill(templates::PY_README, &v)),
        ("wit/types.wit".into(), templates::WIT_TYPES.to_string()),
        ("wit/host.wit".into(), templates::WIT_HOST.to_string()),
        (format!("wit/{kind}.wit"), interface.to_string()),
        ("wit/worlds.wit".into(), fill(templates::PY_WORLDS, &v)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::Manifest;

    const SCAFFOLDED: [(Lang, PluginKind); 7] = [
        (Lang::Rust, PluginKind::Policy),
        (Lang::Rust, PluginKind::Redactor),
        (Lang::Rust, PluginKind::Extractor),
        (Lang::Rust, PluginKind::Embedder),
        (Lang::Python, PluginKind::Policy),
        (Lang::Python, PluginKind::Redactor),
        (Lang::Python, PluginKind::Extractor),
    ];

    fn files(lang: Lang, kind: PluginKind, name: &str) -> Vec<NewFile> {
        match lang {
            Lang::Rust => rust_files(kind, name, Path::new("/src/memhost/sdk")).unwrap(),
            Lang::Python => python_files(kind, name).unwrap(),
        }
    }

    fn text<'a>(files: &'a [NewFile], path: &str) -> &'a str {
        files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.as_str())
            .unwrap_or_else(|| panic!("no {path} among {files:?}"))
    }

    #[test]
    fn every_template_is_filled_and_the_manifest_loads() {
        for (lang, kind) in SCAFFOLDED {
            let files = files(lang, kind, "my-plugin-2");
            for (path, text) in &files {
                assert!(
                    !text.contains("{{"),
                    "{lang:?} {kind}: {path} keeps a placeholder"
                );
            }
            let m = Manifest::parse(text(&files, "plugin.toml")).unwrap();
            assert_eq!(m.id, "my-plugin-2");
            assert_eq!(m.kind, kind);
            let api = match lang {
                Lang::Rust => HOST_API.to_string(),
                Lang::Python => "0.1.0".to_string(),
            };
            assert_eq!(m.api, api);
            assert_eq!(m.wasm, Path::new("my_plugin_2.wasm"));
            let limits = (m.limits.timeout_ms, m.limits.memory_mb);
            let expected = match (lang, kind) {
                (Lang::Python, _) => (1000, 128),
                (Lang::Rust, PluginKind::Embedder) => (5000, 64),
                (Lang::Rust, _) => (100, 16),
            };
            assert_eq!(limits, (Some(expected.0), Some(expected.1)));
            assert_eq!(m.capabilities, Default::default());
        }
    }

    #[test]
    fn the_rust_crate_depends_on_the_sdk_and_builds_on_its_own() {
        let files = files(Lang::Rust, PluginKind::Policy, "my-policy");
        let cargo: toml::Table = toml::from_str(text(&files, "Cargo.toml")).unwrap();
        assert_eq!(cargo["package"]["name"].as_str(), Some("my-policy"));
        assert_eq!(cargo["package"]["edition"].as_str(), Some("2024"));
        assert_eq!(
            cargo["dependencies"]["memhost-sdk"]["path"].as_str(),
            Some("/src/memhost/sdk")
        );
        assert!(cargo["workspace"].as_table().is_some_and(|t| t.is_empty()));
        let lib = text(&files, "src/lib.rs");
        assert!(lib.contains("memhost_sdk::register_policy!(Rules);"));
        assert!(lib.contains("#[cfg(test)]"));
        assert!(text(&files, "README.md").contains("\"policy_plugin\": \"my-policy\""));
    }

    #[test]
    fn an_awkward_sdk_path_is_quoted_for_toml() {
        let files = rust_files(
            PluginKind::Redactor,
            "r",
            Path::new(r#"/home/a "quoted" \dir/sdk"#),
        )
        .unwrap();
        let cargo: toml::Table = toml::from_str(text(&files, "Cargo.toml")).unwrap();
        assert_eq!(
            cargo["dependencies"]["memhost-sdk"]["path"].as_str(),
            Some(r#"/home/a "quoted" \dir/sdk"#)
        );
    }

    #[test]
    fn the_python_world_is_the_real_one_for_its_kind() {
        let real = include_str!("../../../../wit/deps/memhost-plugin-0.1.0/worlds.wit");
        for kind in [
            PluginKind::Policy,
            PluginKind::Redactor,
            PluginKind::Extractor,
        ] {
            let files = files(Lang::Python, kind, "p");
            let world = format!("world {kind}-plugin {{\n    import host;\n    export {kind};\n}}");
            assert!(
                real.contains(&world),
                "wit/worlds.wit changed its {kind} world"
            );
            assert!(text(&files, "wit/worlds.wit").contains(&world));
            assert!(!text(&files, "wit/worlds.wit").contains("wasi:"));
            let interface = text(&files, &format!("wit/{kind}.wit"));
            assert!(interface.contains(&format!("interface {kind}")));
        }
    }

    #[test]
    fn python_embedders_are_refused_with_the_reason() {
        let e = python_files(PluginKind::Embedder, "e")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wasi:http"), "{e}");
    }

    #[test]
    fn bad_names_and_existing_directories_are_refused() {
        let parent = tempfile::tempdir().unwrap();
        let sdk = Some(Path::new(BUILT_SDK_DIR));
        let too_long = "a".repeat(65);
        for bad in ["", "My-Plugin", "9lives", "-x", "a_b", too_long.as_str()] {
            let e = new_plugin(PluginKind::Policy, Lang::Python, parent.path(), sdk, bad);
            assert!(
                e.unwrap_err().to_string().contains("not a plugin id"),
                "{bad}"
            );
        }
        let e = new_plugin(PluginKind::Policy, Lang::Rust, parent.path(), sdk, "std");
        assert!(e.unwrap_err().to_string().contains("crate name"));

        std::fs::create_dir(parent.path().join("taken")).unwrap();
        std::fs::write(parent.path().join("taken/keep.txt"), "mine").unwrap();
        let e = new_plugin(
            PluginKind::Policy,
            Lang::Python,
            parent.path(),
            sdk,
            "taken",
        );
        assert!(e.unwrap_err().to_string().contains("already exists"));
        assert_eq!(
            std::fs::read_to_string(parent.path().join("taken/keep.txt")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn a_scaffold_is_written_where_asked() {
        let parent = tempfile::tempdir().unwrap();
        let dir = new_plugin(
            PluginKind::Extractor,
            Lang::Python,
            &parent.path().join("nested"),
            None,
            "tags",
        )
        .unwrap();
        assert_eq!(dir, parent.path().join("nested/tags"));
        for f in [
            "app.py",
            "test_app.py",
            "plugin.toml",
            "README.md",
            "wit/worlds.wit",
        ] {
            assert!(dir.join(f).is_file(), "{f}");
        }
        Manifest::load(&dir).unwrap();
    }

    #[test]
    fn the_sdk_comes_from_the_flag_or_the_source_tree() {
        let here = sdk_dir(None).unwrap();
        assert!(here.is_absolute() && is_sdk(&here));
        let elsewhere = tempfile::tempdir().unwrap();
        let e = sdk_dir(Some(elsewhere.path())).unwrap_err().to_string();
        assert!(e.contains("--sdk"), "{e}");
    }
}
