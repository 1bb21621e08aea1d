//! `memhost backup`, `memhost restore` and `memhost compact`.
//!
//! A backup is taken while the server runs (LMDB's compacting copy reads
//! one snapshot; writers go on). A restore writes nothing into the target
//! until the whole backup is verified: it is staged in a hidden directory
//! beside the target and moved into place at the end, so an interrupted or
//! refused restore leaves the target as it was.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::progress::{Progress, Unit};
use crate::auth::Principal;
use crate::crypto::MasterKey;
use crate::crypto::age_file::{self, Identities};
use crate::data_dir::{DataDir, ENV_MASTER_KEY, ENV_MASTER_PASSPHRASE};
use crate::store::backup::{self, Manifest};
use crate::store::keyring::Keyring;
use crate::store::{Store, StoreOptions};

/// `memhost backup`.
#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// The data directory to back up (the server may be running on it).
    #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
    data: PathBuf,
    /// The backup file to write, or - for standard output.
    #[arg(long)]
    out: PathBuf,
    /// Also encrypt the backup with age to this X25519 recipient (age1…);
    /// repeatable. `age -d -i KEY FILE` then yields the plain backup (a tar).
    #[arg(long = "recipient")]
    recipients: Vec<String>,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

/// `memhost restore`.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// The backup file, or - for standard input.
    file: PathBuf,
    /// The data directory to create from it.
    #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
    data: PathBuf,
    /// The master key of the data the backup came from (its key file; it is
    /// copied to <data>/master.key). Otherwise MEMHOST_MASTER_KEY, or
    /// <data>/master.key if it exists.
    #[arg(long)]
    master_key: Option<PathBuf>,
    /// An age identity file that opens an encrypted backup (the master key
    /// is tried too).
    #[arg(long)]
    identity: Option<PathBuf>,
    /// Replace the database of an existing data directory (its server must
    /// be stopped).
    #[arg(long)]
    force: bool,
}

/// `memhost compact`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompactArgs {
    /// The data directory (its server stopped).
    #[arg(long, env = "MEMHOST_DATA", default_value = "./memhost-data")]
    data: PathBuf,
}

/// Rewrite the database without its free pages (LMDB never shrinks its
/// file: after deleting much, the space is reused but not returned).
pub(crate) fn compact(args: CompactArgs) -> anyhow::Result<i32> {
    let dir = DataDir::new(args.data);
    if dir.store_url()?.is_some() {
        bail!(
            "{} keeps its rows in PostgreSQL: nothing to compact here (the database reclaims space itself: autovacuum, VACUUM FULL)",
            dir.root().display()
        );
    }
    if let Some(pid) = super::keys::server_running(&dir) {
        bail!(
            "memhost (pid {pid}) is serving {}: stop it before compacting (a write after the copy would be lost); a backup compacts too, while it serves",
            dir.root().display()
        );
    }
    let file = dir.db().join("data.mdb");
    let before = std::fs::metadata(&file)
        .with_context(|| format!("{}", file.display()))?
        .len();
    let staging = tempfile::Builder::new()
        .prefix(".memhost-compact-")
        .tempdir_in(dir.root())?;
    let progress = Progress::start("compact", Unit::Bytes);
    {
        let service = super::offline_service(dir.root().to_path_buf())?;
        // Recorded first, so the copy holds it (the store is not opened
        // again in this process once the file is replaced).
        service.record_event(
            crate::audit::Record::by(&Principal::operator(), "store.compact")
                .outcome("ok", Some(format!("{before} bytes before"))),
        );
        service.copy_store(staging.path())?;
    }
    let after = std::fs::metadata(staging.path().join("data.mdb"))?.len();
    progress.set(after, after);
    // The copy replaces the file; the lock file stays (it holds no data,
    // and the next process to open the store sets it up afresh).
    std::fs::rename(staging.path().join("data.mdb"), &file)
        .context("cannot move the compacted database into place")?;
    progress.finish("done");
    eprintln!(
        "compacted {}: {} -> {} ({:.0}% smaller)",
        file.display(),
        indicatif::HumanBytes(before),
        indicatif::HumanBytes(after),
        100.0 * (1.0 - after as f64 / before.max(1) as f64)
    );
    Ok(0)
}

/// Write a backup of `args.data`.
pub(crate) fn backup(args: BackupArgs) -> anyhow::Result<i32> {
    let recipients = age_file::parse_recipients(&args.recipients)?;
    let out = super::output::Out::new(&args.out, args.force)?;
    let service = super::offline_service(args.data.clone())?;
    // Staged beside the output, not in /tmp: the copy is as large as the
    // data.
    let staging = tempfile::Builder::new()
        .prefix(".memhost-backup-")
        .tempdir_in(out.dir())
        .with_context(|| format!("cannot stage the copy in {}", out.dir().display()))?;
    let progress = Progress::start("backup", Unit::Bytes);
    let sink = out.open("backup")?;
    let manifest = write_backup(
        &service,
        &Principal::operator(),
        staging.path(),
        sink,
        &recipients,
        &|done, total| progress.set(done, total),
    )?;
    progress.finish("done");
    eprintln!(
        "backed up {} to {}: {} ({} rows; memories {}, audit entries {}), master key {}{}",
        args.data.display(),
        out.name(),
        indicatif::HumanBytes(manifest.database.bytes),
        manifest.tables.values().sum::<u64>(),
        manifest.tables.get("memories").copied().unwrap_or(0),
        manifest.tables.get("audit").copied().unwrap_or(0),
        manifest.master_key_fingerprint,
        if recipients.is_empty() {
            String::new()
        } else {
            format!(", age-encrypted to {} recipient(s)", recipients.len())
        }
    );
    eprintln!("it restores only with that master key: keep a copy of the key apart from it");
    Ok(0)
}

/// Write through age when there are recipients; committed (synced, in
/// place) before the service records the backup.
fn write_backup(
    service: &crate::service::Service,
    who: &Principal,
    staging: &Path,
    sink: super::output::Sink,
    recipients: &[age::x25519::Recipient],
    progress: &dyn Fn(u64, u64),
) -> anyhow::Result<Manifest> {
    if recipients.is_empty() {
        return Ok(service.backup(who, staging, sink, |s| s.commit(), progress)?);
    }
    let sealed = age_file::encrypt_to(sink, recipients)?;
    Ok(service.backup(who, staging, sealed, |w| w.finish()?.commit(), progress)?)
}

/// Restore a backup into `args.data`.
pub(crate) fn restore(args: RestoreArgs) -> anyhow::Result<i32> {
    let source = super::output::input_name(&args.file);
    let target = DataDir::new(args.data.clone());
    if target.store_url()?.is_some() {
        bail!(
            "{} keeps its rows in PostgreSQL: a backup restores into a new data directory (LMDB); restore the database with its own tools",
            target.root().display()
        );
    }
    if target.db().join("data.mdb").exists() {
        if !args.force {
            bail!(
                "{} already holds a memhost database: restore into a new directory, or add --force to replace it",
                target.root().display()
            );
        }
        if let Some(pid) = super::keys::server_running(&target) {
            bail!(
                "memhost (pid {pid}) is serving {}: stop it before replacing its database",
                target.root().display()
            );
        }
    }
    let (master, key_from) = restore_master_key(&args, &target)?;

    let input: Box<dyn Read> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("cannot open backup {}", args.file.display()))?,
        )
    };
    let mut input = BufReader::with_capacity(1 << 20, input);
    let head = input.fill_buf().context("cannot read the backup")?;
    let input: Box<dyn Read> = if age_file::is_age(head) {
        let mut ids = match &args.identity {
            Some(path) => Identities::from_file(path)?,
            None => Identities::default(),
        };
        if let Some(m) = &master {
            ids = ids.with_master(m);
        }
        if ids.is_empty() {
            bail!(
                "the backup is age-encrypted: give the identity that opens it with --identity FILE"
            );
        }
        Box::new(ids.decrypt(input)?)
    } else {
        Box::new(input)
    };

    let parent = match target.root().parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::env::current_dir()?,
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".memhost-restore-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot stage the restore in {}", parent.display()))?;
    let progress = Progress::start("restore", Unit::Bytes);
    let manifest = backup::read(input, master.as_ref(), staging.path(), &|done, total| {
        progress.set(done, total)
    })
    .with_context(|| format!("backup {source}: nothing was restored"))?;
    progress.finish("verified");
    let Some(master) = master else {
        // read() refuses a backup when there is no key to check it with.
        bail!("no master key");
    };

    // The staged copy opens with the key and holds what the manifest says.
    let audit_entries = {
        let store = Store::open(staging.path(), &StoreOptions::default())?;
        let counts = store.counts()?;
        if counts != manifest.tables {
            bail!(
                "backup {source}: the restored rows ({:?}) are not what its manifest says ({:?}); nothing was restored",
                counts,
                manifest.tables
            );
        }
        let keyring = Keyring::open(&store, MasterKey::parse(&master.export())?)?;
        let service = super::service_over(store.clone(), keyring)?;
        let verified = service.verify_audit();
        if let Ok(n) = verified {
            service.record_event(
                crate::audit::Record::by(&Principal::operator(), "store.restore").outcome(
                    "ok",
                    Some(format!(
                        "from a backup taken at {} (sha256 {})",
                        crate::service::model::iso8601(manifest.created_at),
                        manifest.database.sha256
                    )),
                ),
            );
            store.close();
            Ok(n + 1)
        } else {
            store.close();
            verified.map_err(|b| b.to_string())
        }
    };
    let _ = std::fs::remove_file(staging.path().join("lock.mdb"));

    // Into place: nothing in the target was touched until now.
    target.create()?;
    let old = target
        .root()
        .join(format!(".db-replaced-{}", crate::clock::now_ms()));
    let replaced = target.db().exists();
    if replaced {
        std::fs::rename(target.db(), &old)
            .with_context(|| format!("cannot move the old database aside to {}", old.display()))?;
    }
    std::fs::create_dir_all(target.db())?;
    std::fs::rename(
        staging.path().join("data.mdb"),
        target.db().join("data.mdb"),
    )
    .context("cannot move the restored database into place")?;
    if replaced {
        let _ = std::fs::remove_dir_all(&old);
    }
    if let KeyFrom::File(path) = &key_from
        && !target.master_key().exists()
    {
        copy_key_file(path, &target.master_key())?;
    }
    // It opens as `memhost serve` will open it.
    let (store, _) = target.open_store()?;
    store.close();

    eprintln!(
        "restored {source} into {}: backup taken {} by memhost {}, {} rows ({} memory rows), master key {}",
        target.root().display(),
        crate::service::model::iso8601(manifest.created_at),
        manifest.memhost_version,
        manifest.tables.values().sum::<u64>(),
        manifest.tables.get("memories").copied().unwrap_or(0),
        manifest.master_key_fingerprint
    );
    match audit_entries {
        Ok(n) => eprintln!("audit chain intact: {n} entries (the last records this restore)"),
        Err(broken) => eprintln!(
            "WARNING: the backup's audit chain does not verify: {broken}. The data was restored; investigate before trusting its history"
        ),
    }
    if matches!(key_from, KeyFrom::Env) {
        eprintln!("the master key came from {ENV_MASTER_KEY}: set it for `memhost serve` too");
    }
    eprintln!(
        "start it with: memhost serve --data {}",
        target.root().display()
    );
    Ok(0)
}

enum KeyFrom {
    File(PathBuf),
    Env,
    Target,
    None,
}

/// The master key a restore checks and opens the backup with.
fn restore_master_key(
    args: &RestoreArgs,
    target: &DataDir,
) -> anyhow::Result<(Option<MasterKey>, KeyFrom)> {
    let pass = std::env::var(ENV_MASTER_PASSPHRASE).ok();
    if let Some(path) = &args.master_key {
        let key = MasterKey::load(path, None, pass.as_deref())
            .with_context(|| format!("--master-key {}", path.display()))?;
        if target.master_key().exists() {
            let there = target
                .load_master_key()
                .with_context(|| format!("{}", target.master_key().display()))?;
            if there.fingerprint() != key.fingerprint() {
                bail!(
                    "{} holds master key {}, but --master-key is {}: restore into a new directory",
                    target.master_key().display(),
                    there.fingerprint(),
                    key.fingerprint()
                );
            }
        }
        return Ok((Some(key), KeyFrom::File(path.clone())));
    }
    if let Ok(text) = std::env::var(ENV_MASTER_KEY) {
        return Ok((Some(MasterKey::parse(&text)?), KeyFrom::Env));
    }
    if target.master_key().exists() {
        return Ok((Some(target.load_master_key()?), KeyFrom::Target));
    }
    Ok((None, KeyFrom::None))
}

/// Copy a key file as it is (a passphrase-protected one stays protected),
/// private to this user, never over an existing file.
fn copy_key_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(from)?);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(to)
        .with_context(|| format!("cannot write {}", to.display()))?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    Ok(())
}
