//! `memhost keys …`: API keys for agents, and master-key rotation.
//!
//! Key commands work while the server runs on the same data directory
//! (LMDB allows several processes) and take effect at once: the server
//! reads keys from the store on every request.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::auth::keys::Rate;
use crate::auth::{Grant, Principal};
use crate::crypto::MasterKey;
use crate::data_dir::{DataDir, ENV_MASTER_KEY, ENV_MASTER_PASSPHRASE};
use crate::service::NewKey;
use crate::store::keyring::{SYSTEM_KEY, rotate_master};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create an API key; prints the key alone on stdout (shown only once).
    Create {
        /// The agent the key identifies (stamped on what it writes).
        #[arg(long)]
        agent: String,
        /// The agent's type, e.g. assistant, human, reviewer.
        #[arg(long)]
        agent_type: String,
        /// PATTERN=ROLE, repeatable: team-a=writer, team-*=reader, *=admin.
        #[arg(long = "role", required = true, value_parser = parse_grant)]
        roles: Vec<Grant>,
        /// When the key stops working: a duration (30d, 12h, 90m) or a UTC
        /// time (2027-01-31 or 2027-01-31T12:00:00Z).
        #[arg(long, value_parser = parse_when)]
        expires: Option<i64>,
        /// Own rate limit (requests per second) instead of the configured one.
        #[arg(long)]
        rate_per_second: Option<f64>,
        /// Burst for --rate-per-second (default: twice the rate, at least 1).
        #[arg(long, requires = "rate_per_second")]
        burst: Option<u32>,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// List API keys (never their secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// Revoke an API key by its id; it stops working at once.
    Revoke {
        /// The key id (the 16 hex digits after mhk_).
        id: String,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// Re-wrap every data key to a new master key. Rows are not touched; the
    /// old master key stops opening this data. Stop the server first.
    RotateMaster {
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
}

fn parse_grant(s: &str) -> Result<Grant, String> {
    s.parse()
}

/// A duration from now (`30d`, `12h`, `90m`, `45s`, `2w`) or a UTC time
/// (`2027-01-31`, `2027-01-31T12:00:00Z`), as Unix ms.
fn parse_when(s: &str) -> Result<i64, String> {
    let bad = || {
        format!("\"{s}\" is not a duration (30d, 12h, 90m) or a UTC time (2027-01-31T12:00:00Z)")
    };
    let now = crate::clock::now_ms();
    if let Some(unit) = s.chars().last().filter(char::is_ascii_alphabetic)
        && let Ok(n) = s[..s.len() - 1].parse::<i64>()
    {
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        if n <= 0 {
            return Err(format!("\"{s}\": the duration must be positive"));
        }
        return Ok(now.saturating_add(n.saturating_mul(secs * 1000)));
    }
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00Z"));
    let time = time.strip_suffix('Z').ok_or_else(bad)?;
    let num = |p: Option<&str>| p.and_then(|x| x.parse::<i64>().ok()).ok_or_else(bad);
    let mut d = date.splitn(3, '-');
    let (y, mo, da) = (num(d.next())?, num(d.next())?, num(d.next())?);
    let mut t = time.splitn(3, ':');
    let (h, mi, se) = (num(t.next())?, num(t.next())?, num(t.next())?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let ms = (crate::service::model::days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se)
        * 1000;
    if ms <= now {
        return Err(format!("\"{s}\" is in the past"));
    }
    Ok(ms)
}

pub(crate) fn run(cmd: KeysCommand) -> anyhow::Result<i32> {
    match cmd {
        KeysCommand::Create {
            agent,
            agent_type,
            roles,
            expires,
            rate_per_second,
            burst,
            data,
        } => {
            let service = super::offline_service(data)?;
            let rate = rate_per_second.map(|r| Rate {
                per_second: r,
                burst: burst.unwrap_or_else(|| ((r * 2.0).ceil() as u32).max(1)),
            });
            let (token, info) = service.create_key(
                &Principal::operator(),
                NewKey {
                    agent_id: agent,
                    agent_type,
                    grants: roles,
                    expires_at: expires,
                    rate,
                },
            )?;
            let k = &info.key;
            eprintln!(
                "created key {} for agent {} ({}): {}",
                k.id,
                k.agent_id,
                k.agent_type,
                crate::auth::describe(&k.grants)
            );
            eprintln!("the key is printed once, below; it cannot be shown again");
            println!("{token}");
        }
        KeysCommand::List { json, data } => {
            let keys = super::offline_service(data)?.list_keys(&Principal::operator())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!(
                    "{:<16}  {:<8}  {:<24} {:<12} ROLES",
                    "ID", "STATUS", "AGENT", "TYPE"
                );
                for info in keys {
                    let k = &info.key;
                    println!(
                        "{:<16}  {:<8}  {:<24} {:<12} {}",
                        k.id,
                        info.status,
                        k.agent_id,
                        k.agent_type,
                        crate::auth::describe(&k.grants)
                    );
                }
            }
        }
        KeysCommand::Revoke { id, data } => {
            let id = id.strip_prefix(crate::auth::keys::PREFIX).unwrap_or(&id);
            let id = id.split('_').next().unwrap_or(id).to_string();
            let done = super::offline_service(data)?.revoke_key(&Principal::operator(), &id)?;
            eprintln!(
                "revoked key {} (agent {}); it stops working at once",
                done.key.key.id, done.key.key.agent_id
            );
            if !done.also_revoked.is_empty() {
                eprintln!(
                    "also revoked {} keys minted under it: {}",
                    done.also_revoked.len(),
                    done.also_revoked.join(", ")
                );
            }
        }
        KeysCommand::RotateMaster { data } => return rotate(&DataDir::new(data)),
    }
    Ok(0)
}

pub(super) fn server_running(data: &DataDir) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(data.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // Signal 0 checks that the process exists without touching it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
        .ok()
        .map(|()| pid)
}

fn rotate(data: &DataDir) -> anyhow::Result<i32> {
    if let Some(pid) = server_running(data) {
        bail!(
            "memhost is running on {} (pid {pid}); stop it before rotating the master key",
            data.root().display()
        );
    }
    let (store, keyring) = data.open_store()?;
    let old_fp = keyring.fingerprint();
    let old = data.load_master_key()?;
    let new = MasterKey::generate();
    let from_env = std::env::var_os(ENV_MASTER_KEY).is_some();
    // Until the rename below, this staged key is what the data expects:
    // an interrupted rotation is finished by the next open (DataDir).
    let staged = data.staged_master_key();
    if !from_env {
        let _ = std::fs::remove_file(&staged);
        let pass = std::env::var(ENV_MASTER_PASSPHRASE).ok();
        new.write_new(&staged, pass.as_deref())
            .context("writing the new master key")?;
    }
    // The audit key derives from the system data key, which rotation keeps:
    // unwrap it now, while the old master still opens it.
    let audit = crate::audit::AuditLog::new(keyring.key(&store, SYSTEM_KEY)?);
    let moved = rotate_master(&store, &old, &new)?;
    audit.record(
        &store,
        crate::audit::Record::by(&Principal::operator(), "master.rotate").outcome(
            "ok",
            Some(format!(
                "{moved} data keys re-wrapped from {old_fp} to {}",
                new.fingerprint()
            )),
        ),
    )?;
    store.close();
    if from_env {
        eprintln!(
            "re-wrapped {moved} data key(s) from master key {old_fp} to {}; set {ENV_MASTER_KEY} to the new key below (the old one no longer opens this data)",
            new.fingerprint()
        );
        print!("{}", *new.export());
    } else {
        std::fs::rename(&staged, data.master_key())
            .context("installing the new master key file")?;
        eprintln!(
            "re-wrapped {moved} data key(s) from master key {old_fp} to {}; {} now holds the new key — back it up again (the old key no longer opens this data)",
            new.fingerprint(),
            data.master_key().display()
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_accepts_durations_and_utc_times() {
        let now = crate::clock::now_ms();
        let in_a_day = parse_when("1d").unwrap();
        assert!((in_a_day - now - 86_400_000).abs() < 5_000);
        assert_eq!(parse_when("2999-01-01").unwrap(), 32_472_144_000_000);
        assert_eq!(
            parse_when("2999-01-01T00:00:01Z").unwrap(),
            32_472_144_001_000
        );
        assert!(parse_when("2001-01-01").unwrap_err().contains("past"));
        assert!(parse_when("soon").unwrap_err().contains("not a duration"));
        assert!(parse_when("0d").unwrap_err().contains("positive"));
        assert!(parse_when("2999-13-01").is_err());
    }
}
