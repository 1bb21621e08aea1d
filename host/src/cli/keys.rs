//! `memhost keys …`: key management. (API keys arrive with the identity
//! issue; this holds master-key rotation.)

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::crypto::MasterKey;
use crate::data_dir::{DataDir, ENV_MASTER_KEY, ENV_MASTER_PASSPHRASE};
use crate::store::keyring::rotate_master;

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Re-wrap every data key to a new master key. Rows are not touched; the
    /// old master key stops opening this data. Stop the server first.
    RotateMaster {
        /// The data directory.
        #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
        data: PathBuf,
    },
}

pub(crate) fn run(cmd: KeysCommand) -> anyhow::Result<i32> {
    match cmd {
        KeysCommand::RotateMaster { data } => rotate(&DataDir::new(data)),
    }
}

fn server_running(data: &DataDir) -> Option<i32> {
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
    let staged = data.master_key().with_extension("key.new");
    if !from_env {
        let _ = std::fs::remove_file(&staged);
        let pass = std::env::var(ENV_MASTER_PASSPHRASE).ok();
        new.write_new(&staged, pass.as_deref())
            .context("writing the new master key")?;
    }
    let moved = rotate_master(&store, &old, &new)?;
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
