//! Keys and sealing: the master key (an age X25519 identity), per-namespace
//! data keys wrapped with age to the master recipient, row sealing with
//! XChaCha20-Poly1305, and blind tokens (keyed HMAC) for the word index.
//!
//! | thing        | where it lives                         | protected by                      |
//! |--------------|----------------------------------------|-----------------------------------|
//! | master key   | `<data>/master.key` (0600), or `MEMHOST_MASTER_KEY` | file permissions, or an age passphrase |
//! | data key     | `keys` table, one per namespace         | age-encrypted to the master recipient |
//! | row          | any table                              | XChaCha20-Poly1305 under the data key, AAD = table + row key |
//! | blind token  | `terms` table                          | HMAC-SHA256 under a key derived from the data key |
//!
//! Nothing here logs or returns key material; `Debug` prints fingerprints.

pub mod age_file;

use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Version byte in front of every sealed row.
const SEAL_V1: u8 = 1;
/// A sealed row whose plaintext was compressed first (see
/// [`DataKey::seal_packed`]).
const SEAL_PACKED: u8 = 2;
const AAD_PACKED: &[u8] = b"memhost/seal/v2";
/// Shortest plaintext worth compressing.
const PACK_FROM: usize = 64;
/// Largest plaintext a packed row may unpack to.
const PACKED_MAX: usize = 256 << 20;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AAD_PREFIX: &[u8] = b"memhost/seal/v1";

/// Failures of key handling and sealing. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// No master key could be found.
    #[error("no master key: expected {path} (created by `memhost init`), or MEMHOST_MASTER_KEY")]
    MissingMasterKey {
        /// Where the key file was looked for.
        path: String,
    },
    /// The master key text is not an age X25519 identity.
    #[error("the master key is not a valid age identity (AGE-SECRET-KEY-1…): {0}")]
    BadMasterKey(String),
    /// The key file is passphrase-protected and no passphrase was given.
    #[error("the master key file is passphrase-protected: set MEMHOST_MASTER_PASSPHRASE")]
    NeedPassphrase,
    /// The passphrase did not open the key file.
    #[error("the passphrase does not open the master key file")]
    WrongPassphrase,
    /// A data key was wrapped for another master key.
    #[error(
        "the master key {have} cannot unwrap the data keys: the data expects master key {expected}"
    )]
    WrongMasterKey {
        /// Fingerprint of the key in use.
        have: String,
        /// Fingerprint the data was written for.
        expected: String,
    },
    /// A sealed row failed authentication: tampered, moved, or wrong key.
    #[error("sealed row in {table} failed authentication (tampered, moved or wrong key)")]
    Unseal {
        /// The table of the row.
        table: String,
    },
    /// Reading or writing a key file failed.
    #[error("key file {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// age itself failed.
    #[error("age: {0}")]
    Age(String),
}

/// The master key: an age X25519 identity. Wraps and unwraps data keys.
pub struct MasterKey {
    identity: age::x25519::Identity,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint())
    }
}

/// The fingerprint of an age recipient: the first 16 hex digits of its
/// sha256. Safe to print and to store.
pub fn fingerprint_of(recipient: &str) -> String {
    hex::encode(&Sha256::digest(recipient.as_bytes())[..8])
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> MasterKey {
        MasterKey {
            identity: age::x25519::Identity::generate(),
        }
    }

    /// Parse an `AGE-SECRET-KEY-1…` string (surrounding text and comment
    /// lines are ignored).
    pub fn parse(text: &str) -> Result<MasterKey, CryptoError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .ok_or_else(|| CryptoError::BadMasterKey("no AGE-SECRET-KEY-1 line".into()))?;
        let identity = age::x25519::Identity::from_str(line)
            .map_err(|e| CryptoError::BadMasterKey(e.to_string()))?;
        Ok(MasterKey { identity })
    }

    /// The public recipient (`age1…`): data keys are wrapped to it.
    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }

    /// The fingerprint of [`MasterKey::recipient`].
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.recipient())
    }

    /// The key in age's key-file format (comment lines, then the secret).
    /// Key material: only for writing the key file or handing it to the
    /// operator who asked for it.
    pub fn export(&self) -> Zeroizing<String> {
        let secret = self.identity.to_string();
        Zeroizing::new(format!(
            "# memhost master key — back this up; without it the data cannot be read\n\
             # public key: {}\n# fingerprint: {}\n{}\n",
            self.recipient(),
            self.fingerprint(),
            secret.expose_secret()
        ))
    }

    /// Write the identity to `path` with mode 0600, refusing to overwrite.
    /// With a passphrase the file is an age passphrase-encrypted (armored)
    /// file; without, the plain identity in age's key-file format.
    pub fn write_new(&self, path: &Path, passphrase: Option<&str>) -> Result<(), CryptoError> {
        let io = |e: std::io::Error| CryptoError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let body = self.export();
        let bytes: Zeroizing<Vec<u8>> = match passphrase {
            None => Zeroizing::new(body.as_bytes().to_vec()),
            Some(pass) => {
                let recipient = age::scrypt::Recipient::new(SecretString::from(pass.to_string()));
                let armored = age::encrypt_and_armor(&recipient, body.as_bytes())
                    .map_err(|e| CryptoError::Age(e.to_string()))?;
                Zeroizing::new(armored.into_bytes())
            }
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(())
    }

    /// Load the master key: `MEMHOST_MASTER_KEY`-style text if given,
    /// otherwise the key file (opened with `passphrase` if it is
    /// passphrase-protected).
    pub fn load(
        path: &Path,
        key_text: Option<&str>,
        passphrase: Option<&str>,
    ) -> Result<MasterKey, CryptoError> {
        if let Some(text) = key_text {
            return MasterKey::parse(text);
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CryptoError::MissingMasterKey {
                    path: path.display().to_string(),
                }
            } else {
                CryptoError::Io {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }
            }
        })?);
        if bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----") {
            let pass = passphrase.ok_or(CryptoError::NeedPassphrase)?;
            let identity = age::scrypt::Identity::new(SecretString::from(pass.to_string()));
            let plain = Zeroizing::new(
                age::decrypt(&identity, &bytes).map_err(|_| CryptoError::WrongPassphrase)?,
            );
            return MasterKey::parse(&String::from_utf8_lossy(&plain));
        }
        MasterKey::parse(&String::from_utf8_lossy(&bytes))
    }

    /// A MAC of `bytes` for `purpose` (HMAC-SHA256 under a key derived
    /// from the master secret): what a backup's manifest is signed with, so
    /// only a holder of this master key can make one restore accepts.
    pub fn sign(&self, purpose: &str, bytes: &[u8]) -> [u8; 32] {
        let secret = self.identity.to_string();
        let mut derive = Sha256::new();
        derive.update(b"memhost/master-mac/v1/");
        derive.update(secret.expose_secret().as_bytes());
        let key = Zeroizing::new(<[u8; 32]>::from(derive.finalize()));
        let mut mac = hmac_sha256(&key);
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// Does `mac` sign `bytes` for `purpose` under this key? Compared in
    /// constant time.
    pub fn verify(&self, purpose: &str, bytes: &[u8], mac: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.sign(purpose, bytes).as_slice().ct_eq(mac))
    }

    /// This key as an age identity, to open age files made for its
    /// recipient (a backup encrypted to the master key).
    pub(crate) fn age_identity(&self) -> Box<dyn age::Identity + Send + Sync> {
        Box::new(self.identity.clone())
    }

    /// Wrap a data key for this master key.
    pub fn wrap(&self, key: &DataKey) -> Result<Vec<u8>, CryptoError> {
        age::encrypt(&self.identity.to_public(), key.0.as_slice())
            .map_err(|e| CryptoError::Age(e.to_string()))
    }

    /// Unwrap a data key. `expected` is the fingerprint stored with the data,
    /// used for the error message when the key does not fit.
    pub fn unwrap(&self, wrapped: &[u8], expected: &str) -> Result<DataKey, CryptoError> {
        let plain = Zeroizing::new(age::decrypt(&self.identity, wrapped).map_err(|_| {
            CryptoError::WrongMasterKey {
                have: self.fingerprint(),
                expected: expected.to_string(),
            }
        })?);
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Age("a wrapped data key is not 32 bytes".into()))?;
        Ok(DataKey(Zeroizing::new(bytes)))
    }
}

/// A 256-bit data key: seals the rows of one namespace.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> DataKey {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut_slice());
        DataKey(bytes)
    }

    fn aad(table: &str, row_key: &[u8]) -> Vec<u8> {
        Self::aad_for(AAD_PREFIX, table, row_key)
    }

    /// The associated data: the format's prefix (so a row's format byte
    /// cannot be changed either), the table and the row key.
    fn aad_for(prefix: &[u8], table: &str, row_key: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(prefix.len() + table.len() + 1 + row_key.len());
        aad.extend_from_slice(prefix);
        aad.extend_from_slice(table.as_bytes());
        aad.push(0);
        aad.extend_from_slice(row_key);
        aad
    }

    /// Seal `plaintext` as the row `row_key` of `table`: version byte,
    /// random 24-byte nonce, ciphertext and tag. The table and row key are
    /// bound as associated data, so a row cannot be moved or swapped.
    pub fn seal(&self, table: &str, row_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_as(SEAL_V1, AAD_PREFIX, table, row_key, plaintext)
    }

    /// [`DataKey::seal`] for text-like rows (JSON records, audit entries):
    /// the plaintext is compressed (raw deflate, its length first) before
    /// it is sealed, when that makes it shorter — English text and JSON
    /// about halve. The format byte is 2 and is bound in the associated
    /// data; [`DataKey::open`] reads both formats. Only the row's length
    /// tells anything of its content, as with every sealed row.
    pub fn seal_packed(&self, table: &str, row_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        if plaintext.len() >= PACK_FROM
            && let Some(packed) = pack(plaintext)
        {
            return self.seal_as(SEAL_PACKED, AAD_PACKED, table, row_key, &packed);
        }
        self.seal(table, row_key, plaintext)
    }

    fn seal_as(
        &self,
        format: u8,
        prefix: &[u8],
        table: &str,
        row_key: &[u8],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(self.0.as_slice().into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = Self::aad_for(prefix, table, row_key);
        // Encryption with a valid key and nonce cannot fail; an empty
        // result would only make the row unreadable, never leak it.
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(format);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Open a row sealed by [`DataKey::seal`] or [`DataKey::seal_packed`]
    /// for the same table and row key.
    pub fn open(
        &self,
        table: &str,
        row_key: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let fail = || CryptoError::Unseal {
            table: table.to_string(),
        };
        let prefix = match sealed.first() {
            Some(&SEAL_V1) => AAD_PREFIX,
            Some(&SEAL_PACKED) => AAD_PACKED,
            _ => return Err(fail()),
        };
        if sealed.len() < 1 + NONCE_LEN {
            return Err(fail());
        }
        let cipher = XChaCha20Poly1305::new(self.0.as_slice().into());
        let aad = Self::aad_for(prefix, table, row_key);
        let plain = cipher
            .decrypt(
                XNonce::from_slice(&sealed[1..1 + NONCE_LEN]),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| fail())?;
        if sealed[0] == SEAL_PACKED {
            // Authenticated, so written by us: a failure here is a bug or
            // a broken disk, reported like any unreadable row.
            return unpack(&plain).ok_or_else(fail);
        }
        Ok(plain)
    }

    /// The plaintext length of a value [`DataKey::seal`] made, if it can
    /// be one.
    pub fn sealed_len(sealed: &[u8]) -> Option<usize> {
        sealed.len().checked_sub(1 + NONCE_LEN + TAG_LEN)
    }

    /// [`DataKey::open`] into `out`, which must be exactly
    /// [`DataKey::sealed_len`] long: for readers that assemble many rows
    /// into one buffer without a copy each. On failure `out` is zeroed.
    pub fn open_into(
        &self,
        table: &str,
        row_key: &[u8],
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        let fail = || CryptoError::Unseal {
            table: table.to_string(),
        };
        if sealed.first() != Some(&SEAL_V1) || Self::sealed_len(sealed) != Some(out.len()) {
            return Err(fail());
        }
        let (ciphertext, tag) = sealed[1 + NONCE_LEN..].split_at(out.len());
        out.copy_from_slice(ciphertext);
        let cipher = XChaCha20Poly1305::new(self.0.as_slice().into());
        let aad = Self::aad(table, row_key);
        cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(&sealed[1..1 + NONCE_LEN]),
                &aad,
                out,
                tag.into(),
            )
            .map_err(|_| {
                out.fill(0);
                fail()
            })
    }

    /// A blind token: HMAC-SHA256 of `token` under a key derived from this
    /// data key for `purpose`. Equal tokens give equal outputs; nothing else
    /// about the token is revealed.
    pub fn blind(&self, purpose: &str, token: &[u8]) -> [u8; 32] {
        let mut derive = hmac_sha256(&self.0);
        derive.update(b"memhost/blind/v1/");
        derive.update(purpose.as_bytes());
        let subkey = Zeroizing::new(<[u8; 32]>::from(derive.finalize().into_bytes()));
        let mut mac = hmac_sha256(&subkey);
        mac.update(token);
        mac.finalize().into_bytes().into()
    }
}

/// The preset dictionary packed rows are compressed with: a thousand
/// common English words (the most frequent of SQuAD v1.1's dev contexts,
/// least frequent first) and the JSON shapes of a memory and an audit
/// entry, so a short row finds matches from its first byte. Part of the
/// format: a new dictionary needs a new format byte.
const PACK_DICTIONARY: &[u8] = include_bytes!("pack-dictionary-v1.txt");

/// `plain` as its length (u32, big-endian) and its raw deflate stream
/// (preset dictionary [`PACK_DICTIONARY`]), if that is shorter. The buffer
/// is sized up front so no partial copy of the plaintext is left behind by
/// a reallocation.
fn pack(plain: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let len = u32::try_from(plain.len()).ok()?;
    let mut out = Zeroizing::new(Vec::with_capacity(plain.len() + plain.len() / 16 + 64));
    out.extend_from_slice(&len.to_be_bytes());
    let mut deflate = flate2::Compress::new(flate2::Compression::new(4), false);
    deflate.set_dictionary(PACK_DICTIONARY).ok()?;
    let status = deflate
        .compress_vec(plain, &mut out, flate2::FlushCompress::Finish)
        .ok()?;
    (status == flate2::Status::StreamEnd && out.len() < plain.len()).then_some(out)
}

/// The plaintext [`pack`] made, into a buffer of exactly its length.
fn unpack(packed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (len, stream) = packed.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > PACKED_MAX {
        return None;
    }
    let mut out = Zeroizing::new(vec![0u8; len]);
    let mut inflate = flate2::Decompress::new(false);
    inflate.set_dictionary(PACK_DICTIONARY).ok()?;
    let status = inflate
        .decompress(stream, &mut out, flate2::FlushDecompress::Finish)
        .ok()?;
    // The whole stream, and exactly the stated length.
    (status == flate2::Status::StreamEnd
        && inflate.total_out() == len as u64
        && inflate.total_in() == stream.len() as u64)
        .then_some(out)
}

/// HMAC-SHA256 keyed with a 32-byte key. HMAC zero-pads keys shorter than
/// its 64-byte block, so padding here gives the standard result while using
/// the infallible fixed-size constructor.
fn hmac_sha256(key: &[u8; 32]) -> Hmac<Sha256> {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..32].copy_from_slice(key);
    <Hmac<Sha256> as hmac::digest::KeyInit>::new(&(*block).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_table_and_row() {
        let key = DataKey::generate();
        let sealed = key.seal("memories", b"row-1", b"the secret plan");
        assert_eq!(
            &**key.open("memories", b"row-1", &sealed).unwrap(),
            b"the secret plan"
        );
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        // Moved to another row or table, or tampered: refused.
        assert!(key.open("memories", b"row-2", &sealed).is_err());
        assert!(key.open("pending", b"row-1", &sealed).is_err());
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(key.open("memories", b"row-1", &bad).is_err());
        assert!(
            DataKey::generate()
                .open("memories", b"row-1", &sealed)
                .is_err()
        );
    }

    #[test]
    fn packed_rows_are_smaller_open_as_sealed_ones_do_and_bind_their_format() {
        let key = DataKey::generate();
        let text = "Alice moved the quarterly budget review to next Tuesday in Berlin. "
            .repeat(8)
            .into_bytes();
        let packed = key.seal_packed("memories", b"row-1", &text);
        let plain = key.seal("memories", b"row-1", &text);
        assert!(
            packed.len() < plain.len() / 2,
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        assert_eq!(packed[0], SEAL_PACKED);
        assert_eq!(
            &**key.open("memories", b"row-1", &packed).unwrap(),
            &text[..]
        );
        assert_eq!(
            &**key.open("memories", b"row-1", &plain).unwrap(),
            &text[..]
        );
        // Short or incompressible plaintexts stay in the first format.
        let short = key.seal_packed("memories", b"row-1", b"tea");
        assert_eq!(
            (short[0], &**key.open("memories", b"row-1", &short).unwrap()),
            (SEAL_V1, &b"tea"[..])
        );
        let mut noise = vec![0u8; 512];
        rand::rng().fill_bytes(&mut noise);
        assert_eq!(key.seal_packed("vectors", b"row-1", &noise)[0], SEAL_V1);
        // Another row, a flipped bit, or the format byte changed: refused.
        assert!(key.open("memories", b"row-2", &packed).is_err());
        let mut bad = packed.clone();
        bad[40] ^= 1;
        assert!(key.open("memories", b"row-1", &bad).is_err());
        let mut relabelled = packed.clone();
        relabelled[0] = SEAL_V1;
        assert!(key.open("memories", b"row-1", &relabelled).is_err());
        let mut relabelled = plain.clone();
        relabelled[0] = SEAL_PACKED;
        assert!(key.open("memories", b"row-1", &relabelled).is_err());
    }

    #[test]
    fn open_into_agrees_with_open_and_refuses_the_same() {
        let key = DataKey::generate();
        let sealed = key.seal("segments", b"row-1", b"graph bytes");
        let mut out = vec![0u8; DataKey::sealed_len(&sealed).unwrap()];
        key.open_into("segments", b"row-1", &sealed, &mut out)
            .unwrap();
        assert_eq!(out, b"graph bytes");
        // Another row, a flipped bit, a wrong length: refused, nothing left.
        assert!(
            key.open_into("segments", b"row-2", &sealed, &mut out)
                .is_err()
        );
        assert!(out.iter().all(|b| *b == 0));
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(key.open_into("segments", b"row-1", &bad, &mut out).is_err());
        let mut short = vec![0u8; 3];
        assert!(
            key.open_into("segments", b"row-1", &sealed, &mut short)
                .is_err()
        );
        assert_eq!(DataKey::sealed_len(&[1, 2]), None);
    }

    #[test]
    fn blind_tokens_are_stable_per_key_and_purpose() {
        let key = DataKey::generate();
        assert_eq!(key.blind("terms", b"falcon"), key.blind("terms", b"falcon"));
        assert_ne!(key.blind("terms", b"falcon"), key.blind("terms", b"eagle"));
        assert_ne!(
            key.blind("terms", b"falcon"),
            key.blind("entities", b"falcon")
        );
        assert_ne!(
            key.blind("terms", b"falcon"),
            DataKey::generate().blind("terms", b"falcon")
        );
    }

    #[test]
    fn data_keys_unwrap_only_with_their_master() {
        let master = MasterKey::generate();
        let other = MasterKey::generate();
        let key = DataKey::generate();
        let wrapped = master.wrap(&key).unwrap();
        let back = master.unwrap(&wrapped, &master.fingerprint()).unwrap();
        let sealed = key.seal("t", b"k", b"x");
        assert_eq!(&**back.open("t", b"k", &sealed).unwrap(), b"x");
        let err = other.unwrap(&wrapped, &master.fingerprint()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&master.fingerprint()) && msg.contains(&other.fingerprint()),
            "{msg}"
        );
    }

    #[test]
    fn key_files_plain_and_with_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let plain = dir.path().join("plain.key");
        master.write_new(&plain, None).unwrap();
        assert_eq!(
            MasterKey::load(&plain, None, None).unwrap().fingerprint(),
            master.fingerprint()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&plain).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwritten.
        assert!(master.write_new(&plain, None).is_err());
        let text = std::fs::read_to_string(&plain).unwrap();
        assert_eq!(
            MasterKey::load(&dir.path().join("none"), Some(&text), None)
                .unwrap()
                .fingerprint(),
            master.fingerprint()
        );
        assert!(matches!(
            MasterKey::load(&dir.path().join("none"), None, None),
            Err(CryptoError::MissingMasterKey { .. })
        ));
    }
}
