//! Messages of the user authentication protocol (RFC 4252, RFC 4256) that the proxy
//! speaks on both legs: parse and encode, plus the data a publickey signature covers.
//!
//! The decisions (which keys, which upstream) belong to the daemon; this module only
//! knows the wire.

use zeroize::Zeroizing;

use crate::crypto::CryptoProvider;
use crate::error::Error;
use crate::hostkey::{PrivateKey, PublicKey, SigAlg, VerifyError};
use crate::msg;
use crate::wire::{self, NameList, Reader};

pub const SERVICE: &str = "ssh-userauth";
pub const CONNECTION_SERVICE: &str = "ssh-connection";

/// The method part of SSH_MSG_USERAUTH_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method<'a> {
    None,
    /// RFC 4252 8. `new_password` is set for a password change answer.
    Password {
        password: &'a str,
        new_password: Option<&'a str>,
    },
    /// RFC 4252 7. Without a signature this is a query ("would this key do?").
    PublicKey {
        algorithm: &'a str,
        key_blob: &'a [u8],
        signature: Option<&'a [u8]>,
    },
    /// RFC 4256 3.1.
    KeyboardInteractive {
        language: &'a str,
        submethods: &'a str,
    },
    /// Anything else (hostbased, gssapi-with-mic, ...): answered with FAILURE.
    Other(&'a str),
}

impl Method<'_> {
    pub fn name(&self) -> &str {
        match self {
            Method::None => "none",
            Method::Password { .. } => "password",
            Method::PublicKey { .. } => "publickey",
            Method::KeyboardInteractive { .. } => "keyboard-interactive",
            Method::Other(n) => n,
        }
    }
}

/// SSH_MSG_USERAUTH_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub user: &'a str,
    pub service: &'a str,
    pub method: Method<'a>,
}

impl<'a> Request<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Error> {
        let mal = Error::malformed(msg::USERAUTH_REQUEST);
        let mut r = Reader::new(payload);
        if r.u8("message number").map_err(&mal)? != msg::USERAUTH_REQUEST {
            return Err(Error::Misuse("Request::parse on another message"));
        }
        let user = r.utf8("user name").map_err(&mal)?;
        let service = r.utf8("service name").map_err(&mal)?;
        let method_name = r.utf8("method name").map_err(&mal)?;
        let method = match method_name {
            "none" => Method::None,
            "password" => {
                let change = r.bool("change flag").map_err(&mal)?;
                let password = r.utf8("password").map_err(&mal)?;
                let new_password = if change {
                    Some(r.utf8("new password").map_err(&mal)?)
                } else {
                    None
                };
                Method::Password {
                    password,
                    new_password,
                }
            }
            "publickey" => {
                let signed = r.bool("has signature").map_err(&mal)?;
                let algorithm = r.utf8("public key algorithm").map_err(&mal)?;
                let key_blob = r.string("public key blob").map_err(&mal)?;
                let signature = if signed {
                    Some(r.string("signature").map_err(&mal)?)
                } else {
                    None
                };
                Method::PublicKey {
                    algorithm,
                    key_blob,
                    signature,
                }
            }
            "keyboard-interactive" => {
                let language = r.utf8("language tag").map_err(&mal)?;
                let submethods = r.utf8("submethods").map_err(&mal)?;
                Method::KeyboardInteractive {
                    language,
                    submethods,
                }
            }
            other => {
                return Ok(Self {
                    user,
                    service,
                    method: Method::Other(other),
                })
            }
        };
        r.finish().map_err(&mal)?;
        Ok(Self {
            user,
            service,
            method,
        })
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(256));
        out.push(msg::USERAUTH_REQUEST);
        wire::put_string(&mut out, self.user.as_bytes());
        wire::put_string(&mut out, self.service.as_bytes());
        wire::put_string(&mut out, self.method.name().as_bytes());
        match &self.method {
            Method::None | Method::Other(_) => {}
            Method::Password {
                password,
                new_password,
            } => {
                wire::put_bool(&mut out, new_password.is_some());
                wire::put_string(&mut out, password.as_bytes());
                if let Some(n) = new_password {
                    wire::put_string(&mut out, n.as_bytes());
                }
            }
            Method::PublicKey {
                algorithm,
                key_blob,
                signature,
            } => {
                wire::put_bool(&mut out, signature.is_some());
                wire::put_string(&mut out, algorithm.as_bytes());
                wire::put_string(&mut out, key_blob);
                if let Some(s) = signature {
                    wire::put_string(&mut out, s);
                }
            }
            Method::KeyboardInteractive {
                language,
                submethods,
            } => {
                wire::put_string(&mut out, language.as_bytes());
                wire::put_string(&mut out, submethods.as_bytes());
            }
        }
        out
    }
}

/// The data a publickey signature covers (RFC 4252 7).
pub fn publickey_signed_data(
    session_id: &[u8],
    user: &str,
    service: &str,
    algorithm: &str,
    key_blob: &[u8],
) -> Vec<u8> {
    let mut d = Vec::with_capacity(session_id.len() + key_blob.len() + 128);
    wire::put_string(&mut d, session_id);
    d.push(msg::USERAUTH_REQUEST);
    wire::put_string(&mut d, user.as_bytes());
    wire::put_string(&mut d, service.as_bytes());
    wire::put_string(&mut d, b"publickey");
    wire::put_bool(&mut d, true);
    wire::put_string(&mut d, algorithm.as_bytes());
    wire::put_string(&mut d, key_blob);
    d
}

/// Why a publickey request does not authenticate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicKeyError {
    #[error("unsupported or refused signature algorithm {0:?}")]
    Algorithm(String),
    #[error("key: {0}")]
    Key(VerifyError),
    #[error("algorithm {0:?} does not match the key type")]
    AlgorithmMismatch(String),
    #[error("signature: {0}")]
    Signature(VerifyError),
}

/// Check the key and algorithm of a publickey request (a query or a signed request):
/// the key parses and the algorithm is allowed for it.
pub fn check_publickey(
    algorithm: &str,
    key_blob: &[u8],
) -> Result<(PublicKey, SigAlg), PublicKeyError> {
    let alg = SigAlg::from_name(algorithm)
        .ok_or_else(|| PublicKeyError::Algorithm(algorithm.chars().take(64).collect()))?;
    let key = PublicKey::from_blob(key_blob).map_err(PublicKeyError::Key)?;
    if !key.accepts(alg) {
        return Err(PublicKeyError::AlgorithmMismatch(algorithm.to_owned()));
    }
    Ok((key, alg))
}

/// Verify a signed publickey request over this leg's session id with `provider`'s
/// signatures. Returns the key, which the caller still has to find among the user's
/// authorized keys.
pub fn verify_publickey(
    provider: &CryptoProvider,
    session_id: &[u8],
    user: &str,
    service: &str,
    algorithm: &str,
    key_blob: &[u8],
    signature: &[u8],
) -> Result<PublicKey, PublicKeyError> {
    let (key, alg) = check_publickey(algorithm, key_blob)?;
    let data = publickey_signed_data(session_id, user, service, algorithm, key_blob);
    key.verify(provider, Some(alg), &data, signature)
        .map_err(PublicKeyError::Signature)?;
    Ok(key)
}

/// Client side: a publickey USERAUTH_REQUEST payload signed with `provider`'s
/// signatures.
pub fn signed_publickey_request(
    provider: &CryptoProvider,
    session_id: &[u8],
    user: &str,
    service: &str,
    key: &PrivateKey,
    alg: SigAlg,
) -> Result<Vec<u8>, Error> {
    let blob = key.public().to_blob();
    let data = publickey_signed_data(session_id, user, service, alg.name(), &blob);
    let signature = key
        .sign(provider, alg, &data)
        .map_err(|e| Error::Local(format!("signing failed: {e}")))?;
    let req = Request {
        user,
        service,
        method: Method::PublicKey {
            algorithm: alg.name(),
            key_blob: &blob,
            signature: Some(&signature),
        },
    };
    Ok(req.encode().to_vec())
}

/// SSH_MSG_USERAUTH_FAILURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<'a> {
    pub methods: NameList<'a>,
    pub partial_success: bool,
}

impl<'a> Failure<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Error> {
        let mal = Error::malformed(msg::USERAUTH_FAILURE);
        let mut r = Reader::new(&payload[1..]);
        let methods = r
            .name_list("authentications that can continue")
            .map_err(&mal)?;
        let partial_success = r.bool("partial success").map_err(&mal)?;
        r.finish().map_err(&mal)?;
        Ok(Self {
            methods,
            partial_success,
        })
    }
}

pub fn encode_failure<'n>(
    methods: impl IntoIterator<Item = &'n str>,
    partial_success: bool,
) -> Vec<u8> {
    let mut out = vec![msg::USERAUTH_FAILURE];
    wire::put_name_list(&mut out, methods);
    wire::put_bool(&mut out, partial_success);
    out
}

pub fn encode_success() -> Vec<u8> {
    vec![msg::USERAUTH_SUCCESS]
}

/// SSH_MSG_USERAUTH_BANNER (RFC 4252 5.4).
pub fn encode_banner(message: &str) -> Vec<u8> {
    let mut out = vec![msg::USERAUTH_BANNER];
    wire::put_string(&mut out, message.as_bytes());
    wire::put_string(&mut out, b"");
    out
}

pub fn parse_banner(payload: &[u8]) -> Result<&str, Error> {
    Reader::new(&payload[1..])
        .utf8("banner message")
        .map_err(Error::malformed(msg::USERAUTH_BANNER))
}

/// SSH_MSG_USERAUTH_PK_OK (RFC 4252 7).
pub fn encode_pk_ok(algorithm: &str, key_blob: &[u8]) -> Vec<u8> {
    let mut out = vec![msg::USERAUTH_PK_OK];
    wire::put_string(&mut out, algorithm.as_bytes());
    wire::put_string(&mut out, key_blob);
    out
}

/// One prompt of a keyboard-interactive INFO_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt<'a> {
    pub prompt: &'a str,
    pub echo: bool,
}

/// SSH_MSG_USERAUTH_INFO_REQUEST (RFC 4256 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    pub name: &'a str,
    pub instruction: &'a str,
    pub language: &'a str,
    pub prompts: Vec<Prompt<'a>>,
}

/// More prompts than any real server sends; refuse the rest (OpenSSH uses 100 too).
pub const MAX_PROMPTS: u32 = 100;

impl<'a> InfoRequest<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Error> {
        let mal = Error::malformed(msg::USERAUTH_INFO_REQUEST);
        let mut r = Reader::new(&payload[1..]);
        let name = r.utf8("name").map_err(&mal)?;
        let instruction = r.utf8("instruction").map_err(&mal)?;
        let language = r.utf8("language tag").map_err(&mal)?;
        let n = r.u32("num-prompts").map_err(&mal)?;
        if n > MAX_PROMPTS {
            return Err(mal(wire::WireError::Truncated("prompts (too many)")));
        }
        let mut prompts = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let prompt = r.utf8("prompt").map_err(&mal)?;
            let echo = r.bool("echo").map_err(&mal)?;
            prompts.push(Prompt { prompt, echo });
        }
        r.finish().map_err(&mal)?;
        Ok(Self {
            name,
            instruction,
            language,
            prompts,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![msg::USERAUTH_INFO_REQUEST];
        wire::put_string(&mut out, self.name.as_bytes());
        wire::put_string(&mut out, self.instruction.as_bytes());
        wire::put_string(&mut out, self.language.as_bytes());
        wire::put_u32(&mut out, self.prompts.len() as u32);
        for p in &self.prompts {
            wire::put_string(&mut out, p.prompt.as_bytes());
            wire::put_bool(&mut out, p.echo);
        }
        out
    }
}

/// SSH_MSG_USERAUTH_INFO_RESPONSE (RFC 4256 3.4). Responses are secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoResponse<'a> {
    pub responses: Vec<&'a str>,
}

impl<'a> InfoResponse<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Error> {
        let mal = Error::malformed(msg::USERAUTH_INFO_RESPONSE);
        let mut r = Reader::new(&payload[1..]);
        let n = r.u32("num-responses").map_err(&mal)?;
        if n > MAX_PROMPTS {
            return Err(mal(wire::WireError::Truncated("responses (too many)")));
        }
        let mut responses = Vec::with_capacity(n as usize);
        for _ in 0..n {
            responses.push(r.utf8("response").map_err(&mal)?);
        }
        r.finish().map_err(&mal)?;
        Ok(Self { responses })
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![msg::USERAUTH_INFO_RESPONSE]);
        wire::put_u32(&mut out, self.responses.len() as u32);
        for s in &self.responses {
            wire::put_string(&mut out, s.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let cases = [
            Method::None,
            Method::Password {
                password: "hunter2",
                new_password: None,
            },
            Method::Password {
                password: "old",
                new_password: Some("new"),
            },
            Method::PublicKey {
                algorithm: "ssh-ed25519",
                key_blob: b"blob",
                signature: None,
            },
            Method::PublicKey {
                algorithm: "rsa-sha2-512",
                key_blob: b"blob",
                signature: Some(b"sig"),
            },
            Method::KeyboardInteractive {
                language: "",
                submethods: "pam",
            },
        ];
        for method in cases {
            let req = Request {
                user: "alice",
                service: CONNECTION_SERVICE,
                method,
            };
            let enc = req.encode();
            assert_eq!(Request::parse(&enc).unwrap(), req);
            // Every truncation is an error, never a panic.
            for cut in 1..enc.len() {
                assert!(Request::parse(&enc[..cut]).is_err(), "cut at {cut}");
            }
        }
        let mut other = vec![msg::USERAUTH_REQUEST];
        for s in ["bob", "ssh-connection", "hostbased"] {
            wire::put_string(&mut other, s.as_bytes());
        }
        other.extend_from_slice(b"whatever follows");
        assert_eq!(
            Request::parse(&other).unwrap().method,
            Method::Other("hostbased")
        );
    }

    #[test]
    fn failure_info_round_trips() {
        let f = encode_failure(["publickey", "password"], true);
        let p = Failure::parse(&f).unwrap();
        assert_eq!(p.methods.as_str(), "publickey,password");
        assert!(p.partial_success);
        let req = InfoRequest {
            name: "",
            instruction: "hi",
            language: "",
            prompts: vec![
                Prompt {
                    prompt: "Password: ",
                    echo: false,
                },
                Prompt {
                    prompt: "Code: ",
                    echo: true,
                },
            ],
        };
        let enc = req.encode();
        assert_eq!(InfoRequest::parse(&enc).unwrap(), req);
        let resp = InfoResponse {
            responses: vec!["a", "b"],
        };
        assert_eq!(InfoResponse::parse(&resp.encode()).unwrap(), resp);
        let mut huge = vec![msg::USERAUTH_INFO_RESPONSE];
        wire::put_u32(&mut huge, u32::MAX);
        assert!(InfoResponse::parse(&huge).is_err());
    }

    #[test]
    fn publickey_signature_covers_the_session_id() {
        let key = PrivateKey::generate_ed25519(&mut rand_chacha::ChaCha20Rng::from_seed_bytes());
        let sid = [9u8; 32];
        let payload = signed_publickey_request(
            crate::crypto::default_provider(),
            &sid,
            "alice",
            CONNECTION_SERVICE,
            &key,
            SigAlg::Ed25519,
        )
        .unwrap();
        let req = Request::parse(&payload).unwrap();
        let Method::PublicKey {
            algorithm,
            key_blob,
            signature: Some(sig),
        } = req.method
        else {
            panic!()
        };
        let k = verify_publickey(
            crate::crypto::default_provider(),
            &sid,
            req.user,
            req.service,
            algorithm,
            key_blob,
            sig,
        )
        .unwrap();
        assert_eq!(k, key.public());
        // The same signature for another session (or user) does not verify.
        assert!(verify_publickey(
            crate::crypto::default_provider(),
            &[8u8; 32],
            req.user,
            req.service,
            algorithm,
            key_blob,
            sig
        )
        .is_err());
        assert!(verify_publickey(
            crate::crypto::default_provider(),
            &sid,
            "bob",
            req.service,
            algorithm,
            key_blob,
            sig
        )
        .is_err());
        assert!(matches!(
            check_publickey("ssh-rsa", key_blob),
            Err(PublicKeyError::Algorithm(_))
        ));
        assert!(matches!(
            check_publickey("rsa-sha2-256", key_blob),
            Err(PublicKeyError::AlgorithmMismatch(_))
        ));
    }

    trait FromSeedBytes {
        fn from_seed_bytes() -> Self;
    }
    impl FromSeedBytes for rand_chacha::ChaCha20Rng {
        fn from_seed_bytes() -> Self {
            <Self as rand_core::SeedableRng>::from_seed([1; 32])
        }
    }
}
