//! [`PublicKey`] and its SSH wire encoding, the key blob (RFC 4253 section 6.6).

use core::fmt;

use ssh_encoding::{Decode, Encode};
use ssh_key::public::KeyData;
use ssh_key::HashAlg;

use super::alg::KeyKind;
use super::{KeyError, SigAlg, VerifyError, MAX_RSA_VERIFY_BITS, MIN_RSA_BITS};
use crate::wire::Reader;

/// A public key: host key of an upstream server, or a user's key.
///
/// Always one of the supported key types (see the module docs); comparing two keys
/// compares their wire encodings.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    /// The key, with an empty comment.
    inner: ssh_key::PublicKey,
    /// Its SSH wire encoding, kept for the exchange hash and comparisons.
    blob: Vec<u8>,
}

impl PublicKey {
    /// Decode an SSH public key blob (`string key-type, ...`, RFC 4253 section 6.6).
    ///
    /// Rejects unsupported key types, RSA keys outside the supported sizes, trailing
    /// bytes and non-canonical encodings. Ed25519 and ECDSA points are checked when a
    /// signature is verified: a key from the wire is only ever used for that, or
    /// compared with keys the operator listed (whose points [`PublicKey::from_openssh`]
    /// checked), so decompressing an Ed25519 point here (about 12 µs) bought nothing.
    pub fn from_blob(blob: &[u8]) -> Result<Self, VerifyError> {
        let type_name = Reader::new(blob)
            .string("key type")
            .map_err(|_| VerifyError::MalformedKey)?;
        if KeyKind::from_name(type_name).is_none() {
            return Err(match printable_name(type_name) {
                Some(name) => VerifyError::UnsupportedKeyType(name),
                None => VerifyError::MalformedKey,
            });
        }
        let mut reader = blob;
        let key_data = KeyData::decode(&mut reader).map_err(|_| VerifyError::MalformedKey)?;
        if !reader.is_empty() {
            return Err(VerifyError::MalformedKey);
        }
        let key = Self::from_key_data(key_data)?;
        // Re-encoding must give the same bytes: this refuses non-canonical encodings.
        if key.blob != blob {
            return Err(VerifyError::MalformedKey);
        }
        Ok(key)
    }

    /// Wrap an `ssh_key` public key (its comment is dropped).
    pub fn from_ssh_key(key: &ssh_key::PublicKey) -> Result<Self, VerifyError> {
        Self::from_key_data(key.key_data().clone())
    }

    fn from_key_data(key_data: KeyData) -> Result<Self, VerifyError> {
        let kind = KeyKind::of(&key_data)
            .ok_or_else(|| VerifyError::UnsupportedKeyType(key_data.algorithm().to_string()))?;
        if let KeyData::Rsa(key) = &key_data {
            let bits = mpint_bits(&key.n).ok_or(VerifyError::MalformedKey)?;
            if !(MIN_RSA_BITS..=MAX_RSA_VERIFY_BITS).contains(&bits) {
                return Err(VerifyError::UnsupportedKeySize {
                    bits,
                    max: MAX_RSA_VERIFY_BITS,
                });
            }
            if mpint_bits(&key.e).is_none() {
                return Err(VerifyError::MalformedKey);
            }
        }
        debug_assert!(KeyKind::of(&key_data) == Some(kind));
        let mut blob = Vec::new();
        key_data
            .encode(&mut blob)
            .map_err(|_| VerifyError::MalformedKey)?;
        Ok(Self {
            inner: ssh_key::PublicKey::new(key_data, ""),
            blob,
        })
    }

    /// Refuses an Ed25519 key whose bytes are not a point of the curve (other types
    /// pass: their points are checked when a signature is verified).
    pub(crate) fn check_point(&self) -> Result<(), KeyError> {
        match self.inner.key_data() {
            KeyData::Ed25519(key) => ed25519_dalek::VerifyingKey::from_bytes(&key.0)
                .map(drop)
                .map_err(|_| KeyError::InvalidPublicKey("the Ed25519 key is not a curve point")),
            _ => Ok(()),
        }
    }

    /// The SSH wire encoding of the key.
    pub fn to_blob(&self) -> Vec<u8> {
        self.blob.clone()
    }

    /// The SSH wire encoding of the key, borrowed.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The key type name, e.g. `ssh-ed25519`, or `ssh-rsa` for any RSA key.
    pub fn algorithm_name(&self) -> &'static str {
        self.kind().name()
    }

    /// SHA-256 fingerprint as shown by `ssh-keygen -l`: `SHA256:` and unpadded base64.
    pub fn fingerprint(&self) -> String {
        self.inner.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The size of an RSA key's modulus in bits; `None` for other key types.
    pub fn rsa_bits(&self) -> Option<usize> {
        match self.inner.key_data() {
            KeyData::Rsa(key) => mpint_bits(&key.n),
            _ => None,
        }
    }

    /// Check an RSA key against a required minimum size in bits, as OpenSSH's
    /// `RequiredRSASize` does (for user keys in sshd, for host keys in ssh). Keys of
    /// other types always pass. Every parsed key already has at least [`MIN_RSA_BITS`];
    /// a smaller `min` changes nothing.
    pub fn check_rsa_size(&self, min: usize) -> Result<(), VerifyError> {
        match self.rsa_bits() {
            Some(bits) if bits < min => Err(VerifyError::RsaKeyTooSmall { bits, min }),
            _ => Ok(()),
        }
    }

    /// Whether `alg` is a valid signature algorithm for this key type
    /// (`rsa-sha2-512`/`rsa-sha2-256` for RSA keys, the key type's own otherwise).
    pub fn accepts(&self, alg: SigAlg) -> bool {
        self.kind().verify_algs().contains(&alg)
    }

    /// Signature algorithms this key verifies, in preference order.
    pub fn sig_algs(&self) -> &'static [SigAlg] {
        self.kind().verify_algs()
    }

    /// The wrapped `ssh_key` public key (empty comment).
    pub fn as_ssh_key(&self) -> &ssh_key::PublicKey {
        &self.inner
    }

    pub(super) fn kind(&self) -> KeyKind {
        KeyKind::of(self.inner.key_data()).expect("PublicKey holds only supported key types")
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({} {})",
            self.algorithm_name(),
            self.fingerprint()
        )
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_openssh())
    }
}

/// A name as it may appear in an error: printable US-ASCII, at most 64 characters
/// (RFC 4251 section 6), else `None`.
pub(super) fn printable_name(name: &[u8]) -> Option<String> {
    if name.is_empty() || name.len() > 64 || !name.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return None;
    }
    String::from_utf8(name.to_vec()).ok()
}

/// Size in bits of a positive mpint, or `None` if it is negative or zero.
pub(super) fn mpint_bits(m: &ssh_key::Mpint) -> Option<usize> {
    let bytes = m.as_positive_bytes()?;
    let first = *bytes.first()?;
    Some(bytes.len() * 8 - first.leading_zeros() as usize)
}
