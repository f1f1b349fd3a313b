//! The key exchange methods: names, their hash, and the SSH constructions on top of the
//! crypto provider's primitives.
//!
//! Every method here is a single round trip, SSH_MSG_KEX_ECDH_INIT (30) with the client's
//! value and SSH_MSG_KEX_ECDH_REPLY (31) with the server's (RFC 5656 4; the same numbers
//! carry KEXDH_INIT/REPLY of RFC 4253 8 and the hybrid methods' INIT/REPLY). Both values
//! travel as SSH strings (an mpint has the same framing), and the exchange hash takes them
//! as sent. What differs is how the shared secret K is made and encoded:
//!
//! * ECDH (curve25519-sha256, RFC 8731; ecdh-sha2-nistp*, RFC 5656): K = the raw shared
//!   secret as an mpint.
//! * Hybrid post-quantum (mlkem768x25519-sha256, draft-ietf-sshm-mlkem-hybrid-kex;
//!   sntrup761x25519-sha512, draft-josefsson-ntruprime-ssh): the client sends its KEM
//!   encapsulation key || X25519 public key, the server the KEM ciphertext || its X25519
//!   public key, and K = HASH(kem secret || X25519 secret) as an SSH string.

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::crypto::{
    CryptoError, CryptoProvider, DecapsulationKey, EphemeralKey, HashAlg, Kem, KeyAgreement, Secret,
};
use crate::error::{Error, PeerMisbehaved};
use crate::wire;

/// Key exchange methods we implement, in OpenSSH 10's default order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KexAlg {
    MlKem768X25519Sha256,
    Sntrup761X25519Sha512,
    /// The name OpenSSH 8.5 to 9.8 used for the same method.
    Sntrup761X25519Sha512OpenSsh,
    Curve25519Sha256,
    /// The pre-RFC name of the same method (libssh, older OpenSSH).
    Curve25519Sha256Libssh,
    EcdhNistp256,
    EcdhNistp384,
    EcdhNistp521,
}

/// How a method makes its shared secret.
#[derive(Clone, Copy)]
enum Construction {
    Ecdh(fn(&CryptoProvider) -> &'static dyn KeyAgreement),
    Hybrid(fn(&CryptoProvider) -> &'static dyn Kem),
}

impl KexAlg {
    /// Every method, in our default preference order (OpenSSH 10's).
    pub const ALL: [KexAlg; 8] = [
        KexAlg::MlKem768X25519Sha256,
        KexAlg::Sntrup761X25519Sha512,
        KexAlg::Sntrup761X25519Sha512OpenSsh,
        KexAlg::Curve25519Sha256,
        KexAlg::Curve25519Sha256Libssh,
        KexAlg::EcdhNistp256,
        KexAlg::EcdhNistp384,
        KexAlg::EcdhNistp521,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KexAlg::MlKem768X25519Sha256 => "mlkem768x25519-sha256",
            KexAlg::Sntrup761X25519Sha512 => "sntrup761x25519-sha512",
            KexAlg::Sntrup761X25519Sha512OpenSsh => "sntrup761x25519-sha512@openssh.com",
            KexAlg::Curve25519Sha256 => "curve25519-sha256",
            KexAlg::Curve25519Sha256Libssh => "curve25519-sha256@libssh.org",
            KexAlg::EcdhNistp256 => "ecdh-sha2-nistp256",
            KexAlg::EcdhNistp384 => "ecdh-sha2-nistp384",
            KexAlg::EcdhNistp521 => "ecdh-sha2-nistp521",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The hash of the exchange hash and the key derivation.
    pub fn hash(self) -> HashAlg {
        match self {
            KexAlg::MlKem768X25519Sha256
            | KexAlg::Curve25519Sha256
            | KexAlg::Curve25519Sha256Libssh
            | KexAlg::EcdhNistp256 => HashAlg::Sha256,
            KexAlg::EcdhNistp384 => HashAlg::Sha384,
            KexAlg::Sntrup761X25519Sha512
            | KexAlg::Sntrup761X25519Sha512OpenSsh
            | KexAlg::EcdhNistp521 => HashAlg::Sha512,
        }
    }

    /// Whether the method resists a quantum computer (OpenSSH 10.1+ warns when a
    /// connection negotiates one that does not).
    pub fn is_post_quantum(self) -> bool {
        matches!(
            self,
            KexAlg::MlKem768X25519Sha256
                | KexAlg::Sntrup761X25519Sha512
                | KexAlg::Sntrup761X25519Sha512OpenSsh
        )
    }

    fn construction(self) -> Construction {
        match self {
            KexAlg::MlKem768X25519Sha256 => Construction::Hybrid(|p| p.mlkem768),
            KexAlg::Sntrup761X25519Sha512 | KexAlg::Sntrup761X25519Sha512OpenSsh => {
                Construction::Hybrid(|p| p.sntrup761)
            }
            KexAlg::Curve25519Sha256 | KexAlg::Curve25519Sha256Libssh => {
                Construction::Ecdh(|p| p.x25519)
            }
            KexAlg::EcdhNistp256 => Construction::Ecdh(|p| p.nistp256),
            KexAlg::EcdhNistp384 => Construction::Ecdh(|p| p.nistp384),
            KexAlg::EcdhNistp521 => Construction::Ecdh(|p| p.nistp521),
        }
    }
}

fn bad_value(e: CryptoError) -> Error {
    match e {
        CryptoError::BadPeerValue => Error::Peer(PeerMisbehaved::BadKexValue),
        CryptoError::Library => {
            Error::Local("the crypto library failed in the key exchange".into())
        }
    }
}

/// K as an mpint (RFC 4253 8, RFC 5656 4).
fn mpint_secret(raw: &[u8]) -> Secret {
    let mut k = Zeroizing::new(Vec::with_capacity(raw.len() + 5));
    wire::put_mpint_unsigned(&mut k, raw);
    k
}

/// K = HASH(kem secret || X25519 secret) as a string (the hybrid methods).
fn hybrid_secret(provider: &CryptoProvider, alg: KexAlg, kem: &[u8], ecdh: &[u8]) -> Secret {
    let mut digest = provider.digest(alg.hash(), &[kem, ecdh]);
    let mut k = Zeroizing::new(Vec::with_capacity(4 + 64));
    wire::put_string(&mut k, digest.as_ref());
    zeroize::Zeroize::zeroize(&mut digest);
    k
}

/// The client's half of a key exchange, between its INIT and the server's REPLY.
pub struct ClientKex {
    alg: KexAlg,
    /// Q_C: what goes in the INIT message (the content of its string).
    public: Vec<u8>,
    state: ClientState,
}

enum ClientState {
    Ecdh(Box<dyn EphemeralKey>),
    Hybrid {
        kem: Box<dyn DecapsulationKey>,
        x25519: Box<dyn EphemeralKey>,
    },
}

impl ClientKex {
    /// Make our ephemeral keys and Q_C.
    pub fn start(
        alg: KexAlg,
        provider: &CryptoProvider,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Self, Error> {
        let (public, state) = match alg.construction() {
            Construction::Ecdh(curve) => {
                let key = curve(provider).generate(rng).map_err(bad_value)?;
                (key.public().to_vec(), ClientState::Ecdh(key))
            }
            Construction::Hybrid(kem) => {
                let kem = kem(provider).generate(rng).map_err(bad_value)?;
                let x25519 = provider.x25519.generate(rng).map_err(bad_value)?;
                let public = [kem.encapsulation_key(), x25519.public()].concat();
                (public, ClientState::Hybrid { kem, x25519 })
            }
        };
        Ok(ClientKex { alg, public, state })
    }

    /// Q_C, the content of the INIT message's string.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// K, encoded for the exchange hash, from the server's Q_S.
    pub fn finish(self, provider: &CryptoProvider, server_public: &[u8]) -> Result<Secret, Error> {
        match self.state {
            ClientState::Ecdh(key) => {
                Ok(mpint_secret(&key.agree(server_public).map_err(bad_value)?))
            }
            ClientState::Hybrid { kem, x25519 } => {
                let split = server_public
                    .len()
                    .checked_sub(32)
                    .ok_or(Error::Peer(PeerMisbehaved::BadKexValue))?;
                let (ciphertext, ecdh_public) = server_public.split_at(split);
                let kem_secret = kem.decapsulate(ciphertext).map_err(bad_value)?;
                let ecdh_secret = x25519.agree(ecdh_public).map_err(bad_value)?;
                Ok(hybrid_secret(provider, self.alg, &kem_secret, &ecdh_secret))
            }
        }
    }
}

/// The server's half: from the client's Q_C, our Q_S and K (encoded for the exchange
/// hash).
pub fn server_respond(
    alg: KexAlg,
    provider: &CryptoProvider,
    client_public: &[u8],
    rng: &mut dyn CryptoRngCore,
) -> Result<(Vec<u8>, Secret), Error> {
    match alg.construction() {
        Construction::Ecdh(curve) => {
            let key = curve(provider).generate(rng).map_err(bad_value)?;
            let public = key.public().to_vec();
            let k = mpint_secret(&key.agree(client_public).map_err(bad_value)?);
            Ok((public, k))
        }
        Construction::Hybrid(kem) => {
            let split = client_public
                .len()
                .checked_sub(32)
                .ok_or(Error::Peer(PeerMisbehaved::BadKexValue))?;
            let (encapsulation_key, ecdh_public) = client_public.split_at(split);
            let (ciphertext, kem_secret) = kem(provider)
                .encapsulate(encapsulation_key, rng)
                .map_err(bad_value)?;
            let x25519 = provider.x25519.generate(rng).map_err(bad_value)?;
            let public = [&ciphertext[..], x25519.public()].concat();
            let ecdh_secret = x25519.agree(ecdh_public).map_err(bad_value)?;
            Ok((
                public,
                hybrid_secret(provider, alg, &kem_secret, &ecdh_secret),
            ))
        }
    }
}
