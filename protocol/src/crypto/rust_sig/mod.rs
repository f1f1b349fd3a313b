//! The RustCrypto signatures, built in every build (see [`crate::crypto`]): Ed25519 and
//! ECDSA through `ssh-key` (ed25519-dalek, p256, p384, p521), except P-521 signing
//! ([`ecdsa_p521`] says why), and RSA through the `rsa` crate ([`rsa`] says why).

mod ecdsa_p521;
pub(crate) mod rsa;

#[cfg(test)]
pub(crate) use ecdsa_p521::{rfc6979_nonce, sign as p521_sign};

use ssh_key::private::{EcdsaKeypair, EcdsaPrivateKey, KeypairData};
use ssh_key::public::KeyData;

use super::{Signatures, Signer};
use crate::hostkey::{KeyError, SigAlg, VerifyError};

/// The RustCrypto [`Signatures`].
pub(crate) struct RustSignatures;

impl Signatures for RustSignatures {
    fn verify(
        &self,
        key: &KeyData,
        alg: SigAlg,
        data: &[u8],
        raw: &[u8],
    ) -> Result<(), VerifyError> {
        match key {
            KeyData::Rsa(key) => rsa::verify(key, alg, data, raw),
            key => {
                use ed25519_dalek::Verifier as _;
                let signature = ssh_key::Signature::new(alg.ssh_key_algorithm(), raw)
                    .map_err(|_| VerifyError::MalformedSignature)?;
                key.verify(data, &signature)
                    .map_err(|_| VerifyError::BadSignature)
            }
        }
    }

    fn signer(&self, key: &KeypairData) -> Result<Box<dyn Signer>, KeyError> {
        Ok(match key {
            KeypairData::Rsa(keypair) => Box::new(rsa::RsaSigner::new(keypair)?),
            KeypairData::Ecdsa(EcdsaKeypair::NistP521 { private, .. }) => {
                Box::new(P521Signer(private.clone()))
            }
            keypair => Box::new(SshKeySigner(keypair.clone())),
        })
    }
}

/// Ed25519 (RFC 8032) and ECDSA P-256 and P-384 (SHA-256 and SHA-384, RFC 5656 section
/// 6.2.1; RFC 6979 nonces): `ssh-key`'s signers, which already encode ECDSA signatures
/// as minimal `mpint r || mpint s`, as OpenSSH does. The key zeroizes on drop.
struct SshKeySigner(KeypairData);

impl Signer for SshKeySigner {
    fn sign(&self, alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        use ed25519_dalek::Signer as _;
        let signature = self
            .0
            .try_sign(data)
            .map_err(|_| KeyError::Signing("signature primitive failed"))?;
        if signature.algorithm() != alg.ssh_key_algorithm() {
            return Err(KeyError::Signing("unexpected signature algorithm"));
        }
        Ok(signature.as_bytes().to_vec())
    }
}

/// P-521 with RFC 6979 nonces ([`ecdsa_p521`]).
struct P521Signer(EcdsaPrivateKey<66>);

impl Signer for P521Signer {
    fn sign(&self, _alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        ecdsa_p521::sign(&self.0, data)
    }
}
