//! `memhost approvals list | show ID`: the operator's view of changes held
//! for approval. Works beside a running server (LMDB allows several
//! processes); votes are cast by agents and people through the API.

use std::path::PathBuf;

use clap::Subcommand;
use uuid::Uuid;

use super::offline_service as service;
use crate::auth::Principal;
use crate::governance::State;
use crate::service::approvals::ApprovalQuery;

#[derive(Debug, Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// List approvals, oldest first.
    List {
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only this state: pending, executed, failed, rejected, expired,
        /// cancelled, superseded.
        #[arg(long, value_parser = parse_state)]
        state: Option<State>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// Show one approval as JSON.
    Show {
        /// Its id.
        id: Uuid,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
}

fn parse_state(s: &str) -> Result<State, String> {
    State::parse(s).ok_or_else(|| {
        format!(
            "\"{s}\" is not a state: pending, executed, failed, rejected, expired, cancelled or superseded"
        )
    })
}

pub(crate) fn run(cmd: ApprovalsCommand) -> anyhow::Result<i32> {
    let operator = Principal::operator();
    match cmd {
        ApprovalsCommand::List {
            namespace,
            state,
            json,
            data,
        } => {
            let service = service(data)?;
            let mut q = ApprovalQuery {
                namespace,
                state,
                limit: Some(200),
                ..ApprovalQuery::default()
            };
            loop {
                let page = service.approvals(&operator, &q)?;
                for v in &page.approvals {
                    let i = &v.item;
                    if json {
                        println!("{}", serde_json::to_string(i)?);
                    } else {
                        println!(
                            "{}  {:<10} {:<16} {:<20} by {:<20} {}  expires {}{}",
                            i.id,
                            i.state.as_str(),
                            i.kind.as_str(),
                            i.namespace,
                            i.requester.agent_id,
                            i.requirement.summary,
                            crate::service::model::iso8601(i.expires_at),
                            i.reason
                                .as_deref()
                                .map(|r| format!("  ({r})"))
                                .unwrap_or_default()
                        );
                    }
                }
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
        }
        ApprovalsCommand::Show { id, data } => {
            let view = service(data)?.approval(&operator, &id)?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
    }
    Ok(0)
}
