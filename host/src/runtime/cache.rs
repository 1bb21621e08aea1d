//! Precompiled components, cached in a directory the host owns.
//!
//! A file is named by the sha256 of the component's wasm and a hash of the
//! engine's compatibility settings (wasmtime version, target, tunables), so
//! a different wasm or a different engine never hits the same entry. Loading
//! native code that we compiled is `unsafe`; the host's only other `unsafe`
//! blocks are LMDB's compacting copy (`store::Store::copy_compacted`) and
//! per-table statistics (`store::table_pages`), C calls lmdb-rkv does not
//! wrap, and [`trim_allocator`] here.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

use super::RuntimeError;

/// Give the C allocator's free memory back to the system. Compiling
/// components (a first start, a new plugin) leaves a hundred MB and more
/// free in glibc's per-thread arenas, which an idle server would otherwise
/// keep resident.
pub fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only returns the allocator's
    // own free pages to the kernel; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded precompiled code; nothing was compiled.
    Hit,
    /// Compiled now and stored for next time.
    Miss,
    /// Caching is off; compiled now.
    Disabled,
}

/// The precompile cache.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_hash: String,
}

/// Feeds `Hash` output into sha256, so the key is stable across runs
/// (std's `DefaultHasher` is not promised to be).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ComponentCache {
    /// Use `dir` (created 0700 if missing) for `engine`'s compiled code.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, RuntimeError> {
        let err = |reason: String| RuntimeError::Cache {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| err(e.to_string()))?;
        }
        let mut hasher = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_hash = hex::encode(&hasher.0.finalize()[..8]);
        Ok(ComponentCache {
            dir: dir.to_path_buf(),
            engine_hash,
        })
    }

    /// Where the compiled form of `wasm` lives.
    pub fn path_for(&self, wasm: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(wasm));
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        what: &str,
        wasm: &[u8],
    ) -> Result<(Component, CacheOutcome), RuntimeError> {
        let path = self.path_for(wasm);
        if let Ok(Some(Precompiled::Component)) = Engine::detect_precompiled_file(&path) {
            // SAFETY: `path` is inside the cache directory, which the host
            // created with mode 0700 and only writes through `store` below
            // (atomic rename of code this engine produced with
            // `Component::serialize`). The file name binds it to the wasm's
            // sha256 and to this engine's compatibility hash, and wasmtime
            // checks the header again before mapping it.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "ignoring unusable precompiled component; recompiling"
                ),
            }
        }
        let component = Component::new(engine, wasm).map_err(|e| RuntimeError::Compile {
            what: what.to_string(),
            reason: format!("{e:#}"),
        })?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write precompile cache");
        }
        Ok((component, CacheOutcome::Miss))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path)?;
        Ok(())
    }
}
