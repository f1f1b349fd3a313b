//! `kind = "command"`: a program printing the answer, like OpenSSH's
//! AuthorizedKeysCommand (`docs/providers.md`).
//!
//! Each lookup runs `argv` once, with `%u`, `%t`, `%a` and `%%` replaced inside each
//! argument (no shell is involved, so a user name cannot inject anything), standard
//! input from `/dev/null`, the environment cleared but `PATH=/usr/bin:/bin`, and `/`
//! as its working directory, as sshd runs its commands.
//!
//! - Exit status 0 and the JSON of [`answer::parse`] on standard output: that answer.
//! - Exit status 0 and nothing (only white space) or `null` on standard output: the
//!   user is unknown ([`Lookup::Unknown`]).
//! - Any other exit, or death by a signal: [`HookError::Unavailable`], quoting the
//!   first line of standard error.
//! - More than `max_output_bytes` on standard output: [`HookError::InvalidData`].
//! - Not done within the timeout: [`HookError::Timeout`].
//!
//! The program runs in a process group of its own, and the whole group is killed
//! (SIGKILL) when the lookup ends, so neither it nor anything it started in the
//! background outlives the lookup; the program itself is always reaped. Only a
//! process that leaves the group on purpose (`setsid`) escapes.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sshr_protocol::text::Untrusted;

use super::answer;
use super::Backend;
use crate::hooks::{HookContext, HookError, Lookup};

/// The `PATH` of the program, as sshd gives its commands.
pub const PATH: &str = "/usr/bin:/bin";
/// Standard error kept to quote in the log; the rest is read and dropped so the
/// program never blocks on a full pipe.
const STDERR_KEPT: usize = 1024;
/// Longest pause while waiting for the program to exit once its output is closed.
const MAX_EXIT_POLL: Duration = Duration::from_millis(10);

/// The program `argv[0]` with its arguments.
pub struct Command {
    argv: Vec<String>,
    max_output_bytes: usize,
    timeout: Duration,
}

impl Command {
    /// `argv[0]` is an absolute path (checked by the configuration, see
    /// [`check_argv`](crate::core::values::check_argv)); its output is at most `max_output_bytes`; a lookup taking
    /// longer than `timeout` kills it.
    pub fn new(argv: &[String], max_output_bytes: usize, timeout: Duration) -> Command {
        Command {
            argv: argv.to_vec(),
            max_output_bytes,
            timeout,
        }
    }

    fn program(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }

    /// Runs the program for `ctx` and collects what it printed.
    fn run(&self, ctx: &HookContext) -> Result<Finished, HookError> {
        let Some((program, args)) = self.argv.split_first() else {
            return Err(HookError::Unavailable("command is empty".into()));
        };
        let deadline = Instant::now() + self.timeout;
        let user = &ctx.user;
        let target = ctx.target.as_deref().unwrap_or("");
        let addr = ctx.client_addr.to_string();
        let child = std::process::Command::new(program)
            .args(args.iter().map(|a| expand(a, user, target, &addr)))
            .env_clear()
            .env("PATH", PATH)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                HookError::Unavailable(format!("command {}: cannot run it: {e}", self.program()))
            })?;
        let mut group = Group {
            child,
            reaped: false,
        };
        let (stdout, stderr) = group.read_output(deadline, self.max_output_bytes, || {
            HookError::InvalidData(format!(
                "command {} printed more than max_output_bytes ({})",
                self.program(),
                self.max_output_bytes
            ))
        })?;
        let status = group.wait(deadline)?;
        Ok(Finished {
            status,
            stdout,
            stderr,
        })
    }
}

/// What a program left when it exited.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// A running program and its process group, killed and reaped when dropped.
struct Group {
    child: Child,
    reaped: bool,
}

impl Group {
    /// Kills every process of the group. Only called while the program is not reaped,
    /// so its pid (the group's id) cannot have been reused.
    fn kill(&self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: killpg only sends a signal; it touches no memory of ours.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
    }

    /// Standard output (at most `max` bytes) and the start of standard error, read
    /// until both are closed. Fails when the deadline passes or the output is too long.
    fn read_output(
        &mut self,
        deadline: Instant,
        max: usize,
        too_long: impl Fn() -> HookError,
    ) -> Result<(Vec<u8>, Vec<u8>), HookError> {
        let mut pipes: [Option<Box<dyn ReadFd>>; 2] = [
            self.child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn ReadFd>),
            self.child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn ReadFd>),
        ];
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut chunk = [0u8; 8192];
        while pipes.iter().any(Option::is_some) {
            let mut fds: Vec<libc::pollfd> = pipes
                .iter()
                .flatten()
                .map(|p| libc::pollfd {
                    fd: p.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let wait = poll_millis(deadline).ok_or(HookError::Timeout)?;
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(HookError::Unavailable(format!("poll: {e}")));
            }
            for fd in fds.iter().filter(|f| f.revents != 0) {
                let Some(index) = pipes
                    .iter()
                    .position(|p| p.as_ref().is_some_and(|p| p.fd() == fd.fd))
                else {
                    continue;
                };
                let Some(pipe) = pipes[index].as_mut() else {
                    continue;
                };
                // poll said readable (or closed): one read does not block.
                match pipe.read(&mut chunk) {
                    Ok(0) => pipes[index] = None,
                    Ok(n) if index == 0 => {
                        if stdout.len() + n > max {
                            return Err(too_long());
                        }
                        stdout.extend_from_slice(&chunk[..n]);
                    }
                    Ok(n) => {
                        let room = STDERR_KEPT.saturating_sub(stderr.len());
                        stderr.extend_from_slice(&chunk[..n.min(room)]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => pipes[index] = None,
                }
            }
        }
        Ok((stdout, stderr))
    }

    /// The program's exit status, once it has exited; by then anything it left
    /// running in its group is killed. Fails when the deadline passes first.
    fn wait(&mut self, deadline: Instant) -> Result<ExitStatus, HookError> {
        let mut pause = Duration::from_micros(200);
        loop {
            if self.has_exited() {
                // Still a zombie, so the group id is still ours: clear the group, then
                // reap.
                self.kill();
                let status = self.child.wait();
                self.reaped = true;
                return status
                    .map_err(|e| HookError::Unavailable(format!("waiting for command: {e}")));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HookError::Timeout);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(MAX_EXIT_POLL);
        }
    }

    /// Whether the program has exited, without reaping it (`waitid` with `WNOWAIT`).
    fn has_exited(&self) -> bool {
        let pid: libc::id_t = self.child.id();
        // SAFETY: an all-zero siginfo_t is valid; waitid writes into it only.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid siginfo_t for waitid to fill.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled `info` (or left it zeroed: no child has exited).
        rc != 0 || unsafe { info.si_pid() } != 0
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// A pipe from the program.
trait ReadFd: Read {
    fn fd(&self) -> i32;
}

impl<T: Read + AsRawFd> ReadFd for T {
    fn fd(&self) -> i32 {
        self.as_raw_fd()
    }
}

/// Milliseconds `poll` may wait before `deadline`, rounded up so that it never spins;
/// `None` once it has passed.
fn poll_millis(deadline: Instant) -> Option<i32> {
    let left = deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    let millis = left.as_nanos().div_ceil(1_000_000);
    Some(i32::try_from(millis).unwrap_or(i32::MAX))
}

/// `arg` with `%u` (the user), `%t` (the target, empty for none), `%a` (the client's
/// `ip:port`) and `%%` (a `%`) replaced. Any other `%` is kept as it is ([`check_argv`](crate::core::values::check_argv)
/// refuses it in a configuration).
pub fn expand(arg: &str, user: &str, target: &str, addr: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.clone().next() {
            Some('u') => out.push_str(user),
            Some('t') => out.push_str(target),
            Some('a') => out.push_str(addr),
            Some('%') => out.push('%'),
            _ => {
                out.push('%');
                continue;
            }
        }
        chars.next();
    }
    out
}

/// How the program ended, for an error: its status and the first line of its
/// standard error, escaped and cut.
fn failure(program: &str, status: ExitStatus, stderr: &[u8]) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    };
    let text = String::from_utf8_lossy(stderr);
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!("command {program} {how}: {}", Untrusted(line)),
        None => format!("command {program} {how}"),
    }
}

/// Whether a successful program's output says "no such user": nothing, or `null`.
fn says_unknown(stdout: &[u8]) -> bool {
    let text = stdout.trim_ascii();
    text.is_empty() || text == b"null"
}

impl Backend for Command {
    fn describe(&self) -> String {
        format!("command {}", self.program())
    }

    fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError> {
        let finished = self.run(ctx)?;
        if !finished.status.success() {
            return Err(HookError::Unavailable(failure(
                self.program(),
                finished.status,
                &finished.stderr,
            )));
        }
        if says_unknown(&finished.stdout) {
            return Ok(Lookup::Unknown);
        }
        answer::parse(ctx, &finished.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_inside_each_argument() {
        let e = |arg| expand(arg, "alice", "web2", "192.0.2.7:50122");
        assert_eq!(e("%u"), "alice");
        assert_eq!(e("--user=%u@%t"), "--user=alice@web2");
        assert_eq!(e("%a"), "192.0.2.7:50122");
        assert_eq!(e("100%%"), "100%");
        assert_eq!(e("%%u"), "%u");
        assert_eq!(e("%x %"), "%x %");
        assert_eq!(e("é%ué"), "éaliceé");
        // The values are not expanded again.
        assert_eq!(expand("%u", "%t", "web2", "a"), "%t");
        assert_eq!(expand("[%t]", "alice", "", "a"), "[]");
    }

    #[test]
    fn argv_check() {
        let v = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        use crate::core::values::check_argv;
        assert!(check_argv(&v(&["/usr/bin/dir", "%u", "%t", "%a", "100%%"])).is_ok());
        assert!(check_argv(&v(&[])).is_err());
        assert!(check_argv(&v(&["dir", "%u"])).is_err());
        assert!(check_argv(&v(&["/bin/dir", "%U"])).is_err());
        assert!(check_argv(&v(&["/bin/dir", "50%"])).is_err());
    }

    #[test]
    fn unknown_is_empty_or_null() {
        assert!(says_unknown(b""));
        assert!(says_unknown(b" \n"));
        assert!(says_unknown(b"null\n"));
        assert!(!says_unknown(b"{}"));
        assert!(!says_unknown(b"nul"));
    }

    #[test]
    fn failures_name_the_status_and_quote_stderr() {
        let status = ExitStatus::from_raw(3 << 8);
        assert_eq!(
            failure("/bin/dir", status, b"\n  db locked\x1b[31m\nmore\n"),
            "command /bin/dir exited with status 3: \"db locked\\u{1b}[31m\""
        );
        let killed = ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(
            failure("/bin/dir", killed, b""),
            "command /bin/dir was killed by signal 9"
        );
    }

    #[test]
    fn deadline_in_the_past_is_no_wait() {
        assert_eq!(poll_millis(Instant::now() - Duration::from_millis(1)), None);
        let soon = poll_millis(Instant::now() + Duration::from_micros(10));
        assert!(matches!(soon, None | Some(1)));
    }
}
