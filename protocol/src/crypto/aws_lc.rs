//! The aws-lc-rs provider (the default): AWS-LC's AES-GCM (stitched AES and GHASH, VAES
//! where the CPU has it), its chacha20-poly1305@openssh.com, X25519, ECDH P-256/384/521
//! and ML-KEM-768 (FIPS 203).
//!
//! AWS-LC draws ephemeral keys from its own DRBG (seeded by the operating system), so the
//! `rng` arguments of the key agreement and KEM traits are unused here.

use aws_lc_rs::aead::{self, chacha20_poly1305_openssh as openssh, Aad, LessSafeKey, Nonce};
use aws_lc_rs::{agreement, digest, kem};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, Zeroizing};

use super::shared::SNTRUP761;
use super::{
    CryptoError, CryptoProvider, DecapsulationKey, Digest, EphemeralKey, HashAlg, Hasher, Kem,
    KeyAgreement, PacketAead, Secret,
};
use crate::cipher::OpenError;

/// The aws-lc-rs provider.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    name: "aws-lc-rs",
    hash,
    aes_gcm,
    chacha20_poly1305,
    x25519: &Ecdh(&agreement::X25519),
    nistp256: &Ecdh(&agreement::ECDH_P256),
    nistp384: &Ecdh(&agreement::ECDH_P384),
    nistp521: &Ecdh(&agreement::ECDH_P521),
    mlkem768: &MlKem768,
    sntrup761: &SNTRUP761,
    signatures: &super::aws_lc_sig::AwsLcSignatures,
};

struct Hash(digest::Context);

fn hash(alg: HashAlg) -> Box<dyn Hasher> {
    let alg = match alg {
        HashAlg::Sha256 => &digest::SHA256,
        HashAlg::Sha384 => &digest::SHA384,
        HashAlg::Sha512 => &digest::SHA512,
    };
    Box::new(Hash(digest::Context::new(alg)))
}

impl Hasher for Hash {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finish(self: Box<Self>) -> Digest {
        Digest::new(self.0.finish().as_ref())
    }
}

/// aes*-gcm@openssh.com (RFC 5647): the length is the AAD, the nonce the 4-byte fixed IV
/// part and an 8-byte counter incremented after every packet.
struct Gcm {
    key: LessSafeKey,
    fixed: [u8; 4],
    invocation: u64,
}

fn aes_gcm(key: &[u8], iv: &[u8]) -> Box<dyn PacketAead> {
    let alg = match key.len() {
        16 => &aead::AES_128_GCM,
        32 => &aead::AES_256_GCM,
        n => panic!("no AES-GCM with a {n}-byte key"),
    };
    let unbound = aead::UnboundKey::new(alg, key).expect("AES-GCM key length");
    let mut fixed = [0u8; 4];
    fixed.copy_from_slice(&iv[..4]);
    let mut invocation = [0u8; 8];
    invocation.copy_from_slice(&iv[4..12]);
    Box::new(Gcm {
        key: LessSafeKey::new(unbound),
        fixed,
        invocation: u64::from_be_bytes(invocation),
    })
}

impl Gcm {
    fn next_nonce(&mut self) -> Nonce {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.fixed);
        nonce[4..].copy_from_slice(&self.invocation.to_be_bytes());
        self.invocation = self.invocation.wrapping_add(1);
        Nonce::assume_unique_for_key(nonce)
    }
}

impl PacketAead for Gcm {
    fn decrypt_length(&self, _seq: u32, head: [u8; 4]) -> [u8; 4] {
        head
    }

    fn open(&mut self, _seq: u32, packet: &mut [u8]) -> Result<(), OpenError> {
        let nonce = self.next_nonce();
        let (len, body_and_tag) = packet.split_at_mut(4);
        self.key
            .open_in_place(nonce, Aad::from(&*len), body_and_tag)
            .map(|_| ())
            .map_err(|_| OpenError::BadTag)
    }

    fn seal(&mut self, _seq: u32, packet: &mut [u8]) {
        let nonce = self.next_nonce();
        let end = packet.len() - 16;
        let (data, tag_out) = packet.split_at_mut(end);
        let (len, body) = data.split_at_mut(4);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&*len), body)
            .expect("an SSH packet is far below the GCM length limit");
        tag_out.copy_from_slice(tag.as_ref());
    }
}

impl Drop for Gcm {
    fn drop(&mut self) {
        self.fixed.zeroize();
        self.invocation.zeroize();
    }
}

/// chacha20-poly1305@openssh.com (OpenSSH `PROTOCOL.chacha20poly1305`): AWS-LC's
/// implementation of exactly that construction. Both keys are made, as the trait serves
/// either direction; AWS-LC wipes them on drop.
struct ChaChaPoly {
    seal: openssh::SealingKey,
    open: openssh::OpeningKey,
}

fn chacha20_poly1305(key: &[u8]) -> Box<dyn PacketAead> {
    let mut material = Zeroizing::new([0u8; openssh::KEY_LEN]);
    material.copy_from_slice(key);
    Box::new(ChaChaPoly {
        seal: openssh::SealingKey::new(&material),
        open: openssh::OpeningKey::new(&material),
    })
}

impl PacketAead for ChaChaPoly {
    fn decrypt_length(&self, seq: u32, head: [u8; 4]) -> [u8; 4] {
        self.open.decrypt_packet_length(seq, head)
    }

    fn open(&mut self, seq: u32, packet: &mut [u8]) -> Result<(), OpenError> {
        let end = packet.len() - openssh::TAG_LEN;
        let (data, tag) = packet.split_at_mut(end);
        let tag: &[u8; openssh::TAG_LEN] = (&*tag).try_into().map_err(|_| OpenError::BadTag)?;
        self.open
            .open_in_place(seq, data, tag)
            .map_err(|_| OpenError::BadTag)?;
        // AWS-LC leaves the length field encrypted; the framing wants it plain.
        let len = self
            .open
            .decrypt_packet_length(seq, [data[0], data[1], data[2], data[3]]);
        data[..4].copy_from_slice(&len);
        Ok(())
    }

    fn seal(&mut self, seq: u32, packet: &mut [u8]) {
        let end = packet.len() - openssh::TAG_LEN;
        let (data, tag) = packet.split_at_mut(end);
        let tag: &mut [u8; openssh::TAG_LEN] = tag.try_into().expect("16-byte tag space");
        self.seal.seal_in_place(seq, data, tag);
    }
}

/// X25519 or ECDH on a NIST curve.
struct Ecdh(&'static agreement::Algorithm);

struct EcdhKey {
    private: agreement::PrivateKey,
    public: agreement::PublicKey,
}

impl KeyAgreement for Ecdh {
    fn generate(&self, _rng: &mut dyn CryptoRngCore) -> Result<Box<dyn EphemeralKey>, CryptoError> {
        let private = agreement::PrivateKey::generate(self.0).map_err(|_| CryptoError::Library)?;
        let public = private
            .compute_public_key()
            .map_err(|_| CryptoError::Library)?;
        Ok(Box::new(EcdhKey { private, public }))
    }
}

impl EphemeralKey for EcdhKey {
    fn public(&self) -> &[u8] {
        self.public.as_ref()
    }

    fn agree(self: Box<Self>, peer: &[u8]) -> Result<Secret, CryptoError> {
        let alg = self.private.algorithm();
        // Peer values are checked by AWS-LC: X25519 must be 32 bytes and give a non-zero
        // result (RFC 8731 3), NIST points must be uncompressed and on the curve
        // (RFC 5656 4, SEC1 3.2.2.1).
        if alg == &agreement::X25519 && peer.len() != 32 {
            return Err(CryptoError::BadPeerValue);
        }
        if alg != &agreement::X25519 && peer.first() != Some(&0x04) {
            return Err(CryptoError::BadPeerValue);
        }
        let secret = agreement::agree(
            &self.private,
            agreement::UnparsedPublicKey::new(alg, peer),
            CryptoError::BadPeerValue,
            |shared| Ok(Zeroizing::new(shared.to_vec())),
        )?;
        if secret.iter().all(|b| *b == 0) {
            return Err(CryptoError::BadPeerValue);
        }
        Ok(secret)
    }
}

/// ML-KEM-768 (FIPS 203).
struct MlKem768;

struct MlKemDecapsulation {
    key: kem::DecapsulationKey,
    public: Vec<u8>,
}

impl Kem for MlKem768 {
    fn generate(
        &self,
        _rng: &mut dyn CryptoRngCore,
    ) -> Result<Box<dyn DecapsulationKey>, CryptoError> {
        let key =
            kem::DecapsulationKey::generate(&kem::ML_KEM_768).map_err(|_| CryptoError::Library)?;
        let public = key
            .encapsulation_key()
            .and_then(|k| k.key_bytes().map(|b| b.as_ref().to_vec()))
            .map_err(|_| CryptoError::Library)?;
        Ok(Box::new(MlKemDecapsulation { key, public }))
    }

    fn encapsulate(
        &self,
        encapsulation_key: &[u8],
        _rng: &mut dyn CryptoRngCore,
    ) -> Result<(Vec<u8>, Secret), CryptoError> {
        // `new` applies FIPS 203's encapsulation key check (7.2: the modulus check).
        let key = kem::EncapsulationKey::new(&kem::ML_KEM_768, encapsulation_key)
            .map_err(|_| CryptoError::BadPeerValue)?;
        let (ciphertext, shared) = key.encapsulate().map_err(|_| CryptoError::Library)?;
        Ok((
            ciphertext.as_ref().to_vec(),
            Zeroizing::new(shared.as_ref().to_vec()),
        ))
    }
}

impl DecapsulationKey for MlKemDecapsulation {
    fn encapsulation_key(&self) -> &[u8] {
        &self.public
    }

    fn decapsulate(self: Box<Self>, ciphertext: &[u8]) -> Result<Secret, CryptoError> {
        if ciphertext.len() != 1088 {
            return Err(CryptoError::BadPeerValue);
        }
        let shared = self
            .key
            .decapsulate(kem::Ciphertext::from(ciphertext))
            .map_err(|_| CryptoError::BadPeerValue)?;
        Ok(Zeroizing::new(shared.as_ref().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_vectors::field;

    const MLKEM: &str = include_str!("../../tests/data/kex/mlkem768-acvp.txt");

    /// NIST ACVP ML-KEM-768 decapsulation (protocol/tests/data/kex/mlkem768-acvp.txt)
    /// through our `DecapsulationKey`, with the vector's dk loaded into AWS-LC. aws-lc-rs
    /// takes no caller randomness, so key generation and encapsulation have no fixed
    /// inputs here: an encapsulation to the vector's key must decapsulate with its dk.
    #[test]
    fn mlkem768_acvp_decapsulation() {
        let dk = field(MLKEM, "decap.dk");
        let key = || {
            Box::new(MlKemDecapsulation {
                key: kem::DecapsulationKey::new(&kem::ML_KEM_768, &dk).unwrap(),
                public: Vec::new(),
            })
        };
        for case in ["valid", "modified"] {
            let c = field(MLKEM, &format!("decap.{case}.c"));
            let k = key().decapsulate(&c).unwrap();
            assert_eq!(
                hex::encode(&k),
                hex::encode(field(MLKEM, &format!("decap.{case}.k")))
            );
        }
        assert_eq!(
            key().decapsulate(&[0; 1089]).unwrap_err(),
            CryptoError::BadPeerValue
        );
        // The encapsulation key inside FIPS 203's dk (bytes 1152..2336).
        let ek = &dk[1152..1152 + 1184];
        let mut rng = rand_core::OsRng;
        let (c, k) = MlKem768.encapsulate(ek, &mut rng).unwrap();
        assert_eq!(key().decapsulate(&c).unwrap(), k);
    }
}
