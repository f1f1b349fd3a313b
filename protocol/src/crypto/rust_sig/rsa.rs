//! RSA signing and verification (RFC 8332), through the `rsa` crate directly.
//!
//! ssh-key 0.6.7's own RSA signer cannot be used: it only makes rsa-sha2-512, and it
//! builds the `rsa` key from the primes `[p, p]` instead of `[p, q]`, which the `rsa`
//! crate rejects since 0.9.7 (the lock file has 0.9.10), so every RSA signature fails
//! (RustCrypto/SSH#387, RustCrypto/RSA#463). Its verifier works, for both hashes, but
//! only for keys up to 4096 bits (`rsa::RsaPublicKey::new`).
//!
//! Signing therefore goes through the `rsa` crate directly (a dependency of this
//! crate for that reason), and so does verifying, up to OpenSSH's size limit. The
//! aws-lc-rs provider uses this module for the sizes AWS-LC refuses.

use std::borrow::Cow;

use rand_chacha::rand_core::SeedableRng as _;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Verifier as _};
use rsa::{pkcs1v15, BigUint};
use sha2::{Digest as _, Sha256, Sha512};
use ssh_key::private::RsaKeypair;
use ssh_key::public::RsaPublicKey;
use ssh_key::Mpint;
use zeroize::Zeroizing;

use crate::crypto::Signer;
use crate::hostkey::{KeyError, SigAlg, VerifyError, MAX_RSA_VERIFY_BITS};

fn uint(m: &Mpint) -> Result<BigUint, KeyError> {
    m.as_positive_bytes()
        .map(BigUint::from_bytes_be)
        .ok_or(KeyError::Signing("negative RSA key component"))
}

/// The `rsa` crate's key; `from_components` checks n = pq and de = 1 mod (p-1),
/// (q-1). It zeroizes on drop.
pub(crate) fn private_key(keypair: &RsaKeypair) -> Result<rsa::RsaPrivateKey, KeyError> {
    let private = &keypair.private;
    rsa::RsaPrivateKey::from_components(
        uint(&keypair.public.n)?,
        uint(&keypair.public.e)?,
        uint(&private.d)?,
        vec![uint(&private.p)?, uint(&private.q)?],
    )
    .map_err(|_| KeyError::Signing("invalid RSA private key"))
}

/// Check that the private numbers are consistent (see [`private_key`]).
pub(crate) fn check(keypair: &RsaKeypair) -> Result<(), KeyError> {
    private_key(keypair).map(drop)
}

/// An RSA key prepared once (its CRT values computed) for every signature it makes.
pub(crate) struct RsaSigner {
    key: rsa::RsaPrivateKey,
    /// The private exponent's bytes, for the blinding seed of [`RsaSigner::sign`].
    d: Zeroizing<Vec<u8>>,
}

impl RsaSigner {
    pub(crate) fn new(keypair: &RsaKeypair) -> Result<Self, KeyError> {
        let mut key = private_key(keypair)?;
        key.precompute()
            .map_err(|_| KeyError::Signing("invalid RSA private key"))?;
        Ok(RsaSigner {
            key,
            d: Zeroizing::new(keypair.private.d.as_bytes().to_vec()),
        })
    }
}

impl Signer for RsaSigner {
    fn sign(&self, alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        sign(&self.key, &self.d, alg, data)
    }
}

fn sign(key: &rsa::RsaPrivateKey, d: &[u8], alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, KeyError> {
    let key = key.clone();
    // PKCS#1 v1.5 signatures are deterministic; the RNG only blinds the private key
    // operation against timing attacks. Seeding it from the key and the message
    // keeps this API free of an RNG argument while keeping the blinding factor
    // secret and fresh for every message.
    let mut seed = Zeroizing::new([0u8; 32]);
    let digest = Zeroizing::new(
        Sha512::new()
            .chain_update(b"sshr rsa blinding\0")
            .chain_update(d)
            .chain_update(alg.name())
            .chain_update(data)
            .finalize(),
    );
    seed.copy_from_slice(&digest[..32]);
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
    match alg {
        SigAlg::RsaSha2_256 => pkcs1v15::SigningKey::<Sha256>::new(key)
            .try_sign_with_rng(&mut rng, data)
            .map(|s| s.to_vec()),
        SigAlg::RsaSha2_512 => pkcs1v15::SigningKey::<Sha512>::new(key)
            .try_sign_with_rng(&mut rng, data)
            .map(|s| s.to_vec()),
        _ => unreachable!("only RSA algorithms reach here"),
    }
    .map_err(|_| KeyError::Signing("RSA signature failed"))
}

pub(crate) fn verify(
    key: &RsaPublicKey,
    alg: SigAlg,
    data: &[u8],
    raw: &[u8],
) -> Result<(), VerifyError> {
    let raw = padded_signature(key, raw)?;
    let component = |m: &Mpint| {
        m.as_positive_bytes()
            .map(BigUint::from_bytes_be)
            .ok_or(VerifyError::MalformedKey)
    };
    let public = rsa::RsaPublicKey::new_with_max_size(
        component(&key.n)?,
        component(&key.e)?,
        MAX_RSA_VERIFY_BITS,
    )
    .map_err(|_| VerifyError::MalformedKey)?;
    let signature =
        pkcs1v15::Signature::try_from(&raw[..]).map_err(|_| VerifyError::MalformedSignature)?;
    // The hash is the one named in the signature, checked against the DigestInfo.
    match alg {
        SigAlg::RsaSha2_256 => {
            pkcs1v15::VerifyingKey::<Sha256>::new(public).verify(data, &signature)
        }
        SigAlg::RsaSha2_512 => {
            pkcs1v15::VerifyingKey::<Sha512>::new(public).verify(data, &signature)
        }
        _ => unreachable!("only RSA algorithms reach here"),
    }
    .map_err(|_| VerifyError::BadSignature)
}

/// The modulus's length in bytes, after checking that an RSA signature of `raw.len()`
/// bytes fits it: not empty and no longer than the modulus (it may be shorter, see
/// [`padded_signature`]).
pub(crate) fn checked_modulus_len(key: &RsaPublicKey, raw: &[u8]) -> Result<usize, VerifyError> {
    let modulus_len = key
        .n
        .as_positive_bytes()
        .ok_or(VerifyError::MalformedKey)?
        .len();
    if raw.is_empty() || raw.len() > modulus_len {
        return Err(VerifyError::MalformedSignature);
    }
    Ok(modulus_len)
}

/// Pad an RSA signature to the modulus length like OpenSSH does (some implementations
/// drop leading zero bytes); longer than the modulus is malformed.
pub(crate) fn padded_signature<'a>(
    key: &RsaPublicKey,
    raw: &'a [u8],
) -> Result<Cow<'a, [u8]>, VerifyError> {
    let modulus_len = checked_modulus_len(key, raw)?;
    if raw.len() == modulus_len {
        return Ok(Cow::Borrowed(raw));
    }
    let mut padded = vec![0; modulus_len - raw.len()];
    padded.extend_from_slice(raw);
    Ok(Cow::Owned(padded))
}
