//! In-place upgrade (SIGUSR2): start the binary on disk with our listening sockets, as
//! nginx and HAProxy do, and wait until it accepts.
//!
//! The new process gets every listening socket as fds 3.. with the systemd variables
//! (`LISTEN_FDS`, `LISTEN_FDNAMES` naming each socket's kind and configured address, see
//! [`handoff_name`](crate::io::listener::handoff_name)), so socket activation and
//! upgrades take one path ([`ListenFds`](crate::io::listener::ListenFds)). `LISTEN_PID`
//! could only be set between fork and exec, where nothing may allocate: instead
//! `SSHR_UPGRADE_PARENT` names our pid, which the child checks against its parent's.
//! One more fd, a pipe named by `SSHR_UPGRADE_READY_FD`, gets the child's pid once all
//! its shards accept; end of file first means it failed (its log says why).
//!
//! Since both processes hold the same sockets, the kernel's queue of pending connections
//! lives on while either does: the old process stops accepting only after the new one
//! accepts, and no connection attempt is refused in between.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::io::listener::{UPGRADE_PARENT_VAR, UPGRADE_READY_VAR};

/// A started new process that has not said it is ready yet.
pub(crate) struct PendingUpgrade {
    child: Child,
    ready: File,
}

/// Starts `exe` with `args`, handing it `sockets` (fd, `LISTEN_FDNAMES` name) as fds 3...
pub(crate) fn spawn(
    exe: &Path,
    args: &[OsString],
    sockets: &[(RawFd, String)],
) -> io::Result<PendingUpgrade> {
    let (read, write) = pipe()?;
    let mut sources: Vec<RawFd> = sockets.iter().map(|(fd, _)| *fd).collect();
    sources.push(write.as_raw_fd());
    let count = sockets.len();
    let names: Vec<&str> = sockets.iter().map(|(_, n)| n.as_str()).collect();
    let mut moved = vec![-1; sources.len()];
    let mut command = Command::new(exe);
    command
        .args(args)
        .env_remove("LISTEN_PID")
        .env("LISTEN_FDS", count.to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env(UPGRADE_PARENT_VAR, std::process::id().to_string())
        .env(UPGRADE_READY_VAR, (3 + count).to_string());
    // SAFETY: between fork and exec the closure only makes system calls (fcntl, dup2)
    // on fds and writes into `moved`, allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            // First move every source above the target range (closed on exec), so that
            // placing one cannot overwrite another still to be placed.
            let above = 3 + sources.len() as RawFd;
            for (slot, &fd) in moved.iter_mut().zip(&sources) {
                *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above);
                if *slot < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // dup2 clears close-on-exec on the target: these are inherited.
            for (target, &fd) in (3..).zip(moved.iter()) {
                if libc::dup2(fd, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(write);
    Ok(PendingUpgrade { child, ready: read })
}

impl PendingUpgrade {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the new process reports ready (its pid), at most `limit`. On failure
    /// the new process is stopped (if it still runs) and reaped.
    pub(crate) fn wait_ready(mut self, limit: Duration) -> Result<u32, String> {
        let result = read_ready(&mut self.ready, limit);
        let expected = self.child.id();
        match result {
            Ok(pid) if pid == expected => Ok(pid),
            other => {
                let why = match other {
                    Ok(pid) => format!("it reported pid {pid}, not {expected}"),
                    Err(e) => e,
                };
                let status = match self.child.try_wait() {
                    Ok(Some(status)) => status.to_string(),
                    _ => {
                        let _ = self.child.kill();
                        "stopped".to_string()
                    }
                };
                let _ = self.child.wait();
                Err(format!("new process {expected} {why} ({status})"))
            }
        }
    }
}

fn read_ready(ready: &mut File, limit: Duration) -> Result<u32, String> {
    let deadline = Instant::now() + limit;
    let mut text = Vec::new();
    let mut buf = [0u8; 32];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!("did not report ready within {limit:?}"));
        }
        let mut poll = libc::pollfd {
            fd: ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, which we own.
        let rc = unsafe { libc::poll(&mut poll, 1, remaining.as_millis().min(1000) as i32) };
        if rc <= 0 {
            continue; // timeout or EINTR: look at the deadline again
        }
        match ready.read(&mut buf) {
            Ok(0) => return Err("exited before accepting connections (see its log)".to_string()),
            Ok(n) => {
                text.extend_from_slice(&buf[..n]);
                if text.len() > 64 {
                    return Err("wrote garbage to the ready pipe".to_string());
                }
                if let Some(line) = text.strip_suffix(b"\n") {
                    return std::str::from_utf8(line)
                        .ok()
                        .and_then(|l| l.trim().parse().ok())
                        .ok_or_else(|| "wrote garbage to the ready pipe".to_string());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("ready pipe: {e}")),
        }
    }
}

/// A pipe, both ends closed on exec.
fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are new and ours.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}
