//! OpenSSH's text formats: private key files (`-----BEGIN OPENSSH PRIVATE KEY-----`,
//! OpenSSH `PROTOCOL.key`), public key lines (`type base64 [comment]`) and
//! `authorized_keys` files (sshd(8), AUTHORIZED_KEYS FILE FORMAT).

use ssh_encoding::base64::{Base64, Encoding as _};
use ssh_key::{Algorithm, LineEnding};
use zeroize::Zeroizing;

use super::{KeyError, PrivateKey, PublicKey};
use crate::wire::{put_string, put_u32, Reader};

impl PublicKey {
    /// Parse a public key line, `ssh-ed25519 AAAA... [comment]` (a `.pub` file or an
    /// `authorized_keys` line without options). The comment is dropped.
    pub fn from_openssh(line: &str) -> Result<Self, KeyError> {
        parse_key_text(line).map(|(key, _comment)| key)
    }

    /// `type base64` (no comment), as in a `.pub` file or `authorized_keys`.
    pub fn to_openssh(&self) -> String {
        format!(
            "{} {}",
            self.algorithm_name(),
            Base64::encode_string(self.blob())
        )
    }
}

impl PrivateKey {
    /// Load an unencrypted OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    ///
    /// The key must be of a supported type and size, and is checked to match its public
    /// half by making and verifying one signature.
    pub fn from_openssh(text: &str) -> Result<Self, KeyError> {
        for (label, what) in [
            ("-----BEGIN RSA PRIVATE KEY-----", "PKCS#1 PEM"),
            ("-----BEGIN EC PRIVATE KEY-----", "SEC1 PEM"),
            ("-----BEGIN PRIVATE KEY-----", "PKCS#8 PEM"),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----",
                "encrypted PKCS#8 PEM",
            ),
            ("-----BEGIN DSA PRIVATE KEY-----", "DSA PEM"),
            ("---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----", "SSH.com"),
            ("PuTTY-User-Key-File-", "PuTTY .ppk"),
        ] {
            if text.trim_start().starts_with(label) {
                return Err(KeyError::NotOpenSshFormat(what));
            }
        }
        let key = match ssh_key::PrivateKey::from_openssh(text.trim()) {
            Ok(key) => key,
            // An ECDSA scalar written shorter than its curve's size (see
            // `pad_ecdsa_scalar`): read it again, padded.
            Err(err) => match pad_ecdsa_scalar(text.trim()) {
                Some(padded) => ssh_key::PrivateKey::from_bytes(&padded)?,
                None => return Err(err.into()),
            },
        };
        Self::from_ssh_key(key)
    }

    /// The key in the OpenSSH private key format (unencrypted, with its comment).
    pub fn to_openssh(&self) -> Result<Zeroizing<String>, KeyError> {
        Ok(self.as_ssh_key().to_openssh(LineEnding::LF)?)
    }
}

/// The binary form of an unencrypted OpenSSH private key file (`PROTOCOL.key`) whose
/// one key is ECDSA and whose private scalar is written shorter than the curve's size,
/// with the scalar left-padded to that size; `None` for anything else.
///
/// OpenSSH writes the scalar as a minimal mpint, so it is shorter whenever its top byte
/// is zero and the next one is below 0x80: half of all P-521 keys (their top byte is 0
/// or 1), one P-256 or P-384 key in 256. ssh-key 0.6.7 reads only full-length scalars.
/// The private section is written again with its padding (1, 2, 3, ... to a multiple of
/// 8 bytes) recomputed; every buffer holding it is wiped when dropped.
fn pad_ecdsa_scalar(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
    const END: &str = "-----END OPENSSH PRIVATE KEY-----";
    let body = text.strip_prefix(BEGIN)?.strip_suffix(END)?;
    let base64: Zeroizing<String> = Zeroizing::new(body.split_ascii_whitespace().collect());
    let binary = Zeroizing::new(Base64::decode_vec(&base64).ok()?);
    let mut r = Reader::new(&binary);
    let magic = r.bytes(15, "magic").ok()?;
    let cipher = r.string("cipher").ok()?;
    let kdf = r.string("kdf").ok()?;
    let kdf_options = r.string("kdf options").ok()?;
    let count = r.u32("key count").ok()?;
    let public = r.string("public key").ok()?;
    let private = r.string("private section").ok()?;
    if magic != b"openssh-key-v1\0" || cipher != b"none" || count != 1 || !r.is_empty() {
        return None;
    }
    let mut p = Reader::new(private);
    let checks = p.bytes(8, "check integers").ok()?;
    let key_type = p.string("key type").ok()?;
    let size = match key_type {
        b"ecdsa-sha2-nistp256" => 32,
        b"ecdsa-sha2-nistp384" => 48,
        b"ecdsa-sha2-nistp521" => 66,
        _ => return None,
    };
    let curve = p.string("curve").ok()?;
    let point = p.string("public point").ok()?;
    let scalar = p.string("private scalar").ok()?;
    let comment = p.string("comment").ok()?;
    if scalar.is_empty() || scalar.len() >= size || scalar[0] >= 0x80 {
        return None;
    }
    let mut section = Zeroizing::new(Vec::with_capacity(private.len() + size + 8));
    section.extend_from_slice(checks);
    for field in [key_type, curve, point] {
        put_string(&mut section, field);
    }
    put_u32(&mut section, size as u32);
    section.extend(std::iter::repeat_n(0, size - scalar.len()));
    section.extend_from_slice(scalar);
    put_string(&mut section, comment);
    for pad in 1..=((8 - section.len() % 8) % 8) as u8 {
        section.push(pad);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(binary.len() + size + 16));
    out.extend_from_slice(magic);
    for field in [cipher, kdf, kdf_options] {
        put_string(&mut out, field);
    }
    put_u32(&mut out, count);
    put_string(&mut out, public);
    put_string(&mut out, &section);
    Some(out)
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Split off the first blank-delimited token; the rest has its leading blanks removed.
fn split_token(s: &str) -> (&str, &str) {
    match s.find(is_blank) {
        Some(i) => (&s[..i], s[i..].trim_start_matches(is_blank)),
        None => (s, ""),
    }
}

/// Parse `type base64 [comment]`; returns the key and the (trimmed) comment.
fn parse_key_text(line: &str) -> Result<(PublicKey, &str), KeyError> {
    let line = line.trim_matches(|c: char| c.is_ascii_whitespace());
    let (type_name, rest) = split_token(line);
    if type_name.is_empty() {
        return Err(KeyError::InvalidPublicKey("empty line"));
    }
    let (base64, comment) = split_token(rest);
    if base64.is_empty() {
        return Err(KeyError::InvalidPublicKey("missing base64 key data"));
    }
    let blob =
        Base64::decode_vec(base64).map_err(|_| KeyError::InvalidPublicKey("invalid base64"))?;
    let key = PublicKey::from_blob(&blob)?;
    // Keys an operator wrote down are checked in full when they are read, so that a
    // bad one is reported with its line rather than failing every login.
    key.check_point()?;
    if key.algorithm_name() != type_name {
        return Err(KeyError::KeyTypeMismatch {
            text: type_name.chars().take(64).collect(),
            blob: key.algorithm_name().to_owned(),
        });
    }
    Ok((
        key,
        comment.trim_end_matches(|c: char| c.is_ascii_whitespace()),
    ))
}

/// One usable line of an `authorized_keys` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizedKey {
    /// The key.
    pub key: PublicKey,
    /// The options before the key, verbatim (e.g. `command="...",no-pty`), if any.
    /// Not interpreted yet.
    pub options: Option<String>,
    /// The comment after the key (may be empty).
    pub comment: String,
    /// 1-based line number in the file.
    pub line: usize,
}

/// Parse an OpenSSH `authorized_keys` file.
///
/// Blank lines and lines starting with `#` are skipped; every other line gives one
/// entry, in order: the key with its options and comment, or the error
/// ([`KeyError::AuthorizedKeysLine`], with the line number). Like OpenSSH, a line is
/// first read as `type base64 [comment]`, and failing that as
/// `options type base64 [comment]`, where the options end at the first space or tab
/// outside double quotes (`\"` inside quotes does not end them).
pub fn parse_authorized_keys(text: &str) -> Vec<Result<AuthorizedKey, KeyError>> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_start_matches(|c: char| c.is_ascii_whitespace());
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = parse_authorized_keys_line(line)
            .map(|(key, options, comment)| AuthorizedKey {
                key,
                options: options.map(str::to_owned),
                comment: comment.to_owned(),
                line: index + 1,
            })
            .map_err(|err| KeyError::AuthorizedKeysLine {
                line: index + 1,
                source: Box::new(err),
            });
        entries.push(entry);
    }
    entries
}

type AuthorizedKeysLine<'a> = (PublicKey, Option<&'a str>, &'a str);

fn parse_authorized_keys_line(line: &str) -> Result<AuthorizedKeysLine<'_>, KeyError> {
    let direct = match parse_key_text(line) {
        Ok((key, comment)) => return Ok((key, None, comment)),
        Err(err) => err,
    };
    // Skip the options like OpenSSH's sshkey_advance_past_options().
    let bytes = line.as_bytes();
    let mut quoted = false;
    let mut end = 0;
    while end < bytes.len() && (quoted || (bytes[end] != b' ' && bytes[end] != b'\t')) {
        if bytes[end] == b'\\' && bytes.get(end + 1) == Some(&b'"') {
            end += 1;
        } else if bytes[end] == b'"' {
            quoted = !quoted;
        }
        end += 1;
    }
    let (options, rest) = line.split_at(end);
    let with_options = if quoted {
        Err(KeyError::InvalidPublicKey("unterminated quote in options"))
    } else if rest.trim().is_empty() {
        Err(KeyError::InvalidPublicKey("no key after the options"))
    } else {
        parse_key_text(rest).map(|(key, comment)| (key, Some(options), comment))
    };
    with_options.map_err(|err| {
        // Report whichever reading the line was meant as: if it starts with a key type
        // name, the key is what is wrong with it.
        let (first, _) = split_token(line);
        if first.parse::<Algorithm>().is_ok() {
            direct
        } else {
            err
        }
    })
}
