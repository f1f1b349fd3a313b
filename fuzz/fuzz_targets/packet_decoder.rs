//! The packet decoder on arbitrary bytes, with no cipher and with each keyed cipher of
//! each built-in crypto provider (aws-lc-rs and RustCrypto): it must return NeedMore, a
//! packet inside the buffer, or an error — never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sshr_protocol::cipher::{CipherAlg, MacAlg, PacketCipher};
use sshr_protocol::crypto;
use sshr_protocol::packet::{Opened, Opener};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut opener = Opener::new();
    let ciphers = CipherAlg::ALL;
    if !(selector as usize).is_multiple_of(ciphers.len() + 1) {
        let c = ciphers[(selector as usize - 1) % ciphers.len()];
        let mac =
            (!c.is_aead()).then_some(MacAlg::ALL[(selector as usize / 8) % MacAlg::ALL.len()]);
        let key = vec![7u8; c.key_len()];
        let iv = vec![9u8; c.iv_len()];
        let mac_key = vec![5u8; mac.map_or(0, |m| m.key_len())];
        let providers = crypto::providers();
        let provider = providers[(selector as usize / 64) % providers.len()];
        opener.set_cipher(PacketCipher::new(provider, c, mac, &key, &iv, &mac_key));
    }
    let mut buf = rest.to_vec();
    let mut at = 0;
    while at < buf.len() {
        match opener.open(&mut buf[at..]) {
            Ok(Opened::Packet { len, payload }) => {
                assert!(payload.end <= len && len <= buf.len() - at && !payload.is_empty());
                at += len;
            }
            Ok(Opened::NeedMore(n)) => {
                assert!(n > buf.len() - at);
                break;
            }
            Err(_) => break,
        }
    }
});
