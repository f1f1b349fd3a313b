//! Local accounts with a random password, for tests of password and keyboard-interactive
//! logins against a real sshd (with PAM). Needs root (`useradd`, `chpasswd`, `userdel`).
//!
//! An account exists only while its [`PasswordAccount`] lives: dropping it (also while a
//! failed test unwinds) deletes the account and its home directory. Accounts of test
//! processes that were killed before their `Drop` ran are swept by the next process that
//! creates one.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use rand_core::{OsRng, RngCore};

/// Names of the accounts: `sshrpw<pid>x<n>`, with the pid of the creating test process,
/// so that the accounts of a killed test process can be told apart from those of one
/// still running (and are swept).
const ACCOUNT_PREFIX: &str = "sshrpw";

/// Serialises `useradd`, `chpasswd` and `userdel` within this process (they lock
/// /etc/passwd); `true` once the stale accounts have been swept.
static ACCOUNTS: Mutex<bool> = Mutex::new(false);

/// The `<n>` of the next account name.
static ACCOUNT_SEQ: AtomicU32 = AtomicU32::new(0);

/// A local account with a random password (see the module documentation).
pub struct PasswordAccount {
    pub name: String,
    pub password: String,
}

impl PasswordAccount {
    /// `useradd -m -s /bin/sh sshrpw<pid>x<n>` with 24 random alphanumerics as password.
    /// The first call in a process first removes the accounts of dead test processes.
    pub fn create() -> PasswordAccount {
        let mut swept = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        if !*swept {
            sweep_stale_accounts();
            *swept = true;
        }
        let name = format!(
            "{ACCOUNT_PREFIX}{}x{}",
            std::process::id(),
            ACCOUNT_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let password = random_password();
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", &name])
            .output()
            .expect("useradd (run as root)");
        assert!(
            out.status.success(),
            "useradd {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Err(e) = set_password(&name, &password) {
            remove_account(&name);
            drop(swept);
            panic!("chpasswd for {name} failed: {e}");
        }
        drop(swept);
        PasswordAccount { name, password }
    }
}

impl Drop for PasswordAccount {
    fn drop(&mut self) {
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        remove_account(&self.name);
    }
}

/// 24 characters from [A-Za-z0-9], from the OS's random numbers.
fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut password = String::with_capacity(24);
    while password.len() < 24 {
        let byte = (OsRng.next_u32() & 0xff) as usize;
        // Rejection sampling keeps the characters uniform: 248 = 4 * 62.
        if byte < 4 * ALPHABET.len() {
            password.push(ALPHABET[byte % ALPHABET.len()] as char);
        }
    }
    password
}

fn set_password(name: &str, password: &str) -> Result<(), String> {
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("chpasswd: {e}"))?;
    let written = chpasswd
        .stdin
        .take()
        .expect("piped")
        .write_all(format!("{name}:{password}\n").as_bytes());
    let out = chpasswd.wait_with_output().map_err(|e| e.to_string())?;
    written.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(())
}

/// `userdel -r -f`: the account, its home directory and mail spool, even while it has
/// processes. Failures are reported, not raised (this runs in `Drop`, maybe unwinding).
fn remove_account(name: &str) {
    match Command::new("userdel").args(["-r", "-f", name]).output() {
        // 12: the home directory could not be removed; the account is gone.
        Ok(out) if out.status.success() || out.status.code() == Some(12) => {}
        Ok(out) => eprintln!(
            "warning: userdel -r -f {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("warning: userdel -r -f {name}: {e}"),
    }
}

/// Removes the `sshrpw<pid>x<n>` accounts in /etc/passwd whose process is gone (test
/// processes that were killed before their accounts' `Drop` ran).
fn sweep_stale_accounts() {
    let Ok(passwd) = fs::read_to_string("/etc/passwd") else {
        return;
    };
    for name in passwd.lines().filter_map(|l| l.split(':').next()) {
        // The permanent account (with a fixed password) that earlier versions of these
        // tests created.
        if name == "sshrpwtest" {
            remove_account(name);
            continue;
        }
        let Some((pid, n)) = name
            .strip_prefix(ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once('x'))
        else {
            continue;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(pid) && digits(n) && !Path::new(&format!("/proc/{pid}")).exists() {
            remove_account(name);
        }
    }
}
