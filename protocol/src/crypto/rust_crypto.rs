//! The pure-Rust provider: the RustCrypto crates the project started with (aes-gcm,
//! chacha20 + poly1305, x25519-dalek, p256/p384/p521, sha2) and ml-kem.
//!
//! Key hygiene: raw keys live in zeroize-on-drop fields, and so do per-packet copies made
//! here (ChaCha20 block 0 and the Poly1305 key taken from it). The cipher crates are built
//! with their `zeroize` features and wipe their key schedules and states on drop; the
//! cipher objects are also held in `Wipe` (`wipe.rs`). What cannot be wiped from here:
//! copies those crates make internally on the stack or in registers while processing a
//! packet (e.g. the Poly1305 state, which `compute_unpadded` consumes).

use aes::{Aes128Enc, Aes256Enc};
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::AeadInOut;
use aes_gcm::{AeadCore, AesGcm, KeyInit};
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20Legacy;
use ml_kem::kem::{Decapsulate, Encapsulate};
use ml_kem::{EncodedSizeUser, KemCore, MlKem768 as MlKem768Params};
use poly1305::Poly1305;
use rand_core::CryptoRngCore;
use sha2::Digest as _;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::shared::SNTRUP761;
use super::{
    CryptoError, CryptoProvider, DecapsulationKey, Digest, EphemeralKey, HashAlg, Hasher, Kem,
    KeyAgreement, PacketAead, Secret,
};
use crate::cipher::OpenError;
use crate::wipe::Wipe;

/// The RustCrypto provider.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    name: "rustcrypto",
    hash,
    aes_gcm,
    chacha20_poly1305,
    x25519: &X25519,
    nistp256: &NistP256,
    nistp384: &NistP384,
    nistp521: &NistP521,
    mlkem768: &MlKem768,
    sntrup761: &SNTRUP761,
    signatures: &super::rust_sig::RustSignatures,
};

enum Hash {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

fn hash(alg: HashAlg) -> Box<dyn Hasher> {
    Box::new(match alg {
        HashAlg::Sha256 => Hash::Sha256(sha2::Sha256::new()),
        HashAlg::Sha384 => Hash::Sha384(sha2::Sha384::new()),
        HashAlg::Sha512 => Hash::Sha512(sha2::Sha512::new()),
    })
}

impl Hasher for Hash {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hash::Sha256(h) => h.update(data),
            Hash::Sha384(h) => h.update(data),
            Hash::Sha512(h) => h.update(data),
        }
    }

    fn finish(self: Box<Self>) -> Digest {
        match *self {
            Hash::Sha256(h) => Digest::new(&h.finalize()),
            Hash::Sha384(h) => Digest::new(&h.finalize()),
            Hash::Sha512(h) => Digest::new(&h.finalize()),
        }
    }
}

fn aes_gcm(key: &[u8], iv: &[u8]) -> Box<dyn PacketAead> {
    match key.len() {
        16 => Box::new(Gcm::<Aes128Enc>::new(key, iv)),
        32 => Box::new(Gcm::<Aes256Enc>::new(key, iv)),
        n => panic!("no AES-GCM with a {n}-byte key"),
    }
}

fn chacha20_poly1305(key: &[u8]) -> Box<dyn PacketAead> {
    Box::new(ChaChaPoly::new(key))
}

impl PacketAead for ChaChaPoly {
    fn decrypt_length(&self, seq: u32, head: [u8; 4]) -> [u8; 4] {
        let mut len = head;
        self.crypt_length(seq, &mut len);
        len
    }

    fn open(&mut self, seq: u32, packet: &mut [u8]) -> Result<(), OpenError> {
        let (data, tag) = packet.split_at_mut(packet.len() - 16);
        ChaChaPoly::open(self, seq, data, tag)
    }

    fn seal(&mut self, seq: u32, packet: &mut [u8]) {
        let (data, tag) = packet.split_at_mut(packet.len() - 16);
        ChaChaPoly::seal(self, seq, data, tag)
    }
}

impl<A: Send> PacketAead for Gcm<A>
where
    AesGcm<A, U12>: KeyInit + AeadInOut + AeadCore<NonceSize = U12, TagSize = U16>,
{
    fn decrypt_length(&self, _seq: u32, head: [u8; 4]) -> [u8; 4] {
        head
    }

    fn open(&mut self, _seq: u32, packet: &mut [u8]) -> Result<(), OpenError> {
        let (data, tag) = packet.split_at_mut(packet.len() - 16);
        Gcm::open(self, data, tag)
    }

    fn seal(&mut self, _seq: u32, packet: &mut [u8]) {
        let (data, tag) = packet.split_at_mut(packet.len() - 16);
        Gcm::seal(self, data, tag)
    }
}

/// chacha20-poly1305@openssh.com. Keeps the raw keys; the ChaCha20 instances are per packet
/// (the nonce is the sequence number).
#[derive(Zeroize, ZeroizeOnDrop)]
struct ChaChaPoly {
    /// K_2: payload encryption and the Poly1305 key (key bytes 0..32; OpenSSH's `main_ctx`).
    main: [u8; 32],
    /// K_1: packet length encryption (key bytes 32..64; OpenSSH's `header_ctx`).
    header: [u8; 32],
}

impl ChaChaPoly {
    fn new(key: &[u8]) -> Self {
        let mut c = ChaChaPoly {
            main: [0; 32],
            header: [0; 32],
        };
        c.main.copy_from_slice(&key[..32]);
        c.header.copy_from_slice(&key[32..64]);
        c
    }

    fn instance(key: &[u8; 32], seq: u32) -> Wipe<ChaCha20Legacy> {
        let nonce = u64::from(seq).to_be_bytes();
        Wipe::new(ChaCha20Legacy::new(key.into(), &nonce.into()))
    }

    /// XOR the 4 length bytes with K_1's keystream (block 0); encrypts and decrypts.
    fn crypt_length(&self, seq: u32, len: &mut [u8]) {
        Self::instance(&self.header, seq).apply_keystream(len);
    }

    /// K_2's instance positioned at block 1, and the Poly1305 tag of `data` under the key
    /// taken from block 0.
    fn main_and_tag(&self, seq: u32, data: &[u8]) -> (Wipe<ChaCha20Legacy>, poly1305::Tag) {
        let mut main = Self::instance(&self.main, seq);
        let mut block0 = [0u8; 64];
        main.apply_keystream(&mut block0);
        let mut poly_key = poly1305::Key::try_from(&block0[..32]).expect("32-byte Poly1305 key");
        let tag = Poly1305::new(&poly_key).compute_unpadded(data);
        block0.zeroize();
        poly_key.as_mut_slice().zeroize();
        (main, tag)
    }

    fn seal(&self, seq: u32, data: &mut [u8], tag: &mut [u8]) {
        let (len, body) = data.split_at_mut(4);
        self.crypt_length(seq, len);
        let mut main = Self::instance(&self.main, seq);
        let mut block0 = [0u8; 64];
        main.apply_keystream(&mut block0);
        main.apply_keystream(body);
        let mut poly_key = poly1305::Key::try_from(&block0[..32]).expect("32-byte Poly1305 key");
        tag.copy_from_slice(&Poly1305::new(&poly_key).compute_unpadded(data));
        block0.zeroize();
        poly_key.as_mut_slice().zeroize();
    }

    fn open(&self, seq: u32, data: &mut [u8], tag: &[u8]) -> Result<(), OpenError> {
        let (mut main, expected) = self.main_and_tag(seq, data);
        if !bool::from(expected.as_slice().ct_eq(tag)) {
            return Err(OpenError::BadTag);
        }
        let (len, body) = data.split_at_mut(4);
        self.crypt_length(seq, len);
        main.apply_keystream(body);
        Ok(())
    }
}

/// aes*-gcm@openssh.com.
struct Gcm<A> {
    aead: Wipe<AesGcm<A, U12>>,
    /// The first 4 bytes of the IV, constant for the life of the keys.
    fixed: [u8; 4],
    /// The last 8 bytes of the IV, big-endian, incremented after every packet.
    invocation: u64,
}

impl<A> Gcm<A>
where
    AesGcm<A, U12>: KeyInit + AeadInOut + AeadCore<NonceSize = U12, TagSize = U16>,
{
    fn new(key: &[u8], iv: &[u8]) -> Self {
        let aead = AesGcm::<A, U12>::new_from_slice(key).expect("GCM key length");
        let mut fixed = [0u8; 4];
        fixed.copy_from_slice(&iv[..4]);
        let mut invocation = [0u8; 8];
        invocation.copy_from_slice(&iv[4..12]);
        Gcm {
            aead: Wipe::new(aead),
            fixed,
            invocation: u64::from_be_bytes(invocation),
        }
    }

    /// This packet's nonce; advances the invocation counter (mod 2^64, RFC 5647 7.1).
    fn next_nonce(&mut self) -> aes_gcm::Nonce<U12> {
        let mut nonce = aes_gcm::Nonce::<U12>::default();
        nonce[..4].copy_from_slice(&self.fixed);
        nonce[4..].copy_from_slice(&self.invocation.to_be_bytes());
        self.invocation = self.invocation.wrapping_add(1);
        nonce
    }

    fn seal(&mut self, data: &mut [u8], tag: &mut [u8]) {
        let nonce = self.next_nonce();
        let (len, body) = data.split_at_mut(4);
        let t = self
            .aead
            .encrypt_inout_detached(&nonce, len, body.into())
            .expect("an SSH packet is far below the GCM length limit");
        tag.copy_from_slice(&t);
    }

    fn open(&mut self, data: &mut [u8], tag: &[u8]) -> Result<(), OpenError> {
        let nonce = self.next_nonce();
        let (len, body) = data.split_at_mut(4);
        self.aead
            .decrypt_inout_detached(&nonce, len, body.into(), &tag_array(tag)?)
            .map_err(|_| OpenError::BadTag)
    }
}

/// The 16-byte GCM tag from the packet's tag slice (its length is fixed by `tag_len`).
fn tag_array(tag: &[u8]) -> Result<aes_gcm::Tag<U16>, OpenError> {
    aes_gcm::Tag::<U16>::try_from(tag).map_err(|_| OpenError::BadTag)
}

impl<A> Drop for Gcm<A> {
    fn drop(&mut self) {
        self.fixed.zeroize();
        self.invocation.zeroize();
    }
}

/// X25519 (RFC 7748) with x25519-dalek.
struct X25519;

struct X25519Key {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl KeyAgreement for X25519 {
    fn generate(&self, rng: &mut dyn CryptoRngCore) -> Result<Box<dyn EphemeralKey>, CryptoError> {
        let secret = x25519_dalek::StaticSecret::random_from_rng(rng);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(Box::new(X25519Key { secret, public }))
    }
}

impl EphemeralKey for X25519Key {
    fn public(&self) -> &[u8] {
        &self.public
    }

    /// RFC 8731 3: a 32-byte peer value and a non-zero result.
    fn agree(self: Box<Self>, peer: &[u8]) -> Result<Secret, CryptoError> {
        let peer: [u8; 32] = peer.try_into().map_err(|_| CryptoError::BadPeerValue)?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        if !shared.was_contributory() {
            return Err(CryptoError::BadPeerValue);
        }
        Ok(Zeroizing::new(shared.as_bytes().to_vec()))
    }
}

/// ECDH on a NIST curve (RFC 5656 4): uncompressed SEC1 points, the x coordinate as the
/// shared secret.
macro_rules! nist_curve {
    ($name:ident, $key:ident, $curve:ident) => {
        struct $name;

        struct $key {
            secret: $curve::ecdh::EphemeralSecret,
            public: Vec<u8>,
        }

        impl KeyAgreement for $name {
            fn generate(
                &self,
                rng: &mut dyn CryptoRngCore,
            ) -> Result<Box<dyn EphemeralKey>, CryptoError> {
                let secret = $curve::ecdh::EphemeralSecret::random(&mut &mut *rng);
                let public = $curve::EncodedPoint::from(secret.public_key())
                    .as_bytes()
                    .to_vec();
                Ok(Box::new($key { secret, public }))
            }
        }

        impl EphemeralKey for $key {
            fn public(&self) -> &[u8] {
                &self.public
            }

            fn agree(self: Box<Self>, peer: &[u8]) -> Result<Secret, CryptoError> {
                // Uncompressed points only, as OpenSSH sends and accepts.
                if peer.first() != Some(&0x04) {
                    return Err(CryptoError::BadPeerValue);
                }
                let peer = $curve::PublicKey::from_sec1_bytes(peer)
                    .map_err(|_| CryptoError::BadPeerValue)?;
                let shared = self.secret.diffie_hellman(&peer);
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
        }
    };
}

nist_curve!(NistP256, NistP256Key, p256);
nist_curve!(NistP384, NistP384Key, p384);
nist_curve!(NistP521, NistP521Key, p521);

/// ML-KEM-768 (FIPS 203) with the ml-kem crate.
struct MlKem768;

type MlKemDk = <MlKem768Params as KemCore>::DecapsulationKey;
type MlKemEk = <MlKem768Params as KemCore>::EncapsulationKey;

struct MlKemDecapsulation {
    key: Box<MlKemDk>,
    public: Vec<u8>,
}

/// FIPS 203 7.2's encapsulation key check: every 12-bit coefficient of the encoded vector
/// (the first 1152 bytes) is below q = 3329.
fn mlkem768_key_is_valid(key: &[u8]) -> bool {
    key.len() == 1184
        && key[..1152].chunks_exact(3).all(|b| {
            let lo = u16::from(b[0]) | (u16::from(b[1] & 0x0f) << 8);
            let hi = u16::from(b[1] >> 4) | (u16::from(b[2]) << 4);
            lo < 3329 && hi < 3329
        })
}

impl Kem for MlKem768 {
    fn generate(
        &self,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Box<dyn DecapsulationKey>, CryptoError> {
        let (dk, ek) = MlKem768Params::generate(&mut &mut *rng);
        Ok(Box::new(MlKemDecapsulation {
            key: Box::new(dk),
            public: ek.as_bytes().to_vec(),
        }))
    }

    fn encapsulate(
        &self,
        encapsulation_key: &[u8],
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(Vec<u8>, Secret), CryptoError> {
        if !mlkem768_key_is_valid(encapsulation_key) {
            return Err(CryptoError::BadPeerValue);
        }
        let encoded = encapsulation_key
            .try_into()
            .map_err(|_| CryptoError::BadPeerValue)?;
        let key = MlKemEk::from_bytes(encoded);
        let (ciphertext, shared) = key
            .encapsulate(&mut &mut *rng)
            .map_err(|_| CryptoError::Library)?;
        Ok((ciphertext.to_vec(), Zeroizing::new(shared.to_vec())))
    }
}

impl DecapsulationKey for MlKemDecapsulation {
    fn encapsulation_key(&self) -> &[u8] {
        &self.public
    }

    fn decapsulate(self: Box<Self>, ciphertext: &[u8]) -> Result<Secret, CryptoError> {
        let ciphertext = ciphertext
            .try_into()
            .map_err(|_| CryptoError::BadPeerValue)?;
        let shared = self
            .key
            .decapsulate(ciphertext)
            .map_err(|_| CryptoError::BadPeerValue)?;
        Ok(Zeroizing::new(shared.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_vectors::{field, Replay};
    use sha2::Sha256;

    const MLKEM: &str = include_str!("../../tests/data/kex/mlkem768-acvp.txt");

    /// NIST ACVP ML-KEM-768 vectors (protocol/tests/data/kex/mlkem768-acvp.txt) through
    /// our `Kem` and `DecapsulationKey`: the randomness FIPS 203 draws (d and z for key
    /// generation, m for encapsulation) comes from the vector.
    #[test]
    fn mlkem768_acvp_known_answers() {
        // ML-KEM.KeyGen_internal(d, z): our key's encapsulation key is ek.
        let seed = [field(MLKEM, "keygen.d"), field(MLKEM, "keygen.z")].concat();
        let key = MlKem768.generate(&mut Replay::new(seed)).unwrap();
        assert_eq!(
            Sha256::digest(key.encapsulation_key()).to_vec(),
            field(MLKEM, "keygen.ek_sha256")
        );
        // ML-KEM.Encaps_internal(ek, m) = (K, c).
        for case in ["encap0", "encap1"] {
            let ek = field(MLKEM, &format!("{case}.ek"));
            let m = field(MLKEM, &format!("{case}.m"));
            let (c, k) = MlKem768.encapsulate(&ek, &mut Replay::new(m)).unwrap();
            assert_eq!(
                hex::encode(c),
                hex::encode(field(MLKEM, &format!("{case}.c")))
            );
            assert_eq!(
                hex::encode(&k),
                hex::encode(field(MLKEM, &format!("{case}.k")))
            );
        }
        // ML-KEM.Decaps_internal(dk, c): a valid ciphertext, and a modified one (implicit
        // rejection gives the vector's pseudo-random K).
        let dk = field(MLKEM, "decap.dk");
        let key = || {
            Box::new(MlKemDecapsulation {
                key: Box::new(MlKemDk::from_bytes(dk[..].try_into().unwrap())),
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
            key().decapsulate(&[0; 1087]).unwrap_err(),
            CryptoError::BadPeerValue
        );
    }
}
