//! Sealing credential values at rest with an AEAD (ChaCha20-Poly1305 from `ring`).
//!
//! The 32-byte key lives in a file of the data dir created with mode 0600 from the first byte; it is
//! never mounted into a sandbox. A sealed value is `nonce (12 bytes) ‖ ciphertext ‖ tag`, and the
//! additional data binds it to its agent and credential name, so a row copied onto another agent or
//! name fails to open instead of leaking under a different name.

use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::secret::Secret;

use super::StoreError;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// Seals and opens credential values; computes their fingerprints.
pub struct Sealer {
    key: LessSafeKey,
    fingerprint_key: hmac::Key,
}

impl Sealer {
    /// Loads the key file, creating it (mode 0600) on first use.
    pub fn open_or_create(path: &Path) -> Result<Self, StoreError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                random(&mut key)?;
                crate::settings::write_private_file(path, &key).map_err(|source| StoreError::KeyFile {
                    path: path.to_owned(),
                    source,
                })?;
                key.to_vec()
            }
            Err(source) => {
                return Err(StoreError::KeyFile {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::from_key_bytes(&bytes).ok_or_else(|| StoreError::KeyFile {
            path: path.to_owned(),
            source: std::io::Error::other(format!("expected {KEY_LEN} bytes, found {}", bytes.len())),
        })
    }

    fn from_key_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).ok()?);
        let fingerprint_key = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        Some(Self { key, fingerprint_key })
    }

    pub fn seal(&self, context: &str, value: &Secret) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let mut buf = value.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| StoreError::Crypto("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Secret, StoreError> {
        if sealed.len() < NONCE_LEN {
            return Err(StoreError::Crypto("sealed value is truncated"));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| StoreError::Crypto("bad nonce"))?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| StoreError::Crypto("a sealed credential does not open with this data dir's key"))?;
        let text =
            String::from_utf8(plain.to_vec()).map_err(|_| StoreError::Crypto("a sealed credential is not UTF-8"))?;
        Ok(Secret::new(text))
    }

    /// Eight hex digits of HMAC-SHA256(key, value): equal values match, nothing is revealed.
    pub fn fingerprint(&self, value: &Secret) -> String {
        let tag = hmac::sign(&self.fingerprint_key, value.expose().as_bytes());
        tag.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn random(buf: &mut [u8]) -> Result<(), StoreError> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| StoreError::Crypto("the system random generator failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_key_bytes(&[7u8; KEY_LEN]).unwrap()
    }

    #[test]
    fn sealed_values_open_only_in_their_own_context() {
        let s = sealer();
        let sealed = s.seal("agent-1/GITHUB_TOKEN", &Secret::new("ghp_real")).unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"ghp_real"));
        assert_eq!(s.open("agent-1/GITHUB_TOKEN", &sealed).unwrap().expose(), "ghp_real");
        assert!(s.open("agent-2/GITHUB_TOKEN", &sealed).is_err());
    }

    #[test]
    fn fingerprints_tell_values_apart_without_showing_them() {
        let s = sealer();
        let a = s.fingerprint(&Secret::new("one"));
        assert_eq!(a.len(), 8);
        assert_eq!(a, s.fingerprint(&Secret::new("one")));
        assert_ne!(a, s.fingerprint(&Secret::new("two")));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credential.key");
        let first = Sealer::open_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = first.seal("c", &Secret::new("v")).unwrap();
        let second = Sealer::open_or_create(&path).unwrap();
        assert_eq!(second.open("c", &sealed).unwrap().expose(), "v");
    }
}
