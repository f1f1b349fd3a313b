//! What a client asks its server to open, as the audit log names it: every channel
//! (`session`, `direct-tcpip` for `ssh -L`/`-D`, `direct-streamlocal@openssh.com`,
//! `tun@openssh.com`, ...) and every remote forwarding (`tcpip-forward` for `ssh -R`,
//! `streamlocal-forward@openssh.com`). Plain functions on payloads; the relay calls them
//! only for `CHANNEL_OPEN` and `GLOBAL_REQUEST` messages from the client, never for data.
//!
//! Wire formats: RFC 4254 5.1 (`CHANNEL_OPEN`), 7.1 (`tcpip-forward`), 7.2
//! (`direct-tcpip`); OpenSSH `PROTOCOL` 2.4 (the streamlocal variants). Everything here
//! came from the client: names and addresses are cut to a bounded length and non-UTF-8
//! bytes are replaced, so what the audit log gets is bounded whatever was sent.

use std::borrow::Cow;

use sshr_protocol::msg;
use sshr_protocol::wire::Reader;

/// Longest channel or request type kept (real ones are under 40 bytes).
pub const MAX_TYPE: usize = 64;
/// Longest host name or socket path kept (DNS names are at most 253 bytes).
pub const MAX_ADDRESS: usize = 255;

/// One open or forwarding request of the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The channel type, or the global request's name for a forwarding.
    pub kind: String,
    /// What it asks for, when the type has an address: `host:port` (`[v6]:port`) to
    /// connect to for `direct-tcpip`, to listen on for `tcpip-forward`; the socket path
    /// for the streamlocal types.
    pub address: Option<String>,
}

/// The request a `CHANNEL_OPEN` or `GLOBAL_REQUEST` payload (message number first)
/// makes, or `None` for any other message and for global requests that open nothing
/// (`keepalive@openssh.com`, `no-more-sessions@openssh.com`, ...). A malformed tail
/// gives the type without an address.
pub fn client_request(payload: &[u8]) -> Option<Opened> {
    let mut r = Reader::new(payload.get(1..)?);
    match *payload.first()? {
        msg::CHANNEL_OPEN => {
            let kind = r.string("channel type").ok()?;
            // Sender channel, initial window size, maximum packet size.
            let head = (|| {
                r.u32("sender channel")?;
                r.u32("initial window size")?;
                r.u32("maximum packet size")
            })();
            let address = match (kind, head) {
                (_, Err(_)) => None,
                (b"direct-tcpip", Ok(_)) => host_port(&mut r),
                (b"direct-streamlocal@openssh.com", Ok(_)) => path(&mut r),
                _ => None,
            };
            Some(Opened {
                kind: text(kind, MAX_TYPE).into_owned(),
                address,
            })
        }
        msg::GLOBAL_REQUEST => {
            let name = r.string("request name").ok()?;
            let want_reply = r.bool("want reply");
            let address = match name {
                b"tcpip-forward" | b"cancel-tcpip-forward" => {
                    want_reply.ok().and_then(|_| host_port(&mut r))
                }
                b"streamlocal-forward@openssh.com" | b"cancel-streamlocal-forward@openssh.com" => {
                    want_reply.ok().and_then(|_| path(&mut r))
                }
                _ => return None,
            };
            Some(Opened {
                kind: text(name, MAX_TYPE).into_owned(),
                address,
            })
        }
        _ => None,
    }
}

/// `string host, uint32 port`, as `host:port` (brackets around an IPv6 address).
fn host_port(r: &mut Reader<'_>) -> Option<String> {
    let host = r.string("host").ok()?;
    let port = r.u32("port").ok()?;
    let host = text(host, MAX_ADDRESS);
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

fn path(r: &mut Reader<'_>) -> Option<String> {
    Some(text(r.string("socket path").ok()?, MAX_ADDRESS).into_owned())
}

/// At most `max` bytes of `bytes`, invalid UTF-8 replaced (a cut in the middle of a
/// character leaves a replacement character: harmless, and bounded all the same).
fn text(bytes: &[u8], max: usize) -> Cow<'_, str> {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)])
}

#[cfg(test)]
mod tests {
    use sshr_protocol::wire;

    use super::*;

    fn open(kind: &[u8], tail: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut p = vec![msg::CHANNEL_OPEN];
        wire::put_string(&mut p, kind);
        for v in [7, 2 << 20, 32768] {
            wire::put_u32(&mut p, v);
        }
        tail(&mut p);
        p
    }

    fn global(name: &[u8], tail: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut p = vec![msg::GLOBAL_REQUEST];
        wire::put_string(&mut p, name);
        wire::put_bool(&mut p, true);
        tail(&mut p);
        p
    }

    fn target(host: &[u8], port: u32) -> impl FnOnce(&mut Vec<u8>) + '_ {
        move |p| {
            wire::put_string(p, host);
            wire::put_u32(p, port);
            wire::put_string(p, b"127.0.0.1");
            wire::put_u32(p, 50000);
        }
    }

    fn opened(kind: &str, address: Option<&str>) -> Option<Opened> {
        Some(Opened {
            kind: kind.into(),
            address: address.map(Into::into),
        })
    }

    #[test]
    fn channel_opens_name_their_type_and_target() {
        assert_eq!(
            client_request(&open(b"session", |_| {})),
            opened("session", None)
        );
        assert_eq!(
            client_request(&open(b"direct-tcpip", target(b"db.internal", 5432))),
            opened("direct-tcpip", Some("db.internal:5432"))
        );
        assert_eq!(
            client_request(&open(b"direct-tcpip", target(b"::1", 22))),
            opened("direct-tcpip", Some("[::1]:22"))
        );
        let streamlocal = open(b"direct-streamlocal@openssh.com", |p| {
            wire::put_string(p, b"/run/app.sock");
            wire::put_string(p, b"");
            wire::put_u32(p, 0);
        });
        assert_eq!(
            client_request(&streamlocal),
            opened("direct-streamlocal@openssh.com", Some("/run/app.sock"))
        );
        let tun = open(b"tun@openssh.com", |p| {
            wire::put_u32(p, 1);
            wire::put_u32(p, 0x7fff_ffff);
        });
        assert_eq!(client_request(&tun), opened("tun@openssh.com", None));
    }

    #[test]
    fn forwardings_name_their_listening_address_and_nothing_else_is_taken() {
        let forward = global(b"tcpip-forward", |p| {
            wire::put_string(p, b"0.0.0.0");
            wire::put_u32(p, 8080);
        });
        assert_eq!(
            client_request(&forward),
            opened("tcpip-forward", Some("0.0.0.0:8080"))
        );
        let socket = global(b"streamlocal-forward@openssh.com", |p| {
            wire::put_string(p, b"/tmp/s")
        });
        assert_eq!(
            client_request(&socket),
            opened("streamlocal-forward@openssh.com", Some("/tmp/s"))
        );
        // Keepalives and the like open nothing: no record for each of them.
        for name in [
            &b"keepalive@openssh.com"[..],
            b"no-more-sessions@openssh.com",
        ] {
            assert_eq!(client_request(&global(name, |_| {})), None);
        }
        // Nor does any other message.
        for p in [
            &[msg::CHANNEL_DATA, 0, 0, 0, 0][..],
            &[msg::CHANNEL_CLOSE],
            &[],
        ] {
            assert_eq!(client_request(p), None);
        }
    }

    #[test]
    fn hostile_fields_are_bounded_and_made_text() {
        let long = vec![b'a'; 100_000];
        let got = client_request(&open(b"direct-tcpip", target(&long, 1))).unwrap();
        assert_eq!(got.address.unwrap().len(), MAX_ADDRESS + ":1".len());
        let got = client_request(&open(&long, |_| {})).unwrap();
        assert_eq!(got.kind.len(), MAX_TYPE);
        let got = client_request(&open(b"direct-tcpip", target(b"\xff\xfeh\"o\n", 1))).unwrap();
        assert_eq!(got.address.as_deref(), Some("\u{fffd}\u{fffd}h\"o\n:1"));
        // Truncated tails: the type, no address; no panic on any prefix.
        let full = open(b"direct-tcpip", target(b"host", 1));
        for n in 0..full.len() {
            let _ = client_request(&full[..n]);
        }
        assert_eq!(
            client_request(&full[..full.len() - 24]),
            opened("direct-tcpip", None)
        );
    }
}
