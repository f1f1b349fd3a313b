//! The interop matrix: real SSH clients through the real `sshr` binary to real SSH
//! servers, all on loopback, printed as a table with the clients as rows and the
//! upstream servers as columns.
//!
//! Each cell is one client logging in through sshr to one upstream, twice:
//!
//! - exec: `echo interop-ok; exit 3` must print its line and end with exit status 3;
//! - transfer: 16 MiB of deterministic pseudo-random data piped to `sha256sum` must
//!   come back with the data's SHA-256 (1 MiB in debug builds: [`TRANSFER_LEN`]). PuTTY
//!   copies the file with `pscp` (SFTP) instead, then runs `sha256sum` on it with
//!   `plink`.
//!
//! The clients are OpenSSH 9.2 and 10 `ssh`, PuTTY, Dropbear's `dbclient`, paramiko (key,
//! password and keyboard-interactive), asyncssh, a libssh client and a JSch client
//! (`sshr_testsupport::peers`). The upstreams are OpenSSH 9.2's and 10's `sshd` with
//! Debian's defaults, Dropbear, an asyncssh server, and `sshd` restricted to each single key
//! exchange and to each single host key algorithm that OpenSSH 9.2 has. Every upstream
//! logs in one temporary account (OpenSSH 10, chrooted into its Debian sid root, logs in
//! that root's root): with the proxy's key for the key rows, with the account's password
//! (passed through by sshr) for the others.
//!
//! [`KNOWN_GAPS`] lists the cells that fail today and why. The test fails when a cell
//! outside it fails, and also when a cell in it passes: then the entry must go, so the
//! list stays true. The whole table is printed either way (on stderr, not captured).
//!
//! Needs root (sshd, `useradd`) and the packages of `scripts/test`. To run part of the
//! matrix, name rows and columns in `SSHR_MATRIX_ROWS` and `SSHR_MATRIX_COLUMNS`
//! (comma-separated; the rest is shown as `·` and not checked).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use sshr_testsupport::peers::{AsyncsshServer, Auth, Client, ClientKit, Dropbear, Login, Trust};
use sshr_testsupport::temp_account::TempAccount;
use sshr_testsupport::{openssh10, run_bounded, tail, Sshd, SshdOptions, Sshr, SshrSetup, TempDir};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

/// Bytes of the transfer: 16 MiB. A debug build of sshr relays about 1 MB per CPU
/// second (its crypto unoptimised), which would make the matrix take half an hour on a
/// small machine: there it is 1 MiB, and the table says so.
const TRANSFER_LEN: usize = if cfg!(debug_assertions) {
    1 << 20
} else {
    16 << 20
};
/// Cells run at once (the machine has 2 cores; clients, proxy and servers share them).
const PARALLEL: usize = 3;
/// Time limit of one client run (the transfer through a debug build is the slow one).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
/// What the exec step runs, and what it must print and exit with.
const EXEC: &str = "echo interop-ok; exit 3";
const EXEC_OUTPUT: &str = "interop-ok";
const EXEC_STATUS: i32 = 3;

/// Cells expected to fail today: (row, column, why), `*` matching every row or column.
/// Every cell an entry covers must fail; when one passes, the test fails until the
/// entry is narrowed or removed.
const KNOWN_GAPS: &[(&str, &str, &str)] = &[];

/// Why the password rows do not run against OpenSSH 10.
const OPENSSH10_NO_PASSWORD: &str =
    "OpenSSH 10 runs in a Debian sid root whose only login account, root, has no password";

/// Cells not run, because the upstream itself cannot do what the row needs (a direct
/// connection fails the same way): (row, column, why).
const NOT_APPLICABLE: &[(&str, &str, &str)] = &[
    (
        "paramiko-kbdint",
        "dropbear",
        "Dropbear's server has no keyboard-interactive",
    ),
    ("paramiko-password", "openssh-10", OPENSSH10_NO_PASSWORD),
    ("paramiko-kbdint", "openssh-10", OPENSSH10_NO_PASSWORD),
];

/// How a row logs in (the password is the account's, known once it exists).
#[derive(Clone, Copy)]
enum Method {
    Key,
    Password,
    KeyboardInteractive,
}

/// A row: a client and how it logs in.
struct Row {
    name: &'static str,
    client: Client,
    method: Method,
}

fn rows() -> Vec<Row> {
    let row = |name, client, method| Row {
        name,
        client,
        method,
    };
    vec![
        row("openssh-9.2", Client::openssh(), Method::Key),
        row(
            "openssh-10",
            Client::OpenSsh {
                program: openssh10::ssh_program(),
            },
            Method::Key,
        ),
        row("putty", Client::Putty, Method::Key),
        row("dbclient", Client::Dbclient, Method::Key),
        row("paramiko-key", Client::Paramiko, Method::Key),
        row("paramiko-password", Client::Paramiko, Method::Password),
        row(
            "paramiko-kbdint",
            Client::Paramiko,
            Method::KeyboardInteractive,
        ),
        row("asyncssh", Client::Asyncssh, Method::Key),
        row("libssh", Client::Libssh, Method::Key),
        row("jsch", Client::Jsch, Method::Key),
    ]
}

/// A running upstream server; stopped when dropped.
trait Upstream: Sync {
    fn port(&self) -> u16;
    fn log(&self) -> String;
    /// The account the cells log in to, when not the shared one of [`UpstreamSetup`]
    /// (a server in a chroot has an /etc/passwd of its own).
    fn account(&self) -> Option<&str> {
        None
    }
}

impl Upstream for Sshd {
    fn port(&self) -> u16 {
        self.port
    }
    fn log(&self) -> String {
        Sshd::log(self)
    }
}

/// Chrooted into the Debian sid root, whose /etc/passwd has root and no test account.
impl Upstream for openssh10::Sshd {
    fn port(&self) -> u16 {
        self.port
    }
    fn log(&self) -> String {
        openssh10::Sshd::log(self)
    }
    fn account(&self) -> Option<&str> {
        Some("root")
    }
}

impl Upstream for Dropbear {
    fn port(&self) -> u16 {
        Dropbear::port(self)
    }
    fn log(&self) -> String {
        Dropbear::log(self)
    }
}

impl Upstream for AsyncsshServer {
    fn port(&self) -> u16 {
        AsyncsshServer::port(self)
    }
    fn log(&self) -> String {
        AsyncsshServer::log(self)
    }
}

/// What an upstream needs to know to start: the account it logs in, and the proxy's
/// key (which it must accept for that account).
struct UpstreamSetup<'a> {
    account: &'a TempAccount,
    proxy_public_key: &'a str,
}

type Start = Box<dyn Fn(&UpstreamSetup) -> Result<Box<dyn Upstream>, String> + Sync>;

/// A column: an upstream server, its short name (table and [`KNOWN_GAPS`]) and what it
/// is (the legend).
struct Column {
    name: &'static str,
    what: String,
    start: Start,
}

fn columns() -> Vec<Column> {
    let mut columns = vec![
        Column {
            name: "openssh-9.2",
            what: "OpenSSH 9.2 sshd, default algorithms, RSA, ECDSA and Ed25519 host keys".into(),
            start: sshd(&["rsa", "ecdsa", "ed25519"], &[]),
        },
        Column {
            name: "openssh-10",
            what: format!(
                "{} sshd (scripts/openssh10-root), default algorithms, RSA, ECDSA and \
                 Ed25519 host keys",
                openssh10::version()
            ),
            start: Box::new(|setup| {
                let sshd = openssh10::Sshd::start(SshdOptions {
                    host_keys: vec!["rsa", "ecdsa", "ed25519"],
                    extra: Vec::new(),
                    authorized_keys: vec![setup.proxy_public_key.to_owned()],
                });
                Ok(Box::new(sshd) as Box<dyn Upstream>)
            }),
        },
        Column {
            name: "dropbear",
            what: "Dropbear 2022.83 server".into(),
            start: Box::new(|_| Ok(Box::new(Dropbear::start()?) as Box<dyn Upstream>)),
        },
        Column {
            name: "asyncssh",
            what: "asyncssh 2.10 server (tests/support/peers/asyncssh_server.py)".into(),
            start: Box::new(|setup| {
                let keys = [setup.proxy_public_key.to_owned()];
                Ok(Box::new(AsyncsshServer::start(setup.account, &keys)?) as Box<dyn Upstream>)
            }),
        },
    ];
    for (name, kex) in [
        ("kex:c25519", "curve25519-sha256"),
        ("kex:sntrup", "sntrup761x25519-sha512@openssh.com"),
        ("kex:ec256", "ecdh-sha2-nistp256"),
        ("kex:ec384", "ecdh-sha2-nistp384"),
        ("kex:ec521", "ecdh-sha2-nistp521"),
        ("kex:dh14", "diffie-hellman-group14-sha256"),
        ("kex:dh16", "diffie-hellman-group16-sha512"),
        ("kex:dh18", "diffie-hellman-group18-sha512"),
        ("kex:gex256", "diffie-hellman-group-exchange-sha256"),
    ] {
        columns.push(Column {
            name,
            what: format!("sshd 9.2 with KexAlgorithms {kex} only"),
            start: sshd(&["ed25519"], &[format!("KexAlgorithms {kex}")]),
        });
    }
    for (name, key, what, algorithm) in [
        ("hk:ed25519", "ed25519", "Ed25519", "ssh-ed25519"),
        ("hk:ec256", "ecdsa", "ECDSA P-256", "ecdsa-sha2-nistp256"),
        ("hk:ec384", "ecdsa384", "ECDSA P-384", "ecdsa-sha2-nistp384"),
        ("hk:ec521", "ecdsa521", "ECDSA P-521", "ecdsa-sha2-nistp521"),
        ("hk:rsa256", "rsa", "RSA 2048", "rsa-sha2-256"),
        ("hk:rsa512", "rsa", "RSA 2048", "rsa-sha2-512"),
    ] {
        columns.push(Column {
            name,
            what: format!("sshd 9.2, only host key {what}, HostKeyAlgorithms {algorithm}"),
            start: sshd(&[key], &[format!("HostKeyAlgorithms {algorithm}")]),
        });
    }
    columns
}

/// A column's start: an sshd with these host keys and sshd_config lines, taking the
/// proxy's key, the account's password and keyboard-interactive (through PAM).
fn sshd(host_keys: &[&'static str], config: &[String]) -> Start {
    let host_keys = host_keys.to_vec();
    let config = config.to_vec();
    Box::new(move |setup| {
        let mut overrides = vec![
            "UsePAM yes",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication yes",
        ];
        overrides.extend(config.iter().map(String::as_str));
        let sshd = Sshd::start_with_overrides(
            SshdOptions {
                host_keys: host_keys.clone(),
                extra: Vec::new(),
                authorized_keys: vec![setup.proxy_public_key.to_owned()],
            },
            &overrides,
        );
        Ok(Box::new(sshd) as Box<dyn Upstream>)
    })
}

/// The proxy's login name for a column (login names stay simple).
fn login_name(column: &str) -> String {
    format!("mx-{}", column.replace([':', '.'], "-"))
}

/// `pattern` is `*` or `name`.
fn pattern_matches(pattern: &str, name: &str) -> bool {
    pattern == "*" || pattern == name
}

fn listed(list: &'static [(&str, &str, &str)], row: &str, column: &str) -> Option<&'static str> {
    list.iter()
        .find(|(r, c, _)| pattern_matches(r, row) && pattern_matches(c, column))
        .map(|(_, _, why)| *why)
}

/// What one step of a cell gave.
#[derive(Clone, Debug)]
enum Step {
    Passed,
    /// Ran, and was wrong: why, in one line.
    Failed(String),
    NotRun,
}

#[derive(Clone, Debug)]
struct Outcome {
    /// The exit status the exec step saw, if it got one.
    exec_status: Option<i32>,
    exec: Step,
    transfer: Step,
    /// How long the exec step and the whole cell took.
    exec_took: Duration,
    took: Duration,
}

impl Outcome {
    fn passed(&self) -> bool {
        matches!((&self.exec, &self.transfer), (Step::Passed, Step::Passed))
    }

    /// The first failure's reason.
    fn reason(&self) -> Option<String> {
        match (&self.exec, &self.transfer) {
            (Step::Failed(why), _) => Some(format!("exec: {why}")),
            (_, Step::Failed(why)) => Some(format!("transfer: {why}")),
            _ => None,
        }
    }
}

/// Everything the cells share. Fields drop in order: the proxy and the upstreams stop
/// before the account goes.
struct Matrix {
    proxy: Sshr,
    /// By column; `None` for a column with no cell to run.
    upstreams: Vec<Option<Box<dyn Upstream>>>,
    trust: Trust,
    kit: ClientKit,
    data: PathBuf,
    digest: String,
    _dir: TempDir,
    account: TempAccount,
}

impl Matrix {
    /// Starts the upstreams of the columns that have cells to run, sshr in front of
    /// them, and builds the clients.
    fn start(columns: &[Column], wanted: &[bool]) -> Matrix {
        let account = TempAccount::create("sshrmx");
        let mut setup = SshrSetup::new();
        // JSch 0.1.55 verifies neither ed25519 host keys nor RSA ones with SHA-2.
        let ecdsa = setup.add_host_key("ecdsa", Some(256));
        account.authorize(std::slice::from_ref(&setup.upstream_public_key));
        let kit = ClientKit::build().unwrap_or_else(|e| panic!("building the clients: {e}"));
        let upstream_setup = UpstreamSetup {
            account: &account,
            proxy_public_key: &setup.upstream_public_key,
        };
        let upstreams: Vec<Option<Box<dyn Upstream>>> = columns
            .iter()
            .zip(wanted)
            .map(|(c, &wanted)| {
                wanted.then(|| {
                    (c.start)(&upstream_setup)
                        .unwrap_or_else(|e| panic!("starting {}: {e}", c.name))
                })
            })
            .collect();
        let authorized: Vec<String> = kit.public_keys().iter().map(|k| toml_str(k)).collect();
        let mut tables =
            String::from("[limits]\nauth_timeout_secs = 60\nconnect_timeout_secs = 10\n");
        for (column, upstream) in columns.iter().zip(&upstreams) {
            let Some(upstream) = upstream else { continue };
            tables.push_str(&format!(
                "\n[[users]]\nname = \"{}\"\nupstream = \"127.0.0.1:{}\"\nupstream_user = \"{}\"\n\
                 authorized_keys = [{}]\n",
                login_name(column.name),
                upstream.port(),
                upstream.account().unwrap_or(&account.name),
                authorized.join(", ")
            ));
        }
        let host_keys = [setup.host_public_key.clone(), ecdsa];
        let proxy = setup.start(Path::new(SSHR), &tables);
        let trust = Trust::new(proxy.port(), &host_keys);
        let dir = tempfile::Builder::new()
            .prefix("sshr-matrix")
            .tempdir()
            .unwrap();
        let data = dir.path().join("transfer.bin");
        let digest = write_transfer_data(&data);
        Matrix {
            proxy,
            upstreams,
            trust,
            kit,
            data,
            digest,
            _dir: dir,
            account,
        }
    }

    fn auth(&self, method: Method) -> Auth {
        match method {
            Method::Key => Auth::Key,
            Method::Password => Auth::Password(self.account.password.clone()),
            Method::KeyboardInteractive => Auth::KeyboardInteractive(self.account.password.clone()),
        }
    }

    /// Runs one cell: exec, then (if exec logged in) the transfer.
    fn cell(&self, row: &Row, column: &Column) -> Outcome {
        let started = Instant::now();
        let user = login_name(column.name);
        let auth = self.auth(row.method);
        let login = Login {
            port: self.proxy.port(),
            user: &user,
            auth: &auth,
            trust: &self.trust,
        };
        let (exec_status, exec) = match self.exec(row, &login) {
            Ok(status) => (Some(status), Step::Passed),
            Err((status, why)) => (status, Step::Failed(why)),
        };
        let exec_took = started.elapsed();
        // When the command did not run, the login failed, and would fail the same way
        // again: the transfer is not run.
        let transfer = if exec_status.is_some() {
            match self.transfer(row, &login, column) {
                Ok(()) => Step::Passed,
                Err(why) => Step::Failed(why),
            }
        } else {
            Step::NotRun
        };
        Outcome {
            exec_status,
            exec,
            transfer,
            exec_took,
            took: started.elapsed(),
        }
    }

    /// The exec step: `Ok(status)` when right; else why, with the exit status if the
    /// command ran (printed its line).
    fn exec(&self, row: &Row, login: &Login) -> Result<i32, (Option<i32>, String)> {
        let command = row
            .client
            .exec(&self.kit, login, EXEC)
            .map_err(|e| (None, e))?;
        let out = self.run(command, Stdio::null()).map_err(|e| (None, e))?;
        let status = out.status.code();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let ran = stdout.lines().any(|l| l.trim() == EXEC_OUTPUT);
        match status {
            Some(EXEC_STATUS) if stdout.trim() == EXEC_OUTPUT => Ok(EXEC_STATUS),
            _ if ran => Err((
                status,
                format!("exit status {status:?}, printed {stdout:?}"),
            )),
            _ => Err((None, self.describe(&out))),
        }
    }

    /// The transfer step: the data to `sha256sum` (PuTTY: `pscp`, then `sha256sum` on
    /// the copy, which is removed).
    fn transfer(&self, row: &Row, login: &Login, column: &Column) -> Result<(), String> {
        let remote_file = format!("interop-{}-{}.bin", row.name, column.name.replace(':', "-"));
        let remote = match row
            .client
            .upload(&self.kit, login, &self.data, &remote_file)
        {
            Some(upload) => {
                let out = self.run(upload, Stdio::null())?;
                if !out.status.success() {
                    return Err(format!("upload: {}", self.describe(&out)));
                }
                format!("sha256sum {remote_file}; s=$?; rm -f {remote_file}; exit $s")
            }
            None => "sha256sum".to_owned(),
        };
        let command = row.client.exec(&self.kit, login, &remote)?;
        let stdin = fs::File::open(&self.data).unwrap();
        let out = self.run(command, Stdio::from(stdin))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let got = stdout.split_whitespace().next().unwrap_or_default();
        if out.status.success() && got == self.digest {
            Ok(())
        } else if out.status.success() && got.len() == 64 {
            Err(format!("sha256 {got}, expected {}", self.digest))
        } else {
            Err(self.describe(&out))
        }
    }

    fn run(&self, mut command: Command, stdin: Stdio) -> Result<Output, String> {
        run_bounded(&mut command, stdin, CLIENT_TIMEOUT).map_err(|e| {
            let first = e.lines().next().unwrap_or_default().to_owned();
            format!("timed out after {CLIENT_TIMEOUT:?}: {}", shorten(&first))
        })
    }

    /// A failed client run in one line: its status and the last line it printed on
    /// stderr, with what differs between cells (ports, names) replaced.
    fn describe(&self, out: &Output) -> String {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("(nothing on stderr)");
        let mut line = last
            .replace(&self.proxy.port().to_string(), "PORT")
            .replace(&self.account.name, "ACCOUNT");
        if let Some(start) = line.find("mx-") {
            let end = line[start..]
                .find(|c: char| c.is_whitespace() || c == '@' || c == '\'' || c == '"')
                .map_or(line.len(), |n| start + n);
            line.replace_range(start..end, "LOGIN");
        }
        let status = match out.status.code() {
            Some(code) => format!("exit {code}"),
            None => format!("{}", out.status),
        };
        format!("{status}: {}", shorten(&line))
    }
}

fn shorten(line: &str) -> String {
    const MAX: usize = 160;
    match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_owned(),
    }
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

/// Writes the transfer's data (ChaCha20 from a fixed seed) and returns its SHA-256.
fn write_transfer_data(path: &Path) -> String {
    let mut rng = ChaCha20Rng::seed_from_u64(0x1417_2025);
    let mut data = vec![0u8; TRANSFER_LEN];
    rng.fill_bytes(&mut data);
    fs::write(path, &data).unwrap();
    hex::encode(Sha256::digest(&data))
}

/// The table, its legend and the reasons of the failures.
fn render(rows: &[Row], columns: &[Column], outcomes: &[Vec<Outcome>], took: Duration) -> String {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    let mut note = |text: String| -> usize {
        if let Some(&n) = reasons.get(&text) {
            return n;
        }
        notes.push(text.clone());
        reasons.insert(text, notes.len());
        notes.len()
    };
    let mut grid: Vec<Vec<String>> = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let mut line = vec![row.name.to_owned()];
        for (c, column) in columns.iter().enumerate() {
            if let Some(why) = listed(NOT_APPLICABLE, row.name, column.name) {
                line.push(format!("n/a [{}]", note(format!("not run: {why}"))));
                continue;
            }
            let outcome = &outcomes[r][c];
            if matches!(outcome.exec, Step::NotRun) {
                line.push("·".to_owned());
                continue;
            }
            let gap = listed(KNOWN_GAPS, row.name, column.name);
            let exec = match (&outcome.exec, outcome.exec_status) {
                (Step::Passed, Some(s)) => format!("exit {s}"),
                (_, Some(s)) => format!("exit {s}?"),
                _ => "✗".to_owned(),
            };
            let transfer = match outcome.transfer {
                Step::Passed => "sha ✓",
                Step::Failed(_) => "sha ✗",
                Step::NotRun => "",
            };
            let mut cell = format!("{exec} {transfer}").trim().to_owned();
            if outcome.passed() {
                cell = format!("✓ {cell}");
                if let Some(why) = gap {
                    cell.push_str(&format!(
                        " [{}] STALE GAP",
                        note(format!("listed in KNOWN_GAPS but passes: {why}"))
                    ));
                }
            } else {
                let reason = outcome.reason().unwrap_or_default();
                let text = match gap {
                    Some(why) => format!("known gap ({why}): {reason}"),
                    None => format!("UNEXPECTED: {reason}"),
                };
                let n = note(text);
                cell = if gap.is_some() {
                    format!("{cell} [{n}]")
                } else {
                    format!("{cell} [{n}] NEW")
                };
            }
            line.push(cell);
        }
        grid.push(line);
    }
    let mut header = vec!["client \\ upstream".to_owned()];
    header.extend(columns.iter().map(|c| c.name.to_owned()));
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            std::iter::once(&header)
                .chain(&grid)
                .map(|line| line[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let format_line = |line: &[String]| -> String {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
            .collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = String::new();
    out.push_str(&format!(
        "\ninterop matrix: clients through sshr to upstreams ({} cells, {:.0} s)\n\
         cell: the exec `{EXEC}` ('exit 3' when right), then 'sha ✓' when {} MiB piped to \
         sha256sum came back with its sha256; ✗ [n]: failed, n below; NEW: not in \
         KNOWN_GAPS; STALE GAP: in KNOWN_GAPS but passes\n\n",
        rows.len() * columns.len(),
        took.as_secs_f64(),
        TRANSFER_LEN >> 20
    ));
    out.push_str(&format_line(&header));
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
    for line in &grid {
        out.push_str(&format_line(line));
    }
    out.push_str("\nupstreams:\n");
    for column in columns {
        out.push_str(&format!("  {:<12} {}\n", column.name, column.what));
    }
    if !notes.is_empty() {
        out.push_str("\nnotes:\n");
        for (i, text) in notes.iter().enumerate() {
            out.push_str(&format!("  [{}] {text}\n", i + 1));
        }
    }
    out
}

#[test]
fn interop_matrix() {
    let started = Instant::now();
    let rows = rows();
    let columns = columns();
    for (row, column, _) in KNOWN_GAPS.iter().chain(NOT_APPLICABLE) {
        assert!(
            *row == "*" || rows.iter().any(|r| r.name == *row),
            "no row {row}"
        );
        assert!(
            *column == "*" || columns.iter().any(|c| c.name == *column),
            "no column {column}"
        );
    }
    let wanted = |variable: &str, name: &str| match std::env::var(variable) {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|n| n.trim() == name),
        _ => true,
    };
    let cells: Vec<(usize, usize)> = (0..columns.len())
        .flat_map(|c| (0..rows.len()).map(move |r| (r, c)))
        .filter(|&(r, c)| listed(NOT_APPLICABLE, rows[r].name, columns[c].name).is_none())
        .filter(|&(r, c)| {
            wanted("SSHR_MATRIX_ROWS", rows[r].name)
                && wanted("SSHR_MATRIX_COLUMNS", columns[c].name)
        })
        .collect();
    let wanted_columns: Vec<bool> = (0..columns.len())
        .map(|c| cells.iter().any(|&(_, cc)| cc == c))
        .collect();
    let matrix = Matrix::start(&columns, &wanted_columns);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Vec<Option<Outcome>>>> =
        Mutex::new(vec![vec![None; columns.len()]; rows.len()]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| {
                while let Some(&(r, c)) = cells.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = matrix.cell(&rows[r], &columns[c]);
                    let line = format!(
                        "interop matrix [{}/{}] {} -> {}: {} (exec {:.1} s, all {:.1} s)\n",
                        done.fetch_add(1, Ordering::Relaxed) + 1,
                        cells.len(),
                        rows[r].name,
                        columns[c].name,
                        outcome.reason().unwrap_or_else(|| "ok".into()),
                        outcome.exec_took.as_secs_f64(),
                        outcome.took.as_secs_f64()
                    );
                    let _ = std::io::stderr().lock().write_all(line.as_bytes());
                    results.lock().unwrap()[r][c] = Some(outcome);
                }
            });
        }
    });
    let outcomes: Vec<Vec<Outcome>> = results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|o| {
                    o.unwrap_or(Outcome {
                        exec_status: None,
                        exec: Step::NotRun,
                        transfer: Step::NotRun,
                        exec_took: Duration::ZERO,
                        took: Duration::ZERO,
                    })
                })
                .collect()
        })
        .collect();

    let table = render(&rows, &columns, &outcomes, started.elapsed());
    // Straight to stderr, past the test harness's capture: the table is the point.
    let _ = std::io::stderr().lock().write_all(table.as_bytes());

    let mut problems = Vec::new();
    for &(r, c) in &cells {
        let (row, column) = (&rows[r], &columns[c]);
        let outcome = &outcomes[r][c];
        match (outcome.passed(), listed(KNOWN_GAPS, row.name, column.name)) {
            (false, None) => problems.push(format!(
                "{} -> {} failed ({:.1} s): {}",
                row.name,
                column.name,
                outcome.took.as_secs_f64(),
                outcome.reason().unwrap_or_default()
            )),
            (true, Some(why)) => problems.push(format!(
                "{} -> {} passes but is in KNOWN_GAPS ({why}): narrow or remove the entry",
                row.name, column.name
            )),
            _ => {}
        }
    }
    if !problems.is_empty() {
        let logs: String = columns
            .iter()
            .zip(&matrix.upstreams)
            .filter_map(|(c, u)| Some((c, u.as_ref()?)))
            .filter(|(c, _)| {
                problems
                    .iter()
                    .any(|p| p.contains(&format!("-> {} ", c.name)))
            })
            .map(|(c, u)| format!("\n--- {} log (tail):\n{}", c.name, tail(&u.log(), 15)))
            .collect();
        panic!(
            "{} cell(s) differ from KNOWN_GAPS:\n  {}\n--- sshr log (tail):\n{}{logs}",
            problems.len(),
            problems.join("\n  "),
            tail(&matrix.proxy.log(), 30)
        );
    }
}
