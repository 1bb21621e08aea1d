//! The data directory: where memhost keeps everything it owns.
//!
//! | path                     | what                                            |
//! |--------------------------|-------------------------------------------------|
//! | `cache/components/`      | precompiled plugins (host-owned, 0700)          |
//! | `plugins/`               | default plugin directory                        |
//! | `run/memhost.pid`        | pid of the running server                       |
//! | `run/plugins.json`       | what the running server has loaded              |

use std::path::{Path, PathBuf};

use anyhow::Context;

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
