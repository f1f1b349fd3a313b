//! A virtual-time chain for tests, in the manner of quinn-proto's `Pair`: a client
//! transport, the proxy's two legs driven by the core's login and relay decisions, and
//! an upstream transport, all in memory. Logins passed through, relays, rekeys on
//! either leg and tunnel policy run deterministically in milliseconds, without sockets,
//! root or sshd; waits (decoys, failure padding) pass in virtual time.
//!
//! The login phase ([`Chain::begin_login`]) runs the core's [`Login`] as
//! `proxy::session` does, with the hooks' answers and the upstream's authentication
//! scripted by the test.
//!
//! The proxy in the middle reads each packet in place, asks [`classify`] what to do
//! with it and [`forward_step`] how to pass it on, exactly as the relay's pumps do; only
//! the awaiting (socket writes, the writer lock, waiting for a key exchange) is the
//! pumps' own. A packet sealed in place goes out from the receive buffer itself, so the
//! in-place re-sealing of the real relay is what runs here.

use std::sync::Arc;
use std::time::Duration;

use sshr_protocol::auth::{self, Request};
use sshr_protocol::hostkey::{PrivateKey, PublicKey, SigAlg};
use sshr_protocol::msg;
use sshr_protocol::transport::{ClientOptions, Config, HostKeyCheck, Input, Transport};
use sshr_testsupport::pair::{exchange, until_quiet, Clock, Endpoint};

use crate::core::failure_times::Answer;
use crate::core::login::{Action, AuthFailure, Login, LookedUp, Reply, Timings};
use crate::core::methods::Methods;
use crate::core::refusal::Refusal;
use crate::core::relay::{classify, forward_step, Step, Verdict};
use crate::core::tunnel::{encode_open_failure, Tunnels};
use crate::core::values::{Side, TunnelPolicy, TunnelSettings};

/// Client ↔ (proxy client leg | core | proxy upstream leg) ↔ upstream.
pub struct Chain {
    pub client: Endpoint,
    /// The proxy's leg facing the client (server role).
    pub proxy_client_leg: Endpoint,
    /// The proxy's leg facing the upstream (client role).
    pub proxy_upstream_leg: Endpoint,
    pub upstream: Endpoint,
    pub tunnels: Tunnels,
    pub clock: Clock,
    /// Packets the proxy forwarded, each way (client to upstream, upstream to client).
    pub forwarded: (usize, usize),
    /// Of those, re-sealed in place (the rest were sealed from a copy or queued).
    pub sealed_in_place: (usize, usize),
    /// The login phase, when the chain runs one (see [`Chain::begin_login`]).
    pub login: Option<LoginPhase>,
}

/// Settings of one chain: each leg's transport configuration (both ends of a leg use
/// the same one) and the user's tunnel policy.
pub struct ChainConfig {
    pub client_leg: Config,
    pub upstream_leg: Config,
    pub tunnels: TunnelPolicy,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            client_leg: Config::default(),
            upstream_leg: Config::default(),
            tunnels: TunnelPolicy::Deny,
        }
    }
}

fn key(seed: u8) -> Arc<[PrivateKey]> {
    use rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([seed; 32]);
    Arc::from(vec![PrivateKey::generate_ed25519(&mut rng)])
}

fn client_transport(config: Config, seed: u8, clock: Clock) -> Transport {
    let options = ClientOptions {
        host_key_check: HostKeyCheck::AcceptAny,
        prefer_cipher: None,
        prefer_mac: None,
    };
    Transport::client(Arc::new(config), options, [seed; 32], clock.now())
}

impl Chain {
    /// Both legs through their first key exchange (fixed seeds: runs are reproducible).
    pub fn new(config: ChainConfig) -> Chain {
        let clock = Clock::new();
        let client_leg = Arc::new(config.client_leg.clone());
        let upstream_leg = Arc::new(config.upstream_leg.clone());
        let mut chain = Chain {
            client: Endpoint::new(client_transport(config.client_leg, 1, clock)),
            proxy_client_leg: Endpoint::new(Transport::server(
                client_leg,
                key(2),
                [2; 32],
                clock.now(),
            )),
            proxy_upstream_leg: Endpoint::new(client_transport(config.upstream_leg, 3, clock)),
            upstream: Endpoint::new(Transport::server(
                upstream_leg,
                key(4),
                [4; 32],
                clock.now(),
            )),
            tunnels: Tunnels::new("alice", config.tunnels, &TunnelSettings::default()),
            clock,
            forwarded: (0, 0),
            sealed_in_place: (0, 0),
            login: None,
        };
        let now = chain.clock.now();
        until_quiet(|| {
            exchange(&mut chain.client, &mut chain.proxy_client_leg, now)
                | exchange(&mut chain.proxy_upstream_leg, &mut chain.upstream, now)
        });
        for e in [
            &chain.client,
            &chain.proxy_client_leg,
            &chain.proxy_upstream_leg,
            &chain.upstream,
        ] {
            assert!(e.t.is_established(), "handshake failed: {:?}", e.error);
            assert!(e.error.is_none());
        }
        chain.events_clear();
        chain
    }

    fn events_clear(&mut self) {
        for e in [
            &mut self.client,
            &mut self.proxy_client_leg,
            &mut self.proxy_upstream_leg,
            &mut self.upstream,
        ] {
            e.events.clear();
        }
    }

    /// Move bytes along the chain until nothing changes.
    pub fn drive(&mut self) {
        until_quiet(|| self.round());
        // A refused login ends the client leg with a DISCONNECT, which its client reports.
        if matches!(&self.login, Some(p) if matches!(p.outcome, Some(Err(_)))) {
            return;
        }
        for e in [
            &self.client,
            &self.proxy_client_leg,
            &self.proxy_upstream_leg,
            &self.upstream,
        ] {
            assert!(e.error.is_none(), "a transport failed: {:?}", e.error);
        }
    }

    /// Moves time on and runs the transports' timers that are due (rekey intervals).
    pub fn advance(&mut self, by: Duration) {
        let now = self.clock.advance(by);
        for e in [
            &mut self.client,
            &mut self.proxy_client_leg,
            &mut self.proxy_upstream_leg,
            &mut self.upstream,
        ] {
            e.handle_timeout_if_due(now);
        }
    }

    /// One round: the outer links, then the proxy's login or its relay each way.
    fn round(&mut self) -> bool {
        if let Some(progress) = self.login_round() {
            return progress;
        }
        let now = self.clock.now();
        let mut progress = false;
        // The outer ends read what arrives like any peer.
        progress |= deliver(&mut self.client, &mut self.proxy_client_leg);
        progress |= deliver(&mut self.upstream, &mut self.proxy_upstream_leg);
        progress |= deliver(&mut self.proxy_client_leg, &mut self.client);
        progress |= deliver(&mut self.proxy_upstream_leg, &mut self.upstream);
        progress |= self.client.read_all(now);
        progress |= self.upstream.read_all(now);
        // The proxy's legs are read by the relay, in place.
        let c2u = relay(
            Side::Client,
            &mut self.proxy_client_leg,
            &mut self.proxy_upstream_leg,
            &mut self.upstream,
            &mut self.tunnels,
            self.clock,
        );
        let u2c = relay(
            Side::Upstream,
            &mut self.proxy_upstream_leg,
            &mut self.proxy_client_leg,
            &mut self.client,
            &mut self.tunnels,
            self.clock,
        );
        self.forwarded.0 += c2u.forwarded;
        self.forwarded.1 += u2c.forwarded;
        self.sealed_in_place.0 += c2u.in_place;
        self.sealed_in_place.1 += u2c.in_place;
        progress | c2u.touched | u2c.touched
    }
}

/// Moves what `from` has to send to `to`'s receive buffer.
fn deliver(from: &mut Endpoint, to: &mut Endpoint) -> bool {
    let out = from.take_output();
    to.deliver(&out);
    !out.is_empty()
}

/// What one batch did.
#[derive(Default)]
struct Batch {
    /// Anything was read.
    touched: bool,
    forwarded: usize,
    /// Of those, re-sealed in place.
    in_place: usize,
}

/// One batch of the relay from the leg `from` (facing `side`) to the leg `to`, whose
/// peer is `to_peer`: every complete packet in `from.rx`.
fn relay(
    side: Side,
    from: &mut Endpoint,
    to: &mut Endpoint,
    to_peer: &mut Endpoint,
    tunnels: &mut Tunnels,
    clock: Clock,
) -> Batch {
    let now = clock.now();
    let mut batch = Batch::default();
    while from.error.is_none() && !from.rx.is_empty() {
        let read = from.t.read(&mut from.rx, now);
        batch.touched |= !matches!(read, Ok(Input::NeedMore(_)));
        match read {
            Err(e) => from.error = Some(e),
            Ok(Input::NeedMore(_)) => break,
            Ok(Input::Consumed(n)) => {
                from.rx.drain(..n);
            }
            Ok(Input::Packet { len, payload }) => {
                match classify(side, &from.rx[payload.clone()], tunnels, || now) {
                    Verdict::Forward => {
                        batch.forwarded += 1;
                        // What `to`'s transport queued before goes first, as in the pumps.
                        deliver(to, to_peer);
                        match forward_step(&mut to.t, &mut from.rx, 0, len, payload.clone(), false)
                        {
                            Step::Sealed(sealed) => {
                                let n = sealed.expect("re-sealed in place");
                                to_peer.deliver(&from.rx[..n]);
                                batch.in_place += 1;
                            }
                            Step::Copy => to.t.send(&from.rx[payload]).expect("sealed a copy"),
                            Step::Queued(queued) => queued.expect("queued during the key exchange"),
                            step @ (Step::Wait | Step::Overflow | Step::Closed) => {
                                panic!("the chain does not wait: {step:?}")
                            }
                        }
                    }
                    Verdict::Drop => {}
                    Verdict::RefuseGlobalRequest => {
                        from.t.send(&[msg::REQUEST_FAILURE]).expect("answered");
                    }
                    Verdict::RefuseChannelOpen { recipient, why } => {
                        from.t
                            .send(&encode_open_failure(recipient, why))
                            .expect("answered");
                    }
                }
                from.rx.drain(..len);
            }
        }
    }
    // The relay has no use for the transports' events.
    while from.t.poll_event().is_some() {}
    batch
}

/// The upstream's side of user authentication, scripted by a test: a user-auth message
/// (a request, or an INFO_RESPONSE) and the upstream leg's session id in, the server's
/// replies out.
pub type UpstreamAuth = Box<dyn FnMut(&[u8], &[u8]) -> Vec<Vec<u8>>>;

/// The hooks' answer for a user name: its authorized keys, `None` for an unknown name.
pub type Directory = Box<dyn Fn(&str) -> Option<Vec<PublicKey>>>;

/// What the login driver waits for.
enum Awaiting {
    /// An action of the login that needs input that has not arrived yet.
    Action(Action),
    /// The upstream's answer to the proxy's own public-key login.
    KeyLogin,
    /// The upstream's answer to the proxy's `none` request ([`Action::AskMethods`]).
    Methods,
}

/// The login phase of a chain: the core's [`Login`] on the client leg, driven the way
/// `proxy::session` drives it, with the hooks and the upstream's authentication
/// scripted.
pub struct LoginPhase {
    pub login: Login,
    pub directory: Directory,
    pub upstream_auth: UpstreamAuth,
    /// The user name the proxy logs in as upstream.
    pub upstream_user: String,
    /// The key the proxy logs in upstream with.
    pub proxy_key: PrivateKey,
    pub timings: FixedTimings,
    awaiting: Option<Awaiting>,
    /// Failures counted in the metrics.
    pub counted: Vec<AuthFailure>,
    /// How it ended: `Ok(method)` or the refusal.
    pub outcome: Option<Result<&'static str, Refusal>>,
}

/// Failure times of fixed values, for deterministic decoys.
pub struct FixedTimings {
    pub prompt: Duration,
    pub password_refusal: Duration,
    pub keyboard_refusal: Duration,
    pub listing: Duration,
    pub prompts: bool,
    /// What a name without a server is listed.
    pub decoy_methods: Methods,
}

impl Default for FixedTimings {
    fn default() -> Self {
        FixedTimings {
            prompt: Duration::from_millis(400),
            password_refusal: Duration::from_millis(2000),
            keyboard_refusal: Duration::from_millis(1500),
            listing: Duration::from_millis(30),
            prompts: false,
            decoy_methods: Methods {
                password: true,
                keyboard_interactive: false,
            },
        }
    }
}

impl Timings for FixedTimings {
    fn decoy_time(&self, answer: Answer) -> Duration {
        match answer {
            Answer::Prompt => self.prompt,
            Answer::PasswordRefusal => self.password_refusal,
            Answer::KeyboardRefusal => self.keyboard_refusal,
            Answer::Methods => self.listing,
        }
    }
    fn decoy_prompts(&self) -> bool {
        self.prompts
    }
    fn decoy_methods(&self) -> Methods {
        self.decoy_methods
    }
    fn record_methods(&self, _: Methods) {}
    fn record_answer(&self, _: Answer, _: Duration) {}
    fn record_prompted(&self, _: bool) {}
}

impl LoginPhase {
    pub fn new(directory: Directory, upstream_auth: UpstreamAuth) -> LoginPhase {
        LoginPhase {
            login: Login::new(6, "192.0.2.1:40000".parse().expect("an address")),
            directory,
            upstream_auth,
            upstream_user: "root".into(),
            proxy_key: key(9)[0].clone(),
            timings: FixedTimings::default(),
            awaiting: None,
            counted: Vec::new(),
            outcome: None,
        }
    }
}

impl Chain {
    /// Starts the login phase: the client and the proxy's upstream leg ask for the
    /// ssh-userauth service. [`Chain::drive`] then runs the login until it ends, moving
    /// the clock over every wait; after a successful login it relays.
    pub fn begin_login(&mut self, phase: LoginPhase) {
        self.client
            .t
            .request_service("ssh-userauth")
            .expect("service request");
        self.proxy_upstream_leg
            .t
            .request_service("ssh-userauth")
            .expect("service request");
        self.login = Some(phase);
    }

    /// One round of the login phase; `None` once the login succeeded (relay from now).
    fn login_round(&mut self) -> Option<bool> {
        let phase = self.login.as_mut()?;
        if let Some(Ok(_)) = phase.outcome {
            return None;
        }
        let now = self.clock.now();
        let mut progress = false;
        progress |= deliver(&mut self.client, &mut self.proxy_client_leg);
        progress |= deliver(&mut self.upstream, &mut self.proxy_upstream_leg);
        progress |= deliver(&mut self.proxy_client_leg, &mut self.client);
        progress |= deliver(&mut self.proxy_upstream_leg, &mut self.upstream);
        for e in [
            &mut self.client,
            &mut self.proxy_client_leg,
            &mut self.proxy_upstream_leg,
            &mut self.upstream,
        ] {
            progress |= e.read_all(now);
        }
        // The upstream's authentication answers what reached it.
        let session = self.upstream.t.session_id().unwrap_or_default().to_vec();
        for m in std::mem::take(&mut self.upstream.got) {
            for reply in (phase.upstream_auth)(&m, &session) {
                self.upstream.send(&reply);
            }
            progress = true;
        }
        progress |= self.step_login();
        Some(progress)
    }

    /// Performs the login's actions until one needs input that has not arrived.
    fn step_login(&mut self) -> bool {
        let Some(phase) = self.login.as_mut() else {
            return false;
        };
        let client_session = self
            .proxy_client_leg
            .t
            .session_id()
            .unwrap_or_default()
            .to_vec();
        let mut progress = false;
        loop {
            if phase.outcome.is_some() {
                return progress;
            }
            let now = self.clock.now();
            let action = match phase.awaiting.take() {
                Some(Awaiting::KeyLogin) => match take_first(&mut self.proxy_upstream_leg.got) {
                    Some(reply) if reply[0] == msg::USERAUTH_SUCCESS => {
                        phase.login.key_login(Ok(()));
                        continue;
                    }
                    Some(reply) if reply[0] == msg::USERAUTH_BANNER => {
                        self.proxy_client_leg.send(&reply);
                        phase.awaiting = Some(Awaiting::KeyLogin);
                        continue;
                    }
                    Some(_) => {
                        let refused = (Refusal::LoginRefused, AuthFailure::UpstreamRejected);
                        phase.login.key_login(Err(refused));
                        continue;
                    }
                    None => {
                        phase.awaiting = Some(Awaiting::KeyLogin);
                        return progress;
                    }
                },
                Some(Awaiting::Methods) => match take_first(&mut self.proxy_upstream_leg.got) {
                    Some(reply) => {
                        let offered = match reply[0] {
                            msg::USERAUTH_FAILURE => auth::Failure::parse(&reply)
                                .ok()
                                .map(|f| Methods::from_upstream(f.methods.iter())),
                            _ => None,
                        };
                        phase
                            .login
                            .methods(offered, &client_session, now, &phase.timings);
                        continue;
                    }
                    None => {
                        phase.awaiting = Some(Awaiting::Methods);
                        return progress;
                    }
                },
                Some(Awaiting::Action(a)) => a,
                None => match phase.login.poll() {
                    Some(a) => a,
                    None => return progress,
                },
            };
            progress = true;
            match action {
                Action::ReadClient => match take_first(&mut self.proxy_client_leg.got) {
                    Some(m) => phase
                        .login
                        .client_message(&m, &client_session, now, &phase.timings),
                    None => {
                        phase.awaiting = Some(Awaiting::Action(Action::ReadClient));
                        return false;
                    }
                },
                Action::SendClient(p) => self.proxy_client_leg.send(&p),
                Action::LookUp(name) => {
                    let answer = match (phase.directory)(&name.user) {
                        Some(authorized) => LookedUp::Known { authorized },
                        None => LookedUp::Unknown,
                    };
                    phase
                        .login
                        .looked_up(answer, &client_session, now, &phase.timings);
                }
                Action::LoginWithKey => {
                    let session = self.proxy_upstream_leg.t.session_id().unwrap_or_default();
                    let request = auth::signed_publickey_request(
                        self.proxy_upstream_leg.t.provider(),
                        session,
                        &phase.upstream_user,
                        auth::CONNECTION_SERVICE,
                        &phase.proxy_key,
                        SigAlg::Ed25519,
                    )
                    .expect("signed");
                    self.proxy_upstream_leg.send(&request);
                    phase.awaiting = Some(Awaiting::KeyLogin);
                }
                Action::PassThrough(request) => {
                    let req = Request::parse(&request).expect("parsed by the login");
                    let upstream = Request {
                        user: &phase.upstream_user,
                        ..req
                    };
                    self.proxy_upstream_leg.send(&upstream.encode());
                    phase.awaiting = Some(Awaiting::Action(Action::ReadUpstream));
                }
                Action::AskMethods => {
                    let none = Request {
                        user: &phase.upstream_user,
                        service: auth::CONNECTION_SERVICE,
                        method: auth::Method::None,
                    };
                    self.proxy_upstream_leg.send(&none.encode());
                    phase.awaiting = Some(Awaiting::Methods);
                }
                Action::ReadUpstream => match take_first(&mut self.proxy_upstream_leg.got) {
                    Some(m) => {
                        let reply = match (m[0], auth::Failure::parse(&m)) {
                            (msg::USERAUTH_SUCCESS, _) => Reply::Success,
                            (msg::USERAUTH_FAILURE, Ok(f)) => Reply::Failure {
                                partial: f.partial_success,
                                methods: Methods::from_upstream(f.methods.iter()),
                            },
                            (msg::USERAUTH_FAILURE, Err(_)) => Reply::Failed,
                            _ => Reply::ForClient(m),
                        };
                        phase
                            .login
                            .upstream(reply, &client_session, now, &phase.timings);
                    }
                    None => {
                        phase.awaiting = Some(Awaiting::Action(Action::ReadUpstream));
                        return false;
                    }
                },
                Action::SendUpstream(p) => self.proxy_upstream_leg.send(&p),
                Action::WaitUntil(at) => {
                    // Virtual time: the wait is over at once.
                    self.clock.advance(at.saturating_duration_since(now));
                    let now = self.clock.now();
                    phase.login.timer(&client_session, now, &phase.timings);
                }
                Action::Count(f) => phase.counted.push(f),
                Action::Succeed { method } => {
                    self.proxy_client_leg.send(&auth::encode_success());
                    phase.outcome = Some(Ok(method));
                }
                Action::Refuse(refusal, _) => {
                    self.proxy_client_leg
                        .t
                        .disconnect(refusal.code(), refusal.message());
                    phase.outcome = Some(Err(refusal));
                }
            }
        }
    }
}

fn take_first(got: &mut Vec<Vec<u8>>) -> Option<Vec<u8>> {
    (!got.is_empty()).then(|| got.remove(0))
}

#[cfg(test)]
mod tests {
    use sshr_protocol::cipher::{CipherAlg, MacAlg};
    use sshr_protocol::transport::Event;
    use sshr_protocol::wire::Reader;

    use super::*;
    use crate::core::refusal::ChannelRefusal;
    use crate::core::tunnel::fixtures::{confirmation, data, open};
    use crate::core::tunnel::CHANNEL_TYPE;

    /// A CHANNEL_DATA payload whose bytes say which message it is.
    fn numbered(i: u32, len: usize) -> Vec<u8> {
        let mut p = data(7, len);
        p[9..13].copy_from_slice(&i.to_be_bytes());
        p
    }

    fn small_rekey(bytes: u64) -> Config {
        Config {
            rekey_bytes: bytes,
            ..Config::default()
        }
    }

    /// Sends `n` numbered messages each way, driving after every `burst`, and checks
    /// that each end got them all, in order and unchanged.
    fn both_ways(chain: &mut Chain, n: u32, len: usize, burst: u32) {
        for i in 0..n {
            chain.client.send(&numbered(i, len));
            chain.upstream.send(&numbered(i, len));
            if i % burst == burst - 1 {
                chain.drive();
            }
        }
        chain.drive();
        for end in [&mut chain.upstream, &mut chain.client] {
            let got: Vec<_> = end.got.drain(..).collect();
            assert_eq!(got.len(), n as usize);
            for (i, p) in got.iter().enumerate() {
                assert_eq!(p, &numbered(i as u32, len), "message {i}");
            }
        }
    }

    fn rekeys(e: &Endpoint) -> usize {
        e.events
            .iter()
            .filter(|ev| matches!(ev, Event::KexDone { first: false, .. }))
            .count()
    }

    #[test]
    fn relays_both_ways_re_sealing_in_place() {
        let mut chain = Chain::new(ChainConfig::default());
        both_ways(&mut chain, 50, 1000, 10);
        assert_eq!(chain.forwarded, (50, 50));
        // Both legs negotiate the same cipher: every packet keeps its place.
        assert_eq!(chain.sealed_in_place, (50, 50));
    }

    #[test]
    fn the_client_leg_rekeys_in_the_middle_of_a_relay() {
        let mut chain = Chain::new(ChainConfig {
            client_leg: small_rekey(64 << 10),
            ..ChainConfig::default()
        });
        both_ways(&mut chain, 400, 1000, 25);
        assert!(rekeys(&chain.client) >= 4, "the client leg rekeyed");
        assert_eq!(rekeys(&chain.upstream), 0, "the upstream leg kept its keys");
        assert_eq!(chain.proxy_upstream_leg.t.kex_count(), 1);
    }

    #[test]
    fn the_upstream_leg_rekeys_in_the_middle_of_a_relay() {
        let mut chain = Chain::new(ChainConfig {
            upstream_leg: small_rekey(64 << 10),
            ..ChainConfig::default()
        });
        both_ways(&mut chain, 400, 1000, 25);
        assert!(rekeys(&chain.upstream) >= 4, "the upstream leg rekeyed");
        assert_eq!(rekeys(&chain.client), 0, "the client leg kept its keys");
        assert_eq!(chain.proxy_client_leg.t.kex_count(), 1);
    }

    #[test]
    fn packets_for_a_leg_in_a_key_exchange_wait_in_order() {
        let mut chain = Chain::new(ChainConfig::default());
        // The proxy starts a rekey on the upstream leg; before the upstream answers,
        // the client's packets arrive and must be queued, then sent after NEWKEYS.
        chain.proxy_upstream_leg.t.rekey();
        for i in 0..20 {
            chain.client.send(&numbered(i, 500));
        }
        // Only the client's link moves: the upstream leg cannot finish its exchange.
        deliver(&mut chain.client, &mut chain.proxy_client_leg);
        let batch = relay(
            Side::Client,
            &mut chain.proxy_client_leg,
            &mut chain.proxy_upstream_leg,
            &mut chain.upstream,
            &mut chain.tunnels,
            chain.clock,
        );
        assert_eq!(batch.forwarded, 20);
        assert_eq!(
            batch.in_place, 0,
            "nothing sealed for a leg in a key exchange"
        );
        assert_eq!(chain.proxy_upstream_leg.t.queued_messages(), 20);
        chain.drive();
        let got: Vec<_> = chain.upstream.got.drain(..).collect();
        assert_eq!(got, (0..20).map(|i| numbered(i, 500)).collect::<Vec<_>>());
        assert_eq!(rekeys(&chain.upstream), 1);
    }

    #[test]
    fn both_legs_rekey_on_their_own_clocks() {
        let leg = |secs| Config {
            rekey_interval: Duration::from_secs(secs),
            ..Config::default()
        };
        let mut chain = Chain::new(ChainConfig {
            client_leg: leg(60),
            upstream_leg: leg(100),
            ..ChainConfig::default()
        });
        chain.advance(Duration::from_secs(61));
        both_ways(&mut chain, 5, 100, 5);
        assert_eq!((rekeys(&chain.client), rekeys(&chain.upstream)), (1, 0));
        chain.advance(Duration::from_secs(40));
        both_ways(&mut chain, 5, 100, 5);
        assert_eq!((rekeys(&chain.client), rekeys(&chain.upstream)), (1, 1));
    }

    #[test]
    fn a_longer_mac_on_the_other_leg_seals_a_copy() {
        let leg = |mac| Config {
            ciphers: vec![CipherAlg::Aes128Ctr],
            macs: vec![mac],
            ..Config::default()
        };
        let mut chain = Chain::new(ChainConfig {
            client_leg: leg(MacAlg::HmacSha256Etm),
            upstream_leg: leg(MacAlg::HmacSha512Etm),
            ..ChainConfig::default()
        });
        both_ways(&mut chain, 10, 300, 5);
        // Towards the upstream the tag grows by 32 bytes: no room in place.
        assert_eq!(chain.sealed_in_place.0, 0);
        // Towards the client it shrinks: the padding takes up the difference.
        assert_eq!(chain.sealed_in_place.1, 10);
    }

    fn open_failure(p: &[u8]) -> (u32, u32, String) {
        assert_eq!(p[0], msg::CHANNEL_OPEN_FAILURE);
        let mut r = Reader::new(&p[1..]);
        (
            r.u32("recipient").unwrap(),
            r.u32("reason").unwrap(),
            r.utf8("description").unwrap().to_owned(),
        )
    }

    #[test]
    fn a_tunnel_the_policy_denies_is_refused_by_the_proxy() {
        let mut chain = Chain::new(ChainConfig::default());
        chain.client.send(&open(CHANNEL_TYPE, 5, 1, 0));
        chain.drive();
        assert!(
            chain.upstream.got.is_empty(),
            "the upstream never saw the open"
        );
        let refused = chain.client.take();
        let why = ChannelRefusal::TunnelNotAllowed;
        assert_eq!(
            open_failure(&refused),
            (5, why.code(), why.message().to_owned())
        );
        // Other channels go on as before.
        chain.client.send(&open("session", 6, 0, 0));
        chain.drive();
        assert_eq!(chain.upstream.take()[0], msg::CHANNEL_OPEN);
    }

    #[test]
    fn a_tunnel_the_policy_allows_reaches_the_upstream_and_is_counted() {
        let mut chain = Chain::new(ChainConfig {
            tunnels: TunnelPolicy::PointToPoint,
            ..ChainConfig::default()
        });
        // Layer 2 is not point-to-point.
        chain.client.send(&open(CHANNEL_TYPE, 1, 2, 0));
        chain.drive();
        assert_eq!(open_failure(&chain.client.take()).0, 1);
        chain.client.send(&open(CHANNEL_TYPE, 2, 1, 0));
        chain.drive();
        assert_eq!(chain.upstream.take(), open(CHANNEL_TYPE, 2, 1, 0));
        chain.upstream.send(&confirmation(2, 40));
        chain.drive();
        assert_eq!(chain.client.take(), confirmation(2, 40));
        assert_eq!(chain.tunnels.open_count(), 1);
        chain.client.send(&data(40, 1000));
        chain.upstream.send(&data(2, 300));
        chain.drive();
        assert_eq!(chain.tunnels.bytes(2), Some((1000, 300)));
    }

    #[test]
    fn the_upstreams_host_keys_stay_on_the_upstream_leg() {
        let mut chain = Chain::new(ChainConfig::default());
        let mut announce = vec![msg::GLOBAL_REQUEST];
        sshr_protocol::wire::put_string(&mut announce, b"hostkeys-00@openssh.com");
        announce.push(0);
        chain.upstream.send(&announce);
        let mut prove = vec![msg::GLOBAL_REQUEST];
        sshr_protocol::wire::put_string(&mut prove, b"hostkeys-prove-00@openssh.com");
        prove.push(1);
        chain.client.send(&prove);
        chain.drive();
        assert!(chain.client.got.iter().all(|p| p[0] != msg::GLOBAL_REQUEST));
        assert_eq!(chain.client.take(), vec![msg::REQUEST_FAILURE]);
        assert!(chain.upstream.got.is_empty());
    }
}

#[cfg(test)]
mod login_tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use sshr_protocol::auth::{InfoRequest, InfoResponse, Method, Prompt};

    use super::*;
    use crate::core::failure_times::MIN_FAILURE_TIME;

    fn client_key() -> PrivateKey {
        key(7)[0].clone()
    }

    /// Knows "alice" (with the client key).
    fn directory() -> Directory {
        Box::new(|user| (user == "alice").then(|| vec![client_key().public().clone()]))
    }

    /// What the scripted upstream lists: sshd with PAM and its defaults.
    const OFFERS: [&str; 3] = ["publickey", "password", "keyboard-interactive"];

    /// An upstream that takes "root" with password "secret", keyboard-interactive with
    /// the code "123456", or the proxy's key, and lists `offers`; it logs what reached
    /// it.
    fn upstream(
        seen: Rc<RefCell<Vec<String>>>,
        proxy_key: PublicKey,
        offers: &'static [&'static str],
    ) -> UpstreamAuth {
        Box::new(move |m, session| {
            let failure = auth::encode_failure(offers.iter().copied(), false);
            if m[0] == msg::USERAUTH_INFO_RESPONSE {
                let r = InfoResponse::parse(m).unwrap();
                seen.borrow_mut().push(format!("answer {}", r.responses[0]));
                return vec![if r.responses == ["123456"] {
                    auth::encode_success()
                } else {
                    failure
                }];
            }
            let req = Request::parse(m).unwrap();
            seen.borrow_mut()
                .push(format!("{} {}", req.user, req.method.name()));
            match req.method {
                Method::Password {
                    password: "secret", ..
                } => {
                    vec![
                        auth::encode_banner("upstream says hello\n"),
                        auth::encode_success(),
                    ]
                }
                Method::KeyboardInteractive { .. } => vec![InfoRequest {
                    name: "",
                    instruction: "",
                    language: "",
                    prompts: vec![Prompt {
                        prompt: "Code: ",
                        echo: false,
                    }],
                }
                .encode()],
                Method::PublicKey {
                    algorithm,
                    key_blob,
                    signature: Some(sig),
                } => {
                    let ok = auth::verify_publickey(
                        sshr_protocol::crypto::default_provider(),
                        session,
                        req.user,
                        req.service,
                        algorithm,
                        key_blob,
                        sig,
                    )
                    .is_ok_and(|k| k == proxy_key);
                    vec![if ok { auth::encode_success() } else { failure }]
                }
                _ => vec![failure],
            }
        })
    }

    fn chain() -> (Chain, Rc<RefCell<Vec<String>>>) {
        chain_offering(&OFFERS)
    }

    fn chain_offering(offers: &'static [&'static str]) -> (Chain, Rc<RefCell<Vec<String>>>) {
        let mut chain = Chain::new(ChainConfig::default());
        let seen = Rc::new(RefCell::new(Vec::new()));
        let phase = LoginPhase::new(directory(), Box::new(|_, _| Vec::new()));
        let proxy_key = phase.proxy_key.public().clone();
        chain.begin_login(LoginPhase {
            upstream_auth: upstream(seen.clone(), proxy_key, offers),
            ..phase
        });
        chain.drive();
        (chain, seen)
    }

    fn password(user: &str, password: &str) -> Vec<u8> {
        Request {
            user,
            service: auth::CONNECTION_SERVICE,
            method: Method::Password {
                password,
                new_password: None,
            },
        }
        .encode()
        .to_vec()
    }

    fn outcome(chain: &Chain) -> Option<Result<&'static str, Refusal>> {
        chain.login.as_ref().and_then(|p| p.outcome)
    }

    fn relays(chain: &mut Chain) {
        let data = crate::core::tunnel::fixtures::data(3, 100);
        chain.client.send(&data);
        chain.upstream.send(&data);
        chain.drive();
        assert_eq!(chain.upstream.got, vec![data.clone()]);
        assert_eq!(chain.client.got.last(), Some(&data));
    }

    #[test]
    fn a_password_login_passes_through_then_relays() {
        let (mut chain, seen) = chain();
        chain.client.send(&password("alice", "secret"));
        chain.drive();
        assert_eq!(outcome(&chain), Some(Ok("password")));
        assert_eq!(
            seen.borrow().as_slice(),
            ["root password"],
            "as the upstream user"
        );
        let got: Vec<u8> = chain.client.got.iter().map(|m| m[0]).collect();
        assert_eq!(got, [msg::USERAUTH_BANNER, msg::USERAUTH_SUCCESS]);
        chain.client.got.clear();
        relays(&mut chain);
    }

    #[test]
    fn a_wrong_password_fails_after_the_minimum_time() {
        let (mut chain, seen) = chain();
        let start = chain.clock.now();
        chain.client.send(&password("alice", "guess"));
        chain.drive();
        assert_eq!(outcome(&chain), None, "the login goes on");
        assert_eq!(chain.client.take(), auth::encode_failure(OFFERS, false));
        assert!(chain.clock.now() >= start + MIN_FAILURE_TIME);
        assert_eq!(seen.borrow().len(), 1);
        // No banner was shown for the failure.
        assert!(chain.client.got.is_empty());
    }

    #[test]
    fn an_unknown_name_gets_a_decoy_that_never_reaches_the_upstream() {
        let (mut chain, seen) = chain();
        let start = chain.clock.now();
        chain.client.send(&password("mallory", "secret"));
        chain.drive();
        let timings = &chain.login.as_ref().unwrap().timings;
        let listed = auth::encode_failure(timings.decoy_methods.names(), false);
        assert_eq!(chain.client.take(), listed, "the decoy list");
        let decoy = chain.login.as_ref().unwrap().timings.password_refusal;
        assert_eq!(chain.clock.now(), start + decoy, "as slow as real refusals");
        assert!(seen.borrow().is_empty());
        assert_eq!(
            chain.login.as_ref().unwrap().counted,
            [AuthFailure::UnknownUser]
        );
    }

    fn none(user: &str) -> Vec<u8> {
        Request {
            user,
            service: auth::CONNECTION_SERVICE,
            method: Method::None,
        }
        .encode()
        .to_vec()
    }

    #[test]
    fn the_methods_listed_are_those_the_upstream_offers_the_account() {
        // sshd with `PasswordAuthentication no` and PAM's keyboard-interactive.
        let (mut chain, seen) = chain_offering(&["publickey", "keyboard-interactive"]);
        let start = chain.clock.now();
        chain.client.send(&none("alice"));
        chain.drive();
        let listed = auth::encode_failure(["publickey", "keyboard-interactive"], false);
        assert_eq!(chain.client.take(), listed);
        assert_eq!(
            seen.borrow().as_slice(),
            ["root none"],
            "asked with the upstream's user name"
        );
        assert_eq!(chain.clock.now(), start, "no wait but the server's");
        // A password refused there: its list again, and the server is not asked twice.
        chain.client.send(&password("alice", "guess"));
        chain.drive();
        assert_eq!(chain.client.take(), listed);
        assert_eq!(seen.borrow().as_slice(), ["root none", "root password"]);
    }

    #[test]
    fn a_name_without_a_server_is_listed_the_decoy_after_a_servers_time() {
        let (mut chain, seen) = chain();
        let start = chain.clock.now();
        chain.client.send(&none("mallory"));
        chain.drive();
        let timings = &chain.login.as_ref().unwrap().timings;
        let listed = auth::encode_failure(timings.decoy_methods.names(), false);
        let took = timings.listing;
        assert_eq!(chain.client.take(), listed);
        assert_eq!(
            chain.clock.now(),
            start + took,
            "as slow as a real server's list"
        );
        assert!(seen.borrow().is_empty(), "no server was asked");
    }

    #[test]
    fn keyboard_interactive_prompts_and_answers_pass_through() {
        let (mut chain, seen) = chain();
        let ki = Request {
            user: "alice",
            service: auth::CONNECTION_SERVICE,
            method: Method::KeyboardInteractive {
                language: "",
                submethods: "",
            },
        };
        chain.client.send(&ki.encode());
        chain.drive();
        let prompt = chain.client.take();
        assert_eq!(
            InfoRequest::parse(&prompt).unwrap().prompts[0].prompt,
            "Code: "
        );
        chain.client.send(
            &InfoResponse {
                responses: vec!["123456"],
            }
            .encode(),
        );
        chain.drive();
        assert_eq!(outcome(&chain), Some(Ok("keyboard-interactive")));
        assert_eq!(
            seen.borrow().as_slice(),
            ["root keyboard-interactive", "answer 123456"]
        );
        chain.client.got.clear();
        relays(&mut chain);
    }

    #[test]
    fn a_proven_key_makes_the_proxy_log_in_upstream_with_its_own() {
        let (mut chain, seen) = chain();
        let session = chain.client.t.session_id().unwrap().to_vec();
        let request = auth::signed_publickey_request(
            chain.client.t.provider(),
            &session,
            "alice",
            auth::CONNECTION_SERVICE,
            &client_key(),
            SigAlg::Ed25519,
        )
        .unwrap();
        chain.client.send(&request);
        chain.drive();
        assert_eq!(outcome(&chain), Some(Ok("publickey")));
        assert_eq!(seen.borrow().as_slice(), ["root publickey"]);
        chain.client.got.clear();
        relays(&mut chain);
    }

    #[test]
    fn too_many_failures_end_with_the_reason() {
        let (mut chain, _) = chain();
        for _ in 0..6 {
            chain.client.send(&password("alice", "guess"));
            chain.drive();
        }
        assert_eq!(outcome(&chain), Some(Err(Refusal::TooManyFailures)));
        match &chain.client.error {
            Some(sshr_protocol::Error::PeerDisconnected { description, .. }) => {
                assert_eq!(description, Refusal::TooManyFailures.message())
            }
            other => panic!("the client was not told: {other:?}"),
        }
    }
}
