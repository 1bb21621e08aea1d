//! `memhost users …` and `memhost login-link`: the people who sign in to
//! the web console. Like key commands, these work beside a running server
//! and take effect at once.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::offline_service as service;
use crate::auth::{Grant, Principal};

#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// Create a console user (agent type `human`). Sign it in with
    /// `memhost login-link NAME`, or give it a password.
    Create {
        /// Its name (also its agent id): lowercase letters, digits, . _ - @ +
        name: String,
        /// PATTERN=ROLE, repeatable: team-a=reader, team-*=writer, *=admin.
        #[arg(long = "role", required = true, value_parser = parse_grant)]
        roles: Vec<Grant>,
        /// Read a password from stdin (asked twice, unseen, on a terminal).
        #[arg(long)]
        password: bool,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// List console users.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// Set a user's password (read from stdin; asked twice, unseen, on a
    /// terminal). Every session of the user ends.
    SetPassword {
        /// The user.
        name: String,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// Disable a user: it cannot sign in, and its sessions end at once.
    Disable {
        /// The user.
        name: String,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
    /// End every session of a user at once.
    SignOut {
        /// The user.
        name: String,
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
}

/// `memhost login-link NAME`.
#[derive(Debug, Args)]
pub(crate) struct LoginLinkArgs {
    /// The user to sign in.
    name: String,
    /// The server's address as browsers reach it (default: `public_url`
    /// of the config, else http:// and the listen address).
    #[arg(long)]
    url: Option<String>,
    /// How long it works: 90s, 15m, 2h (default: `[console] link_minutes`
    /// of the config, else 15 minutes; at most 24h).
    #[arg(long)]
    valid: Option<String>,
    /// Configuration file (TOML): public_url, listen, link_minutes.
    #[arg(long, env = "MEMHOST_CONFIG")]
    config: Option<PathBuf>,
    /// The address the server listens on, when no URL is configured.
    #[arg(long, env = "MEMHOST_LISTEN")]
    listen: Option<String>,
    /// The data directory.
    #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
    data: PathBuf,
}

fn parse_grant(s: &str) -> Result<Grant, String> {
    s.parse()
}

/// A password from stdin: on a terminal asked twice without echo, else
/// the first line.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let ask = |p: &str| -> anyhow::Result<String> {
        eprint!("{p}");
        std::io::stderr().flush()?;
        let _echo = EchoOff::new(&stdin)?;
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        eprintln!();
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let first = ask(prompt)?;
    if ask("again: ")? != first {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

/// The terminal's echo turned off until dropped.
struct EchoOff {
    fd: std::os::fd::OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl EchoOff {
    fn new(stdin: &std::io::Stdin) -> anyhow::Result<EchoOff> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        use std::os::fd::AsFd;
        let fd = stdin.as_fd().try_clone_to_owned()?;
        let saved = tcgetattr(&fd).context("cannot read the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(&fd, SetArg::TCSANOW, &quiet).context("cannot turn the echo off")?;
        Ok(EchoOff { fd, saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ =
            nix::sys::termios::tcsetattr(&self.fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

pub(crate) fn run(cmd: UsersCommand) -> anyhow::Result<i32> {
    let operator = Principal::operator();
    match cmd {
        UsersCommand::Create {
            name,
            roles,
            password,
            data,
        } => {
            let service = service(data)?;
            let password = if password {
                Some(read_password(&format!("password for {name}: "))?)
            } else {
                None
            };
            let user = service.create_user(&operator, &name, roles, password.as_deref())?;
            eprintln!(
                "created user {} (human): {}{}",
                user.name,
                crate::auth::describe(&user.grants),
                if user.has_password {
                    ""
                } else {
                    "; no password: sign it in with `memhost login-link`"
                }
            );
        }
        UsersCommand::List { json, data } => {
            let users = service(data)?.users(&operator)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                println!("{:<32} {:<8}  {:<8}  ROLES", "NAME", "STATUS", "PASSWORD");
                for u in users {
                    println!(
                        "{:<32} {:<8}  {:<8}  {}",
                        u.name,
                        u.status,
                        if u.has_password { "set" } else { "-" },
                        crate::auth::describe(&u.grants)
                    );
                }
            }
        }
        UsersCommand::SetPassword { name, data } => {
            let service = service(data)?;
            let password = read_password(&format!("new password for {name}: "))?;
            service.set_password(&operator, &name, None, &password)?;
            eprintln!("password set for {name}; its sessions have ended");
        }
        UsersCommand::Disable { name, data } => {
            service(data)?.disable_user(&operator, &name)?;
            eprintln!("disabled {name}; its sessions have ended");
        }
        UsersCommand::SignOut { name, data } => {
            service(data)?.sign_out_everywhere(&operator, &name)?;
            eprintln!("every session of {name} has ended");
        }
    }
    Ok(0)
}

/// Print a one-time sign-in link for a user, alone on stdout.
pub(crate) fn login_link(args: LoginLinkArgs) -> anyhow::Result<i32> {
    let config = super::load_config(args.config.as_ref())?;
    let base = match args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => match config.server.public_url().map_err(anyhow::Error::msg)? {
            Some(u) => u,
            None => {
                let listen = args
                    .listen
                    .or(config.server.listen.clone())
                    .unwrap_or_else(|| super::DEFAULT_LISTEN.to_string());
                format!("http://{listen}")
            }
        },
    };
    let valid_ms = match &args.valid {
        Some(v) => duration_ms(v)?,
        None => config.console.link_ms(),
    };
    let service = service(args.data)?;
    let (token, _) = service.sign_in_link(&Principal::operator(), &args.name, valid_ms)?;
    let valid = match &args.valid {
        Some(v) => v.clone(),
        None => format!("{} minutes", valid_ms / 60_000),
    };
    eprintln!("sign-in link for {}: works once, for {valid}", args.name);
    println!("{base}/console/link/{token}");
    Ok(0)
}

/// `90s`, `15m`, `2h` in ms.
fn duration_ms(s: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("--valid \"{s}\" is not a duration like 90s, 15m or 2h");
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let ms = match unit {
        's' => 1000,
        'm' => 60_000,
        'h' => 3_600_000,
        _ => return Err(bad()),
    };
    Ok(n.saturating_mul(ms))
}
