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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_vectors::field;
    use rand_core::SeedableRng;

    const VECTORS: &str = include_str!("../../tests/data/kex/sntrup761-nist-kat.txt");

    /// The NTRU Prime submission's KAT, counts 0 and 1, through our decapsulation (the
    /// crate's key generation and encapsulation draw from ChaCha20 seeded by us, not from
    /// the submission's AES-CTR DRBG, so only decapsulation has a published answer; the
    /// other two meet OpenSSH in protocol/tests/interop_openssh.rs and the replayed
    /// transcript of protocol/tests/openssh_transcripts.rs).
    #[test]
    fn nist_kat_decapsulation() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([4; 32]);
        for count in ["kat0", "kat1"] {
            let secret =
                sntrup761::DecapsulationKey::try_from(&field(VECTORS, &format!("{count}.sk"))[..])
                    .unwrap();
            let public = sntrup761::EncapsulationKey::from(&secret);
            let key = || {
                Box::new(SntrupDecapsulation {
                    public: public.clone(),
                    secret: secret.clone(),
                })
            };
            let ct = field(VECTORS, &format!("{count}.ct"));
            let ss = key().decapsulate(&ct).unwrap();
            assert_eq!(
                hex::encode(&ss),
                hex::encode(field(VECTORS, &format!("{count}.ss")))
            );
            // Our encapsulation to the submission's key decapsulates with its secret key.
            let (ct2, ss2) = SNTRUP761
                .encapsulate(key().encapsulation_key(), &mut rng)
                .unwrap();
            assert_ne!(ct2, ct);
            assert_eq!(key().decapsulate(&ct2).unwrap(), ss2);
            // A ciphertext of the wrong length is refused; a changed one gives another key
            // (implicit rejection).
            assert_eq!(
                key().decapsulate(&ct[1..]).unwrap_err(),
                CryptoError::BadPeerValue
            );
            let mut changed = ct.clone();
            changed[0] ^= 1;
            assert_ne!(key().decapsulate(&changed).unwrap(), ss);
        }
    }
}
