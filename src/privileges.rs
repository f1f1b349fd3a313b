//! Dropping root: `user = "sshr"` in the configuration.
//!
//! Started as root, the server binds its listeners (ports below 1024 included), reads
//! its host and upstream keys, opens its providers and the audit log, raises the memlock
//! limit that glommio's io_uring rings need, and only then becomes `user` (its group and
//! supplementary groups too) before any shard starts: the code that parses what peers
//! send never runs as root.
//!
//! What runs later as `user` must be allowed to it: a SIGHUP that adds a port below 1024
//! or names a new root-only key fails (with an error log; the running listeners and keys
//! stay), and so does an in-place upgrade (SIGUSR2) whose new process cannot read the key
//! files: the old process logs why and keeps serving. Make the keys readable by `user`'s
//! group (e.g. `root:sshr 0640`) when upgrades should work after a drop.

use std::ffi::{CStr, CString};

/// Why the process could not become `user`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivilegeError {
    #[error("user {0:?} (`user` in the configuration) does not exist")]
    NoSuchUser(String),
    #[error("cannot look up user {user:?}: {source}")]
    Lookup {
        user: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`user = {user:?}` needs sshr to start as root (or as {user:?}); it runs as uid {uid}"
    )]
    NotRoot { user: String, uid: u32 },
    #[error("cannot become user {user:?}: {step} failed: {source}")]
    Drop {
        user: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("dropped to user {0:?}, yet root could be regained: refusing to run")]
    Regained(String),
}

/// An account of the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up with getpwnam_r (NSS: files, LDAP, ...).
pub fn lookup(name: &str) -> Result<Account, PrivilegeError> {
    let c_name = CString::new(name).map_err(|_| PrivilegeError::NoSuchUser(name.to_owned()))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: passwd is plain data; getpwnam_r writes its strings into `buf`, whose
        // length we pass, and sets `result` to `&mut pwd` or null.
        let (rc, found, uid, gid) = unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            (rc, !result.is_null(), pwd.pw_uid, pwd.pw_gid)
        };
        match rc {
            0 if found => {
                return Ok(Account {
                    name: name.to_owned(),
                    uid,
                    gid,
                })
            }
            0 => return Err(PrivilegeError::NoSuchUser(name.to_owned())),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            rc => {
                return Err(PrivilegeError::Lookup {
                    user: name.to_owned(),
                    source: std::io::Error::from_raw_os_error(rc),
                })
            }
        }
    }
}

/// What [`drop_to`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Was root, is now the user.
    Dropped(Account),
    /// Not root, but already the user: nothing to do.
    AlreadyThatUser,
}

/// Becomes `name`: supplementary groups (initgroups), then gid, then uid (real,
/// effective and saved, so nothing can switch back), and checks that root cannot be
/// regained. Not root: fine if already `name`, else an error.
pub fn drop_to(name: &str) -> Result<Dropped, PrivilegeError> {
    let account = lookup(name)?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        return if euid == account.uid && uid == account.uid {
            Ok(Dropped::AlreadyThatUser)
        } else {
            Err(PrivilegeError::NotRoot {
                user: name.to_owned(),
                uid: euid,
            })
        };
    }
    let fail = |step: &'static str| PrivilegeError::Drop {
        user: name.to_owned(),
        step,
        source: std::io::Error::last_os_error(),
    };
    let c_name = CString::new(name).map_err(|_| PrivilegeError::NoSuchUser(name.to_owned()))?;
    // SAFETY: plain system calls on values we own; glibc applies set*id to every thread
    // of the process.
    unsafe {
        if libc::initgroups(c_name.as_ptr(), account.gid) != 0 {
            return Err(fail("initgroups"));
        }
        if libc::setresgid(account.gid, account.gid, account.gid) != 0 {
            return Err(fail("setresgid"));
        }
        if libc::setresuid(account.uid, account.uid, account.uid) != 0 {
            return Err(fail("setresuid"));
        }
        if account.uid != 0 && (libc::setuid(0) == 0 || libc::seteuid(0) == 0) {
            return Err(PrivilegeError::Regained(name.to_owned()));
        }
    }
    Ok(Dropped::Dropped(account))
}

/// The name of the account `uid`, for log lines.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: as in `lookup`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return None;
        }
        Some(CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_refuses_unknown_users() {
        let root = lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert!(matches!(
            lookup("no-such-user-sshr-test"),
            Err(PrivilegeError::NoSuchUser(_))
        ));
        assert!(matches!(
            drop_to("no-such-user-sshr-test"),
            Err(PrivilegeError::NoSuchUser(_))
        ));
    }
}
