//! Key exchange: KEXINIT, algorithm negotiation, the exchange hash and key derivation
//! (RFC 4253 7 and 8). The methods themselves are in [`method`].

use zeroize::Zeroizing;

use crate::cipher::{CipherAlg, MacAlg};
use crate::crypto::dh::Group;
use crate::crypto::{CryptoProvider, Digest, HashAlg, Hasher};
use crate::error::{AlgorithmList, Error};
use crate::hostkey::SigAlg;
use crate::msg;
use crate::wire::{self, NameList, Reader};

pub mod method;

pub use method::{ClientKex, GexRequest, KexAlg};

/// Pseudo-algorithms announced in the kex list (never negotiated as a method).
pub const EXT_INFO_C: &str = "ext-info-c";
pub const EXT_INFO_S: &str = "ext-info-s";
pub const STRICT_KEX_C: &str = "kex-strict-c-v00@openssh.com";
pub const STRICT_KEX_S: &str = "kex-strict-s-v00@openssh.com";

/// A parsed SSH_MSG_KEXINIT (RFC 4253 7.1), borrowing the payload.
#[derive(Debug, Clone)]
pub struct KexInit<'a> {
    pub cookie: &'a [u8],
    pub kex: NameList<'a>,
    pub host_key: NameList<'a>,
    pub cipher_c2s: NameList<'a>,
    pub cipher_s2c: NameList<'a>,
    pub mac_c2s: NameList<'a>,
    pub mac_s2c: NameList<'a>,
    pub compression_c2s: NameList<'a>,
    pub compression_s2c: NameList<'a>,
    pub first_kex_packet_follows: bool,
}

impl<'a> KexInit<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Error> {
        let m = Error::malformed(msg::KEXINIT);
        let mut r = Reader::new(payload);
        if r.u8("message number").map_err(&m)? != msg::KEXINIT {
            return Err(Error::Misuse("KexInit::parse on another message"));
        }
        let cookie = r.bytes(16, "cookie").map_err(&m)?;
        let kex = r.name_list("kex_algorithms").map_err(&m)?;
        let host_key = r.name_list("server_host_key_algorithms").map_err(&m)?;
        let cipher_c2s = r
            .name_list("encryption_algorithms_client_to_server")
            .map_err(&m)?;
        let cipher_s2c = r
            .name_list("encryption_algorithms_server_to_client")
            .map_err(&m)?;
        let mac_c2s = r.name_list("mac_algorithms_client_to_server").map_err(&m)?;
        let mac_s2c = r.name_list("mac_algorithms_server_to_client").map_err(&m)?;
        let compression_c2s = r
            .name_list("compression_algorithms_client_to_server")
            .map_err(&m)?;
        let compression_s2c = r
            .name_list("compression_algorithms_server_to_client")
            .map_err(&m)?;
        r.name_list("languages_client_to_server").map_err(&m)?;
        r.name_list("languages_server_to_client").map_err(&m)?;
        let first_kex_packet_follows = r.bool("first_kex_packet_follows").map_err(&m)?;
        r.u32("reserved").map_err(&m)?;
        // RFC 4253 7.1 leaves no room for more fields; tolerate none.
        r.finish().map_err(&m)?;
        Ok(Self {
            cookie,
            kex,
            host_key,
            cipher_c2s,
            cipher_s2c,
            mac_c2s,
            mac_s2c,
            compression_c2s,
            compression_s2c,
            first_kex_packet_follows,
        })
    }
}

/// What we put in our KEXINIT.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub kex: Vec<&'static str>,
    pub host_key: Vec<&'static str>,
    pub ciphers: Vec<&'static str>,
    pub macs: Vec<&'static str>,
}

impl Proposal {
    /// Encode as a KEXINIT payload with the given cookie.
    pub fn encode(&self, cookie: [u8; 16]) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.push(msg::KEXINIT);
        out.extend_from_slice(&cookie);
        wire::put_name_list(&mut out, self.kex.iter().copied());
        wire::put_name_list(&mut out, self.host_key.iter().copied());
        for _ in 0..2 {
            wire::put_name_list(&mut out, self.ciphers.iter().copied());
        }
        for _ in 0..2 {
            wire::put_name_list(&mut out, self.macs.iter().copied());
        }
        for _ in 0..2 {
            wire::put_name_list(&mut out, ["none"]);
        }
        for _ in 0..2 {
            wire::put_name_list(&mut out, []);
        }
        wire::put_bool(&mut out, false);
        wire::put_u32(&mut out, 0);
        out
    }
}

/// The algorithms agreed for one key exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub kex: KexAlg,
    pub host_key: SigAlg,
    pub cipher_c2s: CipherAlg,
    pub cipher_s2c: CipherAlg,
    /// `None` for AEAD ciphers, whose MAC negotiation is ignored.
    pub mac_c2s: Option<MacAlg>,
    pub mac_s2c: Option<MacAlg>,
}

/// The first name in the client's list that the server also lists (RFC 4253 7.1).
fn choose<'a>(
    list: AlgorithmList,
    client: NameList<'a>,
    server: NameList<'a>,
    known: impl Fn(&str) -> bool,
) -> Result<&'a str, Error> {
    client
        .iter()
        .find(|c| known(c) && server.contains(c))
        .ok_or(Error::NoCommonAlgorithm {
            list,
            ours: String::new(),
            theirs: String::new(),
        })
}

/// Negotiate every list. `ours_is_client` only fills the error message's sides.
pub fn negotiate(
    client: &KexInit<'_>,
    server: &KexInit<'_>,
    ours_is_client: bool,
) -> Result<Negotiated, Error> {
    let fill = |e: Error, c: NameList<'_>, s: NameList<'_>| match e {
        Error::NoCommonAlgorithm { list, .. } => {
            let (ours, theirs) = if ours_is_client { (c, s) } else { (s, c) };
            Error::NoCommonAlgorithm {
                list,
                ours: crate::text::name_list_summary(ours),
                theirs: crate::text::name_list_summary(theirs),
            }
        }
        e => e,
    };
    macro_rules! pick {
        ($list:ident, $field:ident, $parse:expr) => {{
            let name = choose(AlgorithmList::$list, client.$field, server.$field, |n| {
                $parse(n).is_some()
            })
            .map_err(|e| fill(e, client.$field, server.$field))?;
            $parse(name).ok_or(Error::Misuse("negotiated an unknown name"))?
        }};
    }
    let kex = pick!(KeyExchange, kex, KexAlg::from_name);
    let host_key = pick!(HostKey, host_key, SigAlg::from_name);
    let cipher_c2s = pick!(CipherClientToServer, cipher_c2s, CipherAlg::from_name);
    let cipher_s2c = pick!(CipherServerToClient, cipher_s2c, CipherAlg::from_name);
    let mac_c2s = if cipher_c2s.is_aead() {
        None
    } else {
        Some(pick!(MacClientToServer, mac_c2s, MacAlg::from_name))
    };
    let mac_s2c = if cipher_s2c.is_aead() {
        None
    } else {
        Some(pick!(MacServerToClient, mac_s2c, MacAlg::from_name))
    };
    let none = |n: &str| (n == "none").then_some(());
    pick!(CompressionClientToServer, compression_c2s, none);
    pick!(CompressionServerToClient, compression_s2c, none);
    Ok(Negotiated {
        kex,
        host_key,
        cipher_c2s,
        cipher_s2c,
        mac_c2s,
        mac_s2c,
    })
}

/// Whether the peer's first-kex-packet guess was wrong, so that its next key exchange
/// packet must be ignored (RFC 4253 7).
///
/// The guess is right only when both sides put the same key exchange and the same host
/// key algorithm first, as OpenSSH and Dropbear judge it. Comparing with the agreed
/// method instead would be wrong: a client whose first choice wins against a server
/// that prefers another one (Dropbear's curve25519 against our mlkem768x25519) judges
/// its own guess wrong and sends its init again, so the proxy must drop the guess.
pub fn guess_was_wrong(peer: &KexInit<'_>, ours: &KexInit<'_>) -> bool {
    peer.first_kex_packet_follows
        && (peer.kex.iter().next() != ours.kex.iter().next()
            || peer.host_key.iter().next() != ours.host_key.iter().next())
}

/// The exchange hash inputs (RFC 4253 8, RFC 5656 4, RFC 8731 3, and the hybrid methods,
/// which use the same layout; RFC 4419 3 for the group exchange, which adds its request
/// and group after K_S).
pub struct ExchangeHashInput<'a> {
    pub client_version: &'a [u8],
    pub server_version: &'a [u8],
    pub client_kexinit: &'a [u8],
    pub server_kexinit: &'a [u8],
    pub host_key_blob: &'a [u8],
    /// The group exchange's request (min, n, max as the client sent them) and group
    /// (p, g); `None` for every other method.
    pub group_exchange: Option<(GexRequest, &'a Group)>,
    /// Q_C (or e), hashed as a string.
    pub client_public: &'a [u8],
    /// Q_S (or f), hashed as a string.
    pub server_public: &'a [u8],
    /// The shared secret K, already encoded (an mpint, or a string for the hybrid methods).
    pub shared_secret: &'a [u8],
}

impl ExchangeHashInput<'_> {
    pub fn hash(&self, provider: &CryptoProvider, alg: HashAlg) -> Digest {
        fn string(h: &mut dyn Hasher, s: &[u8]) {
            h.update(&(s.len() as u32).to_be_bytes());
            h.update(s);
        }
        let mut h = (provider.hash)(alg);
        for s in [
            self.client_version,
            self.server_version,
            self.client_kexinit,
            self.server_kexinit,
            self.host_key_blob,
        ] {
            string(&mut *h, s);
        }
        if let Some((request, group)) = self.group_exchange {
            for n in [request.min, request.n, request.max] {
                h.update(&n.to_be_bytes());
            }
            for v in [group.prime(), group.generator()] {
                let mut mpint = Vec::with_capacity(v.len() + 5);
                wire::put_mpint_unsigned(&mut mpint, v);
                h.update(&mpint);
            }
        }
        string(&mut *h, self.client_public);
        string(&mut *h, self.server_public);
        h.update(self.shared_secret);
        h.finish()
    }
}

/// RFC 4253 7.2: HASH(K || H || X || session_id), extended with HASH(K || H || K1 ...)
/// until `len` bytes. `k` is the encoded shared secret.
pub fn derive_key(
    provider: &CryptoProvider,
    alg: HashAlg,
    k: &[u8],
    h: &[u8],
    letter: u8,
    session_id: &[u8],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    let step = alg.output_len();
    let mut out = Zeroizing::new(Vec::with_capacity(len.div_ceil(step) * step));
    let mut d = provider.digest(alg, &[k, h, &[letter], session_id]);
    out.extend_from_slice(d.as_ref());
    while out.len() < len {
        d = provider.digest(alg, &[k, h, &out[..]]);
        out.extend_from_slice(d.as_ref());
    }
    zeroize::Zeroize::zeroize(&mut d);
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kexinit_round_trip() {
        let p = Proposal {
            kex: vec!["curve25519-sha256", EXT_INFO_C],
            host_key: vec!["ssh-ed25519"],
            ciphers: vec!["aes128-gcm@openssh.com"],
            macs: vec!["hmac-sha2-256-etm@openssh.com"],
        };
        let payload = p.encode([7; 16]);
        let k = KexInit::parse(&payload).unwrap();
        assert_eq!(k.cookie, &[7; 16]);
        assert!(k.kex.contains(EXT_INFO_C));
        assert_eq!(k.cipher_s2c.as_str(), "aes128-gcm@openssh.com");
        assert_eq!(k.compression_c2s.as_str(), "none");
        assert!(!k.first_kex_packet_follows);
        let mut bad = payload.clone();
        bad.push(0);
        assert!(KexInit::parse(&bad).is_err());
        assert!(KexInit::parse(&payload[..40]).is_err());
    }

    #[test]
    fn negotiation_follows_the_client() {
        let client = Proposal {
            kex: vec![
                "sntrup761x25519-sha512@openssh.com",
                "curve25519-sha256",
                EXT_INFO_C,
            ],
            host_key: vec!["rsa-sha2-512", "ssh-ed25519"],
            ciphers: vec!["aes256-ctr", "chacha20-poly1305@openssh.com"],
            macs: vec!["hmac-sha2-512", "hmac-sha2-256"],
        }
        .encode([0; 16]);
        let server = Proposal {
            kex: vec![
                "curve25519-sha256@libssh.org",
                "curve25519-sha256",
                EXT_INFO_S,
            ],
            host_key: vec!["ssh-ed25519"],
            ciphers: vec!["chacha20-poly1305@openssh.com", "aes256-ctr"],
            macs: vec!["hmac-sha2-256"],
        }
        .encode([0; 16]);
        let (c, s) = (
            KexInit::parse(&client).unwrap(),
            KexInit::parse(&server).unwrap(),
        );
        let n = negotiate(&c, &s, false).unwrap();
        assert_eq!(n.kex, KexAlg::Curve25519Sha256);
        assert_eq!(n.host_key, SigAlg::Ed25519);
        assert_eq!(n.cipher_c2s, CipherAlg::Aes256Ctr);
        assert_eq!(n.mac_c2s, Some(MacAlg::HmacSha256));
        assert!(!guess_was_wrong(&c, &s));

        let server_no_common = Proposal {
            kex: vec!["diffie-hellman-group1-sha1"],
            host_key: vec!["ssh-ed25519"],
            ciphers: vec!["aes256-ctr"],
            macs: vec!["hmac-sha2-256"],
        }
        .encode([0; 16]);
        let s2 = KexInit::parse(&server_no_common).unwrap();
        match negotiate(&c, &s2, false) {
            Err(Error::NoCommonAlgorithm { list, ours, .. }) => {
                assert_eq!(list, AlgorithmList::KeyExchange);
                assert_eq!(ours, "diffie-hellman-group1-sha1");
            }
            other => panic!("{other:?}"),
        }
    }

    /// RFC 4253 7: a guess is right only when both sides list the same kex and host key
    /// algorithm first; the client's first choice winning negotiation is not enough.
    #[test]
    fn guessed_packet_is_judged_by_both_first_choices() {
        let guessing = |kex: Vec<&'static str>, host_key: Vec<&'static str>| {
            let mut payload = Proposal {
                kex,
                host_key,
                ciphers: vec!["aes128-ctr"],
                macs: vec!["hmac-sha2-256"],
            }
            .encode([0; 16]);
            // first_kex_packet_follows sits before the reserved u32 at the end.
            let flag = payload.len() - 5;
            payload[flag] = 1;
            payload
        };
        let ours = |kex: Vec<&'static str>| {
            Proposal {
                kex,
                host_key: vec!["ssh-ed25519", "rsa-sha2-512"],
                ciphers: vec!["aes128-ctr"],
                macs: vec!["hmac-sha2-256"],
            }
            .encode([0; 16])
        };
        // Dropbear 2022.83's lists (shortened) against a server preferring mlkem768x25519:
        // curve25519 is agreed, the client's first choice, yet the guess is wrong.
        let dropbear = guessing(
            vec![
                "curve25519-sha256",
                "ecdh-sha2-nistp256",
                "kexguess2@matt.ucc.asn.au",
            ],
            vec!["ssh-ed25519", "rsa-sha2-256"],
        );
        let pq_first = ours(vec!["mlkem768x25519-sha256", "curve25519-sha256"]);
        let curve_first = ours(vec!["curve25519-sha256", "mlkem768x25519-sha256"]);
        let (c, pq, curve) = (
            KexInit::parse(&dropbear).unwrap(),
            KexInit::parse(&pq_first).unwrap(),
            KexInit::parse(&curve_first).unwrap(),
        );
        assert_eq!(
            negotiate(&c, &pq, false).unwrap().kex,
            KexAlg::Curve25519Sha256
        );
        assert!(guess_was_wrong(&c, &pq));
        assert!(!guess_was_wrong(&c, &curve));
        // Same first kex, different first host key algorithm: wrong.
        let rsa_first = guessing(
            vec!["curve25519-sha256"],
            vec!["rsa-sha2-256", "ssh-ed25519"],
        );
        assert!(guess_was_wrong(
            &KexInit::parse(&rsa_first).unwrap(),
            &curve
        ));
        // No guess sent: nothing to drop.
        let quiet = ours(vec!["sntrup761x25519-sha512"]);
        assert!(!guess_was_wrong(&KexInit::parse(&quiet).unwrap(), &curve));
    }

    /// A peer's list with no common name is bounded in the error (it is logged and
    /// sent back in the DISCONNECT): eight names and a count, not 60 KB.
    #[test]
    fn no_common_algorithm_error_is_bounded() {
        let names: Vec<&'static str> = (0..4000)
            .map(|i| &*Box::leak(format!("junk{i}-\n@example.com").into_boxed_str()))
            .collect();
        let peer = Proposal {
            kex: names,
            host_key: vec!["ssh-ed25519"],
            ciphers: vec!["aes256-ctr"],
            macs: vec!["hmac-sha2-256"],
        }
        .encode([0; 16]);
        let ours = Proposal {
            kex: vec!["curve25519-sha256"],
            host_key: vec!["ssh-ed25519"],
            ciphers: vec!["aes256-ctr"],
            macs: vec!["hmac-sha2-256"],
        }
        .encode([0; 16]);
        assert!(peer.len() > 60_000);
        let (c, s) = (
            KexInit::parse(&peer).unwrap(),
            KexInit::parse(&ours).unwrap(),
        );
        let err = negotiate(&c, &s, false).unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 400, "{} bytes: {text}", text.len());
        assert!(
            text.contains("(+3992 more)") && !text.contains('\n'),
            "{text}"
        );
        let (_, description) = err.disconnect_reason().unwrap();
        assert!(description.len() < 400);
    }

    /// Output of protocol/tests/data/kex/gen_exchange_hash_vectors.py (Python hashlib over
    /// the layouts of RFC 4253 8 and RFC 4419 3). Exchanges captured from OpenSSH are
    /// replayed in protocol/tests/openssh_transcripts.rs.
    #[test]
    fn exchange_hash_known_answers() {
        let k_raw: Vec<u8> = (0x80..0xa0).collect();
        let mut k = Vec::new();
        wire::put_mpint_unsigned(&mut k, &k_raw);
        let (q_c, q_s): (Vec<u8>, Vec<u8>) = ((0..32).collect(), (32..64).collect());
        let input = |group_exchange| ExchangeHashInput {
            client_version: b"SSH-2.0-client",
            server_version: b"SSH-2.0-server",
            client_kexinit: b"\x14client kexinit",
            server_kexinit: b"\x14server kexinit",
            host_key_blob: b"host key blob",
            group_exchange,
            client_public: &q_c,
            server_public: &q_s,
            shared_secret: &k,
        };
        let request = GexRequest {
            min: 2048,
            n: 3072,
            max: 8192,
        };
        let gex = Some((request, &crate::crypto::dh::GROUP15));
        let cases = [
            (HashAlg::Sha256, None, "f81e7467e6b102a1ea26bd7cf1d4981ed24b55a7e332c1b86cf7779a96cf1a97"),
            (HashAlg::Sha384, None, "a1a0a64b6475134e629fc9ff48d8cc377e9fbfc33c565b2692c8d16ddf41240dc36f28ae1188a62c18605f934fd79d68"),
            (HashAlg::Sha512, None, "a50f508afcd57a841d1117cb194be1ee722c45454c30839f207508c77f46cdd1dbf4184ec6625f7673760928520f87239c605a52885ea171070faeea6efb57f7"),
            (HashAlg::Sha256, gex, "c8a47adbec37fd943f9df18fe29cfb9d12a69a5b8ce5046d51b36529b67cfcd7"),
        ];
        for p in crate::crypto::providers() {
            for (alg, group_exchange, want) in cases {
                let h = input(group_exchange).hash(p, alg);
                assert_eq!(hex::encode(h), want, "{alg:?} {p:?}");
            }
        }
    }

    #[test]
    fn key_derivation_extends() {
        let k = [0, 0, 0, 1, 5];
        let h = [1u8; 32];
        for p in crate::crypto::providers() {
            let alg = HashAlg::Sha256;
            let a = derive_key(p, alg, &k, &h, b'C', &h, 64);
            let b = derive_key(p, alg, &k, &h, b'C', &h, 32);
            assert_eq!(&a[..32], &b[..]);
            let next = p.digest(alg, &[&k, &h, &b[..]]);
            assert_eq!(&a[32..], next.as_ref());
            assert_ne!(derive_key(p, alg, &k, &h, b'D', &h, 32), b);
            // SHA-512 methods take 64 bytes per step.
            let long = derive_key(p, HashAlg::Sha512, &k, &h, b'C', &h, 80);
            assert_eq!(
                &long[..64],
                p.digest(HashAlg::Sha512, &[&k, &h, b"C", &h]).as_ref()
            );
        }
    }
}
