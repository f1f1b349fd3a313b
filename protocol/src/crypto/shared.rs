//! Primitives every provider takes from the same pure-Rust crate, because AWS-LC has
//! none: sntrup761 (NTRU Prime, the `sntrup761` crate).

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::{CryptoError, DecapsulationKey, Kem, Secret};

/// Streamlined NTRU Prime 761 (as OpenSSH's `sntrup761x25519-sha512` uses it).
pub(crate) struct Sntrup761;

pub(crate) static SNTRUP761: Sntrup761 = Sntrup761;

/// 32 bytes from the caller's generator: the crate seeds its own ChaCha20 with them (it
/// is built on another `rand_core` generation than ours).
fn seed(rng: &mut dyn CryptoRngCore) -> Zeroizing<[u8; 32]> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut seed[..]);
    seed
}

struct SntrupDecapsulation {
    public: sntrup761::EncapsulationKey,
    secret: sntrup761::DecapsulationKey,
}

impl Kem for Sntrup761 {
    fn generate(
        &self,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Box<dyn DecapsulationKey>, CryptoError> {
        let (public, secret) = sntrup761::generate_key_from_seed(*seed(rng));
        Ok(Box::new(SntrupDecapsulation { public, secret }))
    }

    fn encapsulate(
        &self,
        encapsulation_key: &[u8],
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(Vec<u8>, Secret), CryptoError> {
        let key = sntrup761::EncapsulationKey::try_from(encapsulation_key)
            .map_err(|_| CryptoError::BadPeerValue)?;
        let (ciphertext, shared) = key.encapsulate_deterministic(*seed(rng));
        Ok((
            ciphertext.as_ref().to_vec(),
            Zeroizing::new(shared.as_ref().to_vec()),
        ))
    }
}

impl DecapsulationKey for SntrupDecapsulation {
    fn encapsulation_key(&self) -> &[u8] {
        self.public.as_ref()
    }

    fn decapsulate(self: Box<Self>, ciphertext: &[u8]) -> Result<Secret, CryptoError> {
        let ciphertext =
            sntrup761::Ciphertext::try_from(ciphertext).map_err(|_| CryptoError::BadPeerValue)?;
        let shared = self.secret.decapsulate(&ciphertext);
        Ok(Zeroizing::new(shared.as_ref().to_vec()))
    }
}
