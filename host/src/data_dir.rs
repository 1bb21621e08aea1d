//! The data directory: where memhost keeps everything it owns.
//!
//! | path                     | what                                            |
//! |--------------------------|-------------------------------------------------|
//! | `master.key`             | the master key (0600) — back it up              |
//! | `db/`                    | the LMDB environment (sealed rows)              |
//! | `store.url`              | instead of `db/`: the PostgreSQL database the rows are in (0600; `MEMHOST_STORE_URL` wins) |
//! | `cache/components/`      | precompiled plugins (host-owned, 0700)          |
//! | `plugins/`               | default plugin directory                        |
//! | `run/memhost.pid`        | pid of the running server                       |
//! | `run/plugins.json`       | what the running server has loaded              |

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::crypto::{CryptoError, MasterKey};
use crate::store::keyring::{Keyring, KeyringError};
use crate::store::{Store, StoreOptions};

/// Environment variable holding the master key text (instead of the file).
pub const ENV_MASTER_KEY: &str = "MEMHOST_MASTER_KEY";
/// Environment variable holding the passphrase of a protected key file.
pub const ENV_MASTER_PASSPHRASE: &str = "MEMHOST_MASTER_PASSPHRASE";
/// Environment variable naming the PostgreSQL database of a data directory
/// made with `memhost init --store` (wins over its `store.url`: a password
/// can stay out of files).
pub const ENV_STORE_URL: &str = "MEMHOST_STORE_URL";

/// The layout of one data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root` (not created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The master key file.
    pub fn master_key(&self) -> PathBuf {
        self.root.join("master.key")
    }

    /// The LMDB environment directory.
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    /// Where a shared store's connection string is kept.
    pub fn store_url_file(&self) -> PathBuf {
        self.root.join("store.url")
    }

    /// The PostgreSQL database this directory's rows are in, if they are
    /// not in `db/`: `MEMHOST_STORE_URL`, else `store.url`.
    pub fn store_url(&self) -> anyhow::Result<Option<String>> {
        if let Ok(url) = std::env::var(ENV_STORE_URL)
            && !url.trim().is_empty()
        {
            return Ok(Some(url.trim().to_string()));
        }
        match std::fs::read_to_string(self.store_url_file()) {
            Ok(url) if !url.trim().is_empty() => Ok(Some(url.trim().to_string())),
            Ok(_) => anyhow::bail!("{} is empty", self.store_url_file().display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("reading {}", self.store_url_file().display()))
            }
        }
    }

    /// Whether `memhost init` made this directory (LMDB or shared).
    pub fn is_initialised(&self) -> bool {
        self.db().exists() || self.store_url_file().exists()
    }

    /// Precompiled component cache.
    pub fn component_cache(&self) -> PathBuf {
        self.root.join("cache/components")
    }

    /// Default plugin directory.
    pub fn plugins(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// Runtime files of a running server.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    /// The pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.run().join("memhost.pid")
    }

    /// The plugin status file.
    pub fn plugin_status(&self) -> PathBuf {
        self.run().join("plugins.json")
    }

    /// Create the directory tree, private to this user.
    pub fn create(&self) -> anyhow::Result<()> {
        for dir in [
            self.root.clone(),
            self.component_cache(),
            self.plugins(),
            self.run(),
        ] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("making {} private", self.root.display()))?;
        }
        Ok(())
    }

    /// Where the master key comes from, for messages.
    pub fn master_key_source(&self) -> String {
        if std::env::var_os(ENV_MASTER_KEY).is_some() {
            ENV_MASTER_KEY.to_string()
        } else {
            self.master_key().display().to_string()
        }
    }

    /// Load the master key: `MEMHOST_MASTER_KEY` if set, else the key file
    /// (with `MEMHOST_MASTER_PASSPHRASE` if it is protected).
    pub fn load_master_key(&self) -> Result<MasterKey, CryptoError> {
        let text = std::env::var(ENV_MASTER_KEY).ok();
        let pass = std::env::var(ENV_MASTER_PASSPHRASE).ok();
        MasterKey::load(&self.master_key(), text.as_deref(), pass.as_deref())
    }

    /// Open the sealed store with the master key. A wrong key is refused
    /// before anything is read, naming the fingerprint the data expects.
    pub fn open_store(&self) -> anyhow::Result<(Store, Keyring)> {
        self.open_store_with(&StoreOptions::default())
    }

    /// [`DataDir::open_store`] with explicit store options.
    pub fn open_store_with(&self, options: &StoreOptions) -> anyhow::Result<(Store, Keyring)> {
        if !self.is_initialised() {
            anyhow::bail!(
                "{} is not initialised: run `memhost init --data {}` first",
                self.root.display(),
                self.root.display()
            );
        }
        let master = self.load_master_key()?;
        let mut options = options.clone();
        if let Some(url) = self.store_url()? {
            options.postgres = Some(url);
        }
        let store = Store::open(&self.db(), &options)?;
        match Keyring::open(&store, master) {
            Ok(keyring) => Ok((store, keyring)),
            Err(KeyringError::Crypto(CryptoError::WrongMasterKey { expected, .. }))
                if self.finish_rotation(&expected)? =>
            {
                let keyring = Keyring::open(&store, self.load_master_key()?)?;
                Ok((store, keyring))
            }
            Err(KeyringError::Crypto(CryptoError::WrongMasterKey { have, expected })) => {
                anyhow::bail!(
                    "refusing to open {}: the data expects master key {expected}, but the key from {} is {have}; use the key file `memhost init` wrote for this directory (or its backup)",
                    self.root.display(),
                    self.master_key_source()
                )
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Where `memhost keys rotate-master` writes the new key before the
    /// data is moved to it.
    pub fn staged_master_key(&self) -> PathBuf {
        self.master_key().with_extension("key.new")
    }

    /// A rotation interrupted after its commit leaves the data bound to the
    /// staged key and the old key in place: install the staged key when it
    /// is the one the data expects. Returns whether it did.
    fn finish_rotation(&self, expected: &str) -> anyhow::Result<bool> {
        let staged = self.staged_master_key();
        if std::env::var_os(ENV_MASTER_KEY).is_some() || !staged.exists() {
            return Ok(false);
        }
        let pass = std::env::var(ENV_MASTER_PASSPHRASE).ok();
        let Ok(key) = MasterKey::load(&staged, None, pass.as_deref()) else {
            return Ok(false);
        };
        if key.fingerprint() != expected {
            return Ok(false);
        }
        std::fs::rename(&staged, self.master_key())
            .context("installing the master key a rotation left staged")?;
        tracing::warn!(
            master_key = expected,
            "a master key rotation was interrupted after the data moved to the new key: installed it from {}",
            staged.display()
        );
        Ok(true)
    }

    /// Write `bytes` to `path` atomically (temp file + rename).
    pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        use std::io::Write;
        let dir = path.parent().context("path has no parent")?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.persist(path)?;
        Ok(())
    }
}
