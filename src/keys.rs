//! The proxy's own keys: host keys it shows clients, and the key it logs in to upstreams
//! with. Read from OpenSSH private key files; generated as ed25519 on first start when
//! the file is absent.
//!
//! Like sshd, a private key file that other users may read is refused rather than used.
//! Key material never reaches a log line: only paths and fingerprints do.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sshr_protocol::hostkey::{PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "permissions {mode:04o} for key file {path} are too open: a private key must not be \
         accessible by other users (run: chmod 600 {path})"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("key file {path} is not an unencrypted OpenSSH private key: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("cannot write key file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot encode the generated key for {path}: {reason}")]
    Encode { path: PathBuf, reason: String },
}

/// Whether a key was found or made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    Loaded,
    Generated,
}

/// The path of the public half written beside a private key file: `<path>.pub`.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Loads the host keys, generating any file that is absent.
pub fn load_host_keys(paths: &[PathBuf]) -> Result<Vec<PrivateKey>, KeyFileError> {
    paths
        .iter()
        .map(|path| {
            let (key, source) = load_or_generate(path)?;
            log_key("host key", path, &key.public(), source);
            Ok(key)
        })
        .collect()
}

/// Loads the upstream login key, generating it if absent, and makes sure its public half
/// is beside it (that is the line operators copy to the upstreams).
pub fn load_upstream_key(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let (key, source) = load_or_generate(path)?;
    let public = key.public();
    log_key("upstream key", path, &public, source);
    let pub_path = public_key_path(path);
    let line = format!("{}\n", public.to_openssh());
    let current = fs::read_to_string(&pub_path).ok();
    if current.as_deref().map(str::trim) != Some(line.trim()) {
        write_atomically(&pub_path, line.as_bytes(), 0o644).map_err(|source| {
            KeyFileError::Write {
                path: pub_path.clone(),
                source,
            }
        })?;
        tracing::info!(path = %pub_path.display(), "wrote the upstream public key: add it to the upstream accounts' authorized_keys");
    }
    Ok(key)
}

/// Reads a private key file, or generates an ed25519 key there if the file is absent.
pub fn load_or_generate(path: &Path) -> Result<(PrivateKey, KeySource), KeyFileError> {
    match read_private_key(path) {
        Ok(key) => Ok((key, KeySource::Loaded)),
        Err(KeyFileError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            generate(path).map(|key| (key, KeySource::Generated))
        }
        Err(e) => Err(e),
    }
}

/// Checks a key file without writing anything (for `--check-config`): `Ok(None)` when it
/// is absent and would be generated at start.
pub fn check_key_file(path: &Path) -> Result<Option<PublicKey>, KeyFileError> {
    match read_private_key(path) {
        Ok(key) => Ok(Some(key.public())),
        Err(KeyFileError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads and parses an OpenSSH private key file, refusing one other users can read.
pub fn read_private_key(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let read_err = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_err)?;
    // sshd's rule (authfile.c sshkey_perm_ok): no access at all for group or others.
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(read_err)?);
    PrivateKey::from_openssh(&text).map_err(|e| KeyFileError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn generate(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let write_err = |source| KeyFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(write_err)?;
        }
    }
    let key = PrivateKey::generate_ed25519(&mut rand_core::OsRng);
    let text = key.to_openssh().map_err(|e| KeyFileError::Encode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomically(path, text.as_bytes(), 0o600).map_err(write_err)?;
    // The public half beside every generated key, as ssh-keygen does.
    let pub_path = public_key_path(path);
    write_atomically(
        &pub_path,
        format!("{}\n", key.public().to_openssh()).as_bytes(),
        0o644,
    )
    .map_err(|source| KeyFileError::Write {
        path: pub_path,
        source,
    })?;
    Ok(key)
}

/// Writes `data` to a temporary file created with `mode` in the same directory, then
/// renames it over `path`: a reader never sees a half-written key, and the private key
/// is never readable by others, not even for a moment.
fn write_atomically(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; never widened it. Set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn log_key(role: &str, path: &Path, public: &PublicKey, source: KeySource) {
    match source {
        KeySource::Loaded => {
            tracing::info!(path = %path.display(), fingerprint = %public.fingerprint(), "loaded {role}")
        }
        KeySource::Generated => {
            tracing::info!(path = %path.display(), fingerprint = %public.fingerprint(), "generated {role}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn absent_key_is_generated_private_and_reloads_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/sub/host_ed25519");
        let (key, source) = load_or_generate(&path).unwrap();
        assert_eq!(source, KeySource::Generated);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
        assert_eq!(mode(&dir.path().join("keys/sub")), 0o700);
        let pub_text = fs::read_to_string(public_key_path(&path)).unwrap();
        assert_eq!(pub_text.trim(), key.public().to_openssh().trim());

        let (again, source) = load_or_generate(&path).unwrap();
        assert_eq!(source, KeySource::Loaded);
        assert_eq!(again.public().fingerprint(), key.public().fingerprint());
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn upstream_key_gets_its_public_half_even_when_it_existed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upstream");
        let key = load_upstream_key(&path).unwrap();
        let pub_path = dir.path().join("upstream.pub");
        fs::remove_file(&pub_path).unwrap();
        let again = load_upstream_key(&path).unwrap();
        assert_eq!(again.public().fingerprint(), key.public().fingerprint());
        let line = fs::read_to_string(&pub_path).unwrap();
        assert_eq!(
            PublicKey::from_openssh(line.trim()).unwrap().fingerprint(),
            key.public().fingerprint()
        );
        assert_eq!(mode(&pub_path), 0o644);
    }

    #[test]
    fn keys_readable_by_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host");
        load_or_generate(&path).unwrap();
        for bad in [0o644, 0o640, 0o604] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
            match load_or_generate(&path) {
                Err(e @ KeyFileError::TooOpen { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("too open") && msg.contains("chmod 600"),
                        "{msg}"
                    );
                }
                other => panic!("mode {bad:o} must be refused, got {:?}", other.map(|_| ())),
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(
            load_or_generate(&path).is_ok(),
            "read-only for the owner is fine"
        );
    }

    #[test]
    fn garbage_is_a_parse_error_that_does_not_echo_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host");
        write_atomically(&path, b"SECRET-MATERIAL not a key\n", 0o600).unwrap();
        let err = read_private_key(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Parse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()));
        assert!(!msg.contains("SECRET-MATERIAL"), "{msg}");
    }

    #[test]
    fn check_does_not_create_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/host");
        assert!(check_key_file(&path).unwrap().is_none());
        assert!(!dir.path().join("k").exists());
        let (key, _) = load_or_generate(&path).unwrap();
        assert_eq!(
            check_key_file(&path).unwrap().unwrap().fingerprint(),
            key.public().fingerprint()
        );
    }

    #[test]
    fn load_host_keys_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let paths = vec![dir.path().join("a"), dir.path().join("b")];
        let keys = load_host_keys(&paths).unwrap();
        assert_eq!(keys.len(), 2);
        let a = read_private_key(&paths[0]).unwrap();
        assert_eq!(keys[0].public().fingerprint(), a.public().fingerprint());
        assert_ne!(
            keys[0].public().fingerprint(),
            keys[1].public().fingerprint()
        );
    }
}
