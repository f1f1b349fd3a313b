//! Which algorithms each leg offers (`[algorithms]`), and which cipher the upstream leg
//! asks its server for.
//!
//! The upstream leg is ours to choose: the client's cipher is the client's business, but
//! every byte is decrypted and sealed again here, so the upstream leg takes the cipher
//! that costs the proxy least. With AES and carry-less multiply instructions, AES-GCM
//! seals several times faster than chacha20-poly1305 (perf/RESULTS.md, "Session 8"),
//! which more than pays for re-framing packets between the two ciphers' block sizes.

use sshr_protocol::cipher::{CipherAlg, MacAlg};
use sshr_protocol::kex::{KexAlg, Negotiated};

use crate::core::values::CipherPreference;

/// The algorithms one leg offers, in order of preference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegAlgorithms {
    pub kex: Vec<KexAlg>,
    pub ciphers: Vec<CipherAlg>,
    pub macs: Vec<MacAlg>,
}

impl Default for LegAlgorithms {
    /// Everything the transport implements, in OpenSSH 10's order (post-quantum key
    /// exchange first; finite-field Diffie-Hellman and SHA-1 MACs last).
    fn default() -> Self {
        LegAlgorithms {
            kex: KexAlg::ALL.to_vec(),
            ciphers: CipherAlg::ALL.to_vec(),
            macs: MacAlg::ALL.to_vec(),
        }
    }
}

impl LegAlgorithms {
    /// The upstream leg's default: as [`Default`], but curve25519 before sntrup761. The
    /// proxy is the client there, and sntrup761's key generation costs it about 20 ms of
    /// CPU per upstream connection (0.03 ms for ML-KEM's, perf/RESULTS.md "Session 8"):
    /// with 100 logins at once to OpenSSH 9.x servers (which lack mlkem768x25519) that
    /// alone held upstream handshakes past their timeout. Servers with mlkem768x25519
    /// (OpenSSH 9.9 and later) still get it first; `upstream_kex` restores the order.
    pub fn upstream_default() -> Self {
        let (sntrup, mut kex): (Vec<KexAlg>, Vec<KexAlg>) = KexAlg::ALL.iter().partition(|k| {
            matches!(
                k,
                KexAlg::Sntrup761X25519Sha512 | KexAlg::Sntrup761X25519Sha512OpenSsh
            )
        });
        let at = kex
            .iter()
            .position(|k| *k == KexAlg::Curve25519Sha256Libssh)
            .map_or(kex.len(), |i| i + 1);
        kex.splice(at..at, sntrup);
        LegAlgorithms {
            kex,
            ..LegAlgorithms::default()
        }
    }
}

/// How the upstream leg picks its cipher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpstreamCipher {
    /// The cipher this machine seals fastest (AES-GCM with AES instructions, else
    /// chacha20-poly1305), whatever the client chose.
    #[default]
    Fastest,
    /// The client leg's cipher and MAC: packets keep their framing and are resealed in
    /// place.
    SameAsClient,
}

impl UpstreamCipher {
    /// The names `upstream_cipher` takes in the configuration.
    pub const NAMES: [&'static str; 2] = ["fastest", "same-as-client"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "fastest" => Some(UpstreamCipher::Fastest),
            "same-as-client" => Some(UpstreamCipher::SameAsClient),
            _ => None,
        }
    }
}

/// What the CPU offers that changes which cipher is fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuCrypto {
    /// AES rounds and carry-less multiplication in hardware (x86 AES-NI and PCLMULQDQ,
    /// ARMv8 AES and PMULL).
    pub aes_gcm: bool,
}

impl CpuCrypto {
    /// This machine's.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        let aes_gcm = std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq");
        #[cfg(target_arch = "aarch64")]
        let aes_gcm = std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull");
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let aes_gcm = false;
        CpuCrypto { aes_gcm }
    }
}

/// The cipher (and MAC) the upstream leg asks for first. `offered` is the upstream
/// leg's list: a preference it does not contain is not asked for.
pub fn upstream_preference(
    policy: UpstreamCipher,
    client_leg: Option<&Negotiated>,
    cpu: CpuCrypto,
    offered: &LegAlgorithms,
) -> CipherPreference {
    let wanted = match policy {
        UpstreamCipher::SameAsClient => match client_leg {
            Some(n) => (Some(n.cipher_c2s), n.mac_c2s),
            None => (None, None),
        },
        UpstreamCipher::Fastest if cpu.aes_gcm => (Some(CipherAlg::Aes128Gcm), None),
        UpstreamCipher::Fastest => (Some(CipherAlg::ChaCha20Poly1305), None),
    };
    (
        wanted.0.filter(|c| offered.ciphers.contains(c)),
        wanted.1.filter(|m| offered.macs.contains(m)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sshr_protocol::hostkey::SigAlg;

    fn negotiated(cipher: CipherAlg, mac: Option<MacAlg>) -> Negotiated {
        Negotiated {
            kex: KexAlg::MlKem768X25519Sha256,
            host_key: SigAlg::Ed25519,
            cipher_c2s: cipher,
            cipher_s2c: cipher,
            mac_c2s: mac,
            mac_s2c: mac,
        }
    }

    #[test]
    fn fastest_follows_the_cpu_not_the_client() {
        let all = LegAlgorithms::default();
        let chacha = negotiated(CipherAlg::ChaCha20Poly1305, None);
        let with_aes = CpuCrypto { aes_gcm: true };
        let without = CpuCrypto { aes_gcm: false };
        let fastest = UpstreamCipher::Fastest;
        assert_eq!(
            upstream_preference(fastest, Some(&chacha), with_aes, &all),
            (Some(CipherAlg::Aes128Gcm), None)
        );
        assert_eq!(
            upstream_preference(fastest, Some(&chacha), without, &all),
            (Some(CipherAlg::ChaCha20Poly1305), None)
        );
        let ctr = negotiated(CipherAlg::Aes256Ctr, Some(MacAlg::HmacSha512Etm));
        assert_eq!(
            upstream_preference(UpstreamCipher::SameAsClient, Some(&ctr), with_aes, &all),
            (Some(CipherAlg::Aes256Ctr), Some(MacAlg::HmacSha512Etm))
        );
    }

    #[test]
    fn a_cipher_the_upstream_leg_does_not_offer_is_not_asked_for() {
        let only_chacha = LegAlgorithms {
            ciphers: vec![CipherAlg::ChaCha20Poly1305],
            ..LegAlgorithms::default()
        };
        assert_eq!(
            upstream_preference(
                UpstreamCipher::Fastest,
                None,
                CpuCrypto { aes_gcm: true },
                &only_chacha
            ),
            (None, None)
        );
    }

    #[test]
    fn upstream_default_puts_curve25519_before_sntrup761() {
        let names: Vec<&str> = LegAlgorithms::upstream_default()
            .kex
            .iter()
            .map(|k| k.name())
            .collect();
        assert_eq!(
            &names[..5],
            [
                "mlkem768x25519-sha256",
                "curve25519-sha256",
                "curve25519-sha256@libssh.org",
                "sntrup761x25519-sha512",
                "sntrup761x25519-sha512@openssh.com"
            ]
        );
        assert_eq!(names.len(), KexAlg::ALL.len());
    }

    #[test]
    fn names() {
        for n in UpstreamCipher::NAMES {
            assert!(UpstreamCipher::from_name(n).is_some());
        }
        assert_eq!(UpstreamCipher::from_name("same"), None);
    }
}
