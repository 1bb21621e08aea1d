//! `memhost audit verify | tail`: check the hash chain, show recent entries.
//! Work while the server runs.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Walk the whole chain; exit 1 naming the first broken entry.
    Verify {
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// Show the last entries, oldest first.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
}

pub(crate) fn run(cmd: AuditCommand) -> anyhow::Result<i32> {
    match cmd {
        AuditCommand::Verify { data } => match super::offline_service(data)?.verify_audit() {
            Ok(n) => {
                println!("audit chain intact: {n} entries");
                Ok(0)
            }
            Err(broken) => {
                println!("{broken}");
                Ok(1)
            }
        },
        AuditCommand::Tail { lines, json, data } => {
            for e in super::offline_service(data)?.audit_tail(lines)? {
                if json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    let r = &e.record;
                    println!(
                        "{:>6}  {}  {:<18} {:<12} key={} agent={} ns={} target={}{}{}",
                        e.seq,
                        crate::service::model::iso8601(e.time),
                        r.action,
                        r.outcome,
                        r.key_id.as_deref().unwrap_or("-"),
                        r.agent_id.as_deref().unwrap_or("-"),
                        r.namespace.as_deref().unwrap_or("-"),
                        r.target.as_deref().unwrap_or("-"),
                        r.source
                            .as_deref()
                            .map(|a| format!(" from={a}"))
                            .unwrap_or_default(),
                        r.detail
                            .as_deref()
                            .map(|d| format!("  ({d})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(0)
        }
    }
}
