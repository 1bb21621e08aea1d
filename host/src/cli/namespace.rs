//! `memhost namespace create | list | show`: the operator's view of
//! namespaces, on the same service the API uses. Works while the server
//! runs (LMDB allows several processes).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;

use crate::data_dir::DataDir;
use crate::plugins::{PluginRegistry, PluginSettings};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::service::{NamespaceSettings, RedactionMode, Service};

#[derive(Debug, Subcommand)]
pub(crate) enum NamespaceCommand {
    /// Create a namespace.
    Create {
        /// Its name: lowercase letters, digits, '.', '_', '-'.
        name: String,
        /// store-redacted (default), egress or off.
        #[arg(long, value_parser = parse_mode)]
        redaction: Option<RedactionMode>,
        /// The redactor plugin id (default redact-pii).
        #[arg(long)]
        redactor: Option<String>,
        /// The governance rule: allow, single:<agent-type>, consensus:<n>.
        #[arg(long)]
        policy: Option<String>,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// List namespaces.
    List {
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// Show one namespace as JSON.
    Show {
        /// Its name.
        name: String,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
}

fn parse_mode(s: &str) -> Result<RedactionMode, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("\"{s}\" is not a redaction mode: store-redacted, egress or off"))
}

fn service(data: PathBuf) -> anyhow::Result<Service> {
    let (store, keyring) = DataDir::new(data).open_store()?;
    // Namespace commands call no plugin; the registry stays empty.
    let runtime = Runtime::new(&RuntimeConfig {
        pooling: false,
        ..RuntimeConfig::default()
    })?;
    let plugins = PluginRegistry::new(runtime, PluginSettings::default())?;
    Ok(Service::new(store, Arc::new(keyring), Arc::new(plugins)))
}

pub(crate) fn run(cmd: NamespaceCommand) -> anyhow::Result<i32> {
    match cmd {
        NamespaceCommand::Create {
            name,
            redaction,
            redactor,
            policy,
            data,
        } => {
            let mut settings = NamespaceSettings::default();
            if let Some(r) = redaction {
                settings.redaction = r;
            }
            if let Some(r) = redactor {
                settings.redactor = r;
            }
            if let Some(p) = policy {
                settings.policy = p;
            }
            let ns = service(data)?.create_namespace(&name, settings)?;
            println!("{}", serde_json::to_string_pretty(&ns)?);
        }
        NamespaceCommand::List { data } => {
            for ns in service(data)?.namespaces()? {
                println!(
                    "{:<32} {:<15} {:<14} {}",
                    ns.name,
                    serde_json::to_value(ns.settings.redaction)?
                        .as_str()
                        .unwrap_or(""),
                    ns.settings.redactor,
                    ns.settings.policy
                );
            }
        }
        NamespaceCommand::Show { name, data } => {
            let ns = service(data)?.namespace(&name)?;
            println!("{}", serde_json::to_string_pretty(&ns)?);
        }
    }
    Ok(0)
}
