//! The proxy's own keys: host keys it shows clients, and the keys it logs in to upstreams
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
    #[error(
        "key file {path} is not an OpenSSH private key ({found}): expected the format \
         ssh-keygen writes, a text file beginning with \"{OPENSSH_PRIVATE_KEY_BEGIN}\""
    )]
    NotOpenSsh { path: PathBuf, found: &'static str },
    #[error("key file {path} is absent and cannot be generated in {dir}: {source}")]
    CannotGenerate {
        path: PathBuf,
        dir: PathBuf,
        source: io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot encode the generated key for {path}: {reason}")]
    Encode { path: PathBuf, reason: String },
}

/// The first line of an OpenSSH private key file.
const OPENSSH_PRIVATE_KEY_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";

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

/// The proxy's keys for a start, and the files generating them created.
#[non_exhaustive]
pub struct ServerKeys {
    pub host_keys: Vec<PrivateKey>,
    /// The keys of `upstream_key`, in order.
    pub upstream_keys: Vec<PrivateKey>,
    /// Removed again when dropped, unless the start succeeds and calls
    /// [`GeneratedFiles::keep`].
    pub generated: GeneratedFiles,
}

/// Loads the host keys and the upstream keys, generating the absent ones. If one cannot
/// be had, the files generated for the others are removed before the error returns.
pub fn load_server_keys(
    host_keys: &[PathBuf],
    upstream_keys: &[PathBuf],
) -> Result<ServerKeys, KeyFileError> {
    let mut generated = GeneratedFiles::default();
    let host_keys = host_keys
        .iter()
        .map(|path| load_host_key(path, &mut generated))
        .collect::<Result<Vec<_>, _>>()?;
    let upstream_keys = upstream_keys
        .iter()
        .map(|path| load_upstream_key_into(path, &mut generated))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ServerKeys {
        host_keys,
        upstream_keys,
        generated,
    })
}

/// Loads the host keys, generating any file that is absent.
pub fn load_host_keys(paths: &[PathBuf]) -> Result<Vec<PrivateKey>, KeyFileError> {
    let mut generated = GeneratedFiles::default();
    let keys = paths
        .iter()
        .map(|path| load_host_key(path, &mut generated))
        .collect::<Result<Vec<_>, _>>()?;
    generated.keep();
    Ok(keys)
}

/// Reads the host keys for a reload: every file must exist and parse (nothing is
/// generated: a missing file on a running proxy is a mistake, not a first start).
pub fn read_host_keys(paths: &[PathBuf]) -> Result<Vec<PrivateKey>, KeyFileError> {
    paths
        .iter()
        .map(|path| {
            let key = read_private_key(path)?;
            log_key("host key", path, &key.public(), KeySource::Loaded);
            Ok(key)
        })
        .collect()
}

fn load_host_key(path: &Path, generated: &mut GeneratedFiles) -> Result<PrivateKey, KeyFileError> {
    let (key, source) = load_or_generate_into(path, generated)?;
    log_key("host key", path, &key.public(), source);
    Ok(key)
}

/// Loads the upstream login key, generating it if absent, and makes sure its public half
/// is beside it (that is the line operators copy to the upstreams).
pub fn load_upstream_key(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let mut generated = GeneratedFiles::default();
    let key = load_upstream_key_into(path, &mut generated)?;
    generated.keep();
    Ok(key)
}

/// [`load_upstream_key`] for each of `paths` (`upstream_key` as a list), in order. If
/// one cannot be had, the files generated for the others are removed again.
pub fn load_upstream_keys(paths: &[PathBuf]) -> Result<Vec<PrivateKey>, KeyFileError> {
    let mut generated = GeneratedFiles::default();
    let keys = paths
        .iter()
        .map(|path| load_upstream_key_into(path, &mut generated))
        .collect::<Result<Vec<_>, _>>()?;
    generated.keep();
    Ok(keys)
}

fn load_upstream_key_into(
    path: &Path,
    generated: &mut GeneratedFiles,
) -> Result<PrivateKey, KeyFileError> {
    let (key, source) = load_or_generate_into(path, generated)?;
    let public = key.public();
    log_key("upstream key", path, &public, source);
    let pub_path = public_key_path(path);
    if !public_half_is_current(path, &public) {
        write_new(
            &pub_path,
            public_key_text(&public).as_bytes(),
            0o644,
            generated,
        )
        .map_err(|source| KeyFileError::Write {
            path: pub_path.clone(),
            source,
        })?;
        tracing::info!(path = %pub_path.display(), "wrote the upstream public key: add it to the upstream accounts' authorized_keys");
    }
    Ok(key)
}

/// Whether `<path>.pub` holds `public`.
fn public_half_is_current(path: &Path, public: &PublicKey) -> bool {
    let current = fs::read_to_string(public_key_path(path)).ok();
    current.as_deref().map(str::trim) == Some(public_key_text(public).trim())
}

fn public_key_text(public: &PublicKey) -> String {
    format!("{}\n", public.to_openssh())
}

/// Reads a private key file, or generates an ed25519 key there if the file is absent.
pub fn load_or_generate(path: &Path) -> Result<(PrivateKey, KeySource), KeyFileError> {
    let mut generated = GeneratedFiles::default();
    let loaded = load_or_generate_into(path, &mut generated)?;
    generated.keep();
    Ok(loaded)
}

fn load_or_generate_into(
    path: &Path,
    generated: &mut GeneratedFiles,
) -> Result<(PrivateKey, KeySource), KeyFileError> {
    match read_private_key(path) {
        Ok(key) => Ok((key, KeySource::Loaded)),
        Err(KeyFileError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            generate(path, generated).map(|key| (key, KeySource::Generated))
        }
        Err(e) => Err(e),
    }
}

/// The files and directories that generating keys created in this run. Dropped without
/// [`keep`](GeneratedFiles::keep) (a start that failed), it removes them again, newest
/// first; files and directories that were there before are never touched. A failed start
/// thus leaves no key behind that nobody has seen and no upstream trusts yet.
#[derive(Debug, Default)]
#[must_use = "dropping it removes the files it lists"]
pub struct GeneratedFiles {
    /// Files and directories in the order they were created.
    created: Vec<Created>,
}

#[derive(Debug)]
enum Created {
    File(PathBuf),
    Dir(PathBuf),
}

impl GeneratedFiles {
    /// The generated files stay: the start they were made for succeeded.
    pub fn keep(mut self) {
        self.created.clear();
    }

    /// Paths of the files (not directories) created, in order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.created.iter().filter_map(|c| match c {
            Created::File(path) => Some(path.as_path()),
            Created::Dir(_) => None,
        })
    }
}

impl Drop for GeneratedFiles {
    fn drop(&mut self) {
        for created in self.created.drain(..).rev() {
            let (path, result) = match &created {
                Created::File(path) => (path, fs::remove_file(path)),
                // Only if empty: something else may have been put there meanwhile.
                Created::Dir(path) => (path, fs::remove_dir(path)),
            };
            match result {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed what this failed start generated")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove what this failed start generated")
                }
            }
        }
    }
}

/// Checks a key file for `--check-config`, leaving no file behind: `Ok(None)` when it is
/// absent and can be generated at start (see [`check_can_generate`]).
pub fn check_key_file(path: &Path) -> Result<Option<PublicKey>, KeyFileError> {
    match read_private_key(path) {
        Ok(key) => Ok(Some(key.public())),
        Err(KeyFileError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            check_can_generate(path).map(|()| None)
        }
        Err(e) => Err(e),
    }
}

/// [`check_key_file`] for the upstream key, which also needs its public half beside it: a
/// missing or stale `<path>.pub` must be writable.
pub fn check_upstream_key_file(path: &Path) -> Result<Option<PublicKey>, KeyFileError> {
    let key = check_key_file(path)?;
    if let Some(public) = &key {
        if !public_half_is_current(path, public) {
            check_can_generate(&public_key_path(path))?;
        }
    }
    Ok(key)
}

/// Whether a file can be created at `path` the way [`load_or_generate`] would: the
/// nearest existing ancestor is a directory in which a file (or, if directories are
/// missing, a directory) can be created. Proven by creating one and removing it again, as
/// permission bits alone do not tell (root, read-only mounts, /proc).
pub fn check_can_generate(path: &Path) -> Result<(), KeyFileError> {
    // The nearest ancestor that exists; a missing one ("." and "/" always exist) is one
    // more directory to create.
    let mut existing = parent_dir(path);
    let mut missing_dirs = false;
    let meta = loop {
        match fs::metadata(existing) {
            Ok(meta) => break meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound && existing.parent().is_some() => {
                missing_dirs = true;
                existing = parent_dir(existing);
            }
            Err(source) => return Err(unwritable(path, existing, source)),
        }
    };
    if !meta.is_dir() {
        return Err(unwritable(
            path,
            existing,
            io::Error::from(io::ErrorKind::NotADirectory),
        ));
    }
    let probe = existing.join(format!(".sshr-check.{}", std::process::id()));
    let result = if missing_dirs {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&probe)
            .and_then(|()| fs::remove_dir(&probe))
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe)
            .and_then(|_| fs::remove_file(&probe))
    };
    result.map_err(|source| unwritable(path, existing, source))
}

fn unwritable(path: &Path, dir: &Path, source: io::Error) -> KeyFileError {
    KeyFileError::CannotGenerate {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        source,
    }
}

/// The directory a key file is written in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Reads and parses an OpenSSH private key file, refusing one other users can read.
pub fn read_private_key(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let read_err = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_err)?;
    if meta.is_dir() {
        return Err(read_err(io::Error::from(io::ErrorKind::IsADirectory)));
    }
    // sshd's rule (authfile.c sshkey_perm_ok): no access at all for group or others.
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = Zeroizing::new(fs::read(path).map_err(read_err)?);
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) if text.trim_start().starts_with(OPENSSH_PRIVATE_KEY_BEGIN) => text,
        // Other key formats are named by the parser, with how to convert them.
        Ok(text) if text.trim_start().starts_with("-----BEGIN ") || text.starts_with("PuTTY") => {
            text
        }
        _ => {
            return Err(KeyFileError::NotOpenSsh {
                path: path.to_path_buf(),
                found: describe_non_key(&bytes),
            })
        }
    };
    PrivateKey::from_openssh(text).map_err(|e| KeyFileError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// What a file that is no OpenSSH private key holds, in words that never quote it (it may
/// be a secret of another kind).
fn describe_non_key(bytes: &[u8]) -> &'static str {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return "it is binary data";
    };
    let text = text.trim_start();
    if text.is_empty() {
        "it is empty"
    } else if text.contains('\0') {
        "it is binary data"
    } else if text
        .split_whitespace()
        .next()
        .is_some_and(|word| word.parse::<ssh_key::Algorithm>().is_ok())
    {
        "it holds a public key: give the private key file, without .pub"
    } else {
        "it holds other text"
    }
}

fn generate(path: &Path, generated: &mut GeneratedFiles) -> Result<PrivateKey, KeyFileError> {
    let write_err = |source| KeyFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    create_dirs(parent_dir(path), generated).map_err(write_err)?;
    let key = PrivateKey::generate_ed25519(&mut rand_core::OsRng);
    let text = key.to_openssh().map_err(|e| KeyFileError::Encode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_new(path, text.as_bytes(), 0o600, generated).map_err(write_err)?;
    // The public half beside every generated key, as ssh-keygen does.
    let pub_path = public_key_path(path);
    write_new(
        &pub_path,
        public_key_text(&key.public()).as_bytes(),
        0o644,
        generated,
    )
    .map_err(|source| KeyFileError::Write {
        path: pub_path,
        source,
    })?;
    Ok(key)
}

/// Creates `dir` and its missing ancestors (mode 0700), noting each one created.
fn create_dirs(dir: &Path, generated: &mut GeneratedFiles) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    for d in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => generated.created.push(Created::Dir(d.to_path_buf())),
            // Made meanwhile by someone else: theirs, not ours to remove.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// [`write_atomically`], noting `path` as created if it did not exist before.
fn write_new(
    path: &Path,
    data: &[u8],
    mode: u32,
    generated: &mut GeneratedFiles,
) -> io::Result<()> {
    let existed = path.symlink_metadata().is_ok();
    write_atomically(path, data, mode)?;
    if !existed {
        generated.created.push(Created::File(path.to_path_buf()));
    }
    Ok(())
}

/// Writes `data` to a temporary file created with `mode` in the same directory, then
/// renames it over `path`: a reader never sees a half-written key, and the private key
/// is never readable by others, not even for a moment.
fn write_atomically(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
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
    fn garbage_is_named_as_not_an_openssh_key_without_echoing_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host");
        let public = PrivateKey::generate_ed25519(&mut rand_core::OsRng)
            .public()
            .to_openssh();
        for (content, found) in [
            (b"SECRET-MATERIAL not a key\n".to_vec(), "other text"),
            // What used to come out as "PEM preamble contains invalid data (NUL byte)".
            (b"SECRET\0\0\0\0".to_vec(), "binary data"),
            (vec![0xff, 0xfe, b'S', 0x80], "binary data"),
            (b"".to_vec(), "empty"),
            (b" \n\n".to_vec(), "empty"),
            (
                format!("{public} SECRET-MATERIAL\n").into_bytes(),
                "public key",
            ),
        ] {
            write_atomically(&path, &content, 0o600).unwrap();
            let err = read_private_key(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::NotOpenSsh { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!(
                    "key file {} is not an OpenSSH private key",
                    path.display()
                )),
                "{msg}"
            );
            assert!(msg.contains(found), "{found}: {msg}");
            assert!(
                msg.contains("\"-----BEGIN OPENSSH PRIVATE KEY-----\""),
                "{msg}"
            );
            assert!(!msg.contains("SECRET"), "{msg}");
            assert!(!msg.contains("NUL"), "{msg}");
            fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn other_key_formats_say_how_to_convert_and_broken_keys_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host");
        write_atomically(
            &path,
            b"-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n",
            0o600,
        )
        .unwrap();
        let msg = read_private_key(&path).unwrap_err().to_string();
        assert!(
            msg.contains("PKCS#1 PEM") && msg.contains("ssh-keygen -p"),
            "{msg}"
        );
        fs::remove_file(&path).unwrap();
        write_atomically(
            &path,
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            0o600,
        )
        .unwrap();
        let err = read_private_key(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Parse { .. }), "{err:?}");

        let dir_path = dir.path().join("a-dir");
        fs::DirBuilder::new().mode(0o700).create(&dir_path).unwrap();
        let err = read_private_key(&dir_path).unwrap_err();
        assert!(
            matches!(&err, KeyFileError::Read { source, .. } if source.kind() == io::ErrorKind::IsADirectory),
            "{err:?}"
        );
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_failed_start_removes_only_what_it_generated() {
        let dir = tempfile::tempdir().unwrap();
        // One host key exists already, with its public half; the other is generated in a
        // new directory; the upstream key cannot be generated (its directory is a file).
        let old = dir.path().join("old_host");
        let (old_key, _) = load_or_generate(&old).unwrap();
        let new = dir.path().join("keys/sub/new_host");
        fs::write(dir.path().join("not-a-dir"), "").unwrap();
        let upstream = dir.path().join("not-a-dir/upstream");
        let before = names(dir.path());

        let err = load_server_keys(&[old.clone(), new.clone()], std::slice::from_ref(&upstream))
            .err()
            .expect("the upstream key cannot be had");
        assert!(err.to_string().contains("not-a-dir/upstream"), "{err}");
        assert_eq!(names(dir.path()), before, "keys/ and its files are gone");
        assert_eq!(
            read_private_key(&old).unwrap().public().fingerprint(),
            old_key.public().fingerprint(),
            "a key that was there before is untouched"
        );
        assert!(public_key_path(&old).exists());

        // Dropped without keep (a start that failed later): the same.
        let upstream = dir.path().join("keys/upstream");
        let keys =
            load_server_keys(&[old.clone(), new.clone()], std::slice::from_ref(&upstream)).unwrap();
        let created: Vec<_> = keys.generated.files().map(Path::to_path_buf).collect();
        assert_eq!(
            created,
            vec![
                new.clone(),
                public_key_path(&new),
                upstream.clone(),
                public_key_path(&upstream)
            ]
        );
        drop(keys);
        assert_eq!(names(dir.path()), before);

        // Kept (a start that succeeded): everything stays.
        let keys =
            load_server_keys(&[old.clone(), new.clone()], std::slice::from_ref(&upstream)).unwrap();
        keys.generated.keep();
        for path in [&new, &upstream] {
            assert!(path.exists() && public_key_path(path).exists());
        }
        // A later start that fails generates nothing, so removes nothing.
        let keys = load_server_keys(&[old, new.clone()], std::slice::from_ref(&upstream)).unwrap();
        assert_eq!(keys.generated.files().count(), 0);
        drop(keys);
        assert!(new.exists() && upstream.exists());
    }

    #[test]
    fn several_upstream_keys_load_in_order_and_a_bad_one_undoes_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (ed, rsa) = (dir.path().join("id_ed25519"), dir.path().join("id_other"));
        let (first, _) = load_or_generate(&ed).unwrap();
        let keys = load_upstream_keys(&[ed.clone(), rsa.clone()]).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].public(), first.public(), "in the order given");
        assert!(public_key_path(&rsa).exists() && public_key_path(&ed).exists());
        // The second cannot be had: the first, generated now, goes again.
        let fresh = dir.path().join("fresh");
        fs::write(dir.path().join("not-a-dir"), "").unwrap();
        let bad = dir.path().join("not-a-dir/key");
        assert!(load_upstream_keys(&[fresh.clone(), bad]).is_err());
        assert!(!fresh.exists() && !public_key_path(&fresh).exists());
    }

    #[test]
    fn an_upstream_public_half_written_by_a_failed_start_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = dir.path().join("upstream");
        load_or_generate(&upstream).unwrap();
        fs::remove_file(public_key_path(&upstream)).unwrap();
        let keys =
            load_server_keys(&[dir.path().join("host")], std::slice::from_ref(&upstream)).unwrap();
        drop(keys);
        assert_eq!(names(dir.path()), vec!["upstream".to_string()]);
    }

    #[test]
    fn can_generate_is_proven_by_a_probe_that_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        check_can_generate(&dir.path().join("host")).unwrap();
        check_can_generate(&dir.path().join("a/b/host")).unwrap();
        assert!(names(dir.path()).is_empty());

        fs::write(dir.path().join("file"), "").unwrap();
        for path in [dir.path().join("file/host"), dir.path().join("file/a/host")] {
            let err = check_can_generate(&path).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(&err, KeyFileError::CannotGenerate { source, .. } if source.kind() == io::ErrorKind::NotADirectory),
                "{msg}"
            );
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        // Not writable whatever the permission bits say, even for root.
        let err = check_can_generate(Path::new("/proc/sshr-no-such-dir/host")).unwrap_err();
        assert!(
            matches!(err, KeyFileError::CannotGenerate { .. }),
            "{err:?}"
        );
        assert!(matches!(
            check_key_file(Path::new("/proc/sshr-no-such-dir/host")),
            Err(KeyFileError::CannotGenerate { .. })
        ));
        assert_eq!(names(dir.path()), vec!["file".to_string()]);
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
