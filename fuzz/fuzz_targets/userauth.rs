//! Every user-auth message parser; what parses must re-encode to the same bytes where
//! the encoding is canonical.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sshr_protocol::auth::{self, Failure, InfoRequest, InfoResponse, Method, Request};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
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
                    assert_eq!(&req.encode()[..], &payload[..]);
                }
                if let Method::PublicKey { algorithm, key_blob, signature: Some(sig) } = req.method {
                    let _ = auth::verify_publickey(&[0; 32], req.user, req.service, algorithm, key_blob, sig);
                }
            }
        }
        1 => {
            let _ = Failure::parse(&payload);
        }
        2 => {
            if let Ok(r) = InfoRequest::parse(&payload) {
                assert_eq!(r.encode(), payload);
            }
        }
        3 => {
            if let Ok(r) = InfoResponse::parse(&payload) {
                assert_eq!(&r.encode()[..], &payload[..]);
            }
        }
        _ => {
            let _ = auth::parse_banner(&payload);
        }
    }
});
