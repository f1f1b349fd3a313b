//! The upstream leg: connect to the user's server, run the client role of the transport
//! (verifying the host key against the hook's policy), and log in there.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sshr_protocol::auth::{self, Failure, Method, Request};
use sshr_protocol::cipher::{CipherAlg, MacAlg};
use sshr_protocol::hostkey::{PrivateKey, SigAlg};
use sshr_protocol::msg;
use sshr_protocol::transport::{ClientOptions, Config, Event, HostKeyCheck, Transport};
use tracing::{info, warn};

use crate::core::refusal::Refusal;
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
    #[error("upstream refused the proxy's key (it offered: {0})")]
    KeyRefused(String),
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
            UpstreamError::KeyRefused(_) => UpstreamFailure::Auth,
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
            UpstreamError::KeyRefused(_) => Refusal::LoginRefused,
            _ => Refusal::Unreachable,
        }
    }
}

/// An upstream connection through key exchange and the ssh-userauth service request.
pub struct UpstreamConn {
    pub leg: Rc<Leg>,
    pub rx: RxBuf,
    /// `server-sig-algs` from the upstream's EXT_INFO, when it sent one.
    pub server_sig_algs: Option<Vec<String>>,
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
    /// USERAUTH_FAILURE payload as received.
    Failure {
        partial_success: bool,
    },
    /// A message for the client (banner, INFO_REQUEST, PASSWD_CHANGEREQ): pass it on.
    ForClient(Vec<u8>),
}

impl UpstreamConn {
    /// The next authentication reply from the upstream.
    pub async fn auth_reply(&mut self) -> Result<UpstreamReply, UpstreamError> {
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
                        msg::USERAUTH_FAILURE => {
                            let partial_success = Failure::parse(&p)
                                .map(|f| f.partial_success)
                                .unwrap_or(false);
                            UpstreamReply::Failure { partial_success }
                        }
                        msg::USERAUTH_BANNER | msg::USERAUTH_INFO_REQUEST => {
                            UpstreamReply::ForClient(p)
                        }
                        other => return Err(UpstreamError::Unexpected(other)),
                    })
                }
            }
        }
    }

    /// The signature algorithm to log in with: the key's preferred one that the
    /// upstream announced (rsa-sha2-512 before -256), or the key's first.
    fn sig_alg(&self, key: &PrivateKey) -> SigAlg {
        let algs = key.sig_algs();
        self.server_sig_algs
            .as_ref()
            .and_then(|list| {
                algs.iter()
                    .copied()
                    .find(|a| list.iter().any(|n| n == a.name()))
            })
            .unwrap_or(algs[0])
    }

    /// Log in with the proxy's key. Banners the upstream sends on the way are handed to
    /// `banner` for the client.
    pub async fn login_with_key(
        &mut self,
        user: &str,
        key: &PrivateKey,
        mut banner: impl FnMut(Vec<u8>),
    ) -> Result<(), UpstreamError> {
        let alg = self.sig_alg(key);
        let session_id = self
            .leg
            .transport
            .borrow()
            .session_id()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let request =
            auth::signed_publickey_request(&session_id, user, auth::CONNECTION_SERVICE, key, alg)
                .map_err(|source| LegError::Protocol {
                side: Side::Upstream,
                source,
            })?;
        self.leg.send(&request).await?;
        loop {
            match self.auth_reply().await? {
                UpstreamReply::Success => return Ok(()),
                UpstreamReply::ForClient(p) if p[0] == msg::USERAUTH_BANNER => banner(p),
                UpstreamReply::ForClient(p) => return Err(UpstreamError::Unexpected(p[0])),
                UpstreamReply::Failure { .. } => {
                    return Err(UpstreamError::KeyRefused(format!(
                        "{} key refused",
                        alg.name()
                    )));
                }
            }
        }
    }

    /// Send a password or keyboard-interactive request on behalf of the client, with
    /// the upstream's user name.
    pub async fn pass_through(
        &mut self,
        user: &str,
        method: Method<'_>,
    ) -> Result<(), UpstreamError> {
        let request = Request {
            user,
            service: auth::CONNECTION_SERVICE,
            method,
        };
        self.leg.send(&request.encode()).await?;
        Ok(())
    }
}
