//! `memhost plugin check | list | reload | new`.

mod scaffold;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::data_dir::DataDir;
use crate::plugins::status::PluginStatus;
use crate::plugins::{Manifest, PluginKind};
use crate::runtime::{Runtime, RuntimeConfig};

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Validate a plugin directory (manifest, kind, api, limits), load and
    /// smoke-call it, and print what it would be granted.
    Check {
        /// The plugin directory (holding plugin.toml).
        dir: PathBuf,
        /// Host configuration whose grants to apply.
        #[arg(long, env = "MEMHOST_CONFIG")]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the plugins the running server has loaded.
    List {
        /// The data directory of the running server.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running server to reload its plugins, and report the outcome.
    Reload {
        /// The data directory of the running server.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
        /// How long to wait for the server, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Create a new plugin project in DIR/NAME that builds as it
    /// stands: code with a unit test, plugin.toml and a README saying how to
    /// build, check and load it.
    New {
        /// The kind of plugin.
        #[arg(long, value_enum)]
        kind: PluginKind,
        /// The language: rust (with memhost-sdk) or python (componentize-py;
        /// not for embedders).
        #[arg(long, value_enum, default_value = "rust")]
        lang: scaffold::Lang,
        /// The directory to create the plugin's directory in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The memhost-sdk directory a Rust plugin depends on (default: the
        /// SDK of the source tree this memhost was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// The plugin id, also its directory name: lowercase letters, digits
        /// and -, starting with a letter.
        name: String,
    },
}

pub(crate) fn run(cmd: PluginCommand) -> anyhow::Result<i32> {
    match cmd {
        PluginCommand::Check { dir, config, json } => check(dir, config, json),
        PluginCommand::List { data, json } => {
            let status = read_status(&DataDir::new(data))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_table(&status);
            }
            Ok(0)
        }
        PluginCommand::Reload { data, timeout } => reload(&DataDir::new(data), timeout),
        PluginCommand::New {
            kind,
            lang,
            dir,
            sdk,
            name,
        } => scaffold::new_plugin(kind, lang, &dir, sdk.as_deref(), &name).map(|_| 0),
    }
}

fn read_status(data: &DataDir) -> anyhow::Result<PluginStatus> {
    PluginStatus::read(&data.plugin_status()).with_context(|| {
        format!(
            "no plugin status in {}: is `memhost serve --data {}` running?",
            data.run().display(),
            data.root().display()
        )
    })
}

fn print_table(status: &PluginStatus) {
    println!(
        "{:<24} {:<9} {:<10} {:>8} {:>7}  outbound",
        "id", "version", "kind", "timeout", "memory"
    );
    for p in &status.plugins {
        println!(
            "{:<24} {:<9} {:<10} {:>6}ms {:>5}MiB  {}",
            p.id,
            p.version,
            p.kind,
            p.timeout_ms,
            p.memory_mb,
            if p.outbound.is_empty() {
                "-".to_string()
            } else {
                p.outbound.join(",")
            }
        );
    }
}

fn check(dir: PathBuf, config: Option<PathBuf>, json: bool) -> anyhow::Result<i32> {
    let config = super::load_config(config.as_ref())?;
    let located = Manifest::load(&dir)?;
    let runtime = Runtime::new(&RuntimeConfig {
        pooling: false,
        ..RuntimeConfig::default()
    })?;
    let registry = crate::plugins::PluginRegistry::new(runtime, config.plugins.clone())?;
    match registry.apply(vec![dir.clone()]) {
        Ok(_) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    }
    let set = registry.snapshot();
    let Some(entry) = set.get(&located.manifest.id) else {
        eprintln!(
            "plugin \"{}\" is disabled by the operator's grant (enabled = false)",
            located.manifest.id
        );
        return Ok(1);
    };
    let info = &entry.info;
    if json {
        println!("{}", serde_json::to_string_pretty(&**info)?);
        return Ok(0);
    }
    let m = &info.manifest;
    let e = &info.effective;
    println!("ok: plugin \"{}\" {} ({})", m.id, m.version, m.name);
    println!("  kind        {}", m.kind);
    println!(
        "  api         memhost:plugin@{}{}",
        info.api,
        info.api_marker
            .as_deref()
            .map(|s| format!(" [{s}]"))
            .unwrap_or_default()
    );
    println!(
        "  wasm        {} (sha256 {})",
        m.wasm.display(),
        info.wasm_sha256
    );
    println!("  timeout     {} ms per call", e.timeout_ms);
    println!("  memory      {} MiB", e.memory_mb);
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    println!("  outbound    {}", list(e.outbound.clone()));
    println!("  config      {}", list(e.config.keys().cloned().collect()));
    println!(
        "  directories {}",
        list(
            e.read_only_dirs
                .iter()
                .map(|(g, h)| format!("{g} <- {} (read-only)", h.display()))
                .collect()
        )
    );
    if let Some(pool) = e.pool {
        println!(
            "  instances   {} warm, each retired after {} calls",
            pool.instances, pool.max_calls_per_instance
        );
    }
    for note in &e.notes {
        println!("  note: {note}");
    }
    Ok(0)
}

fn reload(data: &DataDir, timeout: u64) -> anyhow::Result<i32> {
    let before = read_status(data)?;
    let pid_text = std::fs::read_to_string(data.pid_file()).with_context(|| {
        format!(
            "no pid file in {}: is the server running?",
            data.run().display()
        )
    })?;
    let pid: i32 = pid_text.trim().parse().context("the pid file is corrupt")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("cannot signal memhost (pid {pid}); is it running?"))?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        if let Ok(now) = PluginStatus::read(&data.plugin_status())
            && now.attempt > before.attempt
        {
            let s = &now.last_summary;
            if now.last_ok {
                println!("plugins reloaded: {s}");
                return Ok(0);
            }
            eprintln!("plugin reload failed; the previous plugins are still in use");
            for (id, why) in &s.failed {
                eprintln!("  {id}: {why}");
            }
            return Ok(1);
        }
        if Instant::now() > deadline {
            bail!("memhost (pid {pid}) did not finish reloading within {timeout} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
