//! The key types and signature algorithms we support, and the RSA size limits.

use core::fmt;

use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg};

/// Signature algorithms, in our preference order. Never plain `ssh-rsa` (SHA-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigAlg {
    /// `ssh-ed25519` (RFC 8709).
    Ed25519,
    /// `ecdsa-sha2-nistp256` (RFC 5656).
    EcdsaP256,
    /// `ecdsa-sha2-nistp384` (RFC 5656).
    EcdsaP384,
    /// `ecdsa-sha2-nistp521` (RFC 5656).
    EcdsaP521,
    /// `rsa-sha2-512` (RFC 8332).
    RsaSha2_512,
    /// `rsa-sha2-256` (RFC 8332).
    RsaSha2_256,
}

impl SigAlg {
    /// Every supported signature algorithm, in preference order.
    pub const ALL: [SigAlg; 6] = [
        SigAlg::Ed25519,
        SigAlg::EcdsaP256,
        SigAlg::EcdsaP384,
        SigAlg::EcdsaP521,
        SigAlg::RsaSha2_512,
        SigAlg::RsaSha2_256,
    ];

    /// The algorithm's SSH name.
    pub fn name(self) -> &'static str {
        match self {
            SigAlg::Ed25519 => "ssh-ed25519",
            SigAlg::EcdsaP256 => "ecdsa-sha2-nistp256",
            SigAlg::EcdsaP384 => "ecdsa-sha2-nistp384",
            SigAlg::EcdsaP521 => "ecdsa-sha2-nistp521",
            SigAlg::RsaSha2_512 => "rsa-sha2-512",
            SigAlg::RsaSha2_256 => "rsa-sha2-256",
        }
    }

    /// Parse an SSH algorithm name. `ssh-rsa` (SHA-1) and anything unknown give `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        SigAlg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// Name of the key type this algorithm signs with: the same as [`SigAlg::name`]
    /// except `ssh-rsa` for both RSA algorithms.
    pub fn key_type_name(self) -> &'static str {
        self.key_kind().name()
    }

    pub(super) fn key_kind(self) -> KeyKind {
        match self {
            SigAlg::Ed25519 => KeyKind::Ed25519,
            SigAlg::EcdsaP256 => KeyKind::EcdsaP256,
            SigAlg::EcdsaP384 => KeyKind::EcdsaP384,
            SigAlg::EcdsaP521 => KeyKind::EcdsaP521,
            SigAlg::RsaSha2_512 | SigAlg::RsaSha2_256 => KeyKind::Rsa,
        }
    }

    pub(crate) fn ssh_key_algorithm(self) -> Algorithm {
        match self {
            SigAlg::Ed25519 => Algorithm::Ed25519,
            SigAlg::EcdsaP256 => Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            SigAlg::EcdsaP384 => Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            SigAlg::EcdsaP521 => Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            SigAlg::RsaSha2_512 => Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            SigAlg::RsaSha2_256 => Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        }
    }
}

impl fmt::Display for SigAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Smallest RSA modulus we ever accept, in bits: OpenSSH's floor
/// (`SSH_RSA_MINIMUM_MODULUS_SIZE`), below which no key parses. It is also the default
/// of the minimum a caller may require on top of it ([`super::PublicKey::check_rsa_size`]),
/// as OpenSSH's `RequiredRSASize` defaults to it and may only raise it.
pub const MIN_RSA_BITS: usize = 1024;

/// Largest RSA modulus we verify with, in bits: OpenSSH's limit (`SSHBUF_MAX_BIGNUM`).
pub const MAX_RSA_VERIFY_BITS: usize = 16384;

/// The algorithms an RSA private key signs with, in preference order.
pub(super) const RSA_SIGN_ALGS: &[SigAlg] = &[SigAlg::RsaSha2_512, SigAlg::RsaSha2_256];

/// Largest RSA modulus we sign with, in bits (the `rsa` crate's limit).
pub const MAX_RSA_SIGN_BITS: usize = 4096;

/// Supported key types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyKind {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Rsa,
}

impl KeyKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "ssh-ed25519",
            KeyKind::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyKind::EcdsaP384 => "ecdsa-sha2-nistp384",
            KeyKind::EcdsaP521 => "ecdsa-sha2-nistp521",
            KeyKind::Rsa => "ssh-rsa",
        }
    }

    pub(super) fn from_name(name: &[u8]) -> Option<Self> {
        [
            KeyKind::Ed25519,
            KeyKind::EcdsaP256,
            KeyKind::EcdsaP384,
            KeyKind::EcdsaP521,
            KeyKind::Rsa,
        ]
        .into_iter()
        .find(|kind| kind.name().as_bytes() == name)
    }

    pub(super) fn of(key: &KeyData) -> Option<Self> {
        match key {
            KeyData::Ed25519(_) => Some(KeyKind::Ed25519),
            KeyData::Ecdsa(k) if k.curve() == EcdsaCurve::NistP256 => Some(KeyKind::EcdsaP256),
            KeyData::Ecdsa(k) if k.curve() == EcdsaCurve::NistP384 => Some(KeyKind::EcdsaP384),
            KeyData::Ecdsa(k) if k.curve() == EcdsaCurve::NistP521 => Some(KeyKind::EcdsaP521),
            KeyData::Rsa(_) => Some(KeyKind::Rsa),
            _ => None,
        }
    }

    /// Signature algorithms a key of this kind verifies.
    pub(super) fn verify_algs(self) -> &'static [SigAlg] {
        match self {
            KeyKind::Ed25519 => &[SigAlg::Ed25519],
            KeyKind::EcdsaP256 => &[SigAlg::EcdsaP256],
            KeyKind::EcdsaP384 => &[SigAlg::EcdsaP384],
            KeyKind::EcdsaP521 => &[SigAlg::EcdsaP521],
            KeyKind::Rsa => &[SigAlg::RsaSha2_512, SigAlg::RsaSha2_256],
        }
    }

    /// Signature algorithms a private key of this kind produces.
    pub(super) fn sign_algs(self) -> &'static [SigAlg] {
        match self {
            KeyKind::Rsa => RSA_SIGN_ALGS,
            other => other.verify_algs(),
        }
    }
}
