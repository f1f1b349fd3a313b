//! A whole server-side transport fed arbitrary client bytes, in arbitrary chunks: it
//! must end in an orderly error or keep going, never panic or grow without bound.
#![no_main]
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;
use sshr_protocol::hostkey::PrivateKey;
use sshr_protocol::transport::{Config, Input, Transport};

static SETUP: OnceLock<(Arc<Config>, Arc<[PrivateKey]>)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (config, keys) = SETUP.get_or_init(|| {
        let key = PrivateKey::generate_ed25519(&mut rand_chacha::ChaCha20Rng::from_seed([1; 32]));
        (Arc::new(Config::default()), Arc::from(vec![key]))
    });
    let now = Instant::now();
    let mut t = Transport::server(config.clone(), keys.clone(), [2; 32], now);
    let mut rx = Vec::new();
    for chunk in data.chunks(97) {
        rx.extend_from_slice(chunk);
        loop {
            match t.read(&mut rx, now) {
                Ok(Input::NeedMore(_)) => break,
                Ok(Input::Consumed(n)) | Ok(Input::Packet { len: n, .. }) => {
                    assert!(n > 0 && n <= rx.len());
                    rx.drain(..n);
                }
                Err(_) => return,
            }
            let n = t.transmit().len();
            t.advance_transmit(n);
        }
    }
});
