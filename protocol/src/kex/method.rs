//! The key exchange methods: names, their hash, and the SSH constructions on top of the
//! crypto provider's primitives.
//!
//! Every method but the group exchange is a single round trip, SSH_MSG_KEX_ECDH_INIT (30)
//! with the client's value and SSH_MSG_KEX_ECDH_REPLY (31) with the server's (RFC 5656 4;
//! the same numbers carry KEXDH_INIT/REPLY of RFC 4253 8 and the hybrid methods'
//! INIT/REPLY). Both values travel as SSH strings (an mpint has the same framing), and the
//! exchange hash takes them as sent. What differs is how the shared secret K is made and
//! encoded:
//!
//! * ECDH (curve25519-sha256, RFC 8731; ecdh-sha2-nistp*, RFC 5656): K = the raw shared
//!   secret as an mpint.
//! * Finite-field Diffie-Hellman in a fixed group (diffie-hellman-group14-sha256,
//!   -group16-sha512 and -group18-sha512, RFC 8268 over the MODP groups of RFC 3526):
//!   e = g^x mod p and f = g^y mod p are mpints, K = f^x mod p an mpint (RFC 4253 8).
//! * Hybrid post-quantum (mlkem768x25519-sha256, draft-ietf-sshm-mlkem-hybrid-kex;
//!   sntrup761x25519-sha512, draft-josefsson-ntruprime-ssh): the client sends its KEM
//!   encapsulation key || X25519 public key, the server the KEM ciphertext || its X25519
//!   public key, and K = HASH(kem secret || X25519 secret) as an SSH string.
//!
//! diffie-hellman-group-exchange-sha256 (RFC 4419) takes two round trips: the client asks
//! for a modulus size ([`GexRequest`], SSH_MSG_KEX_DH_GEX_REQUEST, 34), the server picks a
//! group (SSH_MSG_KEX_DH_GEX_GROUP, 31: p and g), then e goes in SSH_MSG_KEX_DH_GEX_INIT
//! (32) and K_S, f and the signature come back in SSH_MSG_KEX_DH_GEX_REPLY (33). Its
//! exchange hash has min, n, max, p and g after K_S. Our server picks among the RFC 3526
//! groups 14 to 18 rather than reading a moduli file.

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::crypto::dh::{self, Group};
use crate::crypto::{
    CryptoError, CryptoProvider, DecapsulationKey, EphemeralKey, HashAlg, Kem, KeyAgreement, Secret,
};
use crate::error::{Error, PeerMisbehaved};
use crate::kex::Negotiated;
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
    /// RFC 4419 with SHA-256: the server chooses the group.
    DhGroupExchangeSha256,
    /// RFC 8268: the 4096-bit MODP group 16 of RFC 3526.
    DhGroup16Sha512,
    /// RFC 8268: the 8192-bit MODP group 18 of RFC 3526.
    DhGroup18Sha512,
    /// RFC 8268: the 2048-bit MODP group 14 of RFC 3526.
    DhGroup14Sha256,
}

/// How a method makes its shared secret.
#[derive(Clone, Copy)]
enum Construction {
    /// ECDH, or finite-field DH in a fixed group: K is the raw secret as an mpint.
    Agreement(fn(&CryptoProvider) -> &'static dyn KeyAgreement),
    Hybrid(fn(&CryptoProvider) -> &'static dyn Kem),
    /// Finite-field DH in the group the server chose (RFC 4419).
    GroupExchange,
}

impl KexAlg {
    /// Every method, in our default preference order (OpenSSH 10's).
    pub const ALL: [KexAlg; 12] = [
        KexAlg::MlKem768X25519Sha256,
        KexAlg::Sntrup761X25519Sha512,
        KexAlg::Sntrup761X25519Sha512OpenSsh,
        KexAlg::Curve25519Sha256,
        KexAlg::Curve25519Sha256Libssh,
        KexAlg::EcdhNistp256,
        KexAlg::EcdhNistp384,
        KexAlg::EcdhNistp521,
        KexAlg::DhGroupExchangeSha256,
        KexAlg::DhGroup16Sha512,
        KexAlg::DhGroup18Sha512,
        KexAlg::DhGroup14Sha256,
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
            KexAlg::DhGroupExchangeSha256 => "diffie-hellman-group-exchange-sha256",
            KexAlg::DhGroup16Sha512 => "diffie-hellman-group16-sha512",
            KexAlg::DhGroup18Sha512 => "diffie-hellman-group18-sha512",
            KexAlg::DhGroup14Sha256 => "diffie-hellman-group14-sha256",
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
            | KexAlg::EcdhNistp256
            | KexAlg::DhGroupExchangeSha256
            | KexAlg::DhGroup14Sha256 => HashAlg::Sha256,
            KexAlg::EcdhNistp384 => HashAlg::Sha384,
            KexAlg::Sntrup761X25519Sha512
            | KexAlg::Sntrup761X25519Sha512OpenSsh
            | KexAlg::EcdhNistp521
            | KexAlg::DhGroup16Sha512
            | KexAlg::DhGroup18Sha512 => HashAlg::Sha512,
        }
    }

    /// Whether the method is the group exchange (two round trips, RFC 4419) rather than a
    /// single INIT and REPLY.
    pub fn is_group_exchange(self) -> bool {
        matches!(self.construction(), Construction::GroupExchange)
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
                Construction::Agreement(|p| p.x25519)
            }
            KexAlg::EcdhNistp256 => Construction::Agreement(|p| p.nistp256),
            KexAlg::EcdhNistp384 => Construction::Agreement(|p| p.nistp384),
            KexAlg::EcdhNistp521 => Construction::Agreement(|p| p.nistp521),
            // The same for every provider (crypto/dh.rs).
            KexAlg::DhGroup14Sha256 => Construction::Agreement(|_| &dh::GROUP14),
            KexAlg::DhGroup16Sha512 => Construction::Agreement(|_| &dh::GROUP16),
            KexAlg::DhGroup18Sha512 => Construction::Agreement(|_| &dh::GROUP18),
            KexAlg::DhGroupExchangeSha256 => Construction::GroupExchange,
        }
    }
}

/// The modulus sizes of SSH_MSG_KEX_DH_GEX_REQUEST (RFC 4419 3), in bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GexRequest {
    pub min: u32,
    /// The size the client would like.
    pub n: u32,
    pub max: u32,
}

impl GexRequest {
    /// What we ask for as a client, as OpenSSH does (`kexgex_client`): min 2048 (RFC 8270)
    /// and max 8192, and n from NIST SP 800-57's sizes for the strength the negotiated
    /// ciphers and MACs need (`dh_estimate` of OpenSSH's `dh_need`: the largest key,
    /// block, IV or MAC key length, in bits): 2048 up to 112 bits, 3072 up to 128, 7680
    /// up to 192, else 8192.
    pub fn for_algorithms(agreed: &Negotiated) -> Self {
        let need_bytes = [
            (agreed.cipher_c2s, agreed.mac_c2s),
            (agreed.cipher_s2c, agreed.mac_s2c),
        ]
        .into_iter()
        .flat_map(|(c, m)| {
            [
                c.key_len(),
                c.block_size(),
                c.iv_len(),
                m.map_or(0, |m| m.key_len()),
            ]
        })
        .max()
        .unwrap_or(0);
        let n = match need_bytes * 8 {
            0..=112 => 2048,
            113..=128 => 3072,
            129..=192 => 7680,
            _ => 8192,
        };
        GexRequest {
            min: dh::MIN_BITS,
            n,
            max: dh::MAX_BITS,
        }
    }

    /// Server: the group to answer with. Refuses a request out of order or that allows
    /// nothing of 2048 bits or more (OpenSSH's `kexgexs.c`); otherwise takes the RFC 3526
    /// group closest to n within [min, max] (clamped to 2048..=8192): the smallest of at
    /// least n bits, else the largest below (the choice OpenSSH's `choose_dh` makes from
    /// its moduli file).
    pub fn choose_group(&self) -> Result<&'static Group, Error> {
        let refuse = |why: &str| {
            Error::Peer(PeerMisbehaved::GroupExchange(format!(
                "request min {} n {} max {}: {why}",
                self.min, self.n, self.max
            )))
        };
        if self.max < self.min || self.n < self.min || self.max < self.n {
            return Err(refuse("not min <= n <= max"));
        }
        if self.max < dh::MIN_BITS {
            return Err(refuse("we offer no group below 2048 bits"));
        }
        let min = self.min.max(dh::MIN_BITS);
        let max = self.max.min(dh::MAX_BITS);
        let n = self.n.clamp(dh::MIN_BITS, dh::MAX_BITS);
        let mut fits = dh::RFC3526_GROUPS
            .iter()
            .copied()
            .filter(|g| (min..=max).contains(&g.bits()));
        // Smallest first: the first of at least n bits, else the last (largest) below.
        fits.clone()
            .find(|g| g.bits() >= n)
            .or_else(|| fits.next_back())
            .ok_or_else(|| refuse("no RFC 3526 group fits"))
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
    Agreement(Box<dyn EphemeralKey>),
    Hybrid {
        kem: Box<dyn DecapsulationKey>,
        x25519: Box<dyn EphemeralKey>,
    },
}

impl ClientKex {
    /// Make our ephemeral keys and Q_C. Not for the group exchange, whose keys wait for
    /// the server's group ([`Self::start_in_group`]).
    pub fn start(
        alg: KexAlg,
        provider: &CryptoProvider,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Self, Error> {
        let (public, state) = match alg.construction() {
            Construction::Agreement(curve) => {
                let key = curve(provider).generate(rng).map_err(bad_value)?;
                (key.public().to_vec(), ClientState::Agreement(key))
            }
            Construction::GroupExchange => {
                return Err(Error::Misuse(
                    "ClientKex::start for the group exchange, which needs the server's group",
                ))
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

    /// The group exchange: our key in the group the server chose; e is [`Self::public`].
    pub fn start_in_group(
        alg: KexAlg,
        group: &Group,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Self, Error> {
        let key = group.generate(rng).map_err(bad_value)?;
        Ok(ClientKex {
            alg,
            public: key.public().to_vec(),
            state: ClientState::Agreement(key),
        })
    }

    /// Q_C, the content of the INIT message's string.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// K, encoded for the exchange hash, from the server's Q_S.
    pub fn finish(self, provider: &CryptoProvider, server_public: &[u8]) -> Result<Secret, Error> {
        match self.state {
            ClientState::Agreement(key) => {
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
/// hash). Not for the group exchange ([`server_respond_in_group`]).
pub fn server_respond(
    alg: KexAlg,
    provider: &CryptoProvider,
    client_public: &[u8],
    rng: &mut dyn CryptoRngCore,
) -> Result<(Vec<u8>, Secret), Error> {
    match alg.construction() {
        Construction::Agreement(curve) => agree(curve(provider), client_public, rng),
        Construction::GroupExchange => Err(Error::Misuse(
            "server_respond for the group exchange, which needs its group",
        )),
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

/// The group exchange's server half: from the client's e, our f and K (an mpint).
pub fn server_respond_in_group(
    group: &Group,
    client_public: &[u8],
    rng: &mut dyn CryptoRngCore,
) -> Result<(Vec<u8>, Secret), Error> {
    agree(group, client_public, rng)
}

/// A fresh key of `agreement`, its public value and K = the secret with the peer's, as an
/// mpint.
fn agree(
    agreement: &dyn KeyAgreement,
    peer_public: &[u8],
    rng: &mut dyn CryptoRngCore,
) -> Result<(Vec<u8>, Secret), Error> {
    let key = agreement.generate(rng).map_err(bad_value)?;
    let public = key.public().to_vec();
    let k = mpint_secret(&key.agree(peer_public).map_err(bad_value)?);
    Ok((public, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::{CipherAlg, MacAlg};
    use crate::hostkey::SigAlg;
    use rand_core::SeedableRng;

    #[test]
    fn names_order_and_hashes() {
        let names: Vec<&str> = KexAlg::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            &names[7..],
            [
                "ecdh-sha2-nistp521",
                "diffie-hellman-group-exchange-sha256",
                "diffie-hellman-group16-sha512",
                "diffie-hellman-group18-sha512",
                "diffie-hellman-group14-sha256"
            ]
        );
        for k in KexAlg::ALL {
            assert_eq!(KexAlg::from_name(k.name()), Some(k));
        }
        let dh: Vec<(HashAlg, bool, bool)> = KexAlg::ALL[8..]
            .iter()
            .map(|k| (k.hash(), k.is_group_exchange(), k.is_post_quantum()))
            .collect();
        assert_eq!(
            dh,
            [
                (HashAlg::Sha256, true, false),
                (HashAlg::Sha512, false, false),
                (HashAlg::Sha512, false, false),
                (HashAlg::Sha256, false, false),
            ]
        );
        assert_eq!(KexAlg::from_name("diffie-hellman-group1-sha1"), None);
        assert_eq!(
            KexAlg::from_name("diffie-hellman-group-exchange-sha1"),
            None
        );
    }

    /// The sizes OpenSSH's client asks for with the same algorithms (`dh_estimate` of
    /// `dh_need`; its debug output "SSH2_MSG_KEX_DH_GEX_REQUEST(2048<3072<8192) sent" for
    /// aes128-gcm@openssh.com).
    #[test]
    fn group_exchange_requests_follow_openssh() {
        let agreed = |cipher: CipherAlg, mac: Option<MacAlg>| Negotiated {
            kex: KexAlg::DhGroupExchangeSha256,
            host_key: SigAlg::Ed25519,
            cipher_c2s: cipher,
            cipher_s2c: cipher,
            mac_c2s: mac,
            mac_s2c: mac,
        };
        for (cipher, mac, n) in [
            // 64-byte key.
            (CipherAlg::ChaCha20Poly1305, None, 8192),
            // 16-byte key, block and IV: 128 bits.
            (CipherAlg::Aes128Gcm, None, 3072),
            (CipherAlg::Aes256Gcm, None, 8192),
            // The MAC key counts: 20 bytes are 160 bits.
            (CipherAlg::Aes128Ctr, Some(MacAlg::HmacSha1), 7680),
            (CipherAlg::Aes128Ctr, Some(MacAlg::HmacSha256Etm), 8192),
        ] {
            let want = GexRequest {
                min: 2048,
                n,
                max: 8192,
            };
            assert_eq!(
                GexRequest::for_algorithms(&agreed(cipher, mac)),
                want,
                "{cipher:?}"
            );
        }
    }

    #[test]
    fn group_exchange_server_picks_the_closest_rfc3526_group() {
        let pick = |min, n, max| GexRequest { min, n, max }.choose_group().map(|g| g.bits());
        assert_eq!(pick(2048, 2048, 8192), Ok(2048));
        assert_eq!(pick(2048, 3072, 8192), Ok(3072));
        // Between sizes: the next one up.
        assert_eq!(pick(2048, 7680, 8192), Ok(8192));
        assert_eq!(pick(2048, 5000, 8192), Ok(6144));
        // ... unless max forbids it: the largest below.
        assert_eq!(pick(2048, 5000, 5000), Ok(4096));
        // Out of our range on either side: clamped.
        assert_eq!(pick(1024, 1024, 2048), Ok(2048));
        assert_eq!(pick(1024, 1024, 4096), Ok(2048));
        assert_eq!(pick(2048, 16384, 16384), Ok(8192));
        assert_eq!(pick(0, 0, u32::MAX), Ok(2048));
        for (min, n, max) in [
            (4096, 2048, 8192),
            (2048, 8192, 4096),
            (8192, 8192, 2048),
            (1024, 1024, 1024),
            (2049, 2049, 3000),
        ] {
            match pick(min, n, max) {
                Err(Error::Peer(PeerMisbehaved::GroupExchange(why))) => {
                    assert!(why.starts_with(&format!("request min {min} n {n} max {max}: ")))
                }
                other => panic!("{min} {n} {max}: {other:?}"),
            }
        }
    }

    #[test]
    fn group_exchange_needs_its_group() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
        let p = crate::crypto::default_provider();
        let alg = KexAlg::DhGroupExchangeSha256;
        assert!(matches!(
            ClientKex::start(alg, p, &mut rng),
            Err(Error::Misuse(_))
        ));
        assert!(matches!(
            server_respond(alg, p, &[1], &mut rng),
            Err(Error::Misuse(_))
        ));
        let client = ClientKex::start_in_group(alg, &dh::GROUP14, &mut rng).unwrap();
        let (f, k_server) =
            server_respond_in_group(&dh::GROUP14, client.public(), &mut rng).unwrap();
        let k_client = client.finish(p, &f).unwrap();
        assert_eq!(k_client, k_server);
        // K is an mpint: 4-byte length, no unneeded leading zero.
        let len = u32::from_be_bytes(k_client[..4].try_into().unwrap()) as usize;
        assert_eq!(len, k_client.len() - 4);
        assert!(k_client[4] != 0 || k_client[5] & 0x80 != 0);
        // A peer value outside the group ends the exchange as a bad value.
        let client = ClientKex::start_in_group(alg, &dh::GROUP14, &mut rng).unwrap();
        assert_eq!(
            client.finish(p, &[1]),
            Err(Error::Peer(PeerMisbehaved::BadKexValue))
        );
    }
}
