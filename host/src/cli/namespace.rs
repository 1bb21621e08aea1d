//! `memhost namespace create | list | show | delete`: the operator's view of
//! namespaces, on the same service the API uses. Works while the server
//! runs (LMDB allows several processes).

use std::path::PathBuf;

use clap::Subcommand;

use super::offline_service as service;
use crate::auth::Principal;
use crate::service::{NamespaceSettings, RedactionMode};

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
    /// Delete a namespace and every memory in it; its data key is destroyed
    /// first, so nothing of it can be read afterwards, even from a backup of
    /// the database file taken later.
    Delete {
        /// Its name.
        name: String,
        /// Say yes: this cannot be undone.
        #[arg(long)]
        yes: bool,
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
            let ns = service(data)?.create_namespace(&Principal::operator(), &name, settings)?;
            println!("{}", serde_json::to_string_pretty(&ns)?);
        }
        NamespaceCommand::List { data } => {
            for ns in service(data)?.namespaces(&Principal::operator())? {
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
        NamespaceCommand::Delete { name, yes, data } => {
            if !yes {
                anyhow::bail!(
                    "deleting namespace \"{name}\" destroys every memory in it and cannot be undone: add --yes"
                );
            }
            let n = service(data)?.delete_namespace(&Principal::operator(), &name)?;
            eprintln!("deleted namespace \"{name}\" and its {n} memories");
        }
        NamespaceCommand::Show { name, data } => {
            let ns = service(data)?.namespace(&Principal::operator(), &name)?;
            println!("{}", serde_json::to_string_pretty(&ns)?);
        }
    }
    Ok(0)
}
