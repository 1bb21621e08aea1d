//! Backups: a compacted snapshot of the LMDB environment with a signed
//! manifest, in one file that restore verifies before anything is put in
//! place.
//!
//! The file is a tar archive (optionally age-encrypted on top, to X25519
//! recipients), its entries in this order:
//!
//! | entry           | what                                                      |
//! |-----------------|-----------------------------------------------------------|
//! | `manifest.json` | [`Manifest`]: versions, master-key fingerprint, rows per table, size and sha256 of `data.mdb` |
//! | `manifest.mac`  | hex HMAC-SHA256 of `manifest.json` under a key derived from the master key ([`MasterKey::sign`]) |
//! | `data.mdb`      | LMDB's compacted copy (`mdb_env_copyfd2` with `MDB_CP_COMPACT`): rows sealed as they are live |
//!
//! The rows inside stay sealed under the namespace keys, and those keys are
//! wrapped to the master key: a backup is no more readable than the data
//! directory it came from, and it restores only with that master key. A
//! changed byte anywhere is caught: in the manifest by its MAC, in the
//! database by its sha256, in the tar framing by tar's checksums, and in an
//! encrypted backup by age's own authentication.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{SCHEMA_VERSION, Store, StoreError, StoreOptions};
use crate::crypto::MasterKey;

/// What `manifest.json` says the file is.
pub const FORMAT: &str = "memhost-backup";
/// The layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// What the manifest's MAC is for (never valid for anything else).
const MAC_PURPOSE: &str = "backup-manifest/v1";
const MANIFEST: &str = "manifest.json";
const MANIFEST_MAC: &str = "manifest.mac";
const DATABASE: &str = "data.mdb";
/// A manifest is a few hundred bytes; anything near this is not one.
const MANIFEST_MAX: u64 = 1 << 20;

/// A backup's manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The file layout's version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The memhost that wrote it.
    pub memhost_version: String,
    /// The store schema of the copy.
    pub schema_version: u32,
    /// When the snapshot was taken (Unix ms).
    pub created_at: i64,
    /// The master key the data keys are wrapped to.
    pub master_key_fingerprint: String,
    /// Rows per table in the copy.
    pub tables: BTreeMap<String, u64>,
    /// The database file.
    pub database: FileDigest,
}

/// Size and hash of a file in the backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileDigest {
    /// Its name in the archive.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its sha256, hex.
    pub sha256: String,
}

/// Why a backup could not be made or read. Nothing is restored when any of
/// these is returned.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Not a memhost backup at all (or cut short before its manifest).
    #[error("not a memhost backup: {0}")]
    NotABackup(String),
    /// A layout this build does not know.
    #[error(
        "backup format version {found} is newer than this memhost reads ({FORMAT_VERSION}): restore it with a newer memhost"
    )]
    NewerFormat {
        /// What the manifest says.
        found: u32,
    },
    /// A store schema this build does not know.
    #[error(
        "the backup holds store schema {found}, newer than this memhost knows ({SCHEMA_VERSION}): restore it with a newer memhost"
    )]
    NewerSchema {
        /// What the manifest says.
        found: u32,
    },
    /// No master key to check the backup with.
    #[error(
        "the backup was made with master key {expected}: give that key (--master-key FILE or MEMHOST_MASTER_KEY)"
    )]
    NeedMasterKey {
        /// The fingerprint the manifest names.
        expected: String,
    },
    /// The master key given is not the one the data is wrapped to.
    #[error(
        "the backup was made with master key {expected}, but the key given is {have}: give the master key of the data directory it came from"
    )]
    WrongMasterKey {
        /// The fingerprint the manifest names.
        expected: String,
        /// The fingerprint of the key given.
        have: String,
    },
    /// The manifest does not match its MAC.
    #[error(
        "the backup's manifest does not match its signature: it was changed after it was written"
    )]
    BadSignature,
    /// A part does not match what the manifest says of it.
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String),
}

fn io(what: &str) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |e| BackupError::Io(format!("{what}: {e}"))
}

/// A compacted copy of the store, taken and described, not yet written out.
#[derive(Debug)]
pub struct Snapshot {
    /// The copied database file.
    pub file: PathBuf,
    /// What the manifest will say (the database digest still empty).
    pub manifest: Manifest,
}

/// Copy `store` compacted into the empty directory `staging` and describe
/// the copy: its schema, its master key, its rows per table (read from the
/// copy itself, so the manifest says what the file holds).
pub fn snapshot(store: &Store, staging: &Path) -> Result<Snapshot, BackupError> {
    store.copy_compacted(staging)?;
    let copy = Store::open(staging, &StoreOptions::default())?;
    let schema_version = copy
        .get(|t| t.meta, super::META_SCHEMA)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| BackupError::Damaged("the copy has no schema version".into()))?;
    let master_key_fingerprint = copy
        .get(|t| t.meta, super::keyring::META_MASTER_FINGERPRINT)?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .ok_or_else(|| BackupError::Damaged("the copy has no master key fingerprint".into()))?;
    let tables = copy.counts()?;
    copy.close();
    drop(copy);
    // The copy's lock file is not part of a backup.
    let _ = std::fs::remove_file(staging.join("lock.mdb"));
    let file = staging.join(DATABASE);
    let bytes = std::fs::metadata(&file).map_err(io("the copy"))?.len();
    Ok(Snapshot {
        file,
        manifest: Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            memhost_version: env!("CARGO_PKG_VERSION").into(),
            schema_version,
            created_at: crate::clock::now_ms(),
            master_key_fingerprint,
            tables,
            database: FileDigest {
                name: DATABASE.into(),
                bytes,
                sha256: String::new(),
            },
        },
    })
}

/// Write `snapshot` as a backup to `out`, signed with `master` (which must
/// be the key the copy is wrapped to). `progress` is told the bytes done
/// so far of the total (`2 ×` the database size: it is read twice, hashed,
/// then written). Returns the manifest written.
pub fn write(
    snapshot: Snapshot,
    master: &MasterKey,
    out: impl Write,
    progress: &dyn Fn(u64, u64),
) -> Result<Manifest, BackupError> {
    let Snapshot { file, mut manifest } = snapshot;
    if manifest.master_key_fingerprint != master.fingerprint() {
        return Err(BackupError::WrongMasterKey {
            expected: manifest.master_key_fingerprint,
            have: master.fingerprint(),
        });
    }
    let size = manifest.database.bytes;
    let mut hasher = Sha256::new();
    let hashed = copy_counting(
        &mut std::fs::File::open(&file).map_err(io("the copy"))?,
        &mut HashWriter(&mut hasher),
        &|n| progress(n, 2 * size),
    )
    .map_err(io("hashing the copy"))?;
    if hashed != size {
        return Err(BackupError::Damaged(format!(
            "the copy changed size while it was read ({size} → {hashed} bytes)"
        )));
    }
    manifest.database.sha256 = hex::encode(hasher.finalize());
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Io(format!("writing the manifest: {e}")))?;
    let mac = format!("{}\n", hex::encode(master.sign(MAC_PURPOSE, &json)));

    let mut tar = tar::Builder::new(out);
    let header = |size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o600);
        h.set_mtime(u64::try_from(manifest.created_at / 1000).unwrap_or(0));
        h.set_cksum();
        h
    };
    let written = io("writing the backup");
    tar.append_data(&mut header(json.len() as u64), MANIFEST, json.as_slice())
        .map_err(&written)?;
    tar.append_data(&mut header(mac.len() as u64), MANIFEST_MAC, mac.as_bytes())
        .map_err(&written)?;
    let mut reader = ProgressReader {
        inner: std::fs::File::open(&file).map_err(io("the copy"))?,
        done: 0,
        progress: &|n| progress(size + n, 2 * size),
    };
    tar.append_data(&mut header(size), DATABASE, &mut reader)
        .map_err(&written)?;
    tar.into_inner().map_err(&written)?;
    Ok(manifest)
}

/// Read a backup from `input`, check it, and put its database file in the
/// empty directory `staging` (nowhere else). In order: the manifest is
/// parsed and its format and schema checked, its master key compared with
/// `master`'s (a missing or different key is refused naming the one it
/// needs), its MAC verified; then the database is streamed into `staging`
/// and its size and sha256 compared. `progress` is told the database bytes
/// read so far, of its size. On any error `staging` may hold a partial
/// file: the caller discards it.
pub fn read(
    input: impl Read,
    master: Option<&MasterKey>,
    staging: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<Manifest, BackupError> {
    let mut archive = tar::Archive::new(input);
    let mut entries = archive
        .entries()
        .map_err(|e| BackupError::NotABackup(e.to_string()))?;
    let mut next = |want: &str| -> Result<tar::Entry<'_, _>, BackupError> {
        let entry = entries
            .next()
            .ok_or_else(|| {
                BackupError::NotABackup(format!("it ends before its {want} (cut short?)"))
            })?
            .map_err(|e| BackupError::NotABackup(format!("reading its {want}: {e}")))?;
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if name != want {
            return Err(BackupError::NotABackup(format!(
                "expected {want}, found \"{}\"",
                name.chars().take(100).collect::<String>()
            )));
        }
        Ok(entry)
    };
    let json = read_small(next(MANIFEST)?, MANIFEST)?;
    let manifest = parse_manifest(&json)?;
    let master = master.ok_or_else(|| BackupError::NeedMasterKey {
        expected: manifest.master_key_fingerprint.clone(),
    })?;
    if manifest.master_key_fingerprint != master.fingerprint() {
        return Err(BackupError::WrongMasterKey {
            expected: manifest.master_key_fingerprint,
            have: master.fingerprint(),
        });
    }
    let mac = read_small(next(MANIFEST_MAC)?, MANIFEST_MAC)?;
    let mac =
        hex::decode(String::from_utf8_lossy(&mac).trim()).map_err(|_| BackupError::BadSignature)?;
    if !master.verify(MAC_PURPOSE, &json, &mac) {
        return Err(BackupError::BadSignature);
    }

    let mut entry = next(DATABASE)?;
    let expected = &manifest.database;
    if entry.header().size().ok() != Some(expected.bytes) {
        return Err(BackupError::Damaged(format!(
            "{DATABASE} is {} bytes, the manifest says {}",
            entry.header().size().unwrap_or(0),
            expected.bytes
        )));
    }
    let target = staging.join(DATABASE);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(io("staging the database"))?;
    set_private(&target);
    let mut hasher = Sha256::new();
    let copied = copy_counting(&mut entry, &mut Tee(&mut file, &mut hasher), &|n| {
        progress(n, expected.bytes)
    })
    .map_err(|e| BackupError::Damaged(format!("reading {DATABASE}: {e}")))?;
    file.sync_all().map_err(io("staging the database"))?;
    let sha256 = hex::encode(hasher.finalize());
    if copied != expected.bytes || sha256 != expected.sha256 {
        return Err(BackupError::Damaged(format!(
            "{DATABASE} has sha256 {sha256} ({copied} bytes), the manifest says {} ({} bytes)",
            expected.sha256, expected.bytes
        )));
    }
    Ok(manifest)
}

fn parse_manifest(json: &[u8]) -> Result<Manifest, BackupError> {
    #[derive(Deserialize)]
    struct Head {
        format: String,
        format_version: u32,
    }
    let head: Head = serde_json::from_slice(json)
        .map_err(|e| BackupError::NotABackup(format!("its manifest is not readable: {e}")))?;
    if head.format != FORMAT {
        return Err(BackupError::NotABackup(format!(
            "its manifest says format \"{}\"",
            head.format.chars().take(60).collect::<String>()
        )));
    }
    if head.format_version > FORMAT_VERSION {
        return Err(BackupError::NewerFormat {
            found: head.format_version,
        });
    }
    let manifest: Manifest = serde_json::from_slice(json)
        .map_err(|e| BackupError::NotABackup(format!("its manifest is not readable: {e}")))?;
    if manifest.schema_version > SCHEMA_VERSION {
        return Err(BackupError::NewerSchema {
            found: manifest.schema_version,
        });
    }
    Ok(manifest)
}

fn read_small(entry: impl Read, what: &str) -> Result<Vec<u8>, BackupError> {
    let mut out = Vec::new();
    entry
        .take(MANIFEST_MAX)
        .read_to_end(&mut out)
        .map_err(|e| BackupError::NotABackup(format!("reading its {what}: {e}")))?;
    if out.len() as u64 >= MANIFEST_MAX {
        return Err(BackupError::NotABackup(format!("its {what} is too large")));
    }
    Ok(out)
}

#[cfg(unix)]
fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn set_private(_: &Path) {}

/// Copy all of `from` into `to` in 1 MiB reads, telling `progress` the
/// bytes done; returns how many.
fn copy_counting(
    from: &mut impl Read,
    to: &mut impl Write,
    progress: &dyn Fn(u64),
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(done),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        done += n as u64;
        progress(done);
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes to a file and a hash at once.
struct Tee<'a>(&'a mut std::fs::File, &'a mut Sha256);

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

struct ProgressReader<'a, R> {
    inner: R,
    done: u64,
    progress: &'a dyn Fn(u64),
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteFlags;

    fn store_with_rows(dir: &Path, master: &MasterKey) -> Store {
        let store = Store::open(dir, &StoreOptions::default()).unwrap();
        crate::store::keyring::Keyring::open(&store, MasterKey::parse(&master.export()).unwrap())
            .unwrap();
        store
            .write_blocking(|txn, t| {
                for i in 0..500u32 {
                    txn.put(
                        t.memories,
                        &i.to_be_bytes(),
                        &[7u8; 300],
                        WriteFlags::empty(),
                    )?;
                }
                Ok(())
            })
            .unwrap();
        store
    }

    fn backup_bytes(store: &Store, master: &MasterKey) -> (Vec<u8>, Manifest) {
        let staging = tempfile::tempdir().unwrap();
        let snap = snapshot(store, staging.path()).unwrap();
        let mut out = Vec::new();
        let manifest = write(snap, master, &mut out, &|_, _| {}).unwrap();
        (out, manifest)
    }

    #[test]
    fn a_backup_reads_back_to_the_same_rows_and_any_changed_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let store = store_with_rows(dir.path(), &master);
        let (bytes, manifest) = backup_bytes(&store, &master);
        assert_eq!(manifest.tables["memories"], 500);
        assert_eq!(manifest.master_key_fingerprint, master.fingerprint());

        let staging = tempfile::tempdir().unwrap();
        let read_back = read(bytes.as_slice(), Some(&master), staging.path(), &|_, _| {}).unwrap();
        assert_eq!(read_back, manifest);
        let restored = Store::open(staging.path(), &StoreOptions::default()).unwrap();
        assert_eq!(restored.counts().unwrap(), manifest.tables);
        assert_eq!(
            restored.get(|t| t.memories, &42u32.to_be_bytes()).unwrap(),
            Some(vec![7u8; 300])
        );

        // A byte flipped in the manifest, in the MAC, in the database.
        let at = |needle: &[u8]| {
            bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
        };
        let json = serde_json::to_vec_pretty(&manifest).unwrap();
        let mac = hex::encode(master.sign(MAC_PURPOSE, &json));
        for (offset, expect) in [
            // "memories": 500 → 400, still a valid manifest.
            (at(b"\"memories\": 500") + 12, "signature"),
            (at(mac.as_bytes()) + 3, "signature"),
            (bytes.len() - 4096, "damaged"),
        ] {
            let mut bad = bytes.clone();
            bad[offset] ^= 0x01;
            let staging = tempfile::tempdir().unwrap();
            let err = read(bad.as_slice(), Some(&master), staging.path(), &|_, _| {})
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expect) || err.contains("not a memhost backup"),
                "byte {offset}: {err}"
            );
        }
    }

    #[test]
    fn another_master_key_a_newer_schema_or_no_key_are_refused_before_any_data_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let store = store_with_rows(dir.path(), &master);
        let (bytes, manifest) = backup_bytes(&store, &master);
        let other = MasterKey::generate();
        let staging = tempfile::tempdir().unwrap();
        let err = read(bytes.as_slice(), Some(&other), staging.path(), &|_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&master.fingerprint()) && err.contains(&other.fingerprint()),
            "{err}"
        );
        let err = read(bytes.as_slice(), None, staging.path(), &|_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(&master.fingerprint()), "{err}");
        assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0);

        // A manifest from a newer memhost, correctly signed.
        let mut newer = manifest.clone();
        newer.schema_version = SCHEMA_VERSION + 1;
        let json = serde_json::to_vec_pretty(&newer).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(json.len() as u64);
        h.set_cksum();
        tar.append_data(&mut h, MANIFEST, json.as_slice()).unwrap();
        let bytes = tar.into_inner().unwrap();
        let err = read(bytes.as_slice(), Some(&master), staging.path(), &|_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer than this memhost knows"), "{err}");

        let err = read(&b"hello"[..], Some(&master), staging.path(), &|_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a memhost backup"), "{err}");
    }
}
