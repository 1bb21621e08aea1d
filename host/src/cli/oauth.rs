//! `memhost oauth …`: the MCP clients connected with OAuth, for the
//! operator — see every connection, end one, remove a client and end all
//! of its. Like the key commands, these work beside a running server and
//! take effect at once.

use std::path::PathBuf;

use clap::Subcommand;

use super::offline_service as service;
use crate::auth::Principal;
use crate::auth::oauth::{ClientKind, scope_string};

#[derive(Debug, Subcommand)]
pub(crate) enum OAuthCommand {
    /// List the connections that still work (one per consent): user,
    /// client, what it may reach.
    Connections {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Configuration file (token lifetimes, `[oauth]`).
        #[arg(long, env = "MEMHOST_CONFIG")]
        config: Option<PathBuf>,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// End a connection: its access and refresh tokens stop working at once.
    Revoke {
        /// The connection id (`memhost oauth connections`).
        id: String,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// List the clients known here: registered, from a metadata document,
    /// or configured.
    Clients {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Configuration file (`[[oauth.clients]]`).
        #[arg(long, env = "MEMHOST_CONFIG")]
        config: Option<PathBuf>,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// Forget a registered client and end every connection it has.
    RemoveClient {
        /// The client id.
        client_id: String,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
}

pub(crate) fn run(cmd: OAuthCommand) -> anyhow::Result<i32> {
    let operator = Principal::operator();
    match cmd {
        OAuthCommand::Connections {
            user,
            json,
            config,
            data,
        } => {
            let settings = super::load_config(config.as_ref())?.oauth;
            let list = service(data)?.connections(&operator, user.as_deref(), &settings)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<32}  {:<20}  {:<28}  {:<24}  MAY REACH",
                    "ID", "USER", "CLIENT", "ALLOWED"
                );
                for c in list {
                    println!(
                        "{:<32}  {:<20}  {:<28}  {:<24}  {} ({})",
                        c.id,
                        c.user,
                        c.client_name,
                        crate::service::model::iso8601(c.created_at),
                        crate::auth::describe(&c.grants),
                        scope_string(&c.scopes)
                    );
                }
            }
        }
        OAuthCommand::Revoke { id, data } => {
            let conn = service(data)?.revoke_connection(&operator, &id)?;
            eprintln!(
                "ended connection {id} (\"{}\" as {}): its tokens stop working at once",
                conn.client_name, conn.user
            );
        }
        OAuthCommand::Clients { json, config, data } => {
            let settings = super::load_config(config.as_ref())?.oauth;
            let list = service(data)?.oauth_clients(&operator, &settings)?;
            if json {
                let shown: Vec<serde_json::Value> = list
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "client_id": c.client_id, "name": c.name, "redirect_uris": c.redirect_uris,
                            "kind": c.kind, "auth_method": c.auth_method.as_str(),
                            "created_at": c.created_at, "last_used_at": c.last_used_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                println!(
                    "{:<48}  {:<18}  {:<28}  REDIRECTS",
                    "CLIENT ID", "KIND", "NAME"
                );
                for c in list {
                    let kind = match c.kind {
                        ClientKind::Registered => "registered",
                        ClientKind::MetadataDocument => "metadata document",
                        ClientKind::Configured => "configured",
                    };
                    println!(
                        "{:<48}  {:<18}  {:<28}  {}",
                        c.client_id,
                        kind,
                        c.name,
                        c.redirect_uris.join(" ")
                    );
                }
            }
        }
        OAuthCommand::RemoveClient { client_id, data } => {
            let ended = service(data)?.remove_client(&operator, &client_id)?;
            eprintln!("removed client {client_id}; {ended} connections ended");
        }
    }
    Ok(0)
}
