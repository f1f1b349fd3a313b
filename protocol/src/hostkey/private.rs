//! [`PrivateKey`]: a key we sign with, checked when it is loaded.

use core::fmt;
use std::sync::{Arc, Mutex};

use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::public::KeyData;

use super::public::mpint_bits;
use super::{KeyError, PublicKey, SigAlg, MAX_RSA_SIGN_BITS};
use crate::crypto::{self, CryptoProvider, Signer};

/// A private key we sign with: a server host key, or the proxy's upstream login key.
///
/// Clones share the signers that providers prepared for the key (see
/// [`crate::crypto::Signatures::signer`]).
#[derive(Clone)]
pub struct PrivateKey {
    inner: ssh_key::PrivateKey,
    public: PublicKey,
    signers: Arc<Signers>,
}

/// The key's prepared signer for each provider that has signed with it, by the
/// provider's address: at most one per provider built in.
type Signers = Mutex<Vec<(usize, Arc<dyn Signer>)>>;

impl PrivateKey {
    /// Wrap an `ssh_key` private key, with the checks of [`PrivateKey::from_openssh`].
    pub fn from_ssh_key(key: ssh_key::PrivateKey) -> Result<Self, KeyError> {
        if key.is_encrypted() {
            return Err(KeyError::Encrypted);
        }
        let public = PublicKey::from_ssh_key(key.public_key())?;
        if let KeyData::Rsa(rsa) = key.public_key().key_data() {
            let bits = mpint_bits(&rsa.n).unwrap_or(0);
            if bits > MAX_RSA_SIGN_BITS {
                return Err(KeyError::UnsupportedKeySize {
                    bits,
                    max: MAX_RSA_SIGN_BITS,
                });
            }
        }
        let key = Self {
            inner: key,
            public,
            signers: Arc::default(),
        };
        key.self_test()?;
        Ok(key)
    }

    /// Check that the private key is consistent and matches its public half: `ssh-key`
    /// checks that a file's public key matches the one in its private section, but not
    /// that the private numbers belong to it, and a mismatch would otherwise only show
    /// as peers rejecting every handshake. Ed25519 and ECDSA keys make and verify one
    /// signature with the default provider; RSA keys (slow to sign with) have n = pq and
    /// de = 1 checked, and are prepared for the default provider.
    fn self_test(&self) -> Result<(), KeyError> {
        let provider = crypto::default_provider();
        if let KeypairData::Rsa(keypair) = self.inner.key_data() {
            crypto::rust_sig::rsa::check(keypair)?;
            return self.signer(provider).map(drop);
        }
        let Some(&alg) = self.sig_algs().first() else {
            return Ok(());
        };
        let data = b"sshr private key self-test";
        let signature = self.sign(provider, alg, data)?;
        self.public
            .verify(provider, Some(alg), data, &signature)
            .map(|_| ())
            .map_err(|_| KeyError::Signing("the private key does not match its public key"))
    }

    /// A new random Ed25519 key.
    pub fn generate_ed25519(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        Self::from_ed25519_keypair(Ed25519Keypair::random(rng))
    }

    /// The Ed25519 key with this 32-byte seed (the RFC 8032 private key).
    pub fn from_ed25519_seed(seed: &[u8; 32]) -> Self {
        Self::from_ed25519_keypair(Ed25519Keypair::from_seed(seed))
    }

    fn from_ed25519_keypair(keypair: Ed25519Keypair) -> Self {
        let inner = ssh_key::PrivateKey::new(KeypairData::Ed25519(keypair), "")
            .expect("an unencrypted Ed25519 key is a valid private key");
        let public = PublicKey::from_ssh_key(inner.public_key())
            .expect("an Ed25519 key derived from its seed is valid");
        Self {
            inner,
            public,
            signers: Arc::default(),
        }
    }

    /// The key as `provider` signs with it, prepared on first use and kept.
    pub(super) fn signer(&self, provider: &CryptoProvider) -> Result<Arc<dyn Signer>, KeyError> {
        let id = provider as *const CryptoProvider as usize;
        let find = |signers: &[(usize, Arc<dyn Signer>)]| {
            signers
                .iter()
                .find(|(p, _)| *p == id)
                .map(|(_, s)| s.clone())
        };
        if let Some(signer) = find(&self.signers.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(signer);
        }
        // Prepared outside the lock (an RSA key takes milliseconds); a racing thread's
        // signer for the same provider is as good, and the first one stored is kept.
        let prepared: Arc<dyn Signer> = provider.signatures.signer(self.inner.key_data())?.into();
        let mut signers = self.signers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(signer) = find(&signers) {
            return Ok(signer);
        }
        signers.push((id, prepared.clone()));
        Ok(prepared)
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    /// The public half, borrowed.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The comment stored with the key (often `user@host`).
    pub fn comment(&self) -> &str {
        self.inner.comment()
    }

    /// Signature algorithms this key can produce, in preference order
    /// (RSA: `rsa-sha2-512`, `rsa-sha2-256`).
    pub fn sig_algs(&self) -> &'static [SigAlg] {
        self.public.kind().sign_algs()
    }

    /// The wrapped `ssh_key` private key.
    pub fn as_ssh_key(&self) -> &ssh_key::PrivateKey {
        &self.inner
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey({} {})",
            self.public.algorithm_name(),
            self.public.fingerprint()
        )
    }
}
