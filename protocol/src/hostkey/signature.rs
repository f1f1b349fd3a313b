//! Making and checking SSH signatures: the signature blob
//! `string alg-name || string signature` (RFC 4253 section 6.6), the policy on which
//! algorithm may sign with which key, and the shape of the inner signature. The math is
//! the crypto provider's ([`crate::crypto::Signatures`]).

use ssh_key::public::KeyData;

use super::public::printable_name;
use super::{KeyError, PrivateKey, PublicKey, SigAlg, VerifyError};
use crate::crypto::CryptoProvider;
use crate::wire::{self, Reader};

/// `string alg-name || string signature` (RFC 4253 section 6.6).
pub(super) fn signature_blob(alg: SigAlg, raw: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(8 + alg.name().len() + raw.len());
    wire::put_string(&mut blob, alg.name().as_bytes());
    wire::put_string(&mut blob, raw);
    blob
}

impl PublicKey {
    /// Verify an SSH signature blob (`string alg-name || string signature`) over `data`
    /// with `provider`'s signatures.
    ///
    /// `expected` (when `Some`) is the algorithm the peer said it used (the host key
    /// algorithm negotiated in kex, or the algorithm named in a publickey userauth
    /// request); the blob's inner name must equal it. `ssh-rsa` (SHA-1) signatures are
    /// refused. Returns the algorithm the signature was made with.
    pub fn verify(
        &self,
        provider: &CryptoProvider,
        expected: Option<SigAlg>,
        data: &[u8],
        signature_blob: &[u8],
    ) -> Result<SigAlg, VerifyError> {
        let malformed = |_| VerifyError::MalformedSignature;
        let mut reader = Reader::new(signature_blob);
        let name = reader.string("signature algorithm").map_err(malformed)?;
        let raw = reader.string("signature").map_err(malformed)?;
        reader.finish().map_err(malformed)?;
        let name = printable_name(name).ok_or(VerifyError::MalformedSignature)?;
        let alg = SigAlg::from_name(&name).ok_or(VerifyError::UnsupportedAlgorithm(name))?;
        if let Some(expected) = expected {
            if !self.accepts(expected) {
                return Err(VerifyError::AlgorithmMismatch {
                    key: self.algorithm_name().to_owned(),
                    signature: expected.name().to_owned(),
                });
            }
            if expected != alg {
                return Err(VerifyError::UnexpectedAlgorithm {
                    expected,
                    signature: alg,
                });
            }
        }
        if !self.accepts(alg) {
            return Err(VerifyError::AlgorithmMismatch {
                key: self.algorithm_name().to_owned(),
                signature: alg.name().to_owned(),
            });
        }
        let key = self.as_ssh_key().key_data();
        check_shape(key, alg, raw)?;
        provider.signatures.verify(key, alg, data, raw)?;
        Ok(alg)
    }
}

/// The inner signature's shape, as [`crate::crypto::Signatures::verify`] expects it.
/// RSA: not empty and no longer than the modulus. Others: what `ssh-key`'s constructor
/// checks, 64 bytes for Ed25519, and for ECDSA exactly `mpint r || mpint s`, minimal
/// encodings, positive, no longer than the curve's field, nothing after them (RFC 5656
/// section 3.1.2).
fn check_shape(key: &KeyData, alg: SigAlg, raw: &[u8]) -> Result<(), VerifyError> {
    match key {
        KeyData::Rsa(key) => {
            crate::crypto::rust_sig::rsa::checked_modulus_len(key, raw)?;
        }
        _ => {
            ssh_key::Signature::new(alg.ssh_key_algorithm(), raw)
                .map_err(|_| VerifyError::MalformedSignature)?;
        }
    }
    Ok(())
}

impl PrivateKey {
    /// Sign `data` with `provider`'s signatures; returns the SSH signature blob
    /// `string alg-name || string signature` (RFC 4253 section 6.6; RFC 8332 for RSA;
    /// RFC 5656 section 3.1.2 for ECDSA, where the inner blob is `mpint r || mpint s`;
    /// RFC 8709 for Ed25519).
    ///
    /// Errors if `alg` is not one of [`PrivateKey::sig_algs`].
    pub fn sign(
        &self,
        provider: &CryptoProvider,
        alg: SigAlg,
        data: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        if !self.sig_algs().contains(&alg) {
            return Err(KeyError::UnsupportedSignatureAlgorithm {
                key: self.public_key().algorithm_name(),
                alg,
            });
        }
        let raw = self.signer(provider)?.sign(alg, data)?;
        Ok(signature_blob(alg, &raw))
    }
}
