//! The crypto provider: every primitive the transport takes from a crypto library, behind
//! a small interface chosen at build time (in the manner of rustls's `CryptoProvider`).
//!
//! * `aws-lc-rs` (the default, `crypto/aws_lc.rs`, signatures in `crypto/aws_lc_sig.rs`):
//!   AWS-LC's stitched AES-GCM and its chacha20-poly1305@openssh.com, X25519, ECDH on the
//!   NIST curves, ML-KEM-768, and Ed25519, ECDSA and RSA signatures.
//! * `rustcrypto` (`crypto/rust_crypto.rs`, signatures in `crypto/rust_sig/`): the
//!   pure-Rust RustCrypto crates.
//!
//! The SSH constructions built on these primitives (the hybrid key exchanges, the
//! exchange hash, key derivation, packet framing) are written once, in [`crate::kex`] and
//! [`crate::cipher`], and are the same for every provider. What every provider shares,
//! whichever is chosen: sntrup761 (the `sntrup761` crate; AWS-LC has none), the
//! finite-field Diffie-Hellman groups ([`dh`], on crypto-bigint; aws-lc-rs does not expose
//! AWS-LC's) and the legacy CTR ciphers and HMACs. The RustCrypto signatures are built
//! in every build: the aws-lc-rs provider hands them the RSA keys AWS-LC refuses (signing
//! with keys under 2048 bits, verifying with keys over 8192).
//!
//! [`default_provider`] is aws-lc-rs when that feature is built, else RustCrypto. Tests
//! run against every provider built in ([`providers`]), so a build with both features
//! checks each against the other as well as against real peers.

use core::fmt;

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::cipher::OpenError;
use crate::hostkey::{KeyError, SigAlg, VerifyError};

#[cfg(feature = "aws-lc-rs")]
pub mod aws_lc;
#[cfg(feature = "aws-lc-rs")]
mod aws_lc_sig;
pub mod dh;
#[cfg(feature = "rustcrypto")]
pub mod rust_crypto;
pub(crate) mod rust_sig;
pub(crate) mod shared;

#[cfg(not(any(feature = "aws-lc-rs", feature = "rustcrypto")))]
compile_error!("sshr-protocol needs a crypto provider: enable feature `aws-lc-rs` or `rustcrypto`");

/// A secret a key agreement or KEM produced, wiped on drop.
pub type Secret = Zeroizing<Vec<u8>>;

/// A primitive failed: a peer's value was rejected (not on the curve, wrong length, a
/// low-order point) or the library reported an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("the peer's public value is invalid")]
    BadPeerValue,
    #[error("the crypto library failed")]
    Library,
}

/// The hash functions of the key exchanges (exchange hash and key derivation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }
}

/// A hash output of up to 64 bytes, without allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    bytes: [u8; 64],
    len: u8,
}

impl Digest {
    /// # Panics
    ///
    /// If `bytes` is longer than 64 bytes.
    pub fn new(bytes: &[u8]) -> Self {
        let mut d = Digest {
            bytes: [0; 64],
            len: bytes.len() as u8,
        };
        d.bytes[..bytes.len()].copy_from_slice(bytes);
        d
    }
}

impl zeroize::Zeroize for Digest {
    fn zeroize(&mut self) {
        self.bytes.zeroize();
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_ref() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An incremental hash.
pub trait Hasher {
    fn update(&mut self, data: &[u8]);
    fn finish(self: Box<Self>) -> Digest;
}

/// One direction of an AEAD packet protection, keyed (`aes*-gcm@openssh.com`,
/// `chacha20-poly1305@openssh.com`). The packet is `uint32 length || body || 16-byte tag`,
/// in place; the constructions are in [`crate::cipher`]'s module documentation.
pub trait PacketAead: Send {
    /// The plaintext length field of a packet whose first 4 bytes are `head` (only
    /// chacha20-poly1305 encrypts it). Changes no state.
    fn decrypt_length(&self, seq: u32, head: [u8; 4]) -> [u8; 4];
    /// Verify the tag and decrypt in place. On error the content is unspecified.
    fn open(&mut self, seq: u32, packet: &mut [u8]) -> Result<(), OpenError>;
    /// Encrypt in place and write the tag into the last 16 bytes.
    fn seal(&mut self, seq: u32, packet: &mut [u8]);
}

/// An elliptic-curve Diffie-Hellman group (X25519, NIST P-256/384/521).
pub trait KeyAgreement: Send + Sync {
    /// A fresh ephemeral key pair. Providers that have their own DRBG (aws-lc-rs) use it
    /// and ignore `rng`.
    fn generate(&self, rng: &mut dyn CryptoRngCore) -> Result<Box<dyn EphemeralKey>, CryptoError>;
}

/// An ephemeral private key of a [`KeyAgreement`], used once.
pub trait EphemeralKey: Send {
    /// Our public value as sent on the wire (32 bytes for X25519, the uncompressed SEC1
    /// point for the NIST curves).
    fn public(&self) -> &[u8];
    /// The raw shared secret (X25519's 32 bytes, the x coordinate for NIST curves). Fails
    /// for a malformed peer value and, for X25519, an all-zero result.
    fn agree(self: Box<Self>, peer: &[u8]) -> Result<Secret, CryptoError>;
}

/// A key encapsulation mechanism (ML-KEM-768, sntrup761).
pub trait Kem: Send + Sync {
    /// A fresh decapsulation key (client side).
    fn generate(
        &self,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Box<dyn DecapsulationKey>, CryptoError>;
    /// Encapsulate to the peer's encapsulation key (server side): (ciphertext, secret).
    fn encapsulate(
        &self,
        encapsulation_key: &[u8],
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(Vec<u8>, Secret), CryptoError>;
}

/// The client's half of a [`Kem`], used once.
pub trait DecapsulationKey: Send {
    fn encapsulation_key(&self) -> &[u8];
    fn decapsulate(self: Box<Self>, ciphertext: &[u8]) -> Result<Secret, CryptoError>;
}

/// Host and user key signatures: Ed25519 (RFC 8032), ECDSA on the NIST curves (SHA-256,
/// -384 and -512 by curve, RFC 5656) and RSA PKCS#1 v1.5 with SHA-256 or SHA-512
/// (RFC 8332). The SSH framing (the signature blob, ECDSA's `mpint r || mpint s`) and the
/// policy (which algorithm fits which key) are [`crate::hostkey`]'s; a provider sees keys
/// as `ssh-key` holds them and signatures as SSH carries them inside the blob.
pub trait Signatures: Send + Sync {
    /// Check `raw`, the inner `string signature` of a signature blob, made by `key` with
    /// `alg` over `data`. The caller has checked that `alg` fits the key type and that
    /// `raw` has the algorithm's shape (64 bytes for Ed25519; minimal, positive
    /// `mpint r || mpint s` no longer than the curve's field for ECDSA; not empty and no
    /// longer than the modulus for RSA, which may be shorter by leading zero bytes).
    fn verify(
        &self,
        key: &ssh_key::public::KeyData,
        alg: SigAlg,
        data: &[u8],
        raw: &[u8],
    ) -> Result<(), VerifyError>;

    /// Prepare `key` for signing: what the library derives from a private key (the
    /// public point, RSA's CRT values) is derived here once. Fails for a key whose
    /// numbers are inconsistent.
    fn signer(&self, key: &ssh_key::private::KeypairData) -> Result<Box<dyn Signer>, KeyError>;
}

/// A private key prepared by [`Signatures::signer`].
pub trait Signer: Send + Sync {
    /// The inner `string signature` of a signature blob over `data` by `alg`, which the
    /// caller has checked the key can make: 64 bytes for Ed25519, minimal
    /// `mpint r || mpint s` for ECDSA, the modulus's length for RSA.
    fn sign(&self, alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// The primitives one crypto library provides.
pub struct CryptoProvider {
    /// For logs and benchmarks: "aws-lc-rs" or "rustcrypto".
    pub name: &'static str,
    pub hash: fn(HashAlg) -> Box<dyn Hasher>,
    /// `aes128-gcm@openssh.com` or `aes256-gcm@openssh.com` by key length (16 or 32);
    /// `iv` is the 12-byte initial nonce of RFC 5647.
    pub aes_gcm: fn(key: &[u8], iv: &[u8]) -> Box<dyn PacketAead>,
    /// `chacha20-poly1305@openssh.com` with its 64-byte key.
    pub chacha20_poly1305: fn(key: &[u8]) -> Box<dyn PacketAead>,
    pub x25519: &'static dyn KeyAgreement,
    pub nistp256: &'static dyn KeyAgreement,
    pub nistp384: &'static dyn KeyAgreement,
    pub nistp521: &'static dyn KeyAgreement,
    pub mlkem768: &'static dyn Kem,
    pub sntrup761: &'static dyn Kem,
    pub signatures: &'static dyn Signatures,
}

impl CryptoProvider {
    /// Hash the concatenation of `parts`.
    pub fn digest(&self, alg: HashAlg, parts: &[&[u8]]) -> Digest {
        let mut h = (self.hash)(alg);
        for p in parts {
            h.update(p);
        }
        h.finish()
    }
}

impl fmt::Debug for CryptoProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// The provider this build uses: aws-lc-rs when built, else RustCrypto.
pub fn default_provider() -> &'static CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    {
        &aws_lc::PROVIDER
    }
    #[cfg(not(feature = "aws-lc-rs"))]
    {
        &rust_crypto::PROVIDER
    }
}

/// Every provider built in, the default first (for tests and benchmarks).
pub fn providers() -> Vec<&'static CryptoProvider> {
    [
        #[cfg(feature = "aws-lc-rs")]
        &aws_lc::PROVIDER,
        #[cfg(feature = "rustcrypto")]
        &rust_crypto::PROVIDER,
    ]
    .to_vec()
}

/// Helpers of the known-answer tests of the providers.
#[cfg(test)]
pub(crate) mod test_vectors {
    #[cfg(feature = "rustcrypto")]
    pub(crate) use replay::Replay;

    /// The hex value of `key` in a file of `key value` lines (protocol/tests/data/kex/).
    pub(crate) fn field(text: &str, key: &str) -> Vec<u8> {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {key} in the vectors"));
        hex::decode(value).unwrap()
    }

    #[cfg(feature = "rustcrypto")]
    mod replay {
        use rand_core::{CryptoRng, RngCore};

        /// A "generator" that hands out fixed bytes, in order, to make a primitive that draws
        /// its randomness from the caller run on a known answer's inputs. Panics when asked
        /// for more than it holds, and checks at drop that everything was taken.
        pub(crate) struct Replay {
            bytes: Vec<u8>,
            at: usize,
        }

        impl Replay {
            pub(crate) fn new(bytes: Vec<u8>) -> Self {
                Replay { bytes, at: 0 }
            }
        }

        impl Drop for Replay {
            fn drop(&mut self) {
                if !std::thread::panicking() {
                    assert_eq!(self.at, self.bytes.len(), "not every input byte was drawn");
                }
            }
        }

        impl RngCore for Replay {
            fn next_u32(&mut self) -> u32 {
                let mut b = [0; 4];
                self.fill_bytes(&mut b);
                u32::from_le_bytes(b)
            }

            fn next_u64(&mut self) -> u64 {
                let mut b = [0; 8];
                self.fill_bytes(&mut b);
                u64::from_le_bytes(b)
            }

            fn fill_bytes(&mut self, dest: &mut [u8]) {
                let end = self.at + dest.len();
                assert!(
                    end <= self.bytes.len(),
                    "asked for more than the vector holds"
                );
                dest.copy_from_slice(&self.bytes[self.at..end]);
                self.at = end;
            }

            fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
                self.fill_bytes(dest);
                Ok(())
            }
        }

        impl CryptoRng for Replay {}
    }
}
