//! A local account that exists only while a test needs it: `useradd -m` with a random
//! password, removed (`userdel -r -f`) when the value drops, also while a failed test
//! unwinds. Accounts left by a test process that was killed are removed by the next
//! [`TempAccount::create`] with the same prefix. Needs root.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use rand_core::{OsRng, RngCore};

/// Serialises `useradd`, `chpasswd` and `userdel` within this process (they lock
/// /etc/passwd).
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// The `<n>` of the next account name.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// A local account `<prefix><pid>x<n>` with a shell (`/bin/sh`), a home directory and
/// a random password of 24 alphanumerics.
pub struct TempAccount {
    pub name: String,
    pub password: String,
    pub home: PathBuf,
    uid: u32,
    gid: u32,
}

impl TempAccount {
    /// Creates the account. `prefix` (lower-case letters) names the accounts of one kind
    /// of test; the stale ones of the same prefix (whose test process is gone) are
    /// removed first.
    pub fn create(prefix: &str) -> TempAccount {
        assert!(
            !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_lowercase()),
            "account prefix must be lower-case letters"
        );
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        sweep_stale(prefix);
        let name = format!(
            "{prefix}{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", &name])
            .output()
            .expect("useradd (run as root)");
        assert!(
            out.status.success(),
            "useradd {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let password = random_password();
        let ids = set_password(&name, &password).and_then(|()| ids_of(&name));
        let (uid, gid, home) = match ids {
            Ok(ids) => ids,
            Err(e) => {
                remove(&name);
                panic!("setting up account {name} failed: {e}");
            }
        };
        TempAccount {
            name,
            password,
            home,
            uid,
            gid,
        }
    }

    /// Writes `~/.ssh/authorized_keys` (owned by the account, mode 0600 in a 0700
    /// directory, as sshd's and Dropbear's strict modes want) with these OpenSSH lines.
    pub fn authorize(&self, public_keys: &[String]) {
        let ssh = self.home.join(".ssh");
        fs::create_dir_all(&ssh).unwrap();
        let file = ssh.join("authorized_keys");
        fs::write(&file, public_keys.join("\n") + "\n").unwrap();
        for (path, mode) in [(&ssh, 0o700), (&file, 0o600)] {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).unwrap();
        }
    }
}

impl Drop for TempAccount {
    fn drop(&mut self) {
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        remove(&self.name);
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
        .unwrap()
        .write_all(format!("{name}:{password}\n").as_bytes());
    let out = chpasswd.wait_with_output().map_err(|e| e.to_string())?;
    written.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(())
}

/// uid, gid and home directory of `name`, from /etc/passwd.
fn ids_of(name: &str) -> Result<(u32, u32, PathBuf), String> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name) && f.len() >= 7)
        .ok_or_else(|| format!("{name} is not in /etc/passwd"))?;
    let number = |s: &str| s.parse::<u32>().map_err(|e| format!("{s}: {e}"));
    Ok((
        number(fields[2])?,
        number(fields[3])?,
        PathBuf::from(fields[5]),
    ))
}

/// `userdel -r -f`: the account, its home directory and mail spool, even while it has
/// processes. Failures are reported, not raised (this runs in `Drop`, maybe unwinding).
fn remove(name: &str) {
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

/// Removes the `<prefix><pid>x<n>` accounts whose process is gone.
fn sweep_stale(prefix: &str) {
    let Ok(passwd) = fs::read_to_string("/etc/passwd") else {
        return;
    };
    for name in passwd.lines().filter_map(|l| l.split(':').next()) {
        let Some((pid, n)) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('x'))
        else {
            continue;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(pid) && digits(n) && !Path::new(&format!("/proc/{pid}")).exists() {
            remove(name);
        }
    }
}
