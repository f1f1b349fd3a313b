//! What `sshr --version` prints after the version: what this binary was built with, for
//! an operator comparing proxies of a fleet or filing a bug.

use sshr_protocol::cipher::{CipherAlg, MacAlg};
use sshr_protocol::kex::KexAlg;
use sshr_protocol::SigAlg;

/// The version, then one line per fact: cargo features, providers built in, the SSH
/// algorithms offered, the target and the build profile.
///
/// ```text
/// 0.1.0
/// features: aws-lc-rs
/// crypto: aws-lc-rs
/// providers: sqlite (SQLite 3.46.0, bundled), postgres, http (rustls), command
/// kex: mlkem768x25519-sha256, sntrup761x25519-sha512, ..., diffie-hellman-group14-sha256
/// ...
/// ```
pub fn build_info() -> String {
    let names = |list: &[&str]| list.join(", ");
    let features: Vec<&str> = [
        (cfg!(feature = "aws-lc-rs"), "aws-lc-rs"),
        (cfg!(feature = "rustcrypto"), "rustcrypto"),
        (cfg!(feature = "fips"), "fips"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let lines = [
        env!("CARGO_PKG_VERSION").to_owned(),
        format!(
            "features: {}",
            if features.is_empty() {
                "none".to_owned()
            } else {
                names(&features)
            }
        ),
        format!("crypto: {}", sshr_protocol::crypto::default_provider().name),
        format!(
            "providers: sqlite (SQLite {}, bundled), postgres, http (rustls), command",
            rusqlite::version()
        ),
        format!("kex: {}", names(&KexAlg::ALL.map(KexAlg::name))),
        format!("ciphers: {}", names(&CipherAlg::ALL.map(CipherAlg::name))),
        format!(
            "macs (with the ctr ciphers): {}",
            names(&MacAlg::ALL.map(MacAlg::name))
        ),
        format!("host keys: {}", names(&SigAlg::ALL.map(SigAlg::name))),
        format!(
            "build: {}-{}, {}",
            std::env::consts::ARCH,
            std::env::consts::OS,
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        ),
    ];
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_version_and_what_is_built_in() {
        let info = super::build_info();
        let mut lines = info.lines();
        assert_eq!(lines.next(), Some(env!("CARGO_PKG_VERSION")));
        assert!(info.contains("\nproviders: sqlite (SQLite 3."), "{info}");
        assert!(info.contains("chacha20-poly1305@openssh.com"), "{info}");
        assert!(
            info.contains("\nkex: mlkem768x25519-sha256, ")
                && info.contains(", diffie-hellman-group14-sha256\n"),
            "{info}"
        );
        assert!(info.contains(", hmac-sha1\n"), "{info}");
        let provider = sshr_protocol::crypto::default_provider().name;
        assert!(info.contains(&format!("\ncrypto: {provider}\n")), "{info}");
        assert!(info.contains("\nbuild: "), "{info}");
    }
}
