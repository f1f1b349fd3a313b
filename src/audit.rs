//! The audit log (`audit_log`): one JSON object per line for each event of every
//! session — `connect`, `auth`, `upstream`, `channel`, `close` — shared by all shards.
//!
//! Every record has `event`, `time` (RFC 3339, UTC, milliseconds), `session_id` (the
//! hex id of the session's log span) and `client_addr` (`ip:port`, the real client's
//! address). The rest per event is in [`SessionAudit`]'s methods. Strings a peer chose
//! are escaped by JSON and cut to a bounded length; no password, prompt answer or key
//! material is ever handed to this module, only public-key fingerprints.
//!
//! Why a writer thread: a shard serves thousands of sessions on one thread, so it must
//! never wait on a disk (a full or slow file system, a stalled NFS mount, a blocked
//! stderr pipe). A shard serializes its record and offers it to a bounded queue without
//! blocking; one thread of its own drains the queue in batches and writes them with
//! `write(2)` on a file opened in append mode. When the queue is full the record is
//! dropped, counted in `sshr_audit_records_dropped_total{reason="queue_full"}` and
//! warned about at most once a minute; a failed write is counted and warned about the
//! same way (`reason="write_error"`). The log is never silently incomplete. A mutex
//! around the file instead would make every shard wait for the slowest write.
//!
//! logrotate renames the file and sends SIGUSR1: [`Audit::reopen`] asks the writer to
//! open the path again (created `0640`), and records written after that go to the new
//! file. When the last handle is dropped the writer writes what is queued and ends.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::core::login::Attempt;
use crate::core::opens;

/// Records the queue holds before new ones are dropped: some seconds of a busy proxy's
/// logins, a few MiB at most.
pub const QUEUE_RECORDS: usize = 8192;
/// Longest client version line kept (RFC 4253 4.2 allows 255 characters).
pub const MAX_VERSION: usize = 255;
/// Longest user or target name kept.
pub const MAX_NAME: usize = 256;
/// Longest other text kept (method names, addresses, error texts).
pub const MAX_TEXT: usize = 512;
/// At most one warning about dropped records per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How long dropping the last handle waits for the writer to write what is queued.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Why the audit log could not be opened (a startup error).
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {path}: {source}")]
pub struct OpenError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

enum Message {
    Line(Vec<u8>),
    /// Wakes the writer (to reopen); carries nothing.
    Wake,
    /// Acknowledged once everything queued before it is written.
    #[cfg(test)]
    Flush(mpsc::Sender<()>),
}

/// The process-wide sink: cheap to share (`Arc`), never blocks its callers.
pub struct Audit {
    queue: Option<SyncSender<Message>>,
    reopen: Arc<AtomicBool>,
    drops: Arc<Drops>,
    /// Told when the writer ends (in a mutex only so that `Audit` is `Sync`).
    done: Mutex<Option<Receiver<()>>>,
}

/// Records lost, and when that was last warned about.
struct Drops {
    started: Instant,
    /// Seconds after `started` of the last warning, plus one (0: never).
    last_warning: AtomicU64,
    count: AtomicU64,
}

impl Drops {
    fn record(&self, reason: &'static str, error: Option<&io::Error>) {
        let total = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!("sshr_audit_records_dropped_total", "reason" => reason).increment(1);
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == 0 || now >= last + WARN_EVERY.as_secs())
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            match error {
                Some(e) => tracing::warn!(dropped_total = total, error = %e, "audit log: a write failed, records lost (warned at most once a minute)"),
                None => tracing::warn!(dropped_total = total, "audit log: the writer is behind and its queue is full, records dropped (warned at most once a minute)"),
            }
        }
    }
}

/// Where the writer writes.
enum Target {
    Stderr,
    File { path: PathBuf, file: File },
}

impl Target {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Target::Stderr => io::stderr().lock().write_all(bytes),
            Target::File { file, .. } => file.write_all(bytes),
        }
    }

    fn reopen(&mut self) {
        if let Target::File { path, file } = self {
            match open(path) {
                Ok(new) => {
                    *file = new;
                    tracing::info!(path = %path.display(), "audit log reopened");
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit log: cannot reopen, writing on to the old file")
                }
            }
        }
    }
}

fn open(path: &Path) -> Result<File, OpenError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| OpenError {
            path: path.to_owned(),
            source,
        })
}

impl Audit {
    /// Opens the log: `Some(path)` appends to that file (created `0640`), `None` writes
    /// to standard error. Starts the writer thread.
    pub fn open(path: Option<&Path>) -> Result<Arc<Audit>, OpenError> {
        Self::with_queue(path, QUEUE_RECORDS)
    }

    fn with_queue(path: Option<&Path>, records: usize) -> Result<Arc<Audit>, OpenError> {
        let target = match path {
            Some(path) => Target::File {
                file: open(path)?,
                path: path.to_owned(),
            },
            None => Target::Stderr,
        };
        metrics::describe_counter!(
            "sshr_audit_records_dropped_total",
            "Audit log records lost: its queue was full (queue_full) or a write failed (write_error)"
        );
        // Shown at 0 from the start, so that an alert on it has a series to watch.
        for reason in ["queue_full", "write_error"] {
            metrics::counter!("sshr_audit_records_dropped_total", "reason" => reason).absolute(0);
        }
        let (queue, lines) = mpsc::sync_channel(records);
        let (done_tx, done) = mpsc::channel();
        let reopen = Arc::new(AtomicBool::new(false));
        let drops = Arc::new(Drops {
            started: Instant::now(),
            last_warning: AtomicU64::new(0),
            count: AtomicU64::new(0),
        });
        let writer = Writer {
            target,
            lines,
            reopen: reopen.clone(),
            drops: drops.clone(),
        };
        std::thread::Builder::new()
            .name("sshr-audit".into())
            .spawn(move || {
                writer.run();
                let _ = done_tx.send(());
            })
            .map_err(|source| OpenError {
                path: path.map(Path::to_owned).unwrap_or_else(|| "-".into()),
                source,
            })?;
        Ok(Arc::new(Audit {
            queue: Some(queue),
            reopen,
            drops,
            done: Mutex::new(Some(done)),
        }))
    }

    /// Opens the file again (after logrotate renamed it); records queued from now on go
    /// to the new file. Returns at once; the writer logs the outcome, and keeps the old
    /// file if the path cannot be opened. Nothing to do for standard error.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        // A full queue wakes the writer anyway.
        if let Some(queue) = &self.queue {
            let _ = queue.try_send(Message::Wake);
        }
    }

    /// Records lost so far (queue full or write failed).
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.drops.count.load(Ordering::Relaxed)
    }

    /// Waits (up to `limit`) until everything queued so far is written.
    #[cfg(test)]
    pub fn flush(&self, limit: Duration) -> bool {
        let (ack, acked) = mpsc::channel();
        let Some(queue) = &self.queue else {
            return false;
        };
        let deadline = Instant::now() + limit;
        let mut message = Message::Flush(ack);
        loop {
            match queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    message = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        acked
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// Queues one record (never blocks).
    fn emit(&self, session: &SessionAudit, event: Event<'_>) {
        let record = Record {
            event: event.name(),
            time: humantime::format_rfc3339_millis(SystemTime::now()),
            session_id: Hex(session.id),
            client_addr: session.client,
            fields: &event,
        };
        let mut line = match serde_json::to_vec(&record) {
            Ok(line) => line,
            Err(_) => return self.drops.record("write_error", None),
        };
        line.push(b'\n');
        let Some(queue) = &self.queue else { return };
        match queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.drops.record("queue_full", None),
            Err(TrySendError::Disconnected(_)) => self.drops.record("write_error", None),
        }
    }
}

impl Drop for Audit {
    /// The last handle: the writer writes what is queued and ends (waited for, bounded).
    fn drop(&mut self) {
        drop(self.queue.take());
        let done = match self.done.get_mut() {
            Ok(done) => done.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(done) = done {
            let _ = done.recv_timeout(CLOSE_WAIT);
        }
    }
}

struct Writer {
    target: Target,
    lines: Receiver<Message>,
    reopen: Arc<AtomicBool>,
    drops: Arc<Drops>,
}

/// Bytes gathered into one write at most.
const BATCH_BYTES: usize = 256 << 10;

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::new();
        let mut acks: Vec<mpsc::Sender<()>> = Vec::new();
        let mut records = 0u64;
        while let Ok(first) = self.lines.recv() {
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Line(line) => {
                        batch.extend_from_slice(&line);
                        records += 1;
                    }
                    Message::Wake => {}
                    #[cfg(test)]
                    Message::Flush(ack) => acks.push(ack),
                }
                if batch.len() < BATCH_BYTES {
                    next = self.lines.try_recv().ok();
                }
            }
            if self.reopen.swap(false, Ordering::Acquire) {
                self.target.reopen();
            }
            if !batch.is_empty() {
                if let Err(e) = self.target.write(&batch) {
                    for _ in 0..records {
                        self.drops.record("write_error", Some(&e));
                    }
                }
                batch.clear();
                records = 0;
            }
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
        }
    }
}

/// One line of the log.
#[derive(Serialize)]
struct Record<'a> {
    event: &'static str,
    #[serde(serialize_with = "display")]
    time: humantime::Rfc3339Timestamp,
    #[serde(serialize_with = "display")]
    session_id: Hex,
    /// Serialized as `"ip:port"` (`"[v6]:port"`).
    client_addr: SocketAddr,
    #[serde(flatten)]
    fields: &'a Event<'a>,
}

/// A session id as the session's log span shows it.
struct Hex(u64);

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The fields of each event besides the common ones.
#[derive(Serialize)]
#[serde(untagged)]
enum Event<'a> {
    Connect {
        client_version: &'a str,
    },
    Auth {
        method: &'a str,
        result: &'static str,
        key_fingerprint: Option<&'a str>,
        user: &'a str,
        target: Option<&'a str>,
    },
    Upstream {
        upstream_addr: &'a str,
        upstream_user: &'a str,
        host_key_fingerprint: Option<&'a str>,
        warm: bool,
        setup_ms: u64,
    },
    Channel {
        channel_type: &'a str,
        address: Option<&'a str>,
    },
    Close {
        reason: &'static str,
        error: Option<&'a str>,
        duration_ms: u64,
        bytes_from_client: u64,
        bytes_to_client: u64,
    },
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::Connect { .. } => "connect",
            Event::Auth { .. } => "auth",
            Event::Upstream { .. } => "upstream",
            Event::Channel { .. } => "channel",
            Event::Close { .. } => "close",
        }
    }
}

/// At most `max` characters of `s`.
fn bounded(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// How a session ended, for its `close` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client disconnected or closed the connection.
    ClientClosed,
    /// The upstream disconnected or closed the connection.
    UpstreamClosed,
    /// Authentication was refused (too many failures, an unknown target, the upstream
    /// refused the proxy's key, ...).
    AuthFailed,
    /// A time limit ran out (authentication, a stalled packet, idle).
    Timeout,
    /// The proxy is shutting down.
    Shutdown,
    /// A protocol error or a failure of the proxy's own.
    Error,
    /// The session's task ended with no reason given: cancelled when the proxy stopped
    /// at once, or a bug (a panic).
    Aborted,
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client closed",
            CloseReason::UpstreamClosed => "upstream closed",
            CloseReason::AuthFailed => "auth failed",
            CloseReason::Timeout => "timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Error => "error",
            CloseReason::Aborted => "aborted",
        }
    }
}

/// One session's side of the audit log, owned by the session on its shard: it knows the
/// session's id, client and start, counts the bytes relayed each way, and writes the
/// `close` record when it is dropped, however the session ends (return, error,
/// cancellation at shutdown). Without an audit log it only counts.
pub struct SessionAudit {
    sink: Option<Arc<Audit>>,
    id: u64,
    client: SocketAddr,
    started: Instant,
    connected: Cell<bool>,
    ended: Cell<Option<CloseReason>>,
    error: std::cell::RefCell<Option<String>>,
    from_client: Cell<u64>,
    to_client: Cell<u64>,
}

impl SessionAudit {
    /// `id` as the session's log span shows it; `client`: the real client's address.
    pub fn new(sink: Option<Arc<Audit>>, id: u64, client: SocketAddr) -> Self {
        SessionAudit {
            sink,
            id,
            client,
            started: Instant::now(),
            connected: Cell::new(false),
            ended: Cell::new(None),
            error: Default::default(),
            from_client: Cell::new(0),
            to_client: Cell::new(0),
        }
    }

    fn emit(&self, event: Event<'_>) {
        if let Some(sink) = &self.sink {
            sink.emit(self, event);
        }
    }

    /// The client's version line is known: the `connect` record (`client_version`),
    /// once per session; later calls do nothing.
    pub fn connect(&self, client_version: &str) {
        if !self.connected.replace(true) {
            self.emit(Event::Connect {
                client_version: bounded(client_version, MAX_VERSION),
            });
        }
    }

    /// An authentication attempt was decided: the `auth` record (`method`, `result`
    /// `success`/`failure`/`partial`, `key_fingerprint`, `user`, `target`).
    pub fn auth(&self, a: &Attempt) {
        self.emit(Event::Auth {
            method: bounded(&a.method, MAX_TEXT),
            result: a.result.label(),
            key_fingerprint: a.key_fingerprint.as_deref().map(|k| bounded(k, MAX_TEXT)),
            user: bounded(&a.user, MAX_NAME),
            target: a.target.as_deref().map(|t| bounded(t, MAX_NAME)),
        });
    }

    /// The upstream leg logged in: the `upstream` record (`upstream_addr`,
    /// `upstream_user`, `host_key_fingerprint` of the upstream's host key, `warm`: the
    /// connection was made ready before the login, `setup_ms`: from the client's
    /// connection to the end of the login on both legs).
    pub fn upstream(
        &self,
        addr: &str,
        user: &str,
        host_key_fingerprint: Option<&str>,
        warm: bool,
        setup: Duration,
    ) {
        self.emit(Event::Upstream {
            upstream_addr: bounded(addr, MAX_TEXT),
            upstream_user: bounded(user, MAX_NAME),
            host_key_fingerprint: host_key_fingerprint.map(|k| bounded(k, MAX_TEXT)),
            warm,
            setup_ms: setup.as_millis() as u64,
        });
    }

    /// A message from the client in the relay: a `channel` record (`channel_type`,
    /// `address`) if it opens a channel or a forwarding. Call it only for
    /// `CHANNEL_OPEN` and `GLOBAL_REQUEST`.
    pub fn client_request(&self, payload: &[u8]) {
        if self.sink.is_none() {
            return;
        }
        if let Some(o) = opens::client_request(payload) {
            self.emit(Event::Channel {
                channel_type: &o.kind,
                address: o.address.as_deref(),
            });
        }
    }

    /// Payload bytes relayed from the client to the upstream.
    #[inline]
    pub fn relayed_from_client(&self, bytes: usize) {
        self.from_client
            .set(self.from_client.get().wrapping_add(bytes as u64));
    }

    /// Payload bytes relayed from the upstream to the client.
    #[inline]
    pub fn relayed_to_client(&self, bytes: usize) {
        self.to_client
            .set(self.to_client.get().wrapping_add(bytes as u64));
    }

    /// Why the session ends, for the `close` record; the first reason given stands.
    /// `error`: the error's text, when there was one.
    pub fn ending(&self, reason: CloseReason, error: Option<&dyn std::fmt::Display>) {
        if self.ended.get().is_none() {
            self.ended.set(Some(reason));
            *self.error.borrow_mut() = error.map(|e| e.to_string());
        }
    }

    /// Whether the `connect` record was written.
    pub fn is_connected(&self) -> bool {
        self.connected.get()
    }
}

impl Drop for SessionAudit {
    /// The `close` record (`reason`, `error`, `duration_ms`, `bytes_from_client`,
    /// `bytes_to_client`).
    fn drop(&mut self) {
        let reason = self.ended.get().unwrap_or(CloseReason::Aborted);
        let error = self.error.borrow_mut().take();
        self.emit(Event::Close {
            reason: reason.label(),
            error: error.as_deref().map(|e| bounded(e, MAX_TEXT)),
            duration_ms: self.started.elapsed().as_millis() as u64,
            bytes_from_client: self.from_client.get(),
            bytes_to_client: self.to_client.get(),
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::core::login::AttemptResult;
    use sshr_protocol::{msg, wire};

    const CLIENT: &str = "192.0.2.1:40000";

    fn session(audit: &Arc<Audit>) -> SessionAudit {
        SessionAudit::new(
            Some(audit.clone()),
            0x2_0000_0000_002a,
            CLIENT.parse().unwrap(),
        )
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    fn attempt(user: &str) -> Attempt {
        Attempt {
            method: "publickey".into(),
            result: AttemptResult::Success,
            key_fingerprint: Some("SHA256:abc".into()),
            user: user.into(),
            target: Some("web2".into()),
        }
    }

    fn direct_tcpip(host: &str, port: u32) -> Vec<u8> {
        let mut p = vec![msg::CHANNEL_OPEN];
        wire::put_string(&mut p, b"direct-tcpip");
        for v in [3, 1 << 20, 32768] {
            wire::put_u32(&mut p, v);
        }
        wire::put_string(&mut p, host.as_bytes());
        wire::put_u32(&mut p, port);
        wire::put_string(&mut p, b"127.0.0.1");
        wire::put_u32(&mut p, 40001);
        p
    }

    #[test]
    fn each_event_has_its_fields_and_the_common_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(Some(&path)).unwrap();
        {
            let s = session(&audit);
            s.connect("SSH-2.0-OpenSSH_9.6");
            s.connect("SSH-2.0-again");
            s.auth(&attempt("alice"));
            s.upstream(
                "10.0.0.5:22",
                "root",
                Some("SHA256:host"),
                true,
                Duration::from_millis(42),
            );
            s.client_request(&direct_tcpip("db", 5432));
            // Keepalives and data are not channel records.
            let mut keepalive = vec![msg::GLOBAL_REQUEST];
            wire::put_string(&mut keepalive, b"keepalive@openssh.com");
            wire::put_bool(&mut keepalive, true);
            s.client_request(&keepalive);
            s.relayed_from_client(1000);
            s.relayed_from_client(24);
            s.relayed_to_client(7);
            s.ending(CloseReason::UpstreamClosed, Some(&"bye"));
            s.ending(CloseReason::Error, None);
        }
        assert!(audit.flush(Duration::from_secs(10)));
        let got = lines(&path);
        let events: Vec<_> = got.iter().map(|r| r["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["connect", "auth", "upstream", "channel", "close"]);
        for r in &got {
            assert_eq!(r["session_id"], "200000000002a");
            assert_eq!(r["client_addr"], CLIENT);
            // RFC 3339, UTC, milliseconds: 2026-12-01T01:02:03.456Z
            let time = r["time"].as_str().unwrap();
            assert_eq!(time.len(), 24, "{time}");
            assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
        }
        assert_eq!(got[0]["client_version"], "SSH-2.0-OpenSSH_9.6");
        let auth = &got[1];
        assert_eq!(
            (&auth["method"], &auth["result"], &auth["key_fingerprint"]),
            (&"publickey".into(), &"success".into(), &"SHA256:abc".into())
        );
        assert_eq!(
            (&auth["user"], &auth["target"]),
            (&"alice".into(), &"web2".into())
        );
        let up = &got[2];
        assert_eq!(up["upstream_addr"], "10.0.0.5:22");
        assert_eq!(up["upstream_user"], "root");
        assert_eq!(up["host_key_fingerprint"], "SHA256:host");
        assert_eq!((&up["warm"], &up["setup_ms"]), (&true.into(), &42.into()));
        assert_eq!(got[3]["channel_type"], "direct-tcpip");
        assert_eq!(got[3]["address"], "db:5432");
        let close = &got[4];
        assert_eq!(
            close["reason"], "upstream closed",
            "the first reason stands"
        );
        assert_eq!(close["error"], "bye");
        assert_eq!(close["bytes_from_client"], 1024);
        assert_eq!(close["bytes_to_client"], 7);
        assert!(close["duration_ms"].is_u64());
        // Created 0640 (less if the umask says so).
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{mode:o}");
    }

    #[test]
    fn a_session_dropped_without_a_reason_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(Some(&path)).unwrap();
        drop(session(&audit));
        assert!(audit.flush(Duration::from_secs(10)));
        let got = lines(&path);
        assert_eq!(got.len(), 1, "no connect record without a version line");
        assert_eq!(
            (&got[0]["event"], &got[0]["reason"]),
            (&"close".into(), &"aborted".into())
        );
        assert_eq!(got[0]["error"], Value::Null);
    }

    #[test]
    fn hostile_strings_stay_one_bounded_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(Some(&path)).unwrap();
        let hostile = "x\"}\n{\"event\":\"auth\",\"result\":\"success\"}\r\u{0}\u{1b}[2J\u{2028}\\";
        let long = format!("{hostile}{}", "é".repeat(10_000));
        {
            let s = session(&audit);
            s.connect(&long);
            s.auth(&attempt(&long));
            s.client_request(&direct_tcpip(&long, 1));
        }
        assert!(audit.flush(Duration::from_secs(10)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        let got = lines(&path);
        let version = got[0]["client_version"].as_str().unwrap();
        assert_eq!(version.chars().count(), MAX_VERSION);
        assert!(long.starts_with(version), "escaped, not altered");
        assert_eq!(got[1]["user"].as_str().unwrap().chars().count(), MAX_NAME);
        assert_eq!(got[1]["result"], "success");
        assert!(got[2]["address"].as_str().unwrap().len() <= opens::MAX_ADDRESS + 16);
        assert!(!text.contains('\u{1b}') && !text.contains('\r'));
    }

    #[test]
    fn reopen_after_a_rename_writes_to_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let audit = Audit::open(Some(&path)).unwrap();
        let first = session(&audit);
        first.connect("SSH-2.0-before");
        assert!(audit.flush(Duration::from_secs(10)));
        std::fs::rename(&path, &rotated).unwrap();
        first.connect("SSH-2.0-ignored");
        let second = session(&audit);
        second.connect("SSH-2.0-still-old-file");
        assert!(audit.flush(Duration::from_secs(10)));
        audit.reopen();
        let third = session(&audit);
        third.connect("SSH-2.0-after");
        assert!(audit.flush(Duration::from_secs(10)));
        let versions = |p: &Path| -> Vec<String> {
            lines(p)
                .iter()
                .map(|r| r["client_version"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            versions(&rotated),
            ["SSH-2.0-before", "SSH-2.0-still-old-file"]
        );
        assert_eq!(versions(&path), ["SSH-2.0-after"]);
        drop((first, second, third));
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_never_blocks() {
        // A FIFO nobody reads yet: the writer blocks once the pipe is full.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("audit.fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let audit = Audit::with_queue(Some(&fifo), 4).unwrap();
        const SENT: u64 = 5000;
        let started = Instant::now();
        {
            let s = session(&audit);
            for _ in 0..SENT - 1 {
                s.relayed_to_client(1);
                s.ending(CloseReason::ClientClosed, None);
                s.connected.set(false);
                s.connect(&"v".repeat(200));
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "emitting never waits for the writer"
        );
        let dropped = audit.dropped();
        assert!(
            dropped > 0,
            "5000 records of 300 bytes overflow a 64 KiB pipe"
        );
        // Now read everything: what was not dropped arrives, whole.
        let reading = std::thread::spawn(move || {
            use std::io::Read;
            let mut reader = reader;
            let mut all = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut buf = [0u8; 65536];
            while Instant::now() < deadline {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            all
        });
        assert!(audit.flush(Duration::from_secs(30)));
        drop(audit);
        let all = reading.join().unwrap();
        let written = all.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
        assert_eq!(written + dropped, SENT, "every record written or counted");
    }
}
