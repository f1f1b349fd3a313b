//! The aws-lc-rs provider's signatures: AWS-LC's Ed25519, ECDSA on P-256, P-384 and
//! P-521, and RSA PKCS#1 v1.5. RSA keys outside AWS-LC's sizes (signing under 2048 bits,
//! verifying over 8192) and RSA public exponents other than 3 and 65537 go to the
//! RustCrypto signatures ([`super::rust_sig`]), which take every size OpenSSH takes.
//!
//! ECDSA signatures travel in SSH as `mpint r || mpint s` (RFC 5656 section 3.1.2);
//! AWS-LC's "fixed" format is r and s, each left-padded to the field's length.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig};
use ssh_key::private::{EcdsaKeypair, KeypairData};
use ssh_key::public::{EcdsaPublicKey, KeyData, RsaPublicKey};

use super::rust_sig::{self, RustSignatures};
use super::{Signatures, Signer};
use crate::hostkey::{KeyError, SigAlg, VerifyError};
use crate::wire::{self, Reader};

/// The aws-lc-rs [`Signatures`].
pub(crate) struct AwsLcSignatures;

/// RSA moduli AWS-LC verifies with, in bits.
const RSA_VERIFY_BITS: core::ops::RangeInclusive<usize> = 1024..=8192;
/// RSA moduli AWS-LC signs with, in bits.
const RSA_SIGN_BITS: core::ops::RangeInclusive<usize> = 2048..=8192;

impl Signatures for AwsLcSignatures {
    fn verify(
        &self,
        key: &KeyData,
        alg: SigAlg,
        data: &[u8],
        raw: &[u8],
    ) -> Result<(), VerifyError> {
        let checked = match key {
            KeyData::Ed25519(ed) => {
                sig::UnparsedPublicKey::new(&sig::ED25519, &ed.0).verify(data, raw)
            }
            KeyData::Ecdsa(ec) => {
                let (alg, field) = ecdsa_verify_alg(ec);
                let fixed = fixed_from_mpints(raw, field).ok_or(VerifyError::MalformedSignature)?;
                sig::UnparsedPublicKey::new(alg, ec.as_sec1_bytes()).verify(data, &fixed)
            }
            KeyData::Rsa(rsa) => match rsa_verify_parts(rsa) {
                Some((n, e)) => {
                    let params = match alg {
                        SigAlg::RsaSha2_256 => &sig::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                        _ => &sig::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
                    };
                    let raw = rust_sig::rsa::padded_signature(rsa, raw)?;
                    sig::RsaPublicKeyComponents { n, e }.verify(params, data, &raw)
                }
                None => return RustSignatures.verify(key, alg, data, raw),
            },
            other => return RustSignatures.verify(other, alg, data, raw),
        };
        checked.map_err(|_| VerifyError::BadSignature)
    }

    fn signer(&self, key: &KeypairData) -> Result<Box<dyn Signer>, KeyError> {
        let rejected = |_| KeyError::Signing("the crypto library rejected the private key");
        Ok(match key {
            KeypairData::Ed25519(keypair) => Box::new(Ed25519Signer(
                sig::Ed25519KeyPair::from_seed_and_public_key(
                    keypair.private.as_ref(),
                    &keypair.public.0,
                )
                .map_err(rejected)?,
            )),
            KeypairData::Ecdsa(keypair) => {
                let (alg, field) = match keypair {
                    EcdsaKeypair::NistP256 { .. } => (&sig::ECDSA_P256_SHA256_FIXED_SIGNING, 32),
                    EcdsaKeypair::NistP384 { .. } => (&sig::ECDSA_P384_SHA384_FIXED_SIGNING, 48),
                    EcdsaKeypair::NistP521 { .. } => (&sig::ECDSA_P521_SHA512_FIXED_SIGNING, 66),
                };
                let key = sig::EcdsaKeyPair::from_private_key_and_public_key(
                    alg,
                    keypair.private_key_bytes(),
                    keypair.public_key_bytes(),
                )
                .map_err(rejected)?;
                Box::new(EcdsaSigner { key, field })
            }
            KeypairData::Rsa(keypair) => {
                let bits = keypair.public.n.as_positive_bytes().map_or(0, bits);
                if !RSA_SIGN_BITS.contains(&bits) || rsa_verify_parts(&keypair.public).is_none() {
                    return RustSignatures.signer(key);
                }
                use rsa::pkcs1::EncodeRsaPrivateKey as _;
                let der = rust_sig::rsa::private_key(keypair)?
                    .to_pkcs1_der()
                    .map_err(|_| KeyError::Signing("RSA private key encoding failed"))?;
                let key = sig::RsaKeyPair::from_der(der.as_bytes()).map_err(rejected)?;
                Box::new(RsaSigner(key))
            }
            other => return RustSignatures.signer(other),
        })
    }
}

/// The verification algorithm for an ECDSA key, and its field's length in bytes.
fn ecdsa_verify_alg(key: &EcdsaPublicKey) -> (&'static sig::EcdsaVerificationAlgorithm, usize) {
    match key {
        EcdsaPublicKey::NistP256(_) => (&sig::ECDSA_P256_SHA256_FIXED, 32),
        EcdsaPublicKey::NistP384(_) => (&sig::ECDSA_P384_SHA384_FIXED, 48),
        EcdsaPublicKey::NistP521(_) => (&sig::ECDSA_P521_SHA512_FIXED, 66),
    }
}

/// The modulus and exponent when AWS-LC verifies with this key: 1024 to 8192 bits and an
/// exponent of 3 or 65537 (what keys use; AWS-LC's limits on others differ from
/// OpenSSH's).
fn rsa_verify_parts(key: &RsaPublicKey) -> Option<(&[u8], &[u8])> {
    let n = key.n.as_positive_bytes()?;
    let e = key.e.as_positive_bytes()?;
    (RSA_VERIFY_BITS.contains(&bits(n)) && matches!(e, [3] | [1, 0, 1])).then_some((n, e))
}

/// The size in bits of a big-endian number without leading zero bytes.
fn bits(n: &[u8]) -> usize {
    n.first()
        .map_or(0, |first| n.len() * 8 - first.leading_zeros() as usize)
}

/// `mpint r || mpint s` (its shape already checked, see [`Signatures::verify`]) as r and
/// s left-padded to `field` bytes each.
fn fixed_from_mpints(raw: &[u8], field: usize) -> Option<Vec<u8>> {
    let mut reader = Reader::new(raw);
    let mut fixed = vec![0; 2 * field];
    for half in fixed.chunks_mut(field) {
        let mpint = reader.mpint("ecdsa signature").ok()?;
        let digits = mpint.strip_prefix(&[0]).unwrap_or(mpint);
        let at = field.checked_sub(digits.len())?;
        half[at..].copy_from_slice(digits);
    }
    reader.finish().ok()?;
    Some(fixed)
}

struct Ed25519Signer(sig::Ed25519KeyPair);

impl Signer for Ed25519Signer {
    fn sign(&self, _alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.0.sign(data).as_ref().to_vec())
    }
}

struct EcdsaSigner {
    key: sig::EcdsaKeyPair,
    field: usize,
}

impl Signer for EcdsaSigner {
    fn sign(&self, _alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        // AWS-LC draws the nonce from its own generator (the argument is unused).
        let fixed = self
            .key
            .sign(&SystemRandom::new(), data)
            .map_err(|_| KeyError::Signing("ECDSA signature failed"))?;
        let (r, s) = fixed.as_ref().split_at(self.field);
        let mut raw = Vec::with_capacity(2 * self.field + 10);
        wire::put_mpint_unsigned(&mut raw, r);
        wire::put_mpint_unsigned(&mut raw, s);
        Ok(raw)
    }
}

struct RsaSigner(sig::RsaKeyPair);

impl Signer for RsaSigner {
    fn sign(&self, alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let padding = match alg {
            SigAlg::RsaSha2_256 => &sig::RSA_PKCS1_SHA256,
            _ => &sig::RSA_PKCS1_SHA512,
        };
        let mut out = vec![0; self.0.public_modulus_len()];
        self.0
            .sign(padding, &SystemRandom::new(), data, &mut out)
            .map_err(|_| KeyError::Signing("RSA signature failed"))?;
        Ok(out)
    }
}
