//! What every provider answers, in one form: the SQL schema that the database
//! providers share (a contract: operators write to it directly), and the checks that
//! turn a backend's row or JSON answer into a [`Lookup`].
//!
//! A backend's data is as hostile as a client's: an address is checked like the
//! configuration's, a pinned host key that does not parse makes the answer unusable
//! (it must never turn into "unpinned"), and a key line that does not parse is left out
//! with a warning naming the user and the line.

use sshr_protocol::hostkey::{self, PublicKey};
use sshr_protocol::text::Untrusted;

use crate::core::host_port::check_host_port;
use crate::core::values::TunnelPolicy;
use crate::hooks::{HookError, HostKeyPolicy, Lookup, Upstream};

/// The tables of the `sqlite` and `postgres` providers (the same text works in both).
/// `sshr db init` and a provider opening a new SQLite file create them.
pub const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS users (
  name              TEXT NOT NULL,
  target            TEXT NOT NULL DEFAULT '',
  upstream          TEXT NOT NULL,
  upstream_user     TEXT NOT NULL,
  upstream_host_key TEXT,
  tunnel            TEXT,
  PRIMARY KEY (name, target)
);
CREATE TABLE IF NOT EXISTS user_keys (
  name TEXT NOT NULL,
  key  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS user_keys_name ON user_keys (name);
";

/// At most this many targets of one user are read and listed (a menu longer than this
/// is no use to anyone, and a backend must not make the proxy hold an unbounded list).
pub const MAX_TARGETS: usize = 64;
/// At most this many key lines of one user are used; more are left out with a warning.
pub const MAX_KEYS: usize = 1024;
/// Longest address, user name, key line or target taken from a backend.
pub const MAX_FIELD: usize = 16 * 1024;

/// One row of `users`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    /// `''` for the user's default server.
    pub target: String,
    pub upstream: String,
    pub upstream_user: String,
    /// `NULL`: the configured host-key policy (unpinned); else one key, or several
    /// separated by newlines.
    pub upstream_host_key: Option<String>,
    /// `NULL`: `tunnels.default`.
    pub tunnel: Option<String>,
}

/// The answer for the rows of `user` (every target of it, or only the wanted one) and
/// its key lines (`user_keys.key`).
///
/// - A named target: its row, or [`Lookup::Unknown`].
/// - No target: the default row (`target = ''`); without one, the list of targets to
///   choose from ([`Lookup::Choose`]), or `Unknown` when the user has no row at all.
pub fn from_rows(
    user: &str,
    wanted: Option<&str>,
    rows: &[UserRow],
    key_lines: &[String],
) -> Result<Lookup, HookError> {
    let wanted = wanted.unwrap_or("");
    if let Some(row) = rows.iter().find(|r| r.target == wanted) {
        let host_keys: Vec<&str> = row
            .upstream_host_key
            .as_deref()
            .map(|k| k.lines().filter(|l| !l.trim().is_empty()).collect())
            .unwrap_or_default();
        let upstream = upstream(
            user,
            &row.upstream,
            &row.upstream_user,
            &host_keys,
            row.tunnel.as_deref(),
        )?;
        return Ok(Lookup::Found {
            upstream,
            authorized_keys: authorized_keys(user, key_lines),
        });
    }
    if !wanted.is_empty() || rows.is_empty() {
        return Ok(Lookup::Unknown);
    }
    let mut targets: Vec<String> = rows.iter().map(|r| r.target.clone()).collect();
    targets.sort();
    targets.dedup();
    targets.truncate(MAX_TARGETS);
    Ok(Lookup::Choose {
        targets,
        authorized_keys: authorized_keys(user, key_lines),
    })
}

/// A checked [`Upstream`]: `addr` is `host:port`, `upstream_user` is not empty,
/// `host_keys` (one OpenSSH public key each, empty: unpinned) all parse, `tunnel` is a
/// policy word.
pub fn upstream(
    user: &str,
    addr: &str,
    upstream_user: &str,
    host_keys: &[&str],
    tunnel: Option<&str>,
) -> Result<Upstream, HookError> {
    let bad = |what: String| HookError::InvalidData(format!("user {}: {what}", Untrusted(user)));
    if addr.len() > MAX_FIELD {
        return Err(bad("upstream address too long".into()));
    }
    check_host_port(addr).map_err(|why| bad(format!("upstream {}: {why}", Untrusted(addr))))?;
    if upstream_user.is_empty()
        || upstream_user.len() > MAX_FIELD
        || upstream_user.chars().any(char::is_control)
    {
        return Err(bad(format!(
            "upstream_user {} is not a user name",
            Untrusted(upstream_user)
        )));
    }
    let tunnels = match tunnel {
        None => None,
        Some(word) => Some(
            word.parse::<TunnelPolicy>()
                .map_err(|e| bad(format!("tunnel: {}", Untrusted(&e.to_string()))))?,
        ),
    };
    let mut pinned = Vec::with_capacity(host_keys.len());
    for line in host_keys.iter().take(MAX_KEYS) {
        let key = PublicKey::from_openssh(line.trim())
            .map_err(|e| bad(format!("upstream host key does not parse: {e}")))?;
        pinned.push(key);
    }
    Ok(Upstream {
        addr: addr.to_owned(),
        user: upstream_user.to_owned(),
        host_key: if pinned.is_empty() {
            HostKeyPolicy::Unpinned
        } else {
            HostKeyPolicy::Pinned(pinned)
        },
        tunnels,
    })
}

/// The usable keys among `lines` (authorized_keys lines, one key each). A line that
/// does not parse, or has options (which the proxy does not enforce, so the key would
/// get more than its line grants), is left out with a warning.
pub fn authorized_keys(user: &str, lines: &[String]) -> Vec<PublicKey> {
    if lines.len() > MAX_KEYS {
        tracing::warn!(
            user = %Untrusted(user),
            lines = lines.len(),
            "more key lines than sshr uses: only the first {MAX_KEYS} count"
        );
    }
    let mut keys = Vec::new();
    for (index, line) in lines.iter().take(MAX_KEYS).enumerate() {
        let entry = if line.len() > MAX_FIELD {
            None
        } else {
            hostkey::parse_authorized_keys(line).into_iter().next()
        };
        match entry {
            Some(Ok(entry)) if entry.options.is_none() => keys.push(entry.key),
            Some(Ok(_)) => tracing::warn!(
                user = %Untrusted(user),
                key_line = index + 1,
                "skipping key line with options: sshr does not enforce key options"
            ),
            Some(Err(e)) => tracing::warn!(
                user = %Untrusted(user),
                key_line = index + 1,
                error = %e,
                "skipping key line that does not parse"
            ),
            None => tracing::warn!(
                user = %Untrusted(user),
                key_line = index + 1,
                "skipping key line that is empty or too long"
            ),
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use sshr_protocol::hostkey::PrivateKey;

    fn key_line() -> (PublicKey, String) {
        let key = PrivateKey::generate_ed25519(&mut rand_core::OsRng).public();
        let line = format!("{} someone@laptop", key.to_openssh());
        (key, line)
    }

    fn row(target: &str, upstream: &str) -> UserRow {
        UserRow {
            target: target.into(),
            upstream: upstream.into(),
            upstream_user: "alice".into(),
            upstream_host_key: None,
            tunnel: None,
        }
    }

    #[test]
    fn default_row_named_target_and_choice() {
        let (key, line) = key_line();
        let rows = [row("", "10.0.0.1:22"), row("web2", "10.0.0.2:22")];
        let keys = [line];
        match from_rows("alice", None, &rows, &keys).unwrap() {
            Lookup::Found {
                upstream,
                authorized_keys,
            } => {
                assert_eq!(upstream.addr, "10.0.0.1:22");
                assert_eq!(authorized_keys, vec![key.clone()]);
            }
            other => panic!("{other:?}"),
        }
        match from_rows("alice", Some("web2"), &rows, &keys).unwrap() {
            Lookup::Found { upstream, .. } => assert_eq!(upstream.addr, "10.0.0.2:22"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            from_rows("alice", Some("web3"), &rows, &keys).unwrap(),
            Lookup::Unknown
        ));
        // No default row: the targets to choose from, sorted.
        let rows = [row("web2", "10.0.0.2:22"), row("web1", "10.0.0.1:22")];
        match from_rows("alice", None, &rows, &keys).unwrap() {
            Lookup::Choose {
                targets,
                authorized_keys,
            } => {
                assert_eq!(targets, ["web1", "web2"]);
                assert_eq!(authorized_keys, vec![key]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            from_rows("nobody", None, &[], &[]).unwrap(),
            Lookup::Unknown
        ));
    }

    #[test]
    fn bad_data_is_invalid_never_a_weaker_answer() {
        let bad = |r: UserRow| from_rows("alice", None, &[r], &[]).unwrap_err();
        for addr in ["10.0.0.1", "", "host:0", "host:99999", "a b:22"] {
            assert!(
                matches!(bad(row("", addr)), HookError::InvalidData(_)),
                "{addr:?}"
            );
        }
        let mut r = row("", "h:22");
        r.upstream_user = String::new();
        assert!(matches!(bad(r), HookError::InvalidData(_)));
        // A pin that does not parse is not "unpinned".
        let mut r = row("", "h:22");
        r.upstream_host_key = Some("ssh-ed25519 garbage".into());
        assert!(matches!(bad(r), HookError::InvalidData(_)));
        let mut r = row("", "h:22");
        r.tunnel = Some("yes".into());
        assert!(matches!(bad(r), HookError::InvalidData(_)));
    }

    #[test]
    fn host_keys_and_tunnel_are_carried() {
        let (a, line_a) = key_line();
        let (b, line_b) = key_line();
        let mut r = row("", "[2001:db8::5]:2222");
        r.upstream_host_key = Some(format!("{line_a}\n{line_b}\n"));
        r.tunnel = Some("point-to-point".into());
        let Lookup::Found { upstream, .. } = from_rows("alice", None, &[r], &[]).unwrap() else {
            panic!()
        };
        assert!(upstream.host_key.accepts(&a) && upstream.host_key.accepts(&b));
        assert_eq!(upstream.tunnels, Some(TunnelPolicy::PointToPoint));
    }

    #[test]
    fn bad_key_lines_are_skipped_and_the_rest_used() {
        let (key, line) = key_line();
        let lines = [
            "ssh-ed25519 AAAAnot-base64".to_string(),
            format!("from=\"10.0.0.0/8\" {line}"),
            String::new(),
            line.clone(),
        ];
        assert_eq!(authorized_keys("alice", &lines), vec![key]);
    }
}
