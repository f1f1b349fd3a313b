//! The upstream leg: connect to the user's server, run the client role of the transport
//! (verifying the host key against the hook's policy), and log in there.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sshr_protocol::auth::{self, Failure, Method, Request};
use sshr_protocol::cipher::{CipherAlg, MacAlg};
use sshr_protocol::hostkey::{PrivateKey, SigAlg};
use sshr_protocol::msg;
use sshr_protocol::text::Untrusted;
use sshr_protocol::transport::{ClientOptions, Config, Event, HostKeyCheck, Transport};
use tracing::{info, warn};

use crate::core::refusal::{Negotiated, Refusal};
use crate::core::values::Side;
use crate::hooks::{HostKeyPolicy, Upstream};
use crate::io::leg::{Leg, LegError, Received, RxBuf};
use crate::io::net::{self, ConnectError};
use crate::metrics::UpstreamFailure;

/// Why the upstream leg could not be set up. The client hears a one-line summary
/// ([`UpstreamError::client_message`]); the log gets this.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("upstream did not finish the handshake within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Leg(#[from] LegError),
    #[error("upstream sent message {0} before authentication")]
    Unexpected(u8),
    /// Every key of the proxy was refused: which, and what the server listed last.
    #[error("upstream refused the proxy's keys ({refused}; it offers: {offered})")]
    KeyRefused { refused: String, offered: String },
}

impl UpstreamError {
    /// The metrics label of this failure.
    pub fn failure(&self) -> UpstreamFailure {
        match self {
            UpstreamError::Connect(e) => e.reason(),
            UpstreamError::Timeout(_) => UpstreamFailure::Timeout,
            UpstreamError::Leg(LegError::Protocol {
                source: sshr_protocol::Error::HostKeyMismatch { .. },
                ..
            }) => UpstreamFailure::HostKey,
            UpstreamError::Leg(LegError::Protocol {
                source: sshr_protocol::Error::NoCommonAlgorithm { .. },
                ..
            }) => UpstreamFailure::Negotiation,
            UpstreamError::KeyRefused { .. } => UpstreamFailure::Auth,
            UpstreamError::Leg(_) | UpstreamError::Unexpected(_) => UpstreamFailure::Protocol,
        }
    }

    /// What the client is told (once it has proven who it is).
    pub fn refusal(&self) -> Refusal {
        match self {
            UpstreamError::Leg(LegError::Protocol {
                source: sshr_protocol::Error::HostKeyMismatch { .. },
                ..
            }) => Refusal::UnexpectedHostKey,
            UpstreamError::Leg(LegError::Protocol {
                source: sshr_protocol::Error::NoCommonAlgorithm { list, .. },
                ..
            }) => Refusal::NoCommonAlgorithm(Negotiated::from(*list)),
            UpstreamError::KeyRefused { .. } => Refusal::LoginRefused,
            _ => Refusal::Unreachable,
        }
    }

    /// For a key exchange that found nothing in common: which list, and the proxy's and
    /// the server's (shortened by the protocol crate), for the log.
    pub fn no_common_algorithm(&self) -> Option<(&'static str, &str, &str)> {
        match self {
            UpstreamError::Leg(LegError::Protocol {
                source: sshr_protocol::Error::NoCommonAlgorithm { list, ours, theirs },
                ..
            }) => Some((list.name(), ours, theirs)),
            _ => None,
        }
    }
}

/// An upstream connection through key exchange and the ssh-userauth service request.
pub struct UpstreamConn {
    pub leg: Rc<Leg>,
    pub rx: RxBuf,
    /// `server-sig-algs` from the upstream's EXT_INFO, when it sent one.
    pub server_sig_algs: Option<Vec<String>>,
    /// Banners the upstream sent in answer to [`UpstreamConn::ask_methods`], handed out
    /// by [`UpstreamConn::auth_reply`] before anything it reads.
    held_banners: Vec<Vec<u8>>,
    /// The upstream took a `none` request: the connection is logged in.
    logged_in: bool,
}

/// What the upstream said to a `none` request ([`UpstreamConn::ask_methods`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// Its USERAUTH_FAILURE name-list, as sent.
    Methods(String),
    /// It let the user in without any credential (sshd's `PermitEmptyPasswords` with an
    /// empty password, or a server with no authentication at all).
    LoggedIn,
}

/// Connect and run the transport handshake, within `timeout`.
pub async fn connect(
    upstream: &Upstream,
    config: Arc<Config>,
    prefer: (Option<CipherAlg>, Option<MacAlg>),
    seed: [u8; 32],
    timeout: Duration,
) -> Result<UpstreamConn, UpstreamError> {
    let started = Instant::now();
    let stream = net::connect(&upstream.addr, timeout).await?;
    let remaining = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let host_key_check = HostKeyCheck::from(upstream.host_key.clone());
    let options = ClientOptions {
        host_key_check,
        prefer_cipher: prefer.0,
        prefer_mac: prefer.1,
    };
    let transport = Transport::client(config, options, seed, Instant::now());
    let leg = Rc::new(Leg::new(Side::Upstream, stream, transport));
    let handshake = async {
        leg.transport
            .borrow_mut()
            .request_service(auth::SERVICE)
            .map_err(|source| LegError::Protocol {
                side: Side::Upstream,
                source,
            })?;
        let mut rx = RxBuf::new();
        let mut server_sig_algs = None;
        loop {
            match leg.recv(&mut rx).await? {
                Received::Event(Event::HostKey(key)) => {
                    if matches!(upstream.host_key, HostKeyPolicy::Unpinned) {
                        warn!(upstream = %upstream.addr, fingerprint = %key.fingerprint(),
                            "upstream host key is not pinned; accepting it");
                    } else {
                        info!(upstream = %upstream.addr, fingerprint = %key.fingerprint(), "upstream host key matches the pin");
                    }
                }
                Received::Event(Event::ExtInfo(info)) => server_sig_algs = info.server_sig_algs,
                Received::Event(Event::ServiceAccepted(_)) => break,
                Received::Event(_) => {}
                Received::Packet(p) => return Err(UpstreamError::Unexpected(p[0])),
            }
        }
        Ok(UpstreamConn {
            leg: leg.clone(),
            rx,
            server_sig_algs,
            held_banners: Vec::new(),
            logged_in: false,
        })
    };
    match glommio::timer::timeout(remaining, async { Ok(handshake.await) }).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Timeout(timeout)),
    }
}

/// What the upstream answered to an authentication attempt passed through or made by
/// the proxy.
pub enum UpstreamReply {
    Success,
    /// USERAUTH_FAILURE, as received.
    Failure {
        partial_success: bool,
        /// The methods that can continue (a name-list, as sent).
        methods: String,
    },
    /// A message for the client (banner, INFO_REQUEST, PASSWD_CHANGEREQ): pass it on.
    ForClient(Vec<u8>),
}

impl UpstreamConn {
    /// The next authentication reply from the upstream (banners held from
    /// [`UpstreamConn::ask_methods`] first; then success, if it let the user in then).
    pub async fn auth_reply(&mut self) -> Result<UpstreamReply, UpstreamError> {
        if !self.held_banners.is_empty() {
            return Ok(UpstreamReply::ForClient(self.held_banners.remove(0)));
        }
        if self.logged_in {
            return Ok(UpstreamReply::Success);
        }
        loop {
            match self.leg.recv(&mut self.rx).await? {
                Received::Event(Event::ExtInfo(info)) => {
                    // RFC 8308 2.4: a second EXT_INFO may come just before USERAUTH_SUCCESS.
                    if info.server_sig_algs.is_some() {
                        self.server_sig_algs = info.server_sig_algs;
                    }
                }
                Received::Event(_) => {}
                Received::Packet(p) => {
                    return Ok(match p[0] {
                        msg::USERAUTH_SUCCESS => UpstreamReply::Success,
                        msg::USERAUTH_FAILURE => match Failure::parse(&p) {
                            Ok(f) => UpstreamReply::Failure {
                                partial_success: f.partial_success,
                                methods: f.methods.as_str().to_owned(),
                            },
                            Err(source) => {
                                return Err(LegError::Protocol {
                                    side: Side::Upstream,
                                    source,
                                }
                                .into())
                            }
                        },
                        msg::USERAUTH_BANNER | msg::USERAUTH_INFO_REQUEST => {
                            UpstreamReply::ForClient(p)
                        }
                        other => return Err(UpstreamError::Unexpected(other)),
                    })
                }
            }
        }
    }

    fn sig_alg(&self, key: &PrivateKey) -> SigAlg {
        sig_alg(key.sig_algs(), self.server_sig_algs.as_deref())
    }

    /// Which methods the upstream offers `user`: a `none` request (RFC 4252 5.2), which
    /// sshd answers at once, without counting it as a failure, with its list. Banners it
    /// sends on the way (sshd's `Banner` comes with the first request) are held for
    /// [`UpstreamConn::auth_reply`]. Made once per connection, before any other request:
    /// the user name is fixed from then on, as sshd wants.
    pub async fn ask_methods(&mut self, user: &str) -> Result<Offered, UpstreamError> {
        let none = Request {
            user,
            service: auth::CONNECTION_SERVICE,
            method: Method::None,
        };
        self.leg.send(&none.encode()).await?;
        let mut banners = Vec::new();
        let offered = loop {
            match self.auth_reply().await? {
                UpstreamReply::Failure { methods, .. } => break Offered::Methods(methods),
                UpstreamReply::Success => {
                    self.logged_in = true;
                    break Offered::LoggedIn;
                }
                UpstreamReply::ForClient(p) if p[0] == msg::USERAUTH_BANNER => {
                    // Bounded like the login core's held banners.
                    if banners.len() < crate::core::login::MAX_HELD_BANNERS {
                        banners.push(p);
                    }
                }
                UpstreamReply::ForClient(p) => return Err(UpstreamError::Unexpected(p[0])),
            }
        };
        self.held_banners = banners;
        Ok(offered)
    }

    /// Log in with the proxy's keys, offered in order as ssh offers several identities:
    /// a key refused (USERAUTH_FAILURE), the next, while the server still lists
    /// `publickey`. Each is signed with the algorithm the server announced (RSA keys
    /// with rsa-sha2-512 or -256, from `server-sig-algs`). Banners the upstream sends on
    /// the way are handed to `banner` for the client.
    pub async fn login_with_keys(
        &mut self,
        user: &str,
        keys: &[&PrivateKey],
        mut banner: impl FnMut(Vec<u8>),
    ) -> Result<(), UpstreamError> {
        for b in std::mem::take(&mut self.held_banners) {
            banner(b);
        }
        if self.logged_in {
            return Ok(());
        }
        let session_id = self
            .leg
            .transport
            .borrow()
            .session_id()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let mut refused = Vec::new();
        let mut offered = String::from("-");
        for key in keys {
            let alg = self.sig_alg(key);
            let request = auth::signed_publickey_request(
                self.leg.transport.borrow().provider(),
                &session_id,
                user,
                auth::CONNECTION_SERVICE,
                key,
                alg,
            )
            .map_err(|source| LegError::Protocol {
                side: Side::Upstream,
                source,
            })?;
            self.leg.send(&request).await?;
            let listed = loop {
                match self.auth_reply().await? {
                    UpstreamReply::Success => return Ok(()),
                    UpstreamReply::ForClient(p) if p[0] == msg::USERAUTH_BANNER => banner(p),
                    UpstreamReply::ForClient(p) => return Err(UpstreamError::Unexpected(p[0])),
                    UpstreamReply::Failure {
                        partial_success,
                        methods,
                    } => break (partial_success, methods),
                }
            };
            let (partial, methods) = listed;
            let fingerprint = key.public().fingerprint();
            let what = match partial {
                // Accepted as one step of several (`AuthenticationMethods`): the proxy
                // has no second credential to give.
                true => "accepted as a first step only",
                false => "refused",
            };
            info!(user = %Untrusted(user), key = %fingerprint, algorithm = alg.name(),
                offers = %Untrusted(&methods), "upstream {what} the proxy's key");
            refused.push(format!("{} {fingerprint} {what}", alg.name()));
            let more = !partial && methods.split(',').any(|m| m == "publickey");
            offered = methods;
            if !more {
                break;
            }
        }
        Err(UpstreamError::KeyRefused {
            refused: match refused.is_empty() {
                true => "no key to offer".to_owned(),
                false => refused.join(", "),
            },
            offered: Untrusted(&offered).to_string(),
        })
    }

    /// Send a password or keyboard-interactive request on behalf of the client, with
    /// the upstream's user name. Nothing is sent once the upstream let the user in (its
    /// answer to `none`): [`UpstreamConn::auth_reply`] then says so.
    pub async fn pass_through(
        &mut self,
        user: &str,
        method: Method<'_>,
    ) -> Result<(), UpstreamError> {
        if self.logged_in {
            return Ok(());
        }
        let request = Request {
            user,
            service: auth::CONNECTION_SERVICE,
            method,
        };
        self.leg.send(&request.encode()).await?;
        Ok(())
    }
}

/// The signature algorithm to log in with a key that signs with `key_algs` (in its order
/// of preference): the first that the upstream announced in `server-sig-algs` (RFC 8308
/// 3.1; for RSA, rsa-sha2-512 before -256), or the key's first when it announced none.
/// Never `ssh-rsa` (SHA-1): the protocol crate does not sign with it.
fn sig_alg(key_algs: &[SigAlg], server_sig_algs: Option<&[String]>) -> SigAlg {
    let announced = |a: &SigAlg| server_sig_algs.is_none_or(|l| l.iter().any(|n| n == a.name()));
    let first = key_algs.first().copied().unwrap_or(SigAlg::Ed25519);
    key_algs.iter().copied().find(announced).unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_signs_with_what_the_server_announced() {
        let rsa = [SigAlg::RsaSha2_512, SigAlg::RsaSha2_256];
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(sig_alg(&rsa, None), SigAlg::RsaSha2_512);
        let both = list(&["ssh-ed25519", "rsa-sha2-256", "rsa-sha2-512", "ssh-rsa"]);
        assert_eq!(sig_alg(&rsa, Some(&both)), SigAlg::RsaSha2_512);
        let only_256 = list(&["ssh-ed25519", "ssh-rsa", "rsa-sha2-256"]);
        assert_eq!(sig_alg(&rsa, Some(&only_256)), SigAlg::RsaSha2_256);
        // A server announcing neither still gets SHA-512, never SHA-1.
        let sha1 = list(&["ssh-rsa"]);
        assert_eq!(sig_alg(&rsa, Some(&sha1)), SigAlg::RsaSha2_512);
        assert_eq!(
            sig_alg(&[SigAlg::Ed25519], Some(&only_256)),
            SigAlg::Ed25519
        );
    }
}
