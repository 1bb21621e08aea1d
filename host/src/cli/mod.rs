//! The `memhost` command line. Every flag can also come from a `MEMHOST_*`
//! environment variable. Logs go to stderr; stdout carries only what a
//! command is asked to print.

mod approvals;
mod audit;
mod backup;
mod keys;
mod namespace;
mod oauth;
mod output;
mod plugin;
mod progress;
mod transfer;
mod users;

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
    /// Create the data directory, its master key and its database.
    ///
    /// The key comes from MEMHOST_MASTER_KEY if set (no file is written);
    /// otherwise a new one is written to <data>/master.key (0600), protected
    /// with MEMHOST_MASTER_PASSPHRASE if set.
    Init {
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
        /// Keep the rows in this PostgreSQL database instead of LMDB files
        /// in the directory (`postgres://user@host1,host2/db?target_session_attrs=read-write`;
        /// the password from `PGPASSWORD` keeps it out of the file). Several
        /// hosts, each with its own data directory and the same master key,
        /// share one database.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
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
        /// Local development only: requests without a key act as the local
        /// operator. Refused unless the address is loopback.
        #[arg(long, env = "MEMHOST_NO_AUTH")]
        no_auth: bool,
    },
    /// Check, list and reload plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Create, list and show namespaces.
    #[command(subcommand)]
    Namespace(namespace::NamespaceCommand),
    /// API keys for agents; master key rotation.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// People who sign in to the web console.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Print a one-time sign-in link to the web console for a user.
    LoginLink(users::LoginLinkArgs),
    /// MCP clients connected with OAuth: connections, clients, revocation.
    #[command(subcommand)]
    Oauth(oauth::OAuthCommand),
    /// Verify and read the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Changes held for approval by a namespace's policy.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Back the store up while it serves: a compacted, signed copy in one
    /// file (optionally age-encrypted). It restores only with this data's
    /// master key.
    Backup(backup::BackupArgs),
    /// Create a data directory from a backup, verified before anything is
    /// put in place.
    Restore(backup::RestoreArgs),
    /// Rewrite the database without its free pages, the server stopped.
    Compact(backup::CompactArgs),
    /// Export memories and namespace settings as age-encrypted, gzipped
    /// JSON Lines (docs/export.md).
    Export(transfer::ExportArgs),
    /// Import a memhost export, or ai-memory's or mem0/OpenMemory's, each
    /// memory through the same funnel as a store.
    Import(transfer::ImportArgs),
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
        Command::Init { data, store } => init(&DataDir::new(&data), store.as_deref()),
        Command::Serve {
            data,
            listen,
            config,
            no_auth,
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
                no_auth,
            }))?;
            Ok(0)
        }
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Users(cmd) => users::run(cmd),
        Command::Oauth(cmd) => oauth::run(cmd),
        Command::LoginLink(args) => users::login_link(args),
        Command::Namespace(cmd) => namespace::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Approvals(cmd) => approvals::run(cmd),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
        Command::Compact(args) => backup::compact(args),
        Command::Export(args) => transfer::export(args),
        Command::Import(args) => transfer::import(args),
    }
}

/// Tell the operator a change was held for approval (exit code 3), or pass
/// any other error on.
pub(crate) fn held_or(e: crate::service::ServiceError) -> anyhow::Result<i32> {
    match e {
        crate::service::ServiceError::Held(item) => {
            println!("{}", serde_json::to_string_pretty(&item)?);
            eprintln!(
                "held for approval {} ({}): nothing was done yet; see `memhost approvals show {}`",
                item.id, item.requirement.summary, item.id
            );
            Ok(3)
        }
        other => Err(other.into()),
    }
}

/// The service over a data directory, for commands that call no plugin
/// (the registry stays empty). Acts alongside a running server.
pub(crate) fn offline_service(data: PathBuf) -> anyhow::Result<crate::service::Service> {
    let (store, keyring) = DataDir::new(data).open_store()?;
    service_over(store, keyring)
}

/// The service over an open store, with no plugins (see
/// [`offline_service`]).
pub(crate) fn service_over(
    store: crate::store::Store,
    keyring: crate::store::keyring::Keyring,
) -> anyhow::Result<crate::service::Service> {
    use crate::plugins::{PluginRegistry, PluginSettings};
    use crate::runtime::{Runtime, RuntimeConfig};
    let runtime = Runtime::new(&RuntimeConfig {
        pooling: false,
        ..RuntimeConfig::default()
    })?;
    let plugins = PluginRegistry::new(runtime, PluginSettings::default())?;
    Ok(crate::service::Service::new(
        store,
        std::sync::Arc::new(keyring),
        std::sync::Arc::new(plugins),
    )?)
}

/// The service over a data directory with the plugins `config` serves
/// loaded (its embedders answer model questions; nothing else runs).
pub(crate) fn service_with_plugins(
    data: PathBuf,
    config: Option<&PathBuf>,
) -> anyhow::Result<crate::service::Service> {
    let config = load_config(config)?;
    let dir = DataDir::new(data);
    let (store, keyring) = dir.open_store()?;
    let plugins = crate::server::plugin_registry(&dir, &config)?;
    if let Err(e) = plugins.reload() {
        anyhow::bail!("plugins failed to load: {}", e.summary);
    }
    Ok(crate::service::Service::new(
        store,
        std::sync::Arc::new(keyring),
        std::sync::Arc::new(plugins),
    )?)
}

fn init(dir: &DataDir, store_url: Option<&str>) -> anyhow::Result<i32> {
    use crate::crypto::MasterKey;
    use crate::data_dir::{ENV_MASTER_KEY, ENV_MASTER_PASSPHRASE};

    if dir.is_initialised() {
        let (_store, keyring) = dir.open_store()?;
        eprintln!(
            "{} is already initialised (master key {}); nothing changed",
            dir.root().display(),
            keyring.fingerprint()
        );
        return Ok(0);
    }
    dir.create()?;
    let from_env = std::env::var_os(ENV_MASTER_KEY).is_some();
    if !from_env && !dir.master_key().exists() {
        let pass = std::env::var(ENV_MASTER_PASSPHRASE).ok();
        MasterKey::generate().write_new(&dir.master_key(), pass.as_deref())?;
    }
    match store_url {
        Some(url) => write_private(&dir.store_url_file(), url.trim())?,
        None => std::fs::create_dir_all(dir.db())?,
    }
    let (store, keyring) = match dir.open_store() {
        Ok(opened) => opened,
        Err(e) => {
            // Leave nothing that says "initialised" behind.
            let _ = std::fs::remove_file(dir.store_url_file());
            return Err(e);
        }
    };
    store.close();
    eprintln!("created {}", dir.root().display());
    if let Some(label) = store.shared_label() {
        eprintln!("store: PostgreSQL {label} (every host serving it needs this same master key)");
    }
    if from_env {
        eprintln!(
            "master key: from {ENV_MASTER_KEY} (fingerprint {}); keep it safe — without it the data cannot be read",
            keyring.fingerprint()
        );
    } else {
        eprintln!(
            "master key: {} (fingerprint {}){}",
            dir.master_key().display(),
            keyring.fingerprint(),
            if std::env::var_os(ENV_MASTER_PASSPHRASE).is_some() {
                ", protected by MEMHOST_MASTER_PASSPHRASE"
            } else {
                ""
            }
        );
        eprintln!("BACK UP THIS FILE: without it the data in this directory cannot be read");
    }
    Ok(0)
}

/// Write `text` to a new file only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
