//! The client's login as a state machine: what the proxy does with each user-auth
//! request, when it counts a failure, how long a refusal takes, and when it hangs up.
//!
//! [`Login`] takes what happened (a client message, the hooks' answer, an upstream
//! reply, a timer) with the time, and says what to do next as an [`Action`]: read the
//! client, send it something, look the user up, pass a request upstream, wait, succeed
//! or refuse. The session driver (`proxy::session`) performs the actions on sockets and
//! the hooks, and feeds the results back; it makes no decision of its own.
//!
//! The rules, each a test below:
//! - The methods listed to the client are those the user's server offers the account
//!   (`core::methods`), with `publickey` always: learned from its refusal of a request
//!   passed through, or else asked for ([`Action::AskMethods`]) before the first other
//!   failure is answered. A name without a server gets the list real servers gave most
//!   often, after as long as they took to give it, so that no name can be enumerated.
//! - Public keys are checked against the user's authorized keys; a verified signature
//!   over this leg's session id makes the proxy log in upstream with its own key.
//! - Password and keyboard-interactive requests go to the user's server, and its answers
//!   (prompts, password change requests) come back; its banners are held until the login
//!   succeeds, because a name the proxy does not know gets none.
//! - A name the proxy does not know, or whose server is down, gets a *decoy*: the answers
//!   a real server would give, taking as long as real ones take ([`failure_times`]).
//! - A refused attempt takes at least [`MIN_FAILURE_TIME`].
//! - Attempts are counted as sshd counts them ([`attempts`]).
//! - A login name may name the account's server after the separator (`alice+web2`).
//!   An account with several servers and no default shows a client that proved its
//!   key a keyboard-interactive menu of them; anyone else gets what an unknown name
//!   gets, since the list would tell them the account exists.
//! - When no directory can answer, every name gets the same one-line refusal.
//!
//! [`failure_times`]: crate::core::failure_times
//! [`attempts`]: crate::core::attempts

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sshr_protocol::auth::{self, InfoResponse, Method, Request};
use sshr_protocol::hostkey::{PublicKey, MIN_RSA_BITS};
use sshr_protocol::msg;
use sshr_protocol::text::Untrusted;
use tracing::{debug, info};

use crate::core::attempts::{AuthAttempts, FailedBecause, Next};
use crate::core::failure_times::{Answer, MIN_FAILURE_TIME};
use crate::core::methods::Methods;
use crate::core::penalty::Offence;
use crate::core::refusal::Refusal;
use crate::core::values::LoginName;

/// Upstream banners kept for a passed-through login until it succeeds.
pub const MAX_HELD_BANNERS: usize = 8;
/// Longest user name passed to the hooks (Linux allows 32; LDAP-style names a bit more).
pub const MAX_USER_NAME: usize = 256;

/// Why a client's authentication failed, as counted (the client only ever learns
/// "permission denied").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// `find_upstream` returned `None`.
    UnknownUser,
    /// The offered public key is not among the user's authorized keys, or its
    /// signature did not verify.
    WrongKey,
    /// The upstream refused the password or keyboard-interactive answers passed through.
    UpstreamRejected,
    /// A hook failed or timed out.
    HookError,
    /// The client did not authenticate within `limits.auth_timeout_secs`.
    Timeout,
    /// The client gave up or broke the protocol during authentication.
    Aborted,
    /// The account has `limits.max_sessions_per_user` relayed sessions already.
    SessionsPerUser,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 7] = [
        AuthFailure::UnknownUser,
        AuthFailure::WrongKey,
        AuthFailure::UpstreamRejected,
        AuthFailure::HookError,
        AuthFailure::Timeout,
        AuthFailure::Aborted,
        AuthFailure::SessionsPerUser,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::WrongKey => "wrong_key",
            AuthFailure::UpstreamRejected => "upstream_rejected",
            AuthFailure::HookError => "hook_error",
            AuthFailure::Timeout => "timeout",
            AuthFailure::Aborted => "aborted",
            AuthFailure::SessionsPerUser => "sessions_per_user",
        }
    }

    /// Whether a login that ended this way was the client's doing, rather than its
    /// server's, a hook's or the proxy's own limits (only then does its source earn a
    /// penalty).
    pub fn is_the_clients_doing(self) -> bool {
        !matches!(
            self,
            AuthFailure::UpstreamRejected | AuthFailure::HookError | AuthFailure::SessionsPerUser
        )
    }
}

/// The penalty a login that ended without success earns its source, given whether the
/// client caused the end and how many attempts failed (sshd's PerSourcePenalties).
pub fn offence(clients_doing: bool, failures: u32) -> Option<Offence> {
    match (clients_doing, failures) {
        (false, _) => None,
        (true, 0) => Some(Offence::NoAuth),
        (true, _) => Some(Offence::AuthFail),
    }
}

/// How an authentication attempt ended, as the audit log says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Success,
    Failure,
    /// Accepted as one step of several (the server asks for another method).
    Partial,
}

impl AttemptResult {
    pub fn label(self) -> &'static str {
        match self {
            AttemptResult::Success => "success",
            AttemptResult::Failure => "failure",
            AttemptResult::Partial => "partial",
        }
    }
}

/// One authentication attempt that reached a decision, for the audit log (see
/// [`Login::take_attempts`]). It holds no secret: never a password or a prompt's answer,
/// and a public key only as its fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// As the client named it (`publickey`, `password`, `keyboard-interactive`, `none`,
    /// or whatever else it asked for; unbounded here).
    pub method: String,
    pub result: AttemptResult,
    /// The SHA-256 fingerprint of the public key, for `publickey`.
    pub key_fingerprint: Option<String>,
    /// The login name's account part (the whole name when it does not split).
    pub user: String,
    /// The server named after the separator, or chosen from the menu.
    pub target: Option<String>,
}

/// What the process knows about how long real refusals take (`core::failure_times`,
/// shared by every session), and a source of random picks.
pub trait Timings {
    /// How long a decoy of `answer` takes.
    fn decoy_time(&self, answer: Answer) -> Duration;
    /// Whether most upstreams prompt for keyboard-interactive.
    fn decoy_prompts(&self) -> bool;
    /// A real upstream took `took` for `answer`.
    fn record_answer(&self, answer: Answer, took: Duration);
    /// A real upstream prompted (or not) for keyboard-interactive.
    fn record_prompted(&self, prompted: bool);
    /// The methods listed to a name without a server (`core::methods`).
    fn decoy_methods(&self) -> Methods;
    /// A real upstream listed `methods` for an account (once per login).
    fn record_methods(&self, methods: Methods);
}

/// What the session driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the client's next user-auth message, then [`Login::client_message`].
    ReadClient,
    SendClient(Vec<u8>),
    /// Look the user (and the server it named) up in the hooks, then
    /// [`Login::looked_up`]; an upstream connection may start meanwhile.
    LookUp(LoginName),
    /// The client proved its key: log in upstream with the proxy's key (forwarding the
    /// upstream's banners), then [`Login::key_login`].
    LoginWithKey,
    /// Pass this password or keyboard-interactive request to the user's server
    /// (connecting first, waiting for a slot as an unproven login), then
    /// [`Login::upstream`] with its first reply, or [`Reply::Unavailable`].
    PassThrough(Vec<u8>),
    /// Read the upstream's next reply, then [`Login::upstream`].
    ReadUpstream,
    /// Ask the user's server which methods it offers the account (a `none` request on
    /// the upstream connection, if one is open or being opened: never waiting for a
    /// slot), then [`Login::methods`].
    AskMethods,
    /// Send the client's answer upstream; [`Login::upstream`] with
    /// [`Reply::Failed`] if that fails, else carry on with the next action.
    SendUpstream(Vec<u8>),
    /// Wait until then, then [`Login::timer`].
    WaitUntil(Instant),
    /// Count this failure in the metrics.
    Count(AuthFailure),
    /// The login succeeded: send the held banners (already queued as `SendClient`),
    /// USERAUTH_SUCCESS, and relay.
    Succeed {
        method: &'static str,
    },
    /// Tell the client why and hang up; count the failure.
    Refuse(Refusal, AuthFailure),
}

/// What the hooks answered about a login name.
#[derive(Debug)]
pub enum LookedUp {
    /// No such user (or no such server of it).
    Unknown,
    /// The user's server is known; these keys may log in to the proxy as the user.
    Known { authorized: Vec<PublicKey> },
    /// The user has several servers and the login named none.
    Choose {
        targets: Vec<String>,
        authorized: Vec<PublicKey>,
    },
    /// No directory could answer.
    Unavailable,
}

/// Times a client may answer the server menu with a name that is not on it.
const MENU_TRIES: u8 = 3;

/// What happened upstream during a passed-through request.
#[derive(Debug)]
pub enum Reply {
    Success,
    Failure {
        partial: bool,
        /// What the server listed, as the proxy lists it (`core::methods`).
        methods: Methods,
    },
    /// A message for the client: a banner, a prompt (INFO_REQUEST) or a password change
    /// request.
    ForClient(Vec<u8>),
    /// The connection failed or broke off (logged by the driver).
    Failed,
    /// There is no connection: its server is down (the client has proven nothing yet).
    Unavailable,
}

/// Where a login stands.
#[derive(Debug)]
enum State {
    /// Waiting for a user-auth request.
    Request,
    /// Waiting for the hooks' answer about the first request's user; the request is
    /// handled once it is in.
    LookingUp(Vec<u8>),
    /// The server menu went to a client that proved its key; waiting for its choice.
    /// The number of answers not on the menu so far.
    Choosing(u8),
    /// Waiting for the hooks' answer about the server chosen from the menu.
    LookingUpChoice,
    /// Waiting for the proxy's own upstream login.
    KeyLogin,
    /// A request passed upstream; waiting for its reply.
    Passing(Pass),
    /// A prompt of the upstream went to the client; waiting for the answer.
    Answering(Pass),
    /// A decoy prompt went to the client; waiting for the answer. The failure it ends
    /// in.
    DecoyAnswering(Failed),
    /// A decoy waits before showing its prompt.
    DecoyPrompting(Failed),
    /// A failed attempt waits out its time before its answer.
    Failing(Failed),
    /// A failure is answered once the user's server has said which methods it offers
    /// ([`Action::AskMethods`], asked at `since`).
    Listing {
        partial: bool,
        since: Instant,
    },
    /// A failure is answered with the decoy list once as long as a real server takes to
    /// give its list has passed.
    DecoyListing {
        partial: bool,
    },
    Done,
}

/// A request passed to the user's server.
#[derive(Clone, Copy, Debug)]
struct Pass {
    keyboard_interactive: bool,
    /// The client was shown a prompt.
    asked: bool,
    /// When the client's last input went upstream: the upstream's answer is timed from
    /// here.
    since: Instant,
}

/// A failed attempt waiting for its answer.
#[derive(Clone, Debug)]
struct Failed {
    /// As the client named it (logged escaped).
    method: String,
    /// A `none` request (the first one is free, as in sshd).
    none: bool,
    because: FailedBecause,
    partial: bool,
    /// The fingerprint of a public key, when there is one.
    key: Option<String>,
}

/// The user, once the first request named one.
#[derive(Debug)]
struct Account {
    name: String,
    /// The hooks know the name (it has a server).
    known: bool,
    authorized: Vec<PublicKey>,
    /// The servers to choose from, when the name named none and the account has no
    /// default.
    targets: Option<Vec<String>>,
    /// The client proved one of `authorized` (before a server was chosen).
    proven: bool,
    /// The methods listed to the client: its server's (the last list it gave this
    /// login), or the decoy list once one was given. `None` until either is known.
    methods: Option<Methods>,
}

impl Account {
    /// The account has one server to ask for its methods (known, and not asking the
    /// client to choose among several).
    fn has_server(&self) -> bool {
        self.known && self.targets.is_none()
    }
}

/// One client's login (see the module documentation).
pub struct Login {
    attempts: AuthAttempts,
    peer: SocketAddr,
    /// `target_separator`; `None`: login names are taken whole.
    separator: Option<char>,
    account: Option<Account>,
    /// A message read while passing a request through that is a new request.
    carried: Option<Vec<u8>>,
    banners: Vec<Vec<u8>>,
    state: State,
    actions: VecDeque<Action>,
    /// Attempts decided and not yet taken (see [`Login::take_attempts`]).
    decided: Vec<Attempt>,
    /// The fingerprint of the key the client proved (its signature verified).
    proven_key: Option<String>,
    /// The server the client chose from the menu.
    chosen_target: Option<String>,
    /// `required_rsa_size`: smaller RSA client keys are refused, listed or not.
    required_rsa_size: usize,
}

impl Login {
    pub fn new(max_auth_tries: u32, peer: SocketAddr) -> Login {
        Login {
            attempts: AuthAttempts::new(max_auth_tries),
            peer,
            separator: None,
            account: None,
            carried: None,
            banners: Vec::new(),
            state: State::Request,
            actions: VecDeque::from([Action::ReadClient]),
            decided: Vec::new(),
            proven_key: None,
            chosen_target: None,
            required_rsa_size: MIN_RSA_BITS,
        }
    }

    /// Refuse RSA client keys under `bits` (sshd's `RequiredRSASize`), even if the hooks
    /// list them; the log says why. Default: OpenSSH's 1024, which every parsed key has.
    pub fn required_rsa_size(mut self, bits: usize) -> Login {
        self.required_rsa_size = bits;
        self
    }

    /// Login names are split at `separator` into account and server (`alice+web2`).
    pub fn target_separator(mut self, separator: Option<char>) -> Login {
        self.separator = separator;
        self
    }

    /// The next thing to do. `None` only once the login is over (after `Succeed` or
    /// `Refuse`).
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.attempts.failures()
    }

    /// The user name of the first request, once there was one.
    pub fn user(&self) -> Option<&str> {
        self.account.as_ref().map(|a| a.name.as_str())
    }

    /// The attempts decided since the last call, in order, for the audit log. (At most
    /// one per client message, and the attempts are bounded by `max_auth_tries`.)
    pub fn take_attempts(&mut self) -> Vec<Attempt> {
        std::mem::take(&mut self.decided)
    }

    /// Records an attempt of the login name `name` (the account's, once there is one).
    fn decide(&mut self, name: Option<&str>, method: &str, result: AttemptResult) {
        let key_fingerprint = match method {
            "publickey" => self.proven_key.clone(),
            _ => None,
        };
        self.decide_with_key(name, method, result, key_fingerprint)
    }

    fn decide_with_key(
        &mut self,
        name: Option<&str>,
        method: &str,
        result: AttemptResult,
        key_fingerprint: Option<String>,
    ) {
        let name = name.or(self.user()).unwrap_or_default();
        let (user, target) = match LoginName::parse(name, self.separator) {
            Some(n) => (n.user, n.target),
            None => (name.to_owned(), None),
        };
        self.decided.push(Attempt {
            method: method.to_owned(),
            result,
            key_fingerprint,
            user,
            target: self.chosen_target.clone().or(target),
        });
    }

    fn act(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn end(&mut self, refusal: Refusal, failure: AuthFailure) {
        self.state = State::Done;
        self.act(Action::Refuse(refusal, failure));
    }

    /// Wait for the next request (or handle the one carried over).
    fn next_request(&mut self, session_id: &[u8], now: Instant, timings: &dyn Timings) {
        self.state = State::Request;
        match self.carried.take() {
            Some(p) => self.client_message(&p, session_id, now, timings),
            None => self.act(Action::ReadClient),
        }
    }

    /// A user-auth message from the client; `session_id` is the client leg's.
    pub fn client_message(
        &mut self,
        payload: &[u8],
        session_id: &[u8],
        now: Instant,
        timings: &dyn Timings,
    ) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Request => self.request(payload, session_id, now, timings),
            State::Answering(pass) => self.answer(pass, payload, session_id, now, timings),
            State::DecoyAnswering(f) => self.decoy_answer(f, payload, session_id, now, timings),
            State::Choosing(wrong) => self.choose(wrong, payload),
            other => {
                self.state = other;
                debug_assert!(false, "client message in state {:?}", self.state);
            }
        }
    }

    fn request(&mut self, payload: &[u8], session_id: &[u8], now: Instant, timings: &dyn Timings) {
        if payload.first() != Some(&msg::USERAUTH_REQUEST) {
            return self.end(Refusal::ExpectedUserauth, AuthFailure::Aborted);
        }
        if self.attempts.request() == Next::HangUp {
            return self.end(Refusal::TooManyRequests, AuthFailure::Aborted);
        }
        let req = match Request::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                info!(error = %e, "malformed authentication request");
                return self.end(Refusal::MalformedRequest, AuthFailure::Aborted);
            }
        };
        if req.service != auth::CONNECTION_SERVICE {
            return self.end(Refusal::WrongService, AuthFailure::Aborted);
        }
        match &self.account {
            None => {
                // No real account has a name like this; it is not handed to the hooks
                // (and is answered like any unknown user).
                let plausible = !req.user.is_empty()
                    && req.user.len() <= MAX_USER_NAME
                    && !req.user.chars().any(char::is_control);
                let name = LoginName::parse(req.user, self.separator).filter(|_| plausible);
                if let Some(name) = name {
                    self.state = State::LookingUp(payload.to_vec());
                    self.act(Action::LookUp(name));
                    return;
                }
                self.account = Some(Account {
                    name: req.user.to_owned(),
                    known: false,
                    authorized: Vec::new(),
                    targets: None,
                    proven: false,
                    methods: None,
                });
            }
            // As OpenSSH: the user name may not change between attempts.
            Some(a) if a.name != req.user => {
                return self.end(Refusal::UserChanged, AuthFailure::Aborted);
            }
            Some(_) => {}
        }
        self.method(payload, &req, session_id, now, timings)
    }

    /// The hooks' answer about the user of the first request, or about the server it
    /// chose from the menu.
    pub fn looked_up(
        &mut self,
        answer: LookedUp,
        session_id: &[u8],
        now: Instant,
        timings: &dyn Timings,
    ) {
        let payload = match std::mem::replace(&mut self.state, State::Request) {
            State::LookingUp(payload) => payload,
            State::LookingUpChoice => return self.chosen(answer),
            other => {
                self.state = other;
                debug_assert!(false, "looked_up in state {:?}", self.state);
                return;
            }
        };
        // Parsed before the lookup.
        let Ok(req) = Request::parse(&payload) else {
            return self.end(Refusal::Internal, AuthFailure::Aborted);
        };
        let (known, authorized, targets) = match answer {
            LookedUp::Unavailable => {
                self.decide(Some(req.user), req.method.name(), AttemptResult::Failure);
                return self.end(Refusal::AccountServiceUnavailable, AuthFailure::HookError);
            }
            LookedUp::Unknown => (false, Vec::new(), None),
            LookedUp::Known { authorized } => (true, authorized, None),
            LookedUp::Choose {
                targets,
                authorized,
            } => (true, authorized, Some(targets)),
        };
        self.account = Some(Account {
            name: req.user.to_owned(),
            known,
            authorized,
            targets,
            proven: false,
            methods: None,
        });
        self.method(&payload, &req, session_id, now, timings)
    }

    /// The server chosen from the menu, looked up: log in there with the proxy's key
    /// (the client proved its own before the menu).
    fn chosen(&mut self, answer: LookedUp) {
        match answer {
            LookedUp::Known { .. } => {
                self.state = State::KeyLogin;
                self.act(Action::LoginWithKey);
            }
            LookedUp::Unavailable => {
                self.decide(None, "publickey", AttemptResult::Failure);
                self.end(Refusal::AccountServiceUnavailable, AuthFailure::HookError)
            }
            // It went away since the menu was shown.
            LookedUp::Unknown | LookedUp::Choose { .. } => {
                self.decide(None, "publickey", AttemptResult::Failure);
                self.end(Refusal::ChooseTarget, AuthFailure::UnknownUser)
            }
        }
    }

    /// The server menu: a keyboard-interactive prompt listing the account's servers.
    fn menu(&mut self, wrong: u8) {
        let Some(account) = &self.account else {
            return self.end(Refusal::Internal, AuthFailure::Aborted);
        };
        let targets = account.targets.as_deref().unwrap_or_default();
        let mut instruction = String::new();
        if wrong > 0 {
            instruction.push_str("That is not one of the servers.\n");
        }
        instruction.push_str("This account has several servers:\n");
        for (n, t) in targets.iter().enumerate() {
            instruction.push_str(&format!("  {}) {t}\n", n + 1));
        }
        if let Some(sep) = self.separator {
            instruction.push_str(&format!(
                "Next time, log in as {}{sep}SERVER to go straight there.",
                account.name
            ));
        }
        let prompt = auth::InfoRequest {
            name: "sshr: choose a server",
            instruction: &instruction,
            language: "",
            prompts: vec![auth::Prompt {
                prompt: "Server (number or name): ",
                echo: true,
            }],
        };
        self.act(Action::SendClient(prompt.encode()));
        self.act(Action::ReadClient);
        self.state = State::Choosing(wrong);
    }

    /// The client's answer to the server menu.
    fn choose(&mut self, wrong: u8, payload: &[u8]) {
        if payload.first() != Some(&msg::USERAUTH_INFO_RESPONSE) {
            // Anything but an answer: a client that cannot show the menu.
            return self.end(Refusal::ChooseTarget, AuthFailure::Aborted);
        }
        let Ok(response) = InfoResponse::parse(payload) else {
            return self.end(Refusal::MalformedInfoResponse, AuthFailure::Aborted);
        };
        let Some(account) = &self.account else {
            return self.end(Refusal::Internal, AuthFailure::Aborted);
        };
        let targets = account.targets.as_deref().unwrap_or_default();
        let typed = response.responses.first().map_or("", |r| r.trim());
        let picked = match typed.parse::<usize>() {
            Ok(n) if (1..=targets.len()).contains(&n) => Some(targets[n - 1].clone()),
            _ => targets.iter().find(|t| *t == typed).cloned(),
        };
        match picked {
            Some(target) => {
                self.chosen_target = Some(target.clone());
                let name = LoginName {
                    user: account.name.clone(),
                    target: Some(target),
                };
                self.state = State::LookingUpChoice;
                self.act(Action::LookUp(name));
            }
            None if wrong + 1 < MENU_TRIES => self.menu(wrong + 1),
            None => self.end(Refusal::ChooseTarget, AuthFailure::Aborted),
        }
    }

    fn method(
        &mut self,
        payload: &[u8],
        req: &Request<'_>,
        session_id: &[u8],
        now: Instant,
        timings: &dyn Timings,
    ) {
        let Some(account) = &self.account else {
            return self.end(Refusal::Internal, AuthFailure::Aborted);
        };
        let known = account.known;
        let choosing = account.targets.is_some();
        if account.proven {
            // Proven, and shown that the account wants a server chosen: only the menu
            // goes on from here.
            if matches!(req.method, Method::KeyboardInteractive { .. }) {
                return self.menu(0);
            }
            return self.end(Refusal::ChooseTarget, AuthFailure::Aborted);
        }
        let required_rsa_size = self.required_rsa_size;
        let authorized = |algorithm, key_blob| {
            auth::check_publickey(algorithm, key_blob).is_ok_and(|(k, _)| {
                k.check_rsa_size(required_rsa_size).is_ok() && account.authorized.contains(&k)
            })
        };
        match req.method {
            Method::None => {
                let f = Failed {
                    none: true,
                    ..failure("none", FailedBecause::MethodNotOffered)
                };
                self.failed(f, session_id, now, timings)
            }
            Method::Other(name) => self.failed(
                failure(name, FailedBecause::MethodNotOffered),
                session_id,
                now,
                timings,
            ),
            Method::PublicKey {
                algorithm,
                key_blob,
                signature: None,
            } => {
                if authorized(algorithm, key_blob) {
                    // Not a failure (yet), as in sshd: the client signs next.
                    self.act(Action::SendClient(auth::encode_pk_ok(algorithm, key_blob)));
                    self.act(Action::ReadClient);
                    self.state = State::Request;
                } else {
                    let f = publickey_failure(known, false, algorithm, key_blob, required_rsa_size);
                    self.failed(f, session_id, now, timings)
                }
            }
            Method::PublicKey {
                algorithm,
                key_blob,
                signature: Some(sig),
            } => {
                // Membership first (cheap, no oracle), then the signature over this leg's
                // session id: it can never be replayed to the upstream.
                let verified = authorized(algorithm, key_blob)
                    && auth::verify_publickey(
                        sshr_protocol::crypto::default_provider(),
                        session_id,
                        req.user,
                        req.service,
                        algorithm,
                        key_blob,
                        sig,
                    )
                    .is_ok();
                if known && verified {
                    self.proven_key = auth::check_publickey(algorithm, key_blob)
                        .ok()
                        .map(|(k, _)| k.fingerprint());
                }
                if known && verified && choosing {
                    self.offer_menu(session_id, now, timings);
                } else if known && verified {
                    self.state = State::KeyLogin;
                    self.act(Action::LoginWithKey);
                } else {
                    let f = publickey_failure(known, true, algorithm, key_blob, required_rsa_size);
                    self.failed(f, session_id, now, timings)
                }
            }
            Method::Password { .. } | Method::KeyboardInteractive { .. } => {
                let keyboard_interactive = matches!(req.method, Method::KeyboardInteractive { .. });
                let pass = Pass {
                    keyboard_interactive,
                    asked: false,
                    since: now,
                };
                if known && !choosing {
                    self.state = State::Passing(pass);
                    self.act(Action::PassThrough(payload.to_vec()));
                } else {
                    // With no server named, there is no server to pass it to; and the
                    // menu is only for a proven client.
                    self.decoy(pass, FailedBecause::UnknownUser, now, timings)
                }
            }
        }
    }

    /// The client proved its key for an account with several servers and named none:
    /// tell it how to name one (a banner, which even a client that cannot show a menu
    /// prints), and ask for keyboard-interactive, where the menu is.
    fn offer_menu(&mut self, session_id: &[u8], now: Instant, timings: &dyn Timings) {
        let Some(account) = self.account.as_mut() else {
            return self.end(Refusal::Internal, AuthFailure::Aborted);
        };
        account.proven = true;
        let targets = account.targets.as_deref().unwrap_or_default().join(", ");
        let hint = match self.separator {
            Some(sep) => format!(
                "sshr: this account has several servers ({targets}): log in as {}{sep}SERVER to choose one.\r\n",
                account.name
            ),
            None => format!("sshr: this account has several servers ({targets}).\r\n"),
        };
        self.decide(None, "publickey", AttemptResult::Partial);
        self.act(Action::SendClient(auth::encode_banner(&hint)));
        // Partial success: not a failed attempt.
        let _ = self.attempts.failed(false, true);
        self.act(Action::SendClient(auth::encode_failure(
            ["keyboard-interactive"],
            true,
        )));
        self.next_request(session_id, now, timings)
    }

    /// The proxy's own upstream login for a proven key: `Err` with the refusal and what
    /// to count when it failed.
    pub fn key_login(&mut self, result: Result<(), (Refusal, AuthFailure)>) {
        if !matches!(self.state, State::KeyLogin) {
            debug_assert!(false, "key_login in state {:?}", self.state);
            return;
        }
        match result {
            Ok(()) => {
                self.decide(None, "publickey", AttemptResult::Success);
                self.state = State::Done;
                self.act(Action::Succeed {
                    method: "publickey",
                });
            }
            Err((refusal, failure)) => {
                self.decide(None, "publickey", AttemptResult::Failure);
                self.end(refusal, failure)
            }
        }
    }

    /// A reply (or the failure) of the user's server to a passed-through request.
    pub fn upstream(
        &mut self,
        reply: Reply,
        session_id: &[u8],
        now: Instant,
        timings: &dyn Timings,
    ) {
        // A failed send of the client's answer comes before the read queued after it.
        self.actions.retain(|a| *a != Action::ReadUpstream);
        let pass = match std::mem::replace(&mut self.state, State::Done) {
            State::Passing(pass) | State::Answering(pass) => pass,
            other => {
                self.state = other;
                debug_assert!(false, "upstream reply in state {:?}", self.state);
                return;
            }
        };
        let kind = if pass.keyboard_interactive {
            Answer::KeyboardRefusal
        } else {
            Answer::PasswordRefusal
        };
        match reply {
            Reply::Success => {
                self.decide(None, pass.method(), AttemptResult::Success);
                for b in std::mem::take(&mut self.banners) {
                    self.act(Action::SendClient(b));
                }
                self.act(Action::Succeed {
                    method: pass.method(),
                });
            }
            Reply::Failure { partial, methods } => {
                self.listed(methods, partial, timings);
                // Only refusals of what a user typed are timed; a keyboard-interactive
                // request refused at once is a refusal without a prompt.
                match (pass.keyboard_interactive, pass.asked) {
                    _ if partial => {}
                    (false, _) => timings.record_answer(Answer::PasswordRefusal, now - pass.since),
                    (true, true) => {
                        timings.record_answer(Answer::KeyboardRefusal, now - pass.since)
                    }
                    (true, false) => timings.record_prompted(false),
                }
                let f = Failed {
                    partial,
                    ..failure(pass.method(), FailedBecause::UpstreamRefused)
                };
                self.wait_then_fail(f, pass.since + MIN_FAILURE_TIME, session_id, now, timings);
            }
            Reply::ForClient(p) if p.first() == Some(&msg::USERAUTH_BANNER) => {
                if self.banners.len() < MAX_HELD_BANNERS {
                    self.banners.push(p);
                }
                self.state = State::Passing(pass);
                self.act(Action::ReadUpstream);
            }
            Reply::ForClient(p) => {
                // INFO_REQUEST (keyboard-interactive) or PASSWD_CHANGEREQ (password): the
                // user answers, and the answer goes back unchanged.
                if !pass.asked && pass.keyboard_interactive {
                    timings.record_answer(Answer::Prompt, now - pass.since);
                    timings.record_prompted(true);
                }
                self.act(Action::SendClient(p));
                self.act(Action::ReadClient);
                self.state = State::Answering(Pass {
                    asked: true,
                    ..pass
                });
            }
            // It broke off (it crashed, or hung up at its MaxAuthTries): the client
            // fails as if the name were unknown, and every later attempt gets the decoy
            // (the driver's connection is gone).
            Reply::Failed if pass.asked => {
                // After the user answered a prompt (a keyboard-interactive one, or a
                // password change request): as long as a real refusal of that answer.
                self.decoy_list(timings);
                let f = failure(pass.method(), FailedBecause::UpstreamUnavailable);
                let until = now + timings.decoy_time(kind);
                self.wait_then_fail(f, until, session_id, now, timings);
            }
            Reply::Failed | Reply::Unavailable => {
                // Its server is down or broke off before the client saw anything: the
                // client has proven nothing yet, and "unreachable" would tell it the
                // account exists, so it fails like a wrong password.
                self.decoy(pass, FailedBecause::UpstreamUnavailable, now, timings)
            }
        }
    }

    /// The client's answer to an upstream prompt.
    fn answer(
        &mut self,
        pass: Pass,
        payload: &[u8],
        session_id: &[u8],
        now: Instant,
        timings: &dyn Timings,
    ) {
        if payload.first() == Some(&msg::USERAUTH_INFO_RESPONSE) {
            if InfoResponse::parse(payload).is_err() {
                return self.end(Refusal::MalformedInfoResponse, AuthFailure::Aborted);
            }
            self.act(Action::SendUpstream(payload.to_vec()));
            self.act(Action::ReadUpstream);
            self.state = State::Passing(Pass { since: now, ..pass });
        } else {
            // A new USERAUTH_REQUEST abandons this one (RFC 4256 3.2); the upstream
            // treats the next request the same way.
            self.carried = Some(payload.to_vec());
            self.next_request(session_id, now, timings)
        }
    }

    /// The answer an unknown user (or one whose server is down) gets: what a real
    /// upstream would do (for keyboard-interactive a "Password: " prompt, after as long
    /// as real prompts take, if most upstreams prompt), then failure after as long as
    /// real refusals take.
    fn decoy(&mut self, pass: Pass, because: FailedBecause, now: Instant, timings: &dyn Timings) {
        // A real server's refusal carries its list at no extra time: so does the decoy.
        self.decoy_list(timings);
        let f = failure(pass.method(), because);
        if pass.keyboard_interactive && timings.decoy_prompts() {
            self.state = State::DecoyPrompting(f);
            let at = pass.since + timings.decoy_time(Answer::Prompt);
            self.act(Action::WaitUntil(at.max(now)));
            return;
        }
        let until = if pass.keyboard_interactive {
            // Most upstreams refuse keyboard-interactive at once (sshd's default): so
            // does the decoy, padded like theirs.
            pass.since + MIN_FAILURE_TIME
        } else {
            pass.since + timings.decoy_time(Answer::PasswordRefusal)
        };
        self.wait_then_fail_at(f, until, now)
    }

    fn decoy_answer(
        &mut self,
        f: Failed,
        payload: &[u8],
        session_id: &[u8],
        now: Instant,
        timings: &dyn Timings,
    ) {
        if payload.first() != Some(&msg::USERAUTH_INFO_RESPONSE) {
            self.carried = Some(payload.to_vec());
            return self.next_request(session_id, now, timings);
        }
        // Judged like a real answer: a malformed one ends the session for a known name
        // too.
        if InfoResponse::parse(payload).is_err() {
            return self.end(Refusal::MalformedInfoResponse, AuthFailure::Aborted);
        }
        let until = now + timings.decoy_time(Answer::KeyboardRefusal);
        self.wait_then_fail_at(f, until, now)
    }

    /// A timer the driver was asked for ([`Action::WaitUntil`]) went off.
    pub fn timer(&mut self, session_id: &[u8], now: Instant, timings: &dyn Timings) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::DecoyPrompting(f) => {
                let prompt = auth::InfoRequest {
                    name: "",
                    instruction: "",
                    language: "",
                    prompts: vec![auth::Prompt {
                        prompt: "Password: ",
                        echo: false,
                    }],
                };
                self.act(Action::SendClient(prompt.encode()));
                self.act(Action::ReadClient);
                self.state = State::DecoyAnswering(f);
            }
            State::Failing(f) => self.failed(f, session_id, now, timings),
            State::DecoyListing { partial } => {
                let methods = self.decoy_list(timings);
                self.send_failure(methods, partial, session_id, now, timings)
            }
            other => {
                self.state = other;
                debug_assert!(false, "timer in state {:?}", self.state);
            }
        }
    }

    fn wait_then_fail(
        &mut self,
        f: Failed,
        until: Instant,
        session_id: &[u8],
        now: Instant,
        timings: &dyn Timings,
    ) {
        if until <= now {
            return self.failed(f, session_id, now, timings);
        }
        self.wait_then_fail_at(f, until, now)
    }

    fn wait_then_fail_at(&mut self, f: Failed, until: Instant, now: Instant) {
        // Never less than a real refusal.
        self.state = State::Failing(f);
        self.act(Action::WaitUntil(until.max(now)));
    }

    /// One failed attempt: log it (the client sees only USERAUTH_FAILURE), count it the
    /// way sshd does, and answer, or hang up at the attempt limit.
    fn failed(&mut self, f: Failed, session_id: &[u8], now: Instant, timings: &dyn Timings) {
        let result = match f.partial {
            true => AttemptResult::Partial,
            false => AttemptResult::Failure,
        };
        self.decide_with_key(None, &f.method, result, f.key.clone());
        let user = self.user().unwrap_or_default().to_owned();
        let none = f.none;
        let method = f.method.as_str();
        if none {
            debug!(user = %Untrusted(&user), "method none: telling the client the methods");
        } else {
            info!(
                user = %Untrusted(&user),
                client = %self.peer,
                method = %Untrusted(method),
                key = f.key.as_deref().unwrap_or("-"),
                reason = f.because.label(),
                "login attempt failed"
            );
        }
        let metric = match f.because {
            FailedBecause::UnknownUser => Some(AuthFailure::UnknownUser),
            FailedBecause::KeyRefused => Some(AuthFailure::WrongKey),
            FailedBecause::UpstreamRefused | FailedBecause::UpstreamUnavailable => {
                Some(AuthFailure::UpstreamRejected)
            }
            // Clients ask about every key they hold before signing with one: a refused
            // query (an old RSA key among them, too) is not a wrong key yet.
            FailedBecause::KeyNotAuthorized
            | FailedBecause::MethodNotOffered
            | FailedBecause::RsaKeyTooSmall => None,
        };
        if let Some(m) = metric {
            self.act(Action::Count(m));
        }
        if self.attempts.failed(none, f.partial) == Next::HangUp {
            info!(user = %Untrusted(&user), client = %self.peer, tries = self.attempts.failures(), "too many authentication failures: hanging up");
            return self.end(Refusal::TooManyFailures, AuthFailure::Aborted);
        }
        self.list_failure(f.partial, session_id, now, timings)
    }

    /// Answers a failure with the methods of the account: known already, asked of its
    /// server, or the decoy list after as long as a server takes to give its own.
    fn list_failure(
        &mut self,
        partial: bool,
        session_id: &[u8],
        now: Instant,
        timings: &dyn Timings,
    ) {
        let Some(account) = &self.account else {
            return self.end(Refusal::Internal, AuthFailure::Aborted);
        };
        match account.methods {
            Some(methods) => self.send_failure(methods, partial, session_id, now, timings),
            None if account.has_server() => {
                self.state = State::Listing {
                    partial,
                    since: now,
                };
                self.act(Action::AskMethods);
            }
            None => {
                self.state = State::DecoyListing { partial };
                let at = now + timings.decoy_time(Answer::Methods);
                self.act(Action::WaitUntil(at));
            }
        }
    }

    /// The user's server said which methods it offers ([`Action::AskMethods`]); `None`:
    /// it could not be asked (its connection failed or there is none), and the account
    /// is answered like a name without a server.
    pub fn methods(
        &mut self,
        offered: Option<Methods>,
        session_id: &[u8],
        now: Instant,
        timings: &dyn Timings,
    ) {
        let (partial, since) = match std::mem::replace(&mut self.state, State::Done) {
            State::Listing { partial, since } => (partial, since),
            other => {
                self.state = other;
                debug_assert!(false, "methods in state {:?}", self.state);
                return;
            }
        };
        match offered {
            Some(methods) => {
                timings.record_answer(Answer::Methods, now - since);
                self.listed(methods, false, timings);
                self.send_failure(methods, partial, session_id, now, timings)
            }
            None => {
                self.state = State::DecoyListing { partial };
                let at = since + timings.decoy_time(Answer::Methods);
                self.act(Action::WaitUntil(at.max(now)));
            }
        }
    }

    /// The user's server listed `methods` (with `partial` success: what is left to do).
    fn listed(&mut self, methods: Methods, partial: bool, timings: &dyn Timings) {
        let Some(account) = self.account.as_mut() else {
            return;
        };
        if account.methods.is_none() && !partial {
            timings.record_methods(methods);
        }
        account.methods = Some(methods);
    }

    /// The account's list, the decoy one from now on if it has none yet.
    fn decoy_list(&mut self, timings: &dyn Timings) -> Methods {
        match self.account.as_mut() {
            Some(account) => *account
                .methods
                .get_or_insert_with(|| timings.decoy_methods()),
            None => timings.decoy_methods(),
        }
    }

    fn send_failure(
        &mut self,
        methods: Methods,
        partial: bool,
        session_id: &[u8],
        now: Instant,
        timings: &dyn Timings,
    ) {
        self.act(Action::SendClient(auth::encode_failure(
            methods.names(),
            partial,
        )));
        self.next_request(session_id, now, timings)
    }
}

impl Pass {
    fn method(&self) -> &'static str {
        if self.keyboard_interactive {
            "keyboard-interactive"
        } else {
            "password"
        }
    }
}

fn failure(method: &str, because: FailedBecause) -> Failed {
    Failed {
        method: method.to_owned(),
        none: false,
        because,
        partial: false,
        key: None,
    }
}

/// A refused public-key request (a query, or `signed`), for a `known` user or not. An
/// RSA key under `required_rsa_size` is logged as such (for a known user: an unknown one
/// is logged as unknown, whatever the key).
fn publickey_failure(
    known: bool,
    signed: bool,
    algorithm: &str,
    key_blob: &[u8],
    required_rsa_size: usize,
) -> Failed {
    let key = auth::check_publickey(algorithm, key_blob)
        .ok()
        .map(|(k, _)| k);
    let too_small = key
        .as_ref()
        .is_some_and(|k| k.check_rsa_size(required_rsa_size).is_err());
    let because = match (known, signed) {
        (false, _) => FailedBecause::UnknownUser,
        (true, _) if too_small => FailedBecause::RsaKeyTooSmall,
        (true, false) => FailedBecause::KeyNotAuthorized,
        (true, true) => FailedBecause::KeyRefused,
    };
    Failed {
        key: key.map(|k| k.fingerprint()),
        ..failure("publickey", because)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use rand_core::SeedableRng;
    use sshr_protocol::auth::{InfoRequest, Prompt};
    use sshr_protocol::hostkey::{PrivateKey, SigAlg};

    use super::*;

    const SESSION: &[u8] = b"session id of the client leg";
    const PROMPT: Duration = Duration::from_millis(700);
    const PASSWORD: Duration = Duration::from_millis(2000);
    const KEYBOARD: Duration = Duration::from_millis(1500);
    const LISTING: Duration = Duration::from_millis(40);
    /// What the test servers list, unless a test says otherwise.
    const SERVER: Methods = Methods::ALL;
    /// The decoy list: another than [`SERVER`]'s, so that tests tell them apart.
    const DECOY: Methods = Methods {
        password: false,
        keyboard_interactive: true,
    };

    /// Failure times that answer fixed values and record what they are told.
    struct Fixed {
        prompts: bool,
        recorded: RefCell<Vec<(Answer, Duration)>>,
        prompted: RefCell<Vec<bool>>,
        listed: RefCell<Vec<Methods>>,
    }

    fn fixed(prompts: bool) -> Fixed {
        Fixed {
            prompts,
            recorded: RefCell::new(Vec::new()),
            prompted: RefCell::new(Vec::new()),
            listed: RefCell::new(Vec::new()),
        }
    }

    impl Timings for Fixed {
        fn decoy_time(&self, answer: Answer) -> Duration {
            match answer {
                Answer::Prompt => PROMPT,
                Answer::PasswordRefusal => PASSWORD,
                Answer::KeyboardRefusal => KEYBOARD,
                Answer::Methods => LISTING,
            }
        }
        fn decoy_prompts(&self) -> bool {
            self.prompts
        }
        fn decoy_methods(&self) -> Methods {
            DECOY
        }
        fn record_methods(&self, methods: Methods) {
            self.listed.borrow_mut().push(methods);
        }
        fn record_answer(&self, answer: Answer, took: Duration) {
            self.recorded.borrow_mut().push((answer, took));
        }
        fn record_prompted(&self, prompted: bool) {
            self.prompted.borrow_mut().push(prompted);
        }
    }

    fn request(user: &str, method: Method<'_>) -> Vec<u8> {
        Request {
            user,
            service: auth::CONNECTION_SERVICE,
            method,
        }
        .encode()
        .to_vec()
    }

    fn password(user: &str) -> Vec<u8> {
        request(
            user,
            Method::Password {
                password: "secret",
                new_password: None,
            },
        )
    }

    fn keyboard(user: &str) -> Vec<u8> {
        request(
            user,
            Method::KeyboardInteractive {
                language: "",
                submethods: "",
            },
        )
    }

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::generate_ed25519(&mut rand_chacha::ChaCha20Rng::from_seed([seed; 32]))
    }

    fn query(user: &str, k: &PrivateKey) -> Vec<u8> {
        let blob = k.public().to_blob();
        request(
            user,
            Method::PublicKey {
                algorithm: "ssh-ed25519",
                key_blob: &blob,
                signature: None,
            },
        )
    }

    fn signed(user: &str, k: &PrivateKey, session: &[u8]) -> Vec<u8> {
        auth::signed_publickey_request(
            sshr_protocol::crypto::default_provider(),
            session,
            user,
            auth::CONNECTION_SERVICE,
            k,
            SigAlg::Ed25519,
        )
        .unwrap()
    }

    fn answer(text: &str) -> Vec<u8> {
        InfoResponse {
            responses: vec![text],
        }
        .encode()
        .to_vec()
    }

    fn info_request() -> Vec<u8> {
        InfoRequest {
            name: "",
            instruction: "",
            language: "",
            prompts: vec![Prompt {
                prompt: "Verification code: ",
                echo: false,
            }],
        }
        .encode()
    }

    /// A login and its clock; every step returns the actions it led to.
    struct Run {
        login: Login,
        timings: Fixed,
        now: Instant,
        /// `Some(offered)`: [`Action::AskMethods`] is answered at once with `offered`
        /// (`None`: the server could not be asked), as the driver would; `None`: the
        /// test answers it itself.
        server: Option<Option<Methods>>,
        /// How many times the server was asked.
        asked: usize,
    }

    impl Run {
        fn new(max_tries: u32) -> Run {
            Self::with(max_tries, fixed(false))
        }

        fn with(max_tries: u32, timings: Fixed) -> Run {
            let mut login = Login::new(max_tries, "192.0.2.7:50000".parse().unwrap());
            assert_eq!(login.poll(), Some(Action::ReadClient));
            Run {
                login,
                timings,
                now: Instant::now(),
                server: Some(Some(SERVER)),
                asked: 0,
            }
        }

        fn drain(&mut self) -> Vec<Action> {
            let mut actions = Vec::new();
            while let Some(a) = self.login.poll() {
                match (a, self.server) {
                    (Action::AskMethods, Some(offered)) => {
                        self.asked += 1;
                        self.login
                            .methods(offered, SESSION, self.now, &self.timings);
                    }
                    (a, _) => actions.push(a),
                }
            }
            actions
        }

        fn methods(&mut self, offered: Option<Methods>) -> Vec<Action> {
            self.login
                .methods(offered, SESSION, self.now, &self.timings);
            self.drain()
        }

        fn client(&mut self, payload: &[u8]) -> Vec<Action> {
            self.login
                .client_message(payload, SESSION, self.now, &self.timings);
            self.drain()
        }

        fn looked_up(&mut self, known: bool, keys: Vec<PublicKey>) -> Vec<Action> {
            let answer = if known {
                LookedUp::Known { authorized: keys }
            } else {
                LookedUp::Unknown
            };
            self.answer(answer)
        }

        fn answer(&mut self, answer: LookedUp) -> Vec<Action> {
            self.login
                .looked_up(answer, SESSION, self.now, &self.timings);
            self.drain()
        }

        fn upstream(&mut self, reply: Reply) -> Vec<Action> {
            self.login.upstream(reply, SESSION, self.now, &self.timings);
            self.drain()
        }

        /// Moves the clock to the wait's end and fires the timer.
        fn timer(&mut self, at: Instant) -> Vec<Action> {
            self.now = self.now.max(at);
            self.login.timer(SESSION, self.now, &self.timings);
            self.drain()
        }

        /// A first request for a user the hooks know (with `keys`) or not.
        fn first(&mut self, payload: &[u8], known: bool, keys: Vec<PublicKey>) -> Vec<Action> {
            let user = Request::parse(payload).unwrap().user.to_owned();
            assert_eq!(
                self.client(payload),
                vec![Action::LookUp(name(&user, None))]
            );
            self.looked_up(known, keys)
        }
    }

    fn name(user: &str, target: Option<&str>) -> LoginName {
        LoginName {
            user: user.into(),
            target: target.map(Into::into),
        }
    }

    fn failure_sent(partial: bool) -> Action {
        Action::SendClient(auth::encode_failure(SERVER.names(), partial))
    }

    fn decoy_sent(partial: bool) -> Action {
        Action::SendClient(auth::encode_failure(DECOY.names(), partial))
    }

    fn wait_of(actions: &[Action]) -> Instant {
        match actions {
            [Action::WaitUntil(at)] => *at,
            other => panic!("expected one wait, got {other:?}"),
        }
    }

    #[test]
    fn none_is_answered_with_the_methods_and_not_counted_the_first_time() {
        let mut run = Run::new(2);
        let none = request("alice", Method::None);
        assert_eq!(
            run.first(&none, true, vec![]),
            vec![failure_sent(false), Action::ReadClient]
        );
        assert_eq!(run.login.failures(), 0);
        assert_eq!(
            run.client(&none),
            vec![failure_sent(false), Action::ReadClient]
        );
        assert_eq!(run.login.failures(), 1);
    }

    #[test]
    fn an_unknown_method_fails_without_a_metric() {
        let mut run = Run::new(6);
        let hostbased = request("alice", Method::Other("hostbased"));
        assert_eq!(
            run.first(&hostbased, true, vec![]),
            vec![failure_sent(false), Action::ReadClient]
        );
        assert_eq!(run.login.failures(), 1);
    }

    #[test]
    fn an_authorized_key_is_offered_pk_ok_and_a_signature_logs_in_upstream() {
        let k = key(1);
        let mut run = Run::new(6);
        let actions = run.first(&query("alice", &k), true, vec![k.public().clone()]);
        assert!(
            matches!(&actions[..], [Action::SendClient(p), Action::ReadClient] if p[0] == msg::USERAUTH_PK_OK)
        );
        assert_eq!(run.login.failures(), 0, "PK_OK is not a failure");
        assert_eq!(
            run.client(&signed("alice", &k, SESSION)),
            vec![Action::LoginWithKey]
        );
        run.login.key_login(Ok(()));
        assert_eq!(
            run.drain(),
            vec![Action::Succeed {
                method: "publickey"
            }]
        );
    }

    /// An RSA key under `required_rsa_size` is refused even when the hooks list it:
    /// no PK_OK for its query, no login for its signature, no wrong-key metric.
    #[test]
    fn rsa_keys_under_the_required_size_are_refused_even_when_listed() {
        let k = PrivateKey::from_openssh(include_str!("../../protocol/tests/data/hostkey/rsa1024"))
            .unwrap();
        let blob = k.public().to_blob();
        let rsa_query = request(
            "alice",
            Method::PublicKey {
                algorithm: "rsa-sha2-512",
                key_blob: &blob,
                signature: None,
            },
        );
        let rsa_signed = auth::signed_publickey_request(
            sshr_protocol::crypto::default_provider(),
            SESSION,
            "alice",
            auth::CONNECTION_SERVICE,
            &k,
            SigAlg::RsaSha2_512,
        )
        .unwrap();

        // OpenSSH's default, 1024 bits: accepted.
        let mut run = Run::new(6);
        let actions = run.first(&rsa_query, true, vec![k.public().clone()]);
        assert!(
            matches!(&actions[..], [Action::SendClient(p), Action::ReadClient] if p[0] == msg::USERAUTH_PK_OK),
            "{actions:?}"
        );
        assert_eq!(run.client(&rsa_signed), vec![Action::LoginWithKey]);

        // Required 2048 bits: refused, counted as failed attempts.
        let mut run = Run::new(6);
        run.login = Login::new(6, "192.0.2.7:50000".parse().unwrap()).required_rsa_size(2048);
        run.drain();
        assert_eq!(
            run.first(&rsa_query, true, vec![k.public().clone()]),
            vec![failure_sent(false), Action::ReadClient]
        );
        assert_eq!(
            run.client(&rsa_signed),
            vec![failure_sent(false), Action::ReadClient]
        );
        assert_eq!(run.login.failures(), 2);
        let taken = run.login.take_attempts();
        assert_eq!(taken.len(), 2);
        assert!(taken.iter().all(|a| a.result == AttemptResult::Failure
            && a.key_fingerprint == Some(k.public().fingerprint())));
        // Other keys still log in.
        let ed = key(1);
        assert_eq!(
            run.client(&signed("alice", &ed, SESSION)),
            vec![
                Action::Count(AuthFailure::WrongKey),
                failure_sent(false),
                Action::ReadClient
            ],
            "not listed: a wrong key"
        );
        let mut run = Run::new(6);
        run.login = Login::new(6, "192.0.2.7:50000".parse().unwrap()).required_rsa_size(2048);
        run.drain();
        run.first(
            &query("alice", &ed),
            true,
            vec![k.public().clone(), ed.public().clone()],
        );
        assert_eq!(
            run.client(&signed("alice", &ed, SESSION)),
            vec![Action::LoginWithKey]
        );
    }

    #[test]
    fn every_decided_attempt_is_told_once_without_its_secret() {
        let (good, wrong) = (key(1), key(2));
        let mut run = Run::new(6);
        run.login = Login::new(6, "192.0.2.7:50000".parse().unwrap()).target_separator(Some('+'));
        run.drain();
        let attempt = |method: &str, result, key: Option<&PrivateKey>| Attempt {
            method: method.into(),
            result,
            key_fingerprint: key.map(|k| k.public().fingerprint()),
            user: "alice".into(),
            target: Some("web2".into()),
        };
        // `none` and an unauthorized key: failures, the key by its fingerprint.
        run.client(&request("alice+web2", Method::None));
        run.looked_up(true, vec![good.public().clone()]);
        run.client(&query("alice+web2", &wrong));
        assert_eq!(
            run.login.take_attempts(),
            vec![
                attempt("none", AttemptResult::Failure, None),
                attempt("publickey", AttemptResult::Failure, Some(&wrong)),
            ]
        );
        // A key query answered PK_OK decides nothing yet.
        run.client(&query("alice+web2", &good));
        assert_eq!(run.login.take_attempts(), vec![]);
        // A password refused upstream: the password is nowhere in the record.
        run.client(&password("alice+web2"));
        let at = wait_of(&run.upstream(Reply::Failure {
            partial: false,
            methods: SERVER,
        }));
        run.timer(at);
        let taken = run.login.take_attempts();
        assert_eq!(
            taken,
            vec![attempt("password", AttemptResult::Failure, None)]
        );
        assert!(!format!("{taken:?}").contains("secret"));
        // The proven key, then the proxy's own upstream login.
        run.client(&signed("alice+web2", &good, SESSION));
        assert_eq!(run.login.take_attempts(), vec![], "decided by the upstream");
        run.login.key_login(Ok(()));
        assert_eq!(
            run.login.take_attempts(),
            vec![attempt("publickey", AttemptResult::Success, Some(&good))]
        );
        assert_eq!(run.login.take_attempts(), vec![], "told once");
    }

    #[test]
    fn partial_success_upstream_and_a_failed_upstream_key_login_are_told() {
        let k = key(1);
        let mut run = Run::new(6);
        run.first(&keyboard("bob"), true, vec![k.public().clone()]);
        let at = wait_of(&run.upstream(Reply::Failure {
            partial: true,
            methods: SERVER,
        }));
        run.timer(at);
        let taken = run.login.take_attempts();
        assert_eq!(taken.len(), 1);
        assert_eq!(
            (
                taken[0].method.as_str(),
                taken[0].result,
                taken[0].target.as_deref()
            ),
            ("keyboard-interactive", AttemptResult::Partial, None)
        );
        run.client(&signed("bob", &k, SESSION));
        run.login
            .key_login(Err((Refusal::LoginRefused, AuthFailure::UpstreamRejected)));
        let taken = run.login.take_attempts();
        assert_eq!(taken[0].result, AttemptResult::Failure);
        assert_eq!(taken[0].key_fingerprint, Some(k.public().fingerprint()));
    }

    #[test]
    fn a_target_in_the_login_name_is_looked_up_with_it() {
        let k = key(1);
        let mut run = Run::with(6, fixed(false));
        run.login = Login::new(6, "192.0.2.7:50000".parse().unwrap()).target_separator(Some('+'));
        run.drain();
        let req = signed("alice+web2", &k, SESSION);
        assert_eq!(
            run.client(&req),
            vec![Action::LookUp(name("alice", Some("web2")))]
        );
        let authorized = vec![k.public().clone()];
        assert_eq!(
            run.answer(LookedUp::Known { authorized }),
            vec![Action::LoginWithKey]
        );
        // A separator with no usable server name after it is not looked up at all, and
        // is answered like an unknown name.
        let mut run = Run::new(6);
        run.login = Login::new(6, "192.0.2.7:50000".parse().unwrap()).target_separator(Some('+'));
        run.drain();
        let actions = run.client(&password("alice+"));
        assert!(
            matches!(&actions[..], [Action::WaitUntil(_)]),
            "{actions:?}"
        );
    }

    #[test]
    fn no_answer_from_the_directory_is_one_line_for_every_name() {
        for user in ["alice", "no-such-user"] {
            let mut run = Run::new(6);
            assert_eq!(
                run.client(&password(user)),
                vec![Action::LookUp(name(user, None))]
            );
            assert_eq!(
                run.answer(LookedUp::Unavailable),
                vec![Action::Refuse(
                    Refusal::AccountServiceUnavailable,
                    AuthFailure::HookError
                )]
            );
        }
    }

    /// A client that proved its key for an account of several servers and no default.
    fn proven_chooser() -> (Run, Vec<Action>) {
        let k = key(1);
        let mut run = Run::new(6);
        run.login = Login::new(6, "192.0.2.7:50000".parse().unwrap()).target_separator(Some('+'));
        run.drain();
        assert_eq!(
            run.client(&signed("alice", &k, SESSION)),
            vec![Action::LookUp(name("alice", None))]
        );
        let actions = run.answer(LookedUp::Choose {
            targets: vec!["web1".into(), "web2".into()],
            authorized: vec![k.public().clone()],
        });
        (run, actions)
    }

    #[test]
    fn a_proven_client_chooses_its_server_from_a_menu() {
        let (mut run, actions) = proven_chooser();
        // A banner naming the syntax (even a client that cannot show a menu prints it),
        // then partial success asking for keyboard-interactive.
        let [Action::SendClient(banner), Action::SendClient(failure), Action::ReadClient] =
            &actions[..]
        else {
            panic!("{actions:?}")
        };
        assert_eq!(banner[0], msg::USERAUTH_BANNER);
        let text = String::from_utf8_lossy(banner);
        assert!(
            text.contains("web1, web2") && text.contains("alice+SERVER"),
            "{text}"
        );
        assert_eq!(
            *failure,
            auth::encode_failure(["keyboard-interactive"], true)
        );
        assert_eq!(run.login.failures(), 0, "partial success is not a failure");

        let menu = run.client(&keyboard("alice"));
        let [Action::SendClient(prompt), Action::ReadClient] = &menu[..] else {
            panic!("{menu:?}")
        };
        assert_eq!(prompt[0], msg::USERAUTH_INFO_REQUEST);
        assert!(String::from_utf8_lossy(prompt).contains("2) web2"));
        // A name not on the menu asks again; the number picks.
        let again = run.client(&answer("web9"));
        assert!(
            matches!(&again[..], [Action::SendClient(p), Action::ReadClient] if p[0] == msg::USERAUTH_INFO_REQUEST)
        );
        assert_eq!(
            run.client(&answer(" 2 ")),
            vec![Action::LookUp(name("alice", Some("web2")))]
        );
        assert_eq!(
            run.answer(LookedUp::Known { authorized: vec![] }),
            vec![Action::LoginWithKey]
        );
    }

    #[test]
    fn the_menu_ends_after_three_wrong_answers_or_another_request() {
        let (mut run, _) = proven_chooser();
        run.client(&keyboard("alice"));
        run.client(&answer("x"));
        run.client(&answer("y"));
        assert_eq!(
            run.client(&answer("z")),
            vec![Action::Refuse(Refusal::ChooseTarget, AuthFailure::Aborted)]
        );
        // A client that cannot show a menu (it tries something else) is told the syntax.
        let (mut run, _) = proven_chooser();
        assert_eq!(
            run.client(&password("alice")),
            vec![Action::Refuse(Refusal::ChooseTarget, AuthFailure::Aborted)]
        );
        // The chosen server went away meanwhile.
        let (mut run, _) = proven_chooser();
        run.client(&keyboard("alice"));
        run.client(&answer("web1"));
        assert_eq!(
            run.answer(LookedUp::Unknown),
            vec![Action::Refuse(
                Refusal::ChooseTarget,
                AuthFailure::UnknownUser
            )]
        );
    }

    #[test]
    fn an_unproven_client_never_sees_the_menu() {
        // Password and keyboard-interactive for an account with no server named get what
        // an unknown name gets: the menu would tell anyone the account exists.
        for request in [password("alice"), keyboard("alice")] {
            let mut run = Run::new(6);
            run.client(&request);
            let actions = run.answer(LookedUp::Choose {
                targets: vec!["web1".into(), "web2".into()],
                authorized: vec![],
            });
            let mut unknown = Run::new(6);
            unknown.now = run.now;
            unknown.client(&request);
            assert_eq!(actions, unknown.answer(LookedUp::Unknown));
        }
    }

    #[test]
    fn a_signature_over_another_session_id_is_refused() {
        let k = key(1);
        let mut run = Run::new(6);
        let replayed = signed("alice", &k, b"the upstream leg's session id");
        let actions = run.first(&replayed, true, vec![k.public().clone()]);
        assert_eq!(
            actions,
            vec![
                Action::Count(AuthFailure::WrongKey),
                failure_sent(false),
                Action::ReadClient
            ]
        );
    }

    #[test]
    fn a_foreign_key_fails_and_counts_as_a_wrong_key_only_when_signed() {
        let (mine, theirs) = (key(1), key(2));
        let mut run = Run::new(6);
        let actions = run.first(&query("alice", &theirs), true, vec![mine.public().clone()]);
        assert_eq!(actions, vec![failure_sent(false), Action::ReadClient]);
        let actions = run.client(&signed("alice", &theirs, SESSION));
        assert_eq!(
            actions,
            vec![
                Action::Count(AuthFailure::WrongKey),
                failure_sent(false),
                Action::ReadClient
            ]
        );
        assert_eq!(run.login.failures(), 2);
    }

    #[test]
    fn an_unknown_name_with_a_valid_signature_still_fails() {
        let k = key(1);
        let mut run = Run::new(6);
        let start = run.now;
        let actions = run.first(&signed("mallory", &k, SESSION), false, vec![]);
        assert_eq!(
            actions,
            vec![
                Action::Count(AuthFailure::UnknownUser),
                Action::WaitUntil(start + LISTING)
            ]
        );
        assert_eq!(
            run.timer(start + LISTING),
            vec![decoy_sent(false), Action::ReadClient]
        );
    }

    #[test]
    fn the_proxys_own_upstream_login_failing_is_told_to_the_proven_client() {
        let k = key(1);
        let mut run = Run::new(6);
        run.first(
            &signed("alice", &k, SESSION),
            true,
            vec![k.public().clone()],
        );
        run.login.key_login(Err((
            Refusal::UnexpectedHostKey,
            AuthFailure::UpstreamRejected,
        )));
        assert_eq!(
            run.drain(),
            vec![Action::Refuse(
                Refusal::UnexpectedHostKey,
                AuthFailure::UpstreamRejected
            )]
        );
    }

    #[test]
    fn the_attempt_limit_hangs_up_instead_of_the_last_failure() {
        let (mine, theirs) = (key(1), key(2));
        let mut run = Run::new(3);
        run.first(&query("alice", &theirs), true, vec![mine.public().clone()]);
        run.client(&query("alice", &theirs));
        assert_eq!(
            run.client(&query("alice", &theirs)),
            vec![Action::Refuse(
                Refusal::TooManyFailures,
                AuthFailure::Aborted
            )]
        );
        assert_eq!(run.login.poll(), None, "nothing after the end");
    }

    #[test]
    fn endless_queries_about_an_allowed_key_are_cut_off() {
        let k = key(1);
        let mut run = Run::new(2);
        run.first(&query("alice", &k), true, vec![k.public().clone()]);
        let mut ended = None;
        for i in 0..100 {
            let actions = run.client(&query("alice", &k));
            if let [Action::Refuse(r, _)] = &actions[..] {
                ended = Some((i, *r));
                break;
            }
        }
        let (i, refusal) = ended.expect("cut off");
        assert_eq!(refusal, Refusal::TooManyRequests);
        assert!(i < 2 * crate::core::attempts::MAX_REQUESTS_PER_TRY as usize);
    }

    #[test]
    fn broken_requests_end_the_login_with_their_reason() {
        let cases: [(Vec<u8>, Refusal); 3] = [
            (vec![msg::SERVICE_REQUEST], Refusal::ExpectedUserauth),
            (vec![msg::USERAUTH_REQUEST, 0, 0], Refusal::MalformedRequest),
            (
                Request {
                    user: "alice",
                    service: "ssh-userauth",
                    method: Method::None,
                }
                .encode()
                .to_vec(),
                Refusal::WrongService,
            ),
        ];
        for (payload, refusal) in cases {
            let mut run = Run::new(6);
            assert_eq!(
                run.client(&payload),
                vec![Action::Refuse(refusal, AuthFailure::Aborted)],
                "{refusal:?}"
            );
        }
    }

    #[test]
    fn the_user_name_may_not_change() {
        let mut run = Run::new(6);
        run.first(&request("alice", Method::None), true, vec![]);
        assert_eq!(
            run.client(&request("bob", Method::None)),
            vec![Action::Refuse(Refusal::UserChanged, AuthFailure::Aborted)]
        );
    }

    #[test]
    fn implausible_names_are_not_looked_up() {
        for name in ["", "a\nb", &"x".repeat(MAX_USER_NAME + 1)] {
            let mut run = Run::new(6);
            let wait = wait_of(&run.client(&request(name, Method::None)));
            assert_eq!(
                run.timer(wait),
                vec![decoy_sent(false), Action::ReadClient],
                "{name:?}"
            );
            assert_eq!(run.asked, 0);
        }
    }

    #[test]
    fn a_password_goes_upstream_and_success_shows_the_held_banners() {
        let mut run = Run::new(6);
        let p = password("alice");
        assert_eq!(
            run.first(&p, true, vec![]),
            vec![Action::PassThrough(p.clone())]
        );
        let banner = auth::encode_banner("welcome\n");
        assert_eq!(
            run.upstream(Reply::ForClient(banner.clone())),
            vec![Action::ReadUpstream]
        );
        assert_eq!(
            run.upstream(Reply::Success),
            vec![
                Action::SendClient(banner),
                Action::Succeed { method: "password" }
            ]
        );
    }

    #[test]
    fn a_refused_password_takes_at_least_the_minimum_and_is_timed() {
        let mut run = Run::new(6);
        let start = run.now;
        run.first(&password("alice"), true, vec![]);
        run.now += Duration::from_millis(100);
        let wait = wait_of(&run.upstream(Reply::Failure {
            partial: false,
            methods: SERVER,
        }));
        assert_eq!(wait, start + MIN_FAILURE_TIME);
        assert_eq!(
            run.timings.recorded.borrow().as_slice(),
            &[(Answer::PasswordRefusal, Duration::from_millis(100))]
        );
        assert_eq!(
            run.timer(wait),
            vec![
                Action::Count(AuthFailure::UpstreamRejected),
                failure_sent(false),
                Action::ReadClient
            ]
        );
    }

    #[test]
    fn a_slow_refusal_is_answered_at_once() {
        let mut run = Run::new(6);
        run.first(&password("alice"), true, vec![]);
        run.now += Duration::from_secs(3);
        assert_eq!(
            run.upstream(Reply::Failure {
                partial: false,
                methods: SERVER,
            }),
            vec![
                Action::Count(AuthFailure::UpstreamRejected),
                failure_sent(false),
                Action::ReadClient
            ]
        );
    }

    #[test]
    fn partial_success_is_passed_on_and_not_counted() {
        let mut run = Run::new(1);
        run.first(&password("alice"), true, vec![]);
        run.now += Duration::from_secs(1);
        let actions = run.upstream(Reply::Failure {
            partial: true,
            methods: SERVER,
        });
        assert_eq!(actions[1..], [failure_sent(true), Action::ReadClient]);
        assert_eq!(run.login.failures(), 0);
        assert!(
            run.timings.recorded.borrow().is_empty(),
            "not a refusal of what was typed"
        );
    }

    #[test]
    fn an_unknown_name_gets_a_password_decoy_as_slow_as_real_refusals() {
        let mut run = Run::new(6);
        let start = run.now;
        let wait = wait_of(&run.first(&password("mallory"), false, vec![]));
        assert_eq!(wait, start + PASSWORD);
        assert_eq!(
            run.timer(wait),
            vec![
                Action::Count(AuthFailure::UnknownUser),
                decoy_sent(false),
                Action::ReadClient
            ],
            "the decoy list, with no wait of its own (a real refusal carries its list)"
        );
    }

    #[test]
    fn keyboard_interactive_decoy_refuses_at_once_where_upstreams_do() {
        let mut run = Run::with(6, fixed(false));
        let start = run.now;
        let wait = wait_of(&run.first(&keyboard("mallory"), false, vec![]));
        assert_eq!(wait, start + MIN_FAILURE_TIME);
    }

    #[test]
    fn keyboard_interactive_decoy_prompts_where_upstreams_do() {
        let mut run = Run::with(6, fixed(true));
        let start = run.now;
        let wait = wait_of(&run.first(&keyboard("mallory"), false, vec![]));
        assert_eq!(wait, start + PROMPT);
        let actions = run.timer(wait);
        assert!(
            matches!(&actions[..], [Action::SendClient(p), Action::ReadClient] if InfoRequest::parse(p).is_ok()),
            "{actions:?}"
        );
        let typed = run.now;
        let wait = wait_of(&run.client(&answer("guess")));
        assert_eq!(wait, typed + KEYBOARD);
        assert_eq!(run.timer(wait)[0], Action::Count(AuthFailure::UnknownUser));
    }

    #[test]
    fn a_malformed_answer_ends_a_decoy_like_a_real_exchange() {
        let mut run = Run::with(6, fixed(true));
        let wait = wait_of(&run.first(&keyboard("mallory"), false, vec![]));
        run.timer(wait);
        assert_eq!(
            run.client(&[msg::USERAUTH_INFO_RESPONSE, 0, 0, 0, 9]),
            vec![Action::Refuse(
                Refusal::MalformedInfoResponse,
                AuthFailure::Aborted
            )]
        );
    }

    #[test]
    fn a_new_request_instead_of_an_answer_abandons_the_decoy() {
        let mut run = Run::with(6, fixed(true));
        let wait = wait_of(&run.first(&keyboard("mallory"), false, vec![]));
        run.timer(wait);
        // No failure for the abandoned prompt: the new request is handled at once.
        let actions = run.client(&request("mallory", Method::None));
        assert_eq!(actions, vec![decoy_sent(false), Action::ReadClient]);
    }

    const KEYBOARD_ONLY: Methods = Methods {
        password: false,
        keyboard_interactive: true,
    };

    #[test]
    fn the_first_failure_asks_the_server_for_its_methods_and_lists_them() {
        let mut run = Run::new(6);
        run.server = None;
        let start = run.now;
        let none = request("alice", Method::None);
        assert_eq!(run.first(&none, true, vec![]), vec![Action::AskMethods]);
        run.now += Duration::from_millis(25);
        let listed = || Action::SendClient(auth::encode_failure(KEYBOARD_ONLY.names(), false));
        assert_eq!(
            run.methods(Some(KEYBOARD_ONLY)),
            vec![listed(), Action::ReadClient]
        );
        assert_eq!(
            *run.timings.recorded.borrow(),
            [(Answer::Methods, Duration::from_millis(25))],
            "timed from the failure, for the decoys"
        );
        assert_eq!(*run.timings.listed.borrow(), [KEYBOARD_ONLY]);
        // Known from now on: a refused key is answered at once.
        let theirs = key(2);
        assert_eq!(
            run.client(&query("alice", &theirs)),
            vec![listed(), Action::ReadClient]
        );
        assert_eq!(run.login.failures(), 1);
        assert!(run.now >= start);
    }

    #[test]
    fn a_server_that_cannot_be_asked_gets_the_decoy_list_in_the_decoy_time() {
        let mut run = Run::new(6);
        run.server = None;
        let start = run.now;
        let none = request("alice", Method::None);
        assert_eq!(run.first(&none, true, vec![]), vec![Action::AskMethods]);
        // Its connection failed at once: the answer still takes a server's time.
        assert_eq!(run.methods(None), vec![Action::WaitUntil(start + LISTING)]);
        assert_eq!(
            run.timer(start + LISTING),
            vec![decoy_sent(false), Action::ReadClient]
        );
        assert!(run.timings.recorded.borrow().is_empty());
        assert!(run.timings.listed.borrow().is_empty(), "nothing heard");
        // It keeps that list.
        assert_eq!(
            run.client(&request("alice", Method::Other("hostbased"))),
            vec![decoy_sent(false), Action::ReadClient]
        );
    }

    #[test]
    fn a_refusal_passed_through_gives_its_list_and_no_server_is_asked() {
        let mut run = Run::new(6);
        run.server = None;
        run.first(&password("alice"), true, vec![]);
        let wait = wait_of(&run.upstream(Reply::Failure {
            partial: false,
            methods: KEYBOARD_ONLY,
        }));
        let listed = || Action::SendClient(auth::encode_failure(KEYBOARD_ONLY.names(), false));
        assert_eq!(
            run.timer(wait),
            vec![
                Action::Count(AuthFailure::UpstreamRejected),
                listed(),
                Action::ReadClient
            ]
        );
        assert_eq!(*run.timings.listed.borrow(), [KEYBOARD_ONLY]);
        assert_eq!(
            run.client(&request("alice", Method::None)),
            vec![listed(), Action::ReadClient]
        );
        // A partial success lists what is left, and is not a server's list for decoys.
        let mut run = Run::new(6);
        run.first(&keyboard("alice"), true, vec![]);
        run.now += Duration::from_secs(1);
        let left = Methods {
            password: true,
            keyboard_interactive: false,
        };
        let actions = run.upstream(Reply::Failure {
            partial: true,
            methods: left,
        });
        assert_eq!(
            actions[1..],
            [
                Action::SendClient(auth::encode_failure(left.names(), true)),
                Action::ReadClient
            ]
        );
        assert!(run.timings.listed.borrow().is_empty());
    }

    #[test]
    fn a_name_without_one_server_is_listed_like_an_unknown_one() {
        // Several servers and none named: there is no server to ask.
        let mut run = Run::new(6);
        run.server = None;
        assert_eq!(
            run.client(&request("alice", Method::None)),
            vec![Action::LookUp(name("alice", None))]
        );
        let start = run.now;
        let actions = run.answer(LookedUp::Choose {
            targets: vec!["web1".into(), "web2".into()],
            authorized: vec![],
        });
        assert_eq!(actions, vec![Action::WaitUntil(start + LISTING)]);
        assert_eq!(
            run.timer(start + LISTING),
            vec![decoy_sent(false), Action::ReadClient]
        );
    }

    #[test]
    fn upstream_prompts_go_to_the_client_and_answers_go_back() {
        let mut run = Run::with(6, fixed(false));
        let start = run.now;
        let ki = keyboard("alice");
        assert_eq!(run.first(&ki, true, vec![]), vec![Action::PassThrough(ki)]);
        run.now += Duration::from_millis(50);
        let prompt = info_request();
        assert_eq!(
            run.upstream(Reply::ForClient(prompt.clone())),
            vec![Action::SendClient(prompt), Action::ReadClient]
        );
        assert_eq!(
            run.timings.recorded.borrow().as_slice(),
            &[(Answer::Prompt, Duration::from_millis(50))]
        );
        assert_eq!(run.timings.prompted.borrow().as_slice(), &[true]);
        run.now += Duration::from_secs(5); // the user types
        let typed = run.now;
        assert_eq!(
            run.client(&answer("123456")),
            vec![Action::SendUpstream(answer("123456")), Action::ReadUpstream]
        );
        run.now += Duration::from_millis(100);
        let wait = wait_of(&run.upstream(Reply::Failure {
            partial: false,
            methods: SERVER,
        }));
        assert_eq!(
            wait,
            typed + MIN_FAILURE_TIME,
            "timed from the answer, not the request"
        );
        assert_eq!(
            run.timings.recorded.borrow()[1],
            (Answer::KeyboardRefusal, Duration::from_millis(100))
        );
        assert!(start < typed);
    }

    #[test]
    fn a_keyboard_interactive_refusal_without_a_prompt_is_recorded_as_such() {
        let mut run = Run::with(6, fixed(false));
        run.first(&keyboard("alice"), true, vec![]);
        run.upstream(Reply::Failure {
            partial: false,
            methods: SERVER,
        });
        assert_eq!(run.timings.prompted.borrow().as_slice(), &[false]);
        assert!(run.timings.recorded.borrow().is_empty());
    }

    #[test]
    fn an_upstream_that_breaks_off_before_a_prompt_gets_the_decoy() {
        let mut run = Run::new(6);
        let start = run.now;
        run.first(&password("alice"), true, vec![]);
        let wait = wait_of(&run.upstream(Reply::Failed));
        assert_eq!(wait, start + PASSWORD, "timed like a refusal, not an error");
        assert_eq!(
            run.timer(wait)[0],
            Action::Count(AuthFailure::UpstreamRejected)
        );
        // Its server is gone: the next attempt gets the decoy too (the driver says so).
        let p = password("alice");
        assert_eq!(run.client(&p), vec![Action::PassThrough(p)]);
        let wait = wait_of(&run.upstream(Reply::Unavailable));
        assert_eq!(wait, run.now + PASSWORD);
    }

    #[test]
    fn an_upstream_that_breaks_off_after_a_prompt_is_mimicked_from_the_answer() {
        let mut run = Run::new(6);
        run.first(&password("alice"), true, vec![]);
        let change = vec![60]; // SSH_MSG_USERAUTH_PASSWD_CHANGEREQ
        run.upstream(Reply::ForClient(change));
        run.now += Duration::from_secs(2);
        // The client's answer could not be sent: the read queued after it is dropped.
        let new_password = request(
            "alice",
            Method::Password {
                password: "old",
                new_password: Some("new"),
            },
        );
        // A password change answer is a new request: it abandons the exchange.
        let actions = run.client(&new_password);
        assert_eq!(actions, vec![Action::PassThrough(new_password)]);
        run.upstream(Reply::ForClient(info_request()));
        let actions = run.client(&answer("x"));
        assert_eq!(
            actions,
            vec![Action::SendUpstream(answer("x")), Action::ReadUpstream]
        );
        let failed_at = run.now;
        let wait = wait_of(&run.upstream(Reply::Failed));
        assert_eq!(wait, failed_at + PASSWORD);
    }

    #[test]
    fn banners_are_held_within_a_bound_and_never_shown_on_failure() {
        let mut run = Run::new(6);
        run.first(&password("alice"), true, vec![]);
        for i in 0..(MAX_HELD_BANNERS + 5) {
            run.upstream(Reply::ForClient(auth::encode_banner(&format!("{i}"))));
        }
        run.now += Duration::from_secs(1);
        let actions = run.upstream(Reply::Failure {
            partial: false,
            methods: SERVER,
        });
        assert!(actions
            .iter()
            .all(|a| !matches!(a, Action::SendClient(p) if p[0] == msg::USERAUTH_BANNER)));
        let p = password("alice");
        run.client(&p);
        let actions = run.upstream(Reply::Success);
        let shown = actions
            .iter()
            .filter(|a| matches!(a, Action::SendClient(p) if p[0] == msg::USERAUTH_BANNER))
            .count();
        assert_eq!(shown, MAX_HELD_BANNERS);
    }

    #[test]
    fn penalties_follow_who_ended_the_login() {
        assert_eq!(offence(true, 0), Some(Offence::NoAuth));
        assert_eq!(offence(true, 3), Some(Offence::AuthFail));
        assert_eq!(offence(false, 3), None);
        assert!(AuthFailure::Aborted.is_the_clients_doing());
        assert!(AuthFailure::WrongKey.is_the_clients_doing());
        assert!(!AuthFailure::UpstreamRejected.is_the_clients_doing());
        assert!(!AuthFailure::HookError.is_the_clients_doing());
    }
}
