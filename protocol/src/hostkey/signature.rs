//! Making and checking SSH signatures: the signature blob
//! `string alg-name || string signature` (RFC 4253 section 6.6) and the policy on which
//! algorithm may sign with which key.
//!
//! Ed25519 and ECDSA go through `ssh-key`, except P-521 signing
//! ([`super::ecdsa_p521`]); RSA through [`super::rsa_alg`].

use ssh_key::private::{EcdsaKeypair, KeypairData};
use ssh_key::public::KeyData;

use super::public::printable_name;
use super::{ecdsa_p521, rsa_alg, KeyError, PrivateKey, PublicKey, SigAlg, VerifyError};
use crate::wire::{self, Reader};

/// `string alg-name || string signature` (RFC 4253 section 6.6).
pub(super) fn signature_blob(alg: SigAlg, raw: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(8 + alg.name().len() + raw.len());
    wire::put_string(&mut blob, alg.name().as_bytes());
    wire::put_string(&mut blob, raw);
    blob
}

impl PublicKey {
    /// Verify an SSH signature blob (`string alg-name || string signature`) over `data`.
    ///
    /// `expected` (when `Some`) is the algorithm the peer said it used (the host key
    /// algorithm negotiated in kex, or the algorithm named in a publickey userauth
    /// request); the blob's inner name must equal it. `ssh-rsa` (SHA-1) signatures are
    /// refused. Returns the algorithm the signature was made with.
    pub fn verify(
        &self,
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
        match self.as_ssh_key().key_data() {
            KeyData::Rsa(key) => rsa_alg::verify(key, alg, data, raw)?,
            key => {
                use ed25519_dalek::Verifier as _;
                // The constructor checks the inner shape: 64 bytes for Ed25519; for ECDSA
                // exactly `mpint r || mpint s`, minimal encodings, positive, no longer
                // than the curve's field, nothing after them (RFC 5656 section 3.1.2).
                let signature = ssh_key::Signature::new(alg.ssh_key_algorithm(), raw)
                    .map_err(|_| VerifyError::MalformedSignature)?;
                key.verify(data, &signature)
                    .map_err(|_| VerifyError::BadSignature)?;
            }
        }
        Ok(alg)
    }
}

impl PrivateKey {
    /// Sign `data`; returns the SSH signature blob `string alg-name || string signature`
    /// (RFC 4253 section 6.6; RFC 8332 for RSA; RFC 5656 section 3.1.2 for ECDSA, where
    /// the inner blob is `mpint r || mpint s`; RFC 8709 for Ed25519).
    ///
    /// Errors if `alg` is not one of [`PrivateKey::sig_algs`].
    pub fn sign(&self, alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        if !self.sig_algs().contains(&alg) {
            return Err(KeyError::UnsupportedSignatureAlgorithm {
                key: self.public_key().algorithm_name(),
                alg,
            });
        }
        match self.as_ssh_key().key_data() {
            KeypairData::Rsa(keypair) => rsa_alg::sign(keypair, alg, data),
            KeypairData::Ecdsa(EcdsaKeypair::NistP521 { private, .. }) => {
                ecdsa_p521::sign(private, data)
            }
            keypair => {
                // Ed25519 (RFC 8032) and ECDSA P-256 and P-384 (SHA-256 and SHA-384,
                // RFC 5656 section 6.2.1; RFC 6979 nonces) signing is ssh-key's; it
                // already encodes ECDSA signatures as minimal `mpint r || mpint s`, as
                // OpenSSH does.
                use ed25519_dalek::Signer as _;
                let signature = keypair
                    .try_sign(data)
                    .map_err(|_| KeyError::Signing("signature primitive failed"))?;
                if signature.algorithm() != alg.ssh_key_algorithm() {
                    return Err(KeyError::Signing("unexpected signature algorithm"));
                }
                Ok(signature_blob(alg, signature.as_bytes()))
            }
        }
    }
}
