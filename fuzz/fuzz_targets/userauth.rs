//! Every user-auth message parser; what parses must survive encode -> parse unchanged
//! (byte equality is too strict: RFC 4251 booleans accept any non-zero byte).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sshr_protocol::auth::{self, Failure, InfoRequest, InfoResponse, Method, Request};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let mut payload = vec![match kind % 5 {
        0 => sshr_protocol::msg::USERAUTH_REQUEST,
        1 => sshr_protocol::msg::USERAUTH_FAILURE,
        2 => sshr_protocol::msg::USERAUTH_INFO_REQUEST,
        3 => sshr_protocol::msg::USERAUTH_INFO_RESPONSE,
        _ => sshr_protocol::msg::USERAUTH_BANNER,
    }];
    payload.extend_from_slice(rest);
    match kind % 5 {
        0 => {
            if let Ok(req) = Request::parse(&payload) {
                if !matches!(req.method, Method::Other(_)) {
                    let enc = req.encode();
                    assert_eq!(Request::parse(&enc).expect("re-parse"), req);
                }
                if let Method::PublicKey {
                    algorithm,
                    key_blob,
                    signature: Some(sig),
                } = req.method
                {
                    // Every provider's signature code sees the hostile blobs.
                    for provider in sshr_protocol::crypto::providers() {
                        let _ = auth::verify_publickey(
                            provider,
                            &[0; 32],
                            req.user,
                            req.service,
                            algorithm,
                            key_blob,
                            sig,
                        );
                    }
                }
            }
        }
        1 => {
            let _ = Failure::parse(&payload);
        }
        2 => {
            if let Ok(r) = InfoRequest::parse(&payload) {
                let enc = r.encode();
                assert_eq!(InfoRequest::parse(&enc).expect("re-parse"), r);
            }
        }
        3 => {
            if let Ok(r) = InfoResponse::parse(&payload) {
                let enc = r.encode();
                assert_eq!(InfoResponse::parse(&enc).expect("re-parse"), r);
            }
        }
        _ => {
            let _ = auth::parse_banner(&payload);
        }
    }
});
