//! age files for what leaves the store: backups and exports. They are the
//! standard age format (binary, X25519 recipients only — the kind every
//! age release since 1.0 reads), so `age -d -i key.txt FILE` opens them.
//!
//! Never writes a plaintext file itself: callers stream through it.

use std::io::{BufRead, Write};
use std::path::Path;
use std::str::FromStr;

use super::{CryptoError, MasterKey};

/// The first bytes of every age file.
pub const MAGIC: &[u8] = b"age-encryption.org/v1";

/// Is `head` (a file's first bytes) the start of an age file?
pub fn is_age(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// Parse `age1…` recipients. Anything else is refused naming it: SSH keys
/// and plugin recipients would make files some age tools cannot open.
pub fn parse_recipients(list: &[String]) -> Result<Vec<age::x25519::Recipient>, CryptoError> {
    list.iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim()).map_err(|e| {
                CryptoError::Age(format!(
                    "recipient \"{}\" is not an age X25519 public key (age1…): {e}",
                    r.chars().take(80).collect::<String>()
                ))
            })
        })
        .collect()
}

/// Encrypt what is written to `out` to `recipients` (at least one). The
/// writer must be `finish`ed or the file is cut short (and will not open).
pub fn encrypt_to<W: Write>(
    out: W,
    recipients: &[age::x25519::Recipient],
) -> Result<age::stream::StreamWriter<W>, CryptoError> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| CryptoError::Age(e.to_string()))?;
    encryptor
        .wrap_output(out)
        .map_err(|e| CryptoError::Age(e.to_string()))
}

/// Who may open an age file: the identities in an age key file, and/or
/// the master key.
#[derive(Default)]
pub struct Identities(Vec<Box<dyn age::Identity + Send + Sync>>);

impl Identities {
    /// The identities in key file `path` (`AGE-SECRET-KEY-1…` lines, as
    /// `age-keygen` writes them).
    pub fn from_file(path: &Path) -> Result<Identities, CryptoError> {
        let fail = |reason: String| CryptoError::Io {
            path: path.display().to_string(),
            reason,
        };
        let file = age::IdentityFile::from_file(path.display().to_string())
            .map_err(|e| fail(e.to_string()))?;
        let ids = file
            .into_identities()
            .map_err(|e| fail(format!("not an age identity file: {e}")))?;
        if ids.is_empty() {
            return Err(fail("holds no age identity (AGE-SECRET-KEY-1…)".into()));
        }
        Ok(Identities(ids))
    }

    /// Also try the master key.
    pub fn with_master(mut self, master: &MasterKey) -> Identities {
        self.0.push(master.age_identity());
        self
    }

    /// Are there none?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Open the age file read from `input`: the plaintext, authenticated as
    /// it is read (a changed byte fails the read that reaches it).
    pub fn decrypt<R: BufRead>(
        &self,
        input: R,
    ) -> Result<age::stream::StreamReader<R>, CryptoError> {
        let decryptor = age::Decryptor::new_buffered(input)
            .map_err(|e| CryptoError::Age(format!("not a readable age file: {e}")))?;
        decryptor
            .decrypt(self.0.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => CryptoError::Age(
                    "none of the identities given can open this age file: it was encrypted to another recipient".into(),
                ),
                e => CryptoError::Age(e.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_file_for_two_recipients_opens_with_either_and_not_with_a_third() {
        let (a, b, c) = (
            MasterKey::generate(),
            MasterKey::generate(),
            MasterKey::generate(),
        );
        let recipients = parse_recipients(&[a.recipient(), b.recipient()]).unwrap();
        let mut sealed = Vec::new();
        let mut w = encrypt_to(&mut sealed, &recipients).unwrap();
        w.write_all(b"hello").unwrap();
        w.finish().unwrap();
        assert!(is_age(&sealed));
        for key in [&a, &b] {
            let mut plain = String::new();
            Identities::default()
                .with_master(key)
                .decrypt(sealed.as_slice())
                .unwrap()
                .read_to_string(&mut plain)
                .unwrap();
            assert_eq!(plain, "hello");
        }
        let err = Identities::default()
            .with_master(&c)
            .decrypt(sealed.as_slice())
            .err()
            .unwrap();
        assert!(err.to_string().contains("another recipient"), "{err}");
    }

    #[test]
    fn a_recipient_that_is_not_x25519_is_refused_by_name() {
        let err = parse_recipients(&["ssh-ed25519 AAAA".into()]).unwrap_err();
        assert!(err.to_string().contains("ssh-ed25519 AAAA"), "{err}");
    }
}
