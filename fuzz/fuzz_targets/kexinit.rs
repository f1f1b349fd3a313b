//! KEXINIT parsing and negotiation against our own proposal, in both roles.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sshr_protocol::kex::{negotiate, KexInit, Proposal};

fuzz_target!(|data: &[u8]| {
    let mut payload = vec![sshr_protocol::msg::KEXINIT];
    payload.extend_from_slice(data);
    let Ok(theirs) = KexInit::parse(&payload) else {
        return;
    };
    let ours = Proposal {
        kex: vec!["curve25519-sha256", "curve25519-sha256@libssh.org"],
        host_key: vec!["ssh-ed25519", "rsa-sha2-512"],
        ciphers: vec![
            "chacha20-poly1305@openssh.com",
            "aes128-gcm@openssh.com",
            "aes128-ctr",
        ],
        macs: vec!["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512"],
    }
    .encode([0; 16]);
    let ours = KexInit::parse(&ours).expect("our own KEXINIT parses");
    let _ = negotiate(&ours, &theirs, true);
    let _ = negotiate(&theirs, &ours, false);
});
