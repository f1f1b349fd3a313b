//! The JSON contract of the `http` and `command` providers (`docs/providers.md`): what
//! sshr sends about a login, and the answer it expects back.
//!
//! Request (`http`: the POST body):
//!
//! ```json
//! {"user": "alice", "target": "web2", "client_addr": "192.0.2.7:50122",
//!  "session_id": "1a2b", "client_version": "SSH-2.0-OpenSSH_9.2p1"}
//! ```
//!
//! Answer for a known user (only `upstream` and `upstream_user` are required):
//!
//! ```json
//! {"upstream": "10.0.0.5:22", "upstream_user": "alice",
//!  "authorized_keys": ["ssh-ed25519 AAAA... alice@laptop"],
//!  "upstream_host_keys": ["ssh-ed25519 AAAA..."], "tunnel": "deny"}
//! ```
//!
//! or, for a user with several servers and no default, the names to choose from:
//! `{"targets": ["web1", "web2"], "authorized_keys": [...]}`. Fields sshr does not
//! know are ignored, so a directory may send more than sshr reads.

use serde::{Deserialize, Serialize};
use sshr_protocol::text::Untrusted;

use super::schema::{self, MAX_TARGETS};
use crate::core::values::is_target_name;
use crate::hooks::{HookContext, HookError, Lookup};

/// The description of a login sent to the directory.
#[derive(Serialize, Debug)]
pub struct LoginRequest<'a> {
    pub user: &'a str,
    pub target: Option<&'a str>,
    pub client_addr: String,
    /// The proxy's session id (hexadecimal), as in its log lines.
    pub session_id: String,
    pub client_version: &'a str,
}

impl<'a> LoginRequest<'a> {
    pub fn new(ctx: &'a HookContext) -> Self {
        LoginRequest {
            user: &ctx.user,
            target: ctx.target.as_deref(),
            client_addr: ctx.client_addr.to_string(),
            session_id: format!("{:x}", ctx.session_id),
            client_version: &ctx.client_version,
        }
    }

    /// The request as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a request of strings serializes")
    }
}

#[derive(Deserialize, Debug)]
struct Answer {
    upstream: Option<String>,
    upstream_user: Option<String>,
    #[serde(default)]
    authorized_keys: Vec<String>,
    #[serde(default)]
    upstream_host_keys: Vec<String>,
    tunnel: Option<String>,
    targets: Option<Vec<String>>,
}

/// The lookup for `ctx` from a directory's JSON answer about a known user. Anything
/// unusable (not JSON, missing fields, a bad address or pinned key) is
/// [`HookError::InvalidData`], naming what is wrong.
pub fn parse(ctx: &HookContext, body: &[u8]) -> Result<Lookup, HookError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        HookError::InvalidData(format!(
            "answer for user {} is not the expected JSON: {e}",
            Untrusted(&ctx.user)
        ))
    })?;
    let user = &ctx.user;
    match (answer.upstream, answer.upstream_user, answer.targets) {
        (Some(addr), Some(upstream_user), _) => {
            let host_keys: Vec<&str> = answer.upstream_host_keys.iter().map(String::as_str).collect();
            let upstream = schema::upstream(
                user,
                &addr,
                &upstream_user,
                &host_keys,
                answer.tunnel.as_deref(),
            )?;
            Ok(Lookup::Found {
                upstream,
                authorized_keys: schema::authorized_keys(user, &answer.authorized_keys),
            })
        }
        (None, None, Some(mut targets)) if ctx.target.is_none() && !targets.is_empty() => {
            targets.retain(|t| is_target_name(t));
            targets.truncate(MAX_TARGETS);
            if targets.is_empty() {
                return Err(HookError::InvalidData(format!(
                    "answer for user {} lists no usable target name",
                    Untrusted(user)
                )));
            }
            Ok(Lookup::Choose {
                targets,
                authorized_keys: schema::authorized_keys(user, &answer.authorized_keys),
            })
        }
        _ => Err(HookError::InvalidData(format!(
            "answer for user {} has neither \"upstream\" and \"upstream_user\" nor a \"targets\" list",
            Untrusted(user)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sshr_protocol::hostkey::PrivateKey;

    fn ctx(target: Option<&str>) -> HookContext {
        HookContext::new(
            "alice",
            "192.0.2.7:50122".parse().unwrap(),
            0x1a2b,
            "SSH-2.0-x",
        )
        .target(target.map(str::to_owned))
    }

    #[test]
    fn request_has_the_documented_fields() {
        let c = ctx(Some("web2"));
        let json: serde_json::Value =
            serde_json::from_str(&LoginRequest::new(&c).to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"user": "alice", "target": "web2", "client_addr": "192.0.2.7:50122",
                "session_id": "1a2b", "client_version": "SSH-2.0-x"})
        );
        let c = ctx(None);
        let json: serde_json::Value =
            serde_json::from_str(&LoginRequest::new(&c).to_json()).unwrap();
        assert_eq!(json["target"], serde_json::Value::Null);
    }

    #[test]
    fn answers() {
        let key = PrivateKey::generate_ed25519(&mut rand_core::OsRng).public();
        let body = format!(
            r#"{{"upstream": "10.0.0.5:22", "upstream_user": "al", "authorized_keys": ["{} c", "junk"], "extra": 1}}"#,
            key.to_openssh()
        );
        match parse(&ctx(None), body.as_bytes()).unwrap() {
            Lookup::Found {
                upstream,
                authorized_keys,
            } => {
                assert_eq!(
                    (upstream.addr.as_str(), upstream.user.as_str()),
                    ("10.0.0.5:22", "al")
                );
                assert_eq!(authorized_keys, vec![key]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&ctx(None), br#"{"targets": ["web1", "web 2", "web2"]}"#).unwrap() {
            Lookup::Choose { targets, .. } => assert_eq!(targets, ["web1", "web2"]),
            other => panic!("{other:?}"),
        }
        for bad in [
            &b"not json"[..],
            br#"{"upstream": "10.0.0.5:22"}"#,
            br#"{"upstream": "10.0.0.5", "upstream_user": "a"}"#,
            br#"{"upstream": "h:22", "upstream_user": "a", "upstream_host_keys": ["x"]}"#,
            br#"{"targets": []}"#,
            br#"[1, 2]"#,
        ] {
            assert!(
                matches!(parse(&ctx(None), bad), Err(HookError::InvalidData(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A list of targets answers only a login that named none.
        assert!(parse(&ctx(Some("web1")), br#"{"targets": ["web1"]}"#).is_err());
    }
}
