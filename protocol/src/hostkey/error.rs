//! What can go wrong loading, using or verifying keys.

use super::{SigAlg, MIN_RSA_BITS};

/// Errors loading, parsing or using keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file or line could not be decoded.
    #[error("invalid key: {0}")]
    Format(#[from] ssh_key::Error),
    /// A public key line (`type base64 [comment]`) is malformed.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    /// The key type named in a public key line differs from the type inside its blob.
    #[error("public key line says {text} but the key is {blob}")]
    KeyTypeMismatch {
        /// Type named in the text.
        text: String,
        /// Type of the decoded key blob.
        blob: String,
    },
    /// The private key file is passphrase-protected.
    #[error("encrypted private keys are not supported")]
    Encrypted,
    /// A private key file in another format than OpenSSH's own.
    #[error(
        "not an OpenSSH private key ({0}); convert it with `ssh-keygen -p -f FILE`, \
         which rewrites it in the OpenSSH format"
    )]
    NotOpenSshFormat(&'static str),
    /// The key type is not one we sign or verify with.
    #[error("unsupported key type {0}")]
    UnsupportedKeyType(String),
    /// An RSA key outside the supported sizes.
    #[error("unsupported RSA key size: {bits} bits (supported: {MIN_RSA_BITS} to {max} bits)")]
    UnsupportedKeySize {
        /// Size of the key's modulus.
        bits: usize,
        /// Largest size accepted where the error arose.
        max: usize,
    },
    /// An RSA key smaller than the minimum the caller requires (see
    /// [`super::PublicKey::check_rsa_size`]).
    #[error("RSA key of {bits} bits is smaller than the required {min} bits")]
    RsaKeyTooSmall {
        /// Size of the key's modulus.
        bits: usize,
        /// The required minimum.
        min: usize,
    },
    /// The key cannot make signatures of this algorithm.
    #[error("a {key} key cannot sign with {alg}")]
    UnsupportedSignatureAlgorithm {
        /// Key type name.
        key: &'static str,
        /// Requested algorithm.
        alg: SigAlg,
    },
    /// The private key does not match its public half, or signing failed.
    #[error("signing failed: {0}")]
    Signing(&'static str),
    /// An `authorized_keys` line could not be used.
    #[error("line {line}: {source}")]
    AuthorizedKeysLine {
        /// 1-based line number.
        line: usize,
        /// What was wrong with it.
        source: Box<KeyError>,
    },
}

/// Errors verifying a signature (or decoding the key blob to verify with).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The public key blob does not decode.
    #[error("malformed public key blob")]
    MalformedKey,
    /// The signature blob does not decode, or its inner signature has the wrong shape.
    #[error("malformed signature blob")]
    MalformedSignature,
    /// The key is of a type we do not support.
    #[error("unsupported key type {0}")]
    UnsupportedKeyType(String),
    /// An RSA key outside the supported sizes.
    #[error("unsupported RSA key size: {bits} bits (supported: {MIN_RSA_BITS} to {max} bits)")]
    UnsupportedKeySize {
        /// Size of the key's modulus.
        bits: usize,
        /// Largest size accepted.
        max: usize,
    },
    /// An RSA key smaller than the minimum the caller requires (see
    /// [`super::PublicKey::check_rsa_size`]).
    #[error("RSA key of {bits} bits is smaller than the required {min} bits")]
    RsaKeyTooSmall {
        /// Size of the key's modulus.
        bits: usize,
        /// The required minimum.
        min: usize,
    },
    /// A signature algorithm we do not accept (this includes `ssh-rsa`, i.e. SHA-1).
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// The signature (or announced) algorithm does not fit the key type.
    #[error("signature algorithm {signature} does not fit a {key} key")]
    AlgorithmMismatch {
        /// Key type name.
        key: String,
        /// Signature algorithm name.
        signature: String,
    },
    /// The signature blob names another algorithm than the one the peer announced.
    #[error("signature uses {signature} but {expected} was announced")]
    UnexpectedAlgorithm {
        /// What the protocol said.
        expected: SigAlg,
        /// What the blob says.
        signature: SigAlg,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

impl From<VerifyError> for KeyError {
    fn from(err: VerifyError) -> Self {
        match err {
            VerifyError::UnsupportedKeyType(name) => KeyError::UnsupportedKeyType(name),
            VerifyError::UnsupportedKeySize { bits, max } => {
                KeyError::UnsupportedKeySize { bits, max }
            }
            VerifyError::RsaKeyTooSmall { bits, min } => KeyError::RsaKeyTooSmall { bits, min },
            _ => KeyError::InvalidPublicKey("malformed key blob"),
        }
    }
}
