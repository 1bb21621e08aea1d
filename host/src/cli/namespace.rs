//! `memhost namespace create | list | show | delete | reindex`: the operator's view of
//! namespaces, on the same service the API uses. Works while the server
//! runs (LMDB allows several processes).

use std::path::PathBuf;

use clap::Subcommand;

use super::offline_service as service;
use crate::auth::Principal;
use crate::service::{NamespaceSettings, RedactionMode, ServiceError};

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
        /// The governance rule: allow, deny, single:<agent-type>,
        /// consensus:<n>, or kind=rule pairs (store=allow; forget=single:human).
        #[arg(long)]
        policy: Option<String>,
        /// The policy plugin that reads it (default policy-standard).
        #[arg(long)]
        policy_plugin: Option<String>,
        /// Whose votes count as a human's: any (console users and keys
        /// typed human, default) or console (people signed in only).
        #[arg(long, value_parser = parse_human_votes)]
        human_votes: Option<crate::service::HumanVotes>,
        /// The host configuration (its plugins decide and check the policy).
        #[arg(long, env = "MEMHOST_CONFIG")]
        config: Option<PathBuf>,
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
        /// The host configuration (its plugins decide whether the delete
        /// runs, or waits for approval).
        #[arg(long, env = "MEMHOST_CONFIG")]
        config: Option<PathBuf>,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// Re-embed every memory of a namespace, with another embedder or its
    /// own: its old vectors are dropped at once, the running server embeds
    /// the memories in the background, and this command shows the progress
    /// until it is done (Ctrl-C stops watching, not the work).
    Reindex {
        /// Its name.
        name: String,
        /// Bind the namespace to this embedder plugin ("none": words only);
        /// default: the one it has.
        #[arg(long)]
        embedder: Option<String>,
        /// Do not wait for the embedding to finish.
        #[arg(long)]
        no_wait: bool,
        /// The host configuration (its plugins give the embedder's
        /// dimensions).
        #[arg(long, env = "MEMHOST_CONFIG")]
        config: Option<PathBuf>,
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

fn parse_human_votes(s: &str) -> Result<crate::service::HumanVotes, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("\"{s}\" is not who may vote as a human: any or console"))
}

pub(crate) fn run(cmd: NamespaceCommand) -> anyhow::Result<i32> {
    match cmd {
        NamespaceCommand::Create {
            name,
            redaction,
            redactor,
            policy,
            policy_plugin,
            human_votes,
            config,
            data,
        } => {
            let mut settings = NamespaceSettings {
                human_votes: human_votes.unwrap_or_default(),
                ..NamespaceSettings::default()
            };
            if let Some(r) = redaction {
                settings.redaction = r;
            }
            if let Some(r) = redactor {
                settings.redactor = r;
            }
            if let Some(p) = policy {
                settings.policy = p;
            }
            if let Some(p) = policy_plugin {
                settings.policy_plugin = p;
            }
            let no_config = config.is_none();
            let ns = match super::service_with_plugins(data, config.as_ref())?.create_namespace(
                &Principal::operator(),
                &name,
                settings,
            ) {
                Ok(ns) => ns,
                Err(e @ ServiceError::Invalid { .. })
                    if no_config && e.to_string().starts_with("policy_plugin") =>
                {
                    anyhow::bail!(
                        "{e}: the command line loads the plugins of the server's configuration; pass --config FILE (or MEMHOST_CONFIG)"
                    )
                }
                Err(e) => return Err(e.into()),
            };
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
        NamespaceCommand::Delete {
            name,
            yes,
            config,
            data,
        } => {
            if !yes {
                anyhow::bail!(
                    "deleting namespace \"{name}\" destroys every memory in it and cannot be undone: add --yes"
                );
            }
            let n = match super::service_with_plugins(data, config.as_ref())?
                .delete_namespace(&Principal::operator(), &name)
            {
                Ok(n) => n,
                Err(e) => return super::held_or(e),
            };
            eprintln!("deleted namespace \"{name}\" and its {n} memories");
        }
        NamespaceCommand::Reindex {
            name,
            embedder,
            no_wait,
            config,
            data,
        } => return reindex(&name, embedder.as_deref(), no_wait, config, data),
        NamespaceCommand::Show { name, data } => {
            let ns = service(data)?.namespace(&Principal::operator(), &name)?;
            println!("{}", serde_json::to_string_pretty(&ns)?);
        }
    }
    Ok(0)
}

fn reindex(
    name: &str,
    embedder: Option<&str>,
    no_wait: bool,
    config: Option<PathBuf>,
    data: PathBuf,
) -> anyhow::Result<i32> {
    let running = super::keys::server_running(&crate::data_dir::DataDir::new(data.clone()));
    let service = super::service_with_plugins(data, config.as_ref())?;
    let operator = Principal::operator();
    let started = match service.reindex_namespace(&operator, name, embedder) {
        Ok(started) => started,
        Err(e) => return super::held_or(e),
    };
    eprintln!(
        "namespace \"{name}\": embedder {}, {} memories queued (index generation {})",
        started.embedder.as_deref().unwrap_or("none (words only)"),
        started.queued,
        started.index_generation
    );
    if started.queued == 0 || no_wait {
        return Ok(0);
    }
    if running.is_none() {
        eprintln!("memhost is not running here: `memhost serve` embeds them in the background");
        return Ok(0);
    }
    let progress = super::progress::Progress::start(
        &format!("namespace \"{name}\": embedding"),
        super::progress::Unit::Items,
    );
    let total = started.queued as u64;
    loop {
        let now = service.index_progress(&operator, name)?;
        progress.set(total.saturating_sub(now.queued as u64), total);
        if now.queued == 0 {
            progress.finish(&format!(
                "{} of {} embedded{}",
                started.queued,
                started.queued,
                if now.failed > 0 {
                    format!(", {} failed", now.failed)
                } else {
                    String::new()
                }
            ));
            return Ok(if now.failed > 0 { 1 } else { 0 });
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
