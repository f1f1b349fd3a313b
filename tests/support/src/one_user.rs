//! The smallest routed set-up: a real sshd, and sshr in front of it with one user
//! `alice` routed to root there.

use std::path::Path;

use crate::{keygen, Sshd, SshdOptions, Sshr, SshrSetup, TempDir};

/// The one user of the proxy's table; her private key is this file in the directory
/// [`start`] returns.
pub const USER: &str = "alice";

/// Start an sshd (with `sshd_overrides` first in its sshd_config) that trusts the proxy's
/// upstream key, and sshr (`binary`: `env!("CARGO_BIN_EXE_sshr")`) with `tables`
/// before a user table routing [`USER`] to root on it. Returns them with the directory
/// holding alice's ed25519 key as `alice` (and `alice.pub`).
pub fn start(
    binary: impl AsRef<Path>,
    sshd_overrides: &[&str],
    tables: &str,
) -> (Sshd, Sshr, TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let alice = keys.path().join(USER);
    keygen(&alice, "ed25519", None);
    let alice_pub = std::fs::read_to_string(alice.with_extension("pub")).unwrap();
    let setup = SshrSetup::new();
    let sshd = Sshd::start_with_overrides(
        SshdOptions {
            authorized_keys: vec![setup.upstream_public_key.clone()],
            ..SshdOptions::default()
        },
        sshd_overrides,
    );
    let tables = format!(
        "{tables}\n[[users]]\nname = \"{USER}\"\nupstream = \"127.0.0.1:{}\"\nupstream_user = \"root\"\nauthorized_keys = [{:?}]\n",
        sshd.port,
        alice_pub.trim()
    );
    let sshr = setup.start(binary.as_ref(), &tables);
    (sshd, sshr, keys)
}
