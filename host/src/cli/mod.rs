//! The `memhost` command line. Every flag can also come from a `MEMHOST_*`
//! environment variable. Logs go to stderr; stdout carries only what a
//! command is asked to print.

mod plugin;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::HostConfig;
use crate::data_dir::DataDir;

/// memhost: a memory server for AI agents.
#[derive(Debug, Parser)]
#[command(name = "memhost", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the data directory.
    Init {
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// Run the server.
    Serve {
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, env = "MEMHOST_LISTEN")]
        listen: Option<SocketAddr>,
        /// Configuration file (TOML).
        #[arg(long, env = "MEMHOST_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check, list and reload plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7077";

pub(crate) fn load_config(path: Option<&PathBuf>) -> anyhow::Result<HostConfig> {
    match path {
        Some(p) => Ok(HostConfig::load(p)?),
        None => Ok(HostConfig::default()),
    }
}

/// Run the command line; returns the process exit code.
pub fn run() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    crate::logging::init();
    match cli.command {
        Command::Init { data } => {
            let dir = DataDir::new(&data);
            let existed = dir.root().exists();
            dir.create()?;
            eprintln!(
                "{} data directory {}",
                if existed { "checked" } else { "created" },
                dir.root().display()
            );
            Ok(0)
        }
        Command::Serve {
            data,
            listen,
            config,
        } => {
            let config = load_config(config.as_ref())?;
            let listen = match listen {
                Some(l) => l,
                None => config
                    .server
                    .listen
                    .as_deref()
                    .unwrap_or(DEFAULT_LISTEN)
                    .parse()
                    .context("[server] listen is not an address like 127.0.0.1:7077")?,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::server::serve(crate::server::ServeOptions {
                data: DataDir::new(data),
                listen,
                config,
            }))?;
            Ok(0)
        }
        Command::Plugin(cmd) => plugin::run(cmd),
    }
}
