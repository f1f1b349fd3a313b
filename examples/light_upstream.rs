//! Light SSH peers built on `sshr-protocol`, for the whole-system figures in `perf/`: an
//! upstream server cheap enough that it is never the bottleneck, and a load generator
//! that opens many client sessions without an OpenSSH process per connection.
//!
//! ```text
//! light_upstream serve --listen 127.0.0.1:2200 --authorized proxy_key.pub \
//!     [--host-key-out host.pub] [--workers 1]
//! light_upstream load --target 127.0.0.1:2222 --user bench --key id_ed25519 \
//!     --mode setup|idle|bulk [--connections N] [--concurrency C] [--threads T] ...
//! ```
//!
//! `serve` accepts publickey logins from the listed keys (signatures verified), answers
//! `session` channels: `shell` idles, `exec sink` consumes data (with window adjusts) until
//! EOF, any other `exec` prints one line; every channel closes with exit status 0. It
//! prints `LISTENING <addr>` and its host key (`HOSTKEY <openssh line>`) on stdout.
//!
//! `load` prints one `RESULT key=value ...` line (and `READY ...` in idle mode once every
//! session is up):
//! * `setup`: `--connections` logins (key exchange + publickey auth, then DISCONNECT),
//!   `--concurrency` at a time, stopping early at `--duration-secs`;
//! * `idle`: `--connections` sessions, each with a `shell` channel, held `--hold-secs`;
//! * `bulk`: `--connections` parallel sessions, each sends `--bytes` through `exec sink`.
//!
//! Everything is loopback-only by intent and bounded in count and time.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use rand_core::RngCore;
use sshr_protocol::auth::{self, Method, Request};
use sshr_protocol::cipher::CipherAlg;
use sshr_protocol::crypto;
use sshr_protocol::hostkey::{PrivateKey, PublicKey};
use sshr_protocol::kex::KexAlg;
use sshr_protocol::msg;
use sshr_protocol::packet::PAYLOAD_OFFSET;
use sshr_protocol::transport::{ClientOptions, Config, Event, Input, Transport};
use sshr_protocol::wire::{self, Reader};

type Res<T> = Result<T, String>;

#[derive(Parser)]
#[command(about = "Light SSH upstream server and load generator for sshr's perf scripts")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the light upstream server.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        /// authorized_keys-style files (one OpenSSH public key per line).
        #[arg(long, required = true)]
        authorized: Vec<PathBuf>,
        /// Write the host public key (OpenSSH line) here.
        #[arg(long)]
        host_key_out: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Exit after this many seconds (a safety bound).
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
        /// The only key exchange to offer (e.g. curve25519-sha256); default: all, ours
        /// first.
        #[arg(long)]
        kex: Option<String>,
    },
    /// Run the load generator.
    Load {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        user: String,
        /// OpenSSH private key file (unencrypted).
        #[arg(long)]
        key: PathBuf,
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Logins in flight at once (setup, idle).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Executor threads; connections and concurrency are split between them.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// setup: stop starting new logins after this long.
        #[arg(long, default_value_t = 60.0)]
        duration_secs: f64,
        /// idle: how long to hold the sessions once all are up.
        #[arg(long, default_value_t = 5.0)]
        hold_secs: f64,
        /// idle: do not open a shell channel, only authenticate.
        #[arg(long)]
        no_channel: bool,
        /// bulk: bytes each session sends.
        #[arg(long, default_value_t = 16 << 20)]
        bytes: u64,
        /// Cipher to offer (e.g. aes128-gcm@openssh.com); default: all, ours first.
        #[arg(long)]
        cipher: Option<String>,
        /// The only key exchange to offer (e.g. curve25519-sha256); default: all, ours
        /// first.
        #[arg(long)]
        kex: Option<String>,
        /// Give up on the whole run after this long.
        #[arg(long, default_value_t = 600.0)]
        timeout_secs: f64,
        /// Give up on one login (connect to USERAUTH_SUCCESS) after this long.
        #[arg(long, default_value_t = 30.0)]
        login_timeout_secs: f64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Mode {
    Setup,
    Idle,
    Bulk,
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Serve {
            listen,
            authorized,
            host_key_out,
            workers,
            max_secs,
            kex,
        } => serve(listen, &authorized, host_key_out, workers, max_secs, kex),
        Cmd::Load {
            target,
            user,
            key,
            mode,
            connections,
            concurrency,
            threads,
            duration_secs,
            hold_secs,
            no_channel,
            bytes,
            cipher,
            kex,
            timeout_secs,
            login_timeout_secs,
        } => load(LoadOpts {
            target,
            user,
            key,
            mode,
            connections,
            concurrency,
            threads: threads.max(1),
            duration: Duration::from_secs_f64(duration_secs),
            hold: Duration::from_secs_f64(hold_secs),
            channel: !no_channel,
            bytes,
            cipher,
            kex,
            timeout: Duration::from_secs_f64(timeout_secs),
            login_timeout: Duration::from_secs_f64(login_timeout_secs),
        }),
    };
    if let Err(e) = r {
        eprintln!("light_upstream: {e}");
        std::process::exit(1);
    }
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut s);
    s
}

/// Transport settings of the light peers: no rekey of their own (sshr's legs still rekey
/// on sshr's schedule, and the peers follow).
fn peer_config(cipher: Option<&str>, kex: Option<&str>) -> Res<Arc<Config>> {
    let mut c = Config {
        version: "SSH-2.0-sshr_light_peer".into(),
        rekey_bytes: 1 << 50,
        rekey_interval: Duration::from_secs(30 * 24 * 3600),
        ..Config::default()
    };
    if let Some(name) = cipher {
        c.ciphers = vec![CipherAlg::from_name(name).ok_or(format!("unknown cipher {name}"))?];
    }
    if let Some(name) = kex {
        c.kex = vec![KexAlg::from_name(name).ok_or(format!("unknown key exchange {name}"))?];
    }
    Ok(Arc::new(c))
}

// ---------------------------------------------------------------------------------------
// A transport over a glommio TCP stream.

/// What [`Conn::recv`] got.
enum Msg {
    Event(Event),
    /// CHANNEL_DATA, not copied: recipient channel and data length.
    Data {
        channel: u32,
        len: usize,
    },
    Packet(Vec<u8>),
}

struct Conn {
    stream: TcpStream,
    t: Transport,
    rx: Vec<u8>,
    start: usize,
    end: usize,
    spare: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream, t: Transport) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            t,
            rx: vec![0; 4096],
            start: 0,
            end: 0,
            spare: Vec::new(),
        }
    }

    async fn flush(&mut self) -> Res<()> {
        if self.t.transmit().is_empty() {
            return Ok(());
        }
        let out = self.t.take_transmit(std::mem::take(&mut self.spare));
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.spare = out;
        Ok(())
    }

    async fn send(&mut self, payload: &[u8]) -> Res<()> {
        self.t.send(payload).map_err(|e| e.to_string())?;
        self.flush().await
    }

    async fn recv(&mut self) -> Res<Msg> {
        loop {
            if let Some(e) = self.t.poll_event() {
                return Ok(Msg::Event(e));
            }
            let mut need = self.end - self.start + 1;
            if self.end > self.start {
                let read = self
                    .t
                    .read(&mut self.rx[self.start..self.end], Instant::now());
                match read {
                    Err(e) => {
                        let _ = self.flush().await;
                        return Err(e.to_string());
                    }
                    Ok(Input::Consumed(n)) => {
                        self.start += n;
                        continue;
                    }
                    Ok(Input::Packet { len, payload }) => {
                        let p = &self.rx[self.start + payload.start..self.start + payload.end];
                        let m = if p[0] == msg::CHANNEL_DATA && p.len() >= 9 {
                            Msg::Data {
                                channel: u32::from_be_bytes([p[1], p[2], p[3], p[4]]),
                                len: p.len() - 9,
                            }
                        } else {
                            Msg::Packet(p.to_vec())
                        };
                        self.start += len;
                        self.flush().await?;
                        return Ok(m);
                    }
                    Ok(Input::NeedMore(n)) => need = n,
                }
            }
            // Replies the transport queued (key exchange) go out before we wait.
            self.flush().await?;
            if self.start > 0 {
                self.rx.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let want = need.max(self.end + 1);
            if self.rx.len() < want {
                self.rx
                    .resize(want.max(self.rx.len() * 2).min(512 * 1024), 0);
            }
            let n = self
                .stream
                .read(&mut self.rx[self.end..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.end += n;
        }
    }

    /// The next application message, skipping events.
    async fn packet(&mut self) -> Res<Msg> {
        loop {
            match self.recv().await? {
                Msg::Event(_) => continue,
                m => return Ok(m),
            }
        }
    }
}

fn channel_msg(m: u8, channel: u32) -> Vec<u8> {
    let mut p = vec![m];
    wire::put_u32(&mut p, channel);
    p
}

fn exit_status(channel: u32) -> Vec<u8> {
    let mut p = channel_msg(msg::CHANNEL_REQUEST, channel);
    wire::put_string(&mut p, b"exit-status");
    wire::put_bool(&mut p, false);
    wire::put_u32(&mut p, 0);
    p
}

// ---------------------------------------------------------------------------------------
// The server.

const WINDOW: u32 = 2 * 1024 * 1024;
const MAX_PACKET: u32 = 32 * 1024;

struct ServeShared {
    config: Arc<Config>,
    host_keys: Arc<[PrivateKey]>,
    authorized: Vec<PublicKey>,
}

fn read_authorized(files: &[PathBuf]) -> Res<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if line.starts_with('#') {
                continue;
            }
            keys.push(PublicKey::from_openssh(line).map_err(|e| format!("{}: {e}", f.display()))?);
        }
    }
    if keys.is_empty() {
        return Err("no authorized keys".into());
    }
    Ok(keys)
}

fn serve(
    listen: SocketAddr,
    authorized: &[PathBuf],
    host_key_out: Option<PathBuf>,
    workers: usize,
    max_secs: u64,
    kex: Option<String>,
) -> Res<()> {
    let host = PrivateKey::generate_ed25519(&mut rand_core::OsRng);
    let line = host.public().to_openssh();
    if let Some(path) = host_key_out {
        std::fs::write(&path, format!("{line}\n")).map_err(|e| format!("{e}"))?;
    }
    let shared = Arc::new(ServeShared {
        config: peer_config(None, kex.as_deref())?,
        host_keys: Arc::from(vec![host]),
        authorized: read_authorized(authorized)?,
    });
    // Bind once here to fail early and to learn the port when 0 was given; each worker
    // binds its own SO_REUSEPORT listener.
    let probe = std::net::TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = probe.local_addr().map_err(|e| e.to_string())?;
    drop(probe);
    let mut handles = Vec::new();
    for i in 0..workers.max(1) {
        let shared = shared.clone();
        let h = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("upstream{i}"))
            .spawn(move || async move {
                let listener = TcpListener::bind(addr).expect("bind");
                loop {
                    match listener.accept().await {
                        Ok(stream) => {
                            let shared = shared.clone();
                            glommio::spawn_local(async move {
                                let _ = serve_conn(stream, &shared).await;
                            })
                            .detach();
                        }
                        Err(e) => {
                            eprintln!("accept: {e}");
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        handles.push(h);
    }
    // Let the listeners come up, then tell the caller.
    std::thread::sleep(Duration::from_millis(100));
    println!("LISTENING {addr}");
    println!("HOSTKEY {line}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(max_secs));
    eprintln!("light_upstream: --max-secs reached, exiting");
    std::process::exit(0);
}

struct Chan {
    peer: u32,
    consumed: u32,
    closed: bool,
}

async fn serve_conn(stream: TcpStream, shared: &ServeShared) -> Res<()> {
    let t = Transport::server(
        shared.config.clone(),
        shared.host_keys.clone(),
        seed(),
        Instant::now(),
    );
    let mut c = Conn::new(stream, t);
    c.flush().await?;
    // User authentication: publickey only.
    loop {
        let Msg::Packet(p) = c.packet().await? else {
            return Err("channel data before authentication".into());
        };
        if p[0] != msg::USERAUTH_REQUEST {
            return Err(format!("unexpected message {}", p[0]));
        }
        let r = Request::parse(&p).map_err(|e| e.to_string())?;
        match r.method {
            Method::PublicKey {
                algorithm,
                key_blob,
                signature,
            } => {
                let known = auth::check_publickey(algorithm, key_blob)
                    .is_ok_and(|(k, _)| shared.authorized.contains(&k));
                match signature {
                    None if known => {
                        c.send(&auth::encode_pk_ok(algorithm, key_blob)).await?;
                        continue;
                    }
                    Some(sig) if known => {
                        let sid = c.t.session_id().unwrap_or_default().to_vec();
                        if auth::verify_publickey(
                            crypto::default_provider(),
                            &sid,
                            r.user,
                            r.service,
                            algorithm,
                            key_blob,
                            sig,
                        )
                        .is_ok()
                        {
                            c.send(&auth::encode_success()).await?;
                            break;
                        }
                    }
                    _ => {}
                }
                c.send(&auth::encode_failure(["publickey"], false)).await?;
            }
            _ => c.send(&auth::encode_failure(["publickey"], false)).await?,
        }
    }
    // Connection protocol: just enough for shell, exec and a data sink.
    let mut chans: Vec<Option<Chan>> = Vec::new();
    loop {
        match c.packet().await? {
            Msg::Event(_) => {}
            Msg::Data { channel, len } => {
                let Some(Some(ch)) = chans.get_mut(channel as usize) else {
                    continue;
                };
                ch.consumed += len as u32;
                if ch.consumed >= WINDOW / 2 {
                    let mut p = channel_msg(msg::CHANNEL_WINDOW_ADJUST, ch.peer);
                    wire::put_u32(&mut p, ch.consumed);
                    ch.consumed = 0;
                    c.send(&p).await?;
                }
            }
            Msg::Packet(p) => {
                let mut r = Reader::new(&p[1..]);
                match p[0] {
                    msg::GLOBAL_REQUEST => {
                        let _ = r.string("name");
                        if r.bool("want reply").unwrap_or(false) {
                            c.send(&[msg::REQUEST_FAILURE]).await?;
                        }
                    }
                    msg::CHANNEL_OPEN => {
                        let kind = r.string("type").unwrap_or_default();
                        let peer = r.u32("sender").map_err(|e| e.to_string())?;
                        if kind != b"session" {
                            let mut f = channel_msg(msg::CHANNEL_OPEN_FAILURE, peer);
                            wire::put_u32(&mut f, 3);
                            wire::put_string(&mut f, b"unsupported");
                            wire::put_string(&mut f, b"");
                            c.send(&f).await?;
                            continue;
                        }
                        let id = chans.len() as u32;
                        chans.push(Some(Chan {
                            peer,
                            consumed: 0,
                            closed: false,
                        }));
                        let mut ok = channel_msg(msg::CHANNEL_OPEN_CONFIRMATION, peer);
                        wire::put_u32(&mut ok, id);
                        wire::put_u32(&mut ok, WINDOW);
                        wire::put_u32(&mut ok, MAX_PACKET);
                        c.send(&ok).await?;
                    }
                    msg::CHANNEL_REQUEST => {
                        let id = r.u32("recipient").map_err(|e| e.to_string())?;
                        let kind = r.string("type").unwrap_or_default().to_vec();
                        let want_reply = r.bool("want reply").unwrap_or(false);
                        let Some(Some(ch)) = chans.get_mut(id as usize) else {
                            continue;
                        };
                        let peer = ch.peer;
                        if want_reply {
                            c.send(&channel_msg(msg::CHANNEL_SUCCESS, peer)).await?;
                        }
                        if kind == b"exec" {
                            let command = r.string("command").unwrap_or_default();
                            if command != b"sink" {
                                // A one-shot command: one line, exit 0, close.
                                let mut d = channel_msg(msg::CHANNEL_DATA, peer);
                                wire::put_string(&mut d, b"light_upstream\n");
                                c.send(&d).await?;
                                c.send(&exit_status(peer)).await?;
                                c.send(&channel_msg(msg::CHANNEL_EOF, peer)).await?;
                                c.send(&channel_msg(msg::CHANNEL_CLOSE, peer)).await?;
                                ch.closed = true;
                            }
                        }
                    }
                    msg::CHANNEL_EOF => {
                        let id = r.u32("recipient").map_err(|e| e.to_string())?;
                        if let Some(Some(ch)) = chans.get_mut(id as usize) {
                            if !ch.closed {
                                ch.closed = true;
                                let peer = ch.peer;
                                c.send(&exit_status(peer)).await?;
                                c.send(&channel_msg(msg::CHANNEL_EOF, peer)).await?;
                                c.send(&channel_msg(msg::CHANNEL_CLOSE, peer)).await?;
                            }
                        }
                    }
                    msg::CHANNEL_CLOSE => {
                        let id = r.u32("recipient").map_err(|e| e.to_string())?;
                        if let Some(slot) = chans.get_mut(id as usize) {
                            if let Some(ch) = slot.take() {
                                if !ch.closed {
                                    c.send(&channel_msg(msg::CHANNEL_CLOSE, ch.peer)).await?;
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The load generator.

#[derive(Clone)]
struct LoadOpts {
    target: SocketAddr,
    user: String,
    key: PathBuf,
    mode: Mode,
    connections: usize,
    concurrency: usize,
    threads: usize,
    duration: Duration,
    hold: Duration,
    channel: bool,
    bytes: u64,
    cipher: Option<String>,
    kex: Option<String>,
    timeout: Duration,
    login_timeout: Duration,
}

/// What one thread reports.
#[derive(Default)]
struct Report {
    ok: usize,
    failed: usize,
    /// Login latencies (setup, idle) or transfer times (bulk), seconds.
    latencies: Vec<f64>,
    first_start: Option<Instant>,
    last_end: Option<Instant>,
    bytes: u64,
    errors: Vec<String>,
}

async fn login(
    target: SocketAddr,
    user: &str,
    key: &PrivateKey,
    config: &Arc<Config>,
) -> Res<Conn> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))?;
    let t = Transport::client(
        config.clone(),
        ClientOptions::default(),
        seed(),
        Instant::now(),
    );
    let mut c = Conn::new(stream, t);
    c.t.request_service(auth::SERVICE)
        .map_err(|e| e.to_string())?;
    c.flush().await?;
    let mut sig_algs: Option<Vec<String>> = None;
    loop {
        match c.recv().await? {
            Msg::Event(Event::ExtInfo(i)) => sig_algs = i.server_sig_algs,
            Msg::Event(Event::ServiceAccepted(_)) => break,
            Msg::Event(_) => {}
            _ => return Err("unexpected message before the service was accepted".into()),
        }
    }
    let alg = sig_algs
        .and_then(|l| {
            key.sig_algs()
                .iter()
                .copied()
                .find(|a| l.iter().any(|n| n == a.name()))
        })
        .unwrap_or(key.sig_algs()[0]);
    let sid = c.t.session_id().unwrap_or_default().to_vec();
    let req = auth::signed_publickey_request(
        crypto::default_provider(),
        &sid,
        user,
        auth::CONNECTION_SERVICE,
        key,
        alg,
    )
    .map_err(|e| e.to_string())?;
    c.send(&req).await?;
    loop {
        match c.packet().await? {
            Msg::Packet(p) if p[0] == msg::USERAUTH_SUCCESS => return Ok(c),
            Msg::Packet(p) if p[0] == msg::USERAUTH_BANNER => {}
            Msg::Packet(p) if p[0] == msg::USERAUTH_FAILURE => {
                return Err("publickey login refused".into())
            }
            Msg::Packet(p) => return Err(format!("unexpected message {} during login", p[0])),
            _ => return Err("unexpected data during login".into()),
        }
    }
}

/// Open a session channel and make `request` (`shell` or `exec` with `command`).
/// Returns the peer's channel number, window and maximum packet size.
async fn open_session(c: &mut Conn, request: &str, command: Option<&str>) -> Res<(u32, u64, u32)> {
    let mut p = vec![msg::CHANNEL_OPEN];
    wire::put_string(&mut p, b"session");
    wire::put_u32(&mut p, 0);
    wire::put_u32(&mut p, WINDOW);
    wire::put_u32(&mut p, MAX_PACKET);
    c.send(&p).await?;
    let (peer, mut window, max_packet) = loop {
        match c.packet().await? {
            Msg::Packet(p) if p[0] == msg::CHANNEL_OPEN_CONFIRMATION => {
                let mut r = Reader::new(&p[1..]);
                let e = |e: sshr_protocol::wire::WireError| e.to_string();
                let _ours = r.u32("recipient").map_err(e)?;
                let peer = r.u32("sender").map_err(e)?;
                let window = r.u32("window").map_err(e)?;
                let max = r.u32("max packet").map_err(e)?;
                break (peer, window as u64, max);
            }
            Msg::Packet(p) if p[0] == msg::GLOBAL_REQUEST => {}
            Msg::Packet(p) => return Err(format!("channel open: got message {}", p[0])),
            _ => return Err("channel open: unexpected data".into()),
        }
    };
    let mut p = channel_msg(msg::CHANNEL_REQUEST, peer);
    wire::put_string(&mut p, request.as_bytes());
    wire::put_bool(&mut p, true);
    if let Some(cmd) = command {
        wire::put_string(&mut p, cmd.as_bytes());
    }
    c.send(&p).await?;
    loop {
        match c.packet().await? {
            Msg::Packet(p) if p[0] == msg::CHANNEL_SUCCESS => break,
            Msg::Packet(p) if p[0] == msg::CHANNEL_WINDOW_ADJUST => {
                window += Reader::new(&p[5..]).u32("bytes").unwrap_or(0) as u64;
            }
            Msg::Packet(p) if p[0] == msg::GLOBAL_REQUEST => {}
            Msg::Packet(p) => return Err(format!("channel request: got message {}", p[0])),
            _ => {}
        }
    }
    Ok((peer, window, max_packet))
}

/// Send `total` bytes on the channel, then EOF, and wait for the channel to close.
async fn bulk(c: &mut Conn, peer: u32, mut window: u64, max_packet: u32, total: u64) -> Res<()> {
    let chunk = (max_packet.min(MAX_PACKET) as usize)
        .saturating_sub(9)
        .max(1024);
    // Up to 8 packets sealed back to back, then one write.
    let slot = PAYLOAD_OFFSET + 9 + chunk + 255 + 64;
    let mut buf = vec![0x5au8; 8 * slot];
    let mut sent = 0u64;
    while sent < total {
        while window == 0 {
            match c.packet().await? {
                Msg::Packet(p) if p[0] == msg::CHANNEL_WINDOW_ADJUST => {
                    window += Reader::new(&p[5..]).u32("bytes").unwrap_or(0) as u64;
                }
                Msg::Packet(p) if p[0] == msg::CHANNEL_CLOSE || p[0] == msg::CHANNEL_EOF => {
                    return Err("channel closed during the transfer".into())
                }
                _ => {}
            }
        }
        c.flush().await?;
        let mut filled = 0;
        for _ in 0..8 {
            let n = (total - sent).min(window).min(chunk as u64) as usize;
            if n == 0 {
                break;
            }
            if !c.t.can_seal() {
                // In a key exchange: the copying path queues it for after NEWKEYS.
                let mut p = channel_msg(msg::CHANNEL_DATA, peer);
                wire::put_string(&mut p, &buf[filled + 14..filled + 14 + n]);
                c.t.send(&p).map_err(|e| e.to_string())?;
            } else {
                let at = &mut buf[filled..];
                let payload_len = 9 + n;
                at[PAYLOAD_OFFSET] = msg::CHANNEL_DATA;
                at[PAYLOAD_OFFSET + 1..PAYLOAD_OFFSET + 5].copy_from_slice(&peer.to_be_bytes());
                at[PAYLOAD_OFFSET + 5..PAYLOAD_OFFSET + 9]
                    .copy_from_slice(&(n as u32).to_be_bytes());
                let padding = c.t.sealer().min_padding(payload_len);
                // Padding bytes left from the previous round are as good as fresh here.
                filled +=
                    c.t.seal_in_place(at, payload_len, padding, 0)
                        .map_err(|e| e.to_string())?;
            }
            sent += n as u64;
            window -= n as u64;
        }
        if filled > 0 {
            c.stream
                .write_all(&buf[..filled])
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        c.flush().await?;
    }
    c.send(&channel_msg(msg::CHANNEL_EOF, peer)).await?;
    loop {
        match c.packet().await? {
            Msg::Packet(p) if p[0] == msg::CHANNEL_CLOSE => {
                c.send(&channel_msg(msg::CHANNEL_CLOSE, peer)).await?;
                return Ok(());
            }
            _ => {}
        }
    }
}

async fn goodbye(mut c: Conn) {
    c.t.disconnect(msg::disconnect::BY_APPLICATION, "bye");
    let _ = c.flush().await;
    let _ = c.stream.close().await;
}

async fn load_thread(
    opts: LoadOpts,
    key: Arc<PrivateKey>,
    connections: usize,
    concurrency: usize,
    ready: std::sync::mpsc::Sender<(usize, usize)>,
) -> Report {
    let config = match peer_config(opts.cipher.as_deref(), opts.kex.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            return Report {
                errors: vec![e],
                ..Report::default()
            }
        }
    };
    let report = Rc::new(RefCell::new(Report::default()));
    let next = Rc::new(Cell::new(0usize));
    let started = Instant::now();
    let held: Rc<RefCell<Vec<Conn>>> = Rc::new(RefCell::new(Vec::new()));
    let workers = match opts.mode {
        Mode::Bulk => connections,
        _ => concurrency.clamp(1, connections.max(1)),
    };
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (opts, key, config, report, next, held) = (
            opts.clone(),
            key.clone(),
            config.clone(),
            report.clone(),
            next.clone(),
            held.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= connections
                    || (opts.mode == Mode::Setup && started.elapsed() >= opts.duration)
                {
                    return;
                }
                next.set(i + 1);
                let t0 = Instant::now();
                let r: Res<()> = async {
                    let login = login(opts.target, &opts.user, &key, &config);
                    let mut c =
                        glommio::timer::timeout(opts.login_timeout, async { Ok(login.await) })
                            .await
                            .map_err(|_| {
                                format!("login timed out after {:?}", opts.login_timeout)
                            })??;
                    match opts.mode {
                        Mode::Setup => {
                            report
                                .borrow_mut()
                                .latencies
                                .push(t0.elapsed().as_secs_f64());
                            goodbye(c).await;
                        }
                        Mode::Idle => {
                            if opts.channel {
                                open_session(&mut c, "shell", None).await?;
                            }
                            report
                                .borrow_mut()
                                .latencies
                                .push(t0.elapsed().as_secs_f64());
                            held.borrow_mut().push(c);
                        }
                        Mode::Bulk => {
                            let (peer, window, max) =
                                open_session(&mut c, "exec", Some("sink")).await?;
                            let start = Instant::now();
                            bulk(&mut c, peer, window, max, opts.bytes).await?;
                            let end = Instant::now();
                            {
                                let mut r = report.borrow_mut();
                                r.latencies.push((end - start).as_secs_f64());
                                r.bytes += opts.bytes;
                                r.first_start = Some(r.first_start.map_or(start, |f| f.min(start)));
                                r.last_end = Some(r.last_end.map_or(end, |l| l.max(end)));
                            }
                            goodbye(c).await;
                        }
                    }
                    Ok(())
                }
                .await;
                let mut rep = report.borrow_mut();
                match r {
                    Ok(()) => rep.ok += 1,
                    Err(e) => {
                        rep.failed += 1;
                        if rep.errors.len() < 5 {
                            rep.errors.push(e);
                        }
                    }
                }
                if opts.mode == Mode::Bulk {
                    return;
                }
            }
        }));
    }
    let run = async {
        for t in tasks {
            t.await;
        }
    };
    let timed_out = glommio::timer::timeout(opts.timeout, async {
        run.await;
        Ok(())
    })
    .await
    .is_err();
    {
        let r = report.borrow();
        let _ = ready.send((r.ok, r.failed));
    }
    if opts.mode == Mode::Idle && !timed_out {
        glommio::timer::sleep(opts.hold).await;
    }
    for c in held.borrow_mut().drain(..) {
        drop(c);
    }
    let mut r = report.take();
    if timed_out {
        r.errors
            .push(format!("run timed out after {:?}", opts.timeout));
    }
    r
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn load(opts: LoadOpts) -> Res<()> {
    let text = std::fs::read_to_string(&opts.key).map_err(|e| format!("{e}"))?;
    let key = Arc::new(PrivateKey::from_openssh(&text).map_err(|e| e.to_string())?);
    let started = Instant::now();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for i in 0..opts.threads {
        let share = |n: usize| n / opts.threads + usize::from(i < n % opts.threads);
        let (connections, concurrency) = (share(opts.connections), share(opts.concurrency).max(1));
        let (opts, key, ready) = (opts.clone(), key.clone(), ready_tx.clone());
        let h =
            LocalExecutorBuilder::new(Placement::Unbound)
                .name(&format!("load{i}"))
                .spawn(move || async move {
                    load_thread(opts, key, connections, concurrency, ready).await
                })
                .map_err(|e| e.to_string())?;
        handles.push(h);
    }
    drop(ready_tx);
    let (mut ok, mut failed) = (0, 0);
    for (o, f) in ready_rx.iter().take(opts.threads) {
        ok += o;
        failed += f;
    }
    let setup_elapsed = started.elapsed().as_secs_f64();
    if opts.mode == Mode::Idle {
        println!("READY ok={ok} failed={failed} setup_s={setup_elapsed:.3}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    let mut all = Report::default();
    for h in handles {
        let r = h.join().map_err(|e| format!("{e:?}"))?;
        all.ok += r.ok;
        all.failed += r.failed;
        all.latencies.extend(r.latencies);
        all.first_start = match (all.first_start, r.first_start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        all.last_end = match (all.last_end, r.last_end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        all.bytes += r.bytes;
        all.errors.extend(r.errors);
    }
    for e in all.errors.iter().take(5) {
        eprintln!("light_upstream: error: {e}");
    }
    all.latencies.sort_by(|a, b| a.total_cmp(b));
    let ms = |p| percentile(&all.latencies, p) * 1e3;
    let mut line = format!(
        "RESULT mode={:?} ok={} failed={} setup_s={:.3} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2}",
        opts.mode,
        all.ok,
        all.failed,
        setup_elapsed,
        ms(0.5),
        ms(0.9),
        ms(0.99)
    );
    if opts.mode == Mode::Setup {
        line += &format!(" rate={:.1}", all.ok as f64 / setup_elapsed);
    }
    if let (Mode::Bulk, Some(a), Some(b)) = (opts.mode, all.first_start, all.last_end) {
        let secs = (b - a).as_secs_f64();
        line += &format!(
            " bytes={} transfer_s={:.3} mb_per_s={:.1}",
            all.bytes,
            secs,
            all.bytes as f64 / secs / 1e6
        );
    }
    println!("{line}");
    if all.ok == 0 {
        return Err("no session succeeded".into());
    }
    Ok(())
}
