//! Host keys, user keys and SSH signatures.
//!
//! Used in both roles of the transport (the server signs the exchange hash with its
//! host key, the client verifies it) and in publickey user authentication (the proxy
//! verifies a user's signature, and signs as a client to log in upstream).
//!
//! Key parsing and all signature math come from the `ssh-key` crate (and, for RSA
//! signing, the `rsa` crate it is built on: see the note above `mod rsa_alg` for why
//! RSA keys cannot sign until `rsa` is a direct dependency); this module picks the
//! algorithms, frames the SSH wire encodings and enforces the policy:
//!
//! * supported key types: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ecdsa-sha2-nistp384`
//!   and `ssh-rsa` keys of 2048 bits or more;
//! * signature algorithms: the key types' own, plus `rsa-sha2-512` and `rsa-sha2-256`
//!   (RFC 8332) for RSA keys. Plain `ssh-rsa` (SHA-1) signatures are never produced
//!   nor accepted;
//! * the algorithm named inside a signature blob must fit the key type and, when the
//!   protocol already named one (negotiated host key algorithm, algorithm of a
//!   publickey userauth request), must equal it.
//!
//! Secret key material lives in `ssh_key` private key types, which zeroize their
//! buffers on drop, as do the short-lived `ed25519-dalek`/`ecdsa`/`rsa` signing keys
//! built for each signature. Not covered: whatever transient copies `ssh-key`'s
//! PEM/base64 decoding and the `rsa` crate's big-integer arithmetic leave behind.

use core::fmt;

use ssh_encoding::base64::{Base64, Encoding as _};
use ssh_encoding::{Decode, Encode};
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::public::{KeyData, RsaPublicKey};
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding};
use zeroize::Zeroizing;

/// Signature algorithms, in our preference order. Never plain `ssh-rsa` (SHA-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigAlg {
    /// `ssh-ed25519` (RFC 8709).
    Ed25519,
    /// `ecdsa-sha2-nistp256` (RFC 5656).
    EcdsaP256,
    /// `ecdsa-sha2-nistp384` (RFC 5656).
    EcdsaP384,
    /// `rsa-sha2-512` (RFC 8332).
    RsaSha2_512,
    /// `rsa-sha2-256` (RFC 8332).
    RsaSha2_256,
}

impl SigAlg {
    /// Every supported signature algorithm, in preference order.
    pub const ALL: [SigAlg; 5] = [
        SigAlg::Ed25519,
        SigAlg::EcdsaP256,
        SigAlg::EcdsaP384,
        SigAlg::RsaSha2_512,
        SigAlg::RsaSha2_256,
    ];

    /// The algorithm's SSH name.
    pub fn name(self) -> &'static str {
        match self {
            SigAlg::Ed25519 => "ssh-ed25519",
            SigAlg::EcdsaP256 => "ecdsa-sha2-nistp256",
            SigAlg::EcdsaP384 => "ecdsa-sha2-nistp384",
            SigAlg::RsaSha2_512 => "rsa-sha2-512",
            SigAlg::RsaSha2_256 => "rsa-sha2-256",
        }
    }

    /// Parse an SSH algorithm name. `ssh-rsa` (SHA-1) and anything unknown give `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        SigAlg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// Name of the key type this algorithm signs with: the same as [`SigAlg::name`]
    /// except `ssh-rsa` for both RSA algorithms.
    pub fn key_type_name(self) -> &'static str {
        self.key_kind().name()
    }

    fn key_kind(self) -> KeyKind {
        match self {
            SigAlg::Ed25519 => KeyKind::Ed25519,
            SigAlg::EcdsaP256 => KeyKind::EcdsaP256,
            SigAlg::EcdsaP384 => KeyKind::EcdsaP384,
            SigAlg::RsaSha2_512 | SigAlg::RsaSha2_256 => KeyKind::Rsa,
        }
    }

    fn ssh_key_algorithm(self) -> Algorithm {
        match self {
            SigAlg::Ed25519 => Algorithm::Ed25519,
            SigAlg::EcdsaP256 => Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            SigAlg::EcdsaP384 => Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            SigAlg::RsaSha2_512 => Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            SigAlg::RsaSha2_256 => Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        }
    }
}

impl fmt::Display for SigAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors loading, parsing or using keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file or line could not be decoded.
    #[error("invalid key: {0}")]
    Format(#[from] ssh_key::Error),
    /// A public key line (`type base64 [comment]`) is malformed.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    /// The key type named in a public key line differs from the type inside its blob.
    #[error("public key line says {text} but the key is {blob}")]
    KeyTypeMismatch {
        /// Type named in the text.
        text: String,
        /// Type of the decoded key blob.
        blob: String,
    },
    /// The private key file is passphrase-protected.
    #[error("encrypted private keys are not supported")]
    Encrypted,
    /// A private key file in another format than OpenSSH's own.
    #[error(
        "not an OpenSSH private key ({0}); convert it with `ssh-keygen -p -f FILE`, \
         which rewrites it in the OpenSSH format"
    )]
    NotOpenSshFormat(&'static str),
    /// The key type is not one we sign or verify with.
    #[error("unsupported key type {0}")]
    UnsupportedKeyType(String),
    /// An RSA key outside the supported sizes.
    #[error("unsupported RSA key size: {bits} bits (supported: {MIN_RSA_BITS} to {max} bits)")]
    UnsupportedKeySize {
        /// Size of the key's modulus.
        bits: usize,
        /// Largest size accepted where the error arose.
        max: usize,
    },
    /// The key cannot make signatures of this algorithm.
    #[error("a {key} key cannot sign with {alg}")]
    UnsupportedSignatureAlgorithm {
        /// Key type name.
        key: &'static str,
        /// Requested algorithm.
        alg: SigAlg,
    },
    /// The private key does not match its public half, or signing failed.
    #[error("signing failed: {0}")]
    Signing(&'static str),
    /// An `authorized_keys` line could not be used.
    #[error("line {line}: {source}")]
    AuthorizedKeysLine {
        /// 1-based line number.
        line: usize,
        /// What was wrong with it.
        source: Box<KeyError>,
    },
}

/// Errors verifying a signature (or decoding the key blob to verify with).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The public key blob does not decode.
    #[error("malformed public key blob")]
    MalformedKey,
    /// The signature blob does not decode, or its inner signature has the wrong shape.
    #[error("malformed signature blob")]
    MalformedSignature,
    /// The key is of a type we do not support.
    #[error("unsupported key type {0}")]
    UnsupportedKeyType(String),
    /// An RSA key outside the supported sizes.
    #[error("unsupported RSA key size: {bits} bits (supported: {MIN_RSA_BITS} to {max} bits)")]
    UnsupportedKeySize {
        /// Size of the key's modulus.
        bits: usize,
        /// Largest size accepted.
        max: usize,
    },
    /// A signature algorithm we do not accept (this includes `ssh-rsa`, i.e. SHA-1).
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// The signature (or announced) algorithm does not fit the key type.
    #[error("signature algorithm {signature} does not fit a {key} key")]
    AlgorithmMismatch {
        /// Key type name.
        key: String,
        /// Signature algorithm name.
        signature: String,
    },
    /// The signature blob names another algorithm than the one the peer announced.
    #[error("signature uses {signature} but {expected} was announced")]
    UnexpectedAlgorithm {
        /// What the protocol said.
        expected: SigAlg,
        /// What the blob says.
        signature: SigAlg,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

/// Smallest RSA modulus we accept, in bits (OpenSSH accepts 1024; 2048 is the floor
/// `ssh-key` enforces and what current guidance asks for).
pub const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus we verify with, in bits.
pub const MAX_RSA_VERIFY_BITS: usize = rsa_alg::MAX_VERIFY_BITS;

/// Largest RSA modulus we sign with, in bits (the `rsa` crate's limit).
pub const MAX_RSA_SIGN_BITS: usize = 4096;

/// Supported key types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    Rsa,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "ssh-ed25519",
            KeyKind::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyKind::EcdsaP384 => "ecdsa-sha2-nistp384",
            KeyKind::Rsa => "ssh-rsa",
        }
    }

    fn from_name(name: &[u8]) -> Option<Self> {
        [
            KeyKind::Ed25519,
            KeyKind::EcdsaP256,
            KeyKind::EcdsaP384,
            KeyKind::Rsa,
        ]
        .into_iter()
        .find(|kind| kind.name().as_bytes() == name)
    }

    fn of(key: &KeyData) -> Option<Self> {
        match key {
            KeyData::Ed25519(_) => Some(KeyKind::Ed25519),
            KeyData::Ecdsa(k) if k.curve() == EcdsaCurve::NistP256 => Some(KeyKind::EcdsaP256),
            KeyData::Ecdsa(k) if k.curve() == EcdsaCurve::NistP384 => Some(KeyKind::EcdsaP384),
            KeyData::Rsa(_) => Some(KeyKind::Rsa),
            _ => None,
        }
    }

    /// Signature algorithms a key of this kind verifies.
    fn verify_algs(self) -> &'static [SigAlg] {
        match self {
            KeyKind::Ed25519 => &[SigAlg::Ed25519],
            KeyKind::EcdsaP256 => &[SigAlg::EcdsaP256],
            KeyKind::EcdsaP384 => &[SigAlg::EcdsaP384],
            KeyKind::Rsa => &[SigAlg::RsaSha2_512, SigAlg::RsaSha2_256],
        }
    }

    /// Signature algorithms a private key of this kind produces.
    fn sign_algs(self) -> &'static [SigAlg] {
        match self {
            KeyKind::Rsa => rsa_alg::SIGN_ALGS,
            other => other.verify_algs(),
        }
    }
}

/// A name as it may appear in an error: printable US-ASCII, at most 64 characters
/// (RFC 4251 section 6), else `None`.
fn printable_name(name: &[u8]) -> Option<String> {
    if name.is_empty() || name.len() > 64 || !name.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return None;
    }
    String::from_utf8(name.to_vec()).ok()
}

/// Read an SSH `string` (uint32 length, bytes) without allocating.
fn read_string<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = input.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    *input = rest;
    Some(value)
}

fn put_string(out: &mut Vec<u8>, value: &[u8]) {
    let len = u32::try_from(value.len()).expect("SSH strings are shorter than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

/// `string alg-name || string signature` (RFC 4253 section 6.6).
fn signature_blob(alg: SigAlg, raw: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(8 + alg.name().len() + raw.len());
    put_string(&mut blob, alg.name().as_bytes());
    put_string(&mut blob, raw);
    blob
}

/// Size in bits of a positive mpint, or `None` if it is negative or zero.
fn mpint_bits(m: &ssh_key::Mpint) -> Option<usize> {
    let bytes = m.as_positive_bytes()?;
    let first = *bytes.first()?;
    Some(bytes.len() * 8 - first.leading_zeros() as usize)
}

/// A public key: host key of an upstream server, or a user's key.
///
/// Always one of the supported key types (see the module docs); comparing two keys
/// compares their wire encodings.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    /// The key, with an empty comment.
    inner: ssh_key::PublicKey,
    /// Its SSH wire encoding, kept for the exchange hash and comparisons.
    blob: Vec<u8>,
}

impl PublicKey {
    /// Decode an SSH public key blob (`string key-type, ...`, RFC 4253 section 6.6).
    ///
    /// Rejects unsupported key types, RSA keys outside the supported sizes, invalid
    /// Ed25519 points, trailing bytes and non-canonical encodings. (ECDSA points are
    /// checked when a signature is verified.)
    pub fn from_blob(blob: &[u8]) -> Result<Self, VerifyError> {
        let mut reader = blob;
        let type_name = read_string(&mut reader).ok_or(VerifyError::MalformedKey)?;
        if KeyKind::from_name(type_name).is_none() {
            return Err(match printable_name(type_name) {
                Some(name) => VerifyError::UnsupportedKeyType(name),
                None => VerifyError::MalformedKey,
            });
        }
        let mut reader = blob;
        let key_data = KeyData::decode(&mut reader).map_err(|_| VerifyError::MalformedKey)?;
        if !reader.is_empty() {
            return Err(VerifyError::MalformedKey);
        }
        let key = Self::from_key_data(key_data)?;
        if key.blob != blob {
            return Err(VerifyError::MalformedKey);
        }
        Ok(key)
    }

    /// Wrap an `ssh_key` public key (its comment is dropped).
    pub fn from_ssh_key(key: &ssh_key::PublicKey) -> Result<Self, VerifyError> {
        Self::from_key_data(key.key_data().clone())
    }

    fn from_key_data(key_data: KeyData) -> Result<Self, VerifyError> {
        let kind = KeyKind::of(&key_data)
            .ok_or_else(|| VerifyError::UnsupportedKeyType(key_data.algorithm().to_string()))?;
        match &key_data {
            KeyData::Ed25519(key) => {
                ed25519_dalek::VerifyingKey::from_bytes(&key.0)
                    .map_err(|_| VerifyError::MalformedKey)?;
            }
            KeyData::Rsa(key) => {
                let bits = mpint_bits(&key.n).ok_or(VerifyError::MalformedKey)?;
                if !(MIN_RSA_BITS..=MAX_RSA_VERIFY_BITS).contains(&bits) {
                    return Err(VerifyError::UnsupportedKeySize {
                        bits,
                        max: MAX_RSA_VERIFY_BITS,
                    });
                }
                if mpint_bits(&key.e).is_none() {
                    return Err(VerifyError::MalformedKey);
                }
            }
            _ => {}
        }
        debug_assert!(KeyKind::of(&key_data) == Some(kind));
        let mut blob = Vec::new();
        key_data
            .encode(&mut blob)
            .map_err(|_| VerifyError::MalformedKey)?;
        Ok(Self {
            inner: ssh_key::PublicKey::new(key_data, ""),
            blob,
        })
    }

    /// The SSH wire encoding of the key.
    pub fn to_blob(&self) -> Vec<u8> {
        self.blob.clone()
    }

    /// The SSH wire encoding of the key, borrowed.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

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
            Base64::encode_string(&self.blob)
        )
    }

    /// The key type name, e.g. `ssh-ed25519`, or `ssh-rsa` for any RSA key.
    pub fn algorithm_name(&self) -> &'static str {
        self.kind().name()
    }

    /// SHA-256 fingerprint as shown by `ssh-keygen -l`: `SHA256:` and unpadded base64.
    pub fn fingerprint(&self) -> String {
        self.inner.fingerprint(HashAlg::Sha256).to_string()
    }

    /// Whether `alg` is a valid signature algorithm for this key type
    /// (`rsa-sha2-512`/`rsa-sha2-256` for RSA keys, the key type's own otherwise).
    pub fn accepts(&self, alg: SigAlg) -> bool {
        self.kind().verify_algs().contains(&alg)
    }

    /// Signature algorithms this key verifies, in preference order.
    pub fn sig_algs(&self) -> &'static [SigAlg] {
        self.kind().verify_algs()
    }

    /// The wrapped `ssh_key` public key (empty comment).
    pub fn as_ssh_key(&self) -> &ssh_key::PublicKey {
        &self.inner
    }

    fn kind(&self) -> KeyKind {
        KeyKind::of(self.inner.key_data()).expect("PublicKey holds only supported key types")
    }

    /// Verify an SSH signature blob (`string alg-name || string signature`) over `data`.
    ///
    /// `expected` (when `Some`) is the algorithm the peer said it used (the host key
    /// algorithm negotiated in kex, or the algorithm named in a publickey userauth
    /// request); the blob's inner name must equal it. `ssh-rsa` (SHA-1) signatures are
    /// refused. Returns the algorithm the signature was made with.
    pub fn verify(
        &self,
        expected: Option<SigAlg>,
        data: &[u8],
        signature_blob: &[u8],
    ) -> Result<SigAlg, VerifyError> {
        let mut reader = signature_blob;
        let name = read_string(&mut reader).ok_or(VerifyError::MalformedSignature)?;
        let raw = read_string(&mut reader).ok_or(VerifyError::MalformedSignature)?;
        if !reader.is_empty() {
            return Err(VerifyError::MalformedSignature);
        }
        let name = printable_name(name).ok_or(VerifyError::MalformedSignature)?;
        let alg = SigAlg::from_name(&name).ok_or(VerifyError::UnsupportedAlgorithm(name))?;
        if let Some(expected) = expected {
            if !self.accepts(expected) {
                return Err(VerifyError::AlgorithmMismatch {
                    key: self.algorithm_name().to_owned(),
                    signature: expected.name().to_owned(),
                });
            }
            if expected != alg {
                return Err(VerifyError::UnexpectedAlgorithm {
                    expected,
                    signature: alg,
                });
            }
        }
        if !self.accepts(alg) {
            return Err(VerifyError::AlgorithmMismatch {
                key: self.algorithm_name().to_owned(),
                signature: alg.name().to_owned(),
            });
        }
        match self.inner.key_data() {
            KeyData::Rsa(key) => rsa_alg::verify(key, alg, data, raw)?,
            key => {
                use ed25519_dalek::Verifier as _;
                // The constructor checks the inner shape: 64 bytes for Ed25519; for ECDSA
                // exactly `mpint r || mpint s`, minimal encodings, positive, no longer
                // than the curve's field, nothing after them (RFC 5656 section 3.1.2).
                let signature = ssh_key::Signature::new(alg.ssh_key_algorithm(), raw)
                    .map_err(|_| VerifyError::MalformedSignature)?;
                key.verify(data, &signature)
                    .map_err(|_| VerifyError::BadSignature)?;
            }
        }
        Ok(alg)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({} {})",
            self.algorithm_name(),
            self.fingerprint()
        )
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_openssh())
    }
}

impl From<VerifyError> for KeyError {
    fn from(err: VerifyError) -> Self {
        match err {
            VerifyError::UnsupportedKeyType(name) => KeyError::UnsupportedKeyType(name),
            VerifyError::UnsupportedKeySize { bits, max } => {
                KeyError::UnsupportedKeySize { bits, max }
            }
            _ => KeyError::InvalidPublicKey("malformed key blob"),
        }
    }
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

/// A private key we sign with: a server host key, or the proxy's upstream login key.
#[derive(Clone)]
pub struct PrivateKey {
    inner: ssh_key::PrivateKey,
    public: PublicKey,
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
        let key = ssh_key::PrivateKey::from_openssh(text.trim())?;
        Self::from_ssh_key(key)
    }

    /// Wrap an `ssh_key` private key, with the checks of [`PrivateKey::from_openssh`].
    pub fn from_ssh_key(key: ssh_key::PrivateKey) -> Result<Self, KeyError> {
        if key.is_encrypted() {
            return Err(KeyError::Encrypted);
        }
        let public = PublicKey::from_ssh_key(key.public_key())?;
        if let KeyData::Rsa(rsa) = key.public_key().key_data() {
            let bits = mpint_bits(&rsa.n).unwrap_or(0);
            if bits > MAX_RSA_SIGN_BITS {
                return Err(KeyError::UnsupportedKeySize {
                    bits,
                    max: MAX_RSA_SIGN_BITS,
                });
            }
        }
        let key = Self { inner: key, public };
        key.self_test()?;
        Ok(key)
    }

    /// Check that the private key is consistent and matches its public half: `ssh-key`
    /// checks that a file's public key matches the one in its private section, but not
    /// that the private numbers belong to it, and a mismatch would otherwise only show
    /// as peers rejecting every handshake. Ed25519 and ECDSA keys make and verify one
    /// signature; RSA keys (slow to sign with) have n = pq and de = 1 checked.
    fn self_test(&self) -> Result<(), KeyError> {
        if let KeypairData::Rsa(keypair) = self.inner.key_data() {
            return rsa_alg::check(keypair);
        }
        let Some(&alg) = self.sig_algs().first() else {
            return Ok(());
        };
        let data = b"sshr private key self-test";
        let signature = self.sign(alg, data)?;
        self.public
            .verify(Some(alg), data, &signature)
            .map(|_| ())
            .map_err(|_| KeyError::Signing("the private key does not match its public key"))
    }

    /// A new random Ed25519 key.
    pub fn generate_ed25519(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        Self::from_ed25519_keypair(Ed25519Keypair::random(rng))
    }

    /// The Ed25519 key with this 32-byte seed (the RFC 8032 private key).
    pub fn from_ed25519_seed(seed: &[u8; 32]) -> Self {
        Self::from_ed25519_keypair(Ed25519Keypair::from_seed(seed))
    }

    fn from_ed25519_keypair(keypair: Ed25519Keypair) -> Self {
        let inner = ssh_key::PrivateKey::new(KeypairData::Ed25519(keypair), "")
            .expect("an unencrypted Ed25519 key is a valid private key");
        let public = PublicKey::from_ssh_key(inner.public_key())
            .expect("an Ed25519 key derived from its seed is valid");
        Self { inner, public }
    }

    /// The key in the OpenSSH private key format (unencrypted, with its comment).
    pub fn to_openssh(&self) -> Result<Zeroizing<String>, KeyError> {
        Ok(self.inner.to_openssh(LineEnding::LF)?)
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    /// The public half, borrowed.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The comment stored with the key (often `user@host`).
    pub fn comment(&self) -> &str {
        self.inner.comment()
    }

    /// Signature algorithms this key can produce, in preference order
    /// (RSA: `rsa-sha2-512`, `rsa-sha2-256`).
    pub fn sig_algs(&self) -> &'static [SigAlg] {
        self.public.kind().sign_algs()
    }

    /// Sign `data`; returns the SSH signature blob `string alg-name || string signature`
    /// (RFC 4253 section 6.6; RFC 8332 for RSA; RFC 5656 section 3.1.2 for ECDSA, where
    /// the inner blob is `mpint r || mpint s`; RFC 8709 for Ed25519).
    ///
    /// Errors if `alg` is not one of [`PrivateKey::sig_algs`].
    pub fn sign(&self, alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        if !self.sig_algs().contains(&alg) {
            return Err(KeyError::UnsupportedSignatureAlgorithm {
                key: self.public.algorithm_name(),
                alg,
            });
        }
        match self.inner.key_data() {
            KeypairData::Rsa(keypair) => rsa_alg::sign(keypair, alg, data),
            keypair => {
                // Ed25519 (RFC 8032) and ECDSA (SHA-256 for P-256, SHA-384 for P-384,
                // RFC 6979 nonces) signing is ssh-key's; it already encodes ECDSA
                // signatures as `mpint r || mpint s`.
                use ed25519_dalek::Signer as _;
                let signature = keypair
                    .try_sign(data)
                    .map_err(|_| KeyError::Signing("signature primitive failed"))?;
                if signature.algorithm() != alg.ssh_key_algorithm() {
                    return Err(KeyError::Signing("unexpected signature algorithm"));
                }
                Ok(signature_blob(alg, signature.as_bytes()))
            }
        }
    }

    /// The wrapped `ssh_key` private key.
    pub fn as_ssh_key(&self) -> &ssh_key::PrivateKey {
        &self.inner
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey({} {})",
            self.public.algorithm_name(),
            self.public.fingerprint()
        )
    }
}

/// Pad an RSA signature to the modulus length like OpenSSH does (some implementations
/// drop leading zero bytes); longer than the modulus is malformed.
fn rsa_padded_signature<'a>(
    key: &RsaPublicKey,
    raw: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, VerifyError> {
    let modulus_len = key
        .n
        .as_positive_bytes()
        .ok_or(VerifyError::MalformedKey)?
        .len();
    if raw.is_empty() || raw.len() > modulus_len {
        return Err(VerifyError::MalformedSignature);
    }
    if raw.len() == modulus_len {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    let mut padded = vec![0; modulus_len - raw.len()];
    padded.extend_from_slice(raw);
    Ok(std::borrow::Cow::Owned(padded))
}

// RSA signing and verification.
//
// ssh-key 0.6.7's own RSA signer cannot be used: it only makes rsa-sha2-512, and it
// builds the `rsa` key from the primes `[p, p]` instead of `[p, q]`, which the `rsa`
// crate rejects since 0.9.7 (the lock file has 0.9.10), so every RSA signature fails
// (RustCrypto/SSH#387, RustCrypto/RSA#463). Its verifier works, for both hashes, but
// only for keys up to 4096 bits (`rsa::RsaPublicKey::new`).
//
// Signing therefore goes through the `rsa` crate directly (a dependency of this
// crate for that reason).

mod rsa_alg {
    use super::{rsa_padded_signature, KeyError, SigAlg, VerifyError};
    use rand_chacha::rand_core::SeedableRng as _;
    use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Verifier as _};
    use rsa::{pkcs1v15, BigUint};
    use sha2::{Digest as _, Sha256, Sha512};
    use ssh_key::private::RsaKeypair;
    use ssh_key::public::RsaPublicKey;
    use ssh_key::Mpint;
    use zeroize::Zeroizing;

    pub(super) const SIGN_ALGS: &[SigAlg] = &[SigAlg::RsaSha2_512, SigAlg::RsaSha2_256];
    /// OpenSSH's limit (`SSHBUF_MAX_BIGNUM`).
    pub(super) const MAX_VERIFY_BITS: usize = 16384;

    fn uint(m: &Mpint) -> Result<BigUint, KeyError> {
        m.as_positive_bytes()
            .map(BigUint::from_bytes_be)
            .ok_or(KeyError::Signing("negative RSA key component"))
    }

    /// The `rsa` crate's key; `from_components` checks n = pq and de = 1 mod (p-1),
    /// (q-1). It zeroizes on drop.
    fn private_key(keypair: &RsaKeypair) -> Result<rsa::RsaPrivateKey, KeyError> {
        let private = &keypair.private;
        rsa::RsaPrivateKey::from_components(
            uint(&keypair.public.n)?,
            uint(&keypair.public.e)?,
            uint(&private.d)?,
            vec![uint(&private.p)?, uint(&private.q)?],
        )
        .map_err(|_| KeyError::Signing("invalid RSA private key"))
    }

    pub(super) fn check(keypair: &RsaKeypair) -> Result<(), KeyError> {
        private_key(keypair).map(drop)
    }

    pub(super) fn sign(
        keypair: &RsaKeypair,
        alg: SigAlg,
        data: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let key = private_key(keypair)?;
        // PKCS#1 v1.5 signatures are deterministic; the RNG only blinds the private key
        // operation against timing attacks. Seeding it from the key and the message
        // keeps this API free of an RNG argument while keeping the blinding factor
        // secret and fresh for every message.
        let mut seed = Zeroizing::new([0u8; 32]);
        let digest = Zeroizing::new(
            Sha512::new()
                .chain_update(b"sshr rsa blinding\0")
                .chain_update(keypair.private.d.as_bytes())
                .chain_update(alg.name())
                .chain_update(data)
                .finalize(),
        );
        seed.copy_from_slice(&digest[..32]);
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
        let signature = match alg {
            SigAlg::RsaSha2_256 => pkcs1v15::SigningKey::<Sha256>::new(key)
                .try_sign_with_rng(&mut rng, data)
                .map(|s| s.to_vec()),
            SigAlg::RsaSha2_512 => pkcs1v15::SigningKey::<Sha512>::new(key)
                .try_sign_with_rng(&mut rng, data)
                .map(|s| s.to_vec()),
            _ => unreachable!("only RSA algorithms reach here"),
        }
        .map_err(|_| KeyError::Signing("RSA signature failed"))?;
        Ok(super::signature_blob(alg, &signature))
    }

    pub(super) fn verify(
        key: &RsaPublicKey,
        alg: SigAlg,
        data: &[u8],
        raw: &[u8],
    ) -> Result<(), VerifyError> {
        let raw = rsa_padded_signature(key, raw)?;
        let component = |m: &Mpint| {
            m.as_positive_bytes()
                .map(BigUint::from_bytes_be)
                .ok_or(VerifyError::MalformedKey)
        };
        let public = rsa::RsaPublicKey::new_with_max_size(
            component(&key.n)?,
            component(&key.e)?,
            MAX_VERIFY_BITS,
        )
        .map_err(|_| VerifyError::MalformedKey)?;
        let signature =
            pkcs1v15::Signature::try_from(&raw[..]).map_err(|_| VerifyError::MalformedSignature)?;
        // The hash is the one named in the signature, checked against the DigestInfo.
        match alg {
            SigAlg::RsaSha2_256 => {
                pkcs1v15::VerifyingKey::<Sha256>::new(public).verify(data, &signature)
            }
            SigAlg::RsaSha2_512 => {
                pkcs1v15::VerifyingKey::<Sha512>::new(public).verify(data, &signature)
            }
            _ => unreachable!("only RSA algorithms reach here"),
        }
        .map_err(|_| VerifyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng as _;
    use sha2::{Digest as _, Sha256, Sha512};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fixtures made by OpenSSH 9.2 with `tests/data/hostkey/generate.sh`.
    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../tests/data/hostkey/", $name))
        };
    }

    const NAMESPACE: &str = "sshr-hostkey-test";
    const MESSAGE: &[u8] = include_bytes!("../tests/data/hostkey/message.txt");

    struct KeyFixture {
        name: &'static str,
        private: &'static str,
        public: &'static str,
        /// `ssh-keygen -l -E sha256` output.
        fingerprint: &'static str,
        /// `ssh-keygen -Y sign` output.
        sshsig: &'static str,
        /// Algorithm of the signature inside `sshsig`.
        sshsig_alg: SigAlg,
    }

    const KEYS: [KeyFixture; 5] = [
        KeyFixture {
            name: "ed25519",
            private: fixture!("ed25519"),
            public: fixture!("ed25519.pub"),
            fingerprint: fixture!("ed25519.fp"),
            sshsig: fixture!("ed25519.sig"),
            sshsig_alg: SigAlg::Ed25519,
        },
        KeyFixture {
            name: "ecdsa256",
            private: fixture!("ecdsa256"),
            public: fixture!("ecdsa256.pub"),
            fingerprint: fixture!("ecdsa256.fp"),
            sshsig: fixture!("ecdsa256.sig"),
            sshsig_alg: SigAlg::EcdsaP256,
        },
        KeyFixture {
            name: "ecdsa384",
            private: fixture!("ecdsa384"),
            public: fixture!("ecdsa384.pub"),
            fingerprint: fixture!("ecdsa384.fp"),
            sshsig: fixture!("ecdsa384.sig"),
            sshsig_alg: SigAlg::EcdsaP384,
        },
        KeyFixture {
            name: "rsa2048",
            private: fixture!("rsa2048"),
            public: fixture!("rsa2048.pub"),
            fingerprint: fixture!("rsa2048.fp"),
            sshsig: fixture!("rsa2048.sig"),
            sshsig_alg: SigAlg::RsaSha2_512,
        },
        KeyFixture {
            name: "rsa3072",
            private: fixture!("rsa3072"),
            public: fixture!("rsa3072.pub"),
            fingerprint: fixture!("rsa3072.fp"),
            sshsig: fixture!("rsa3072.sig"),
            sshsig_alg: SigAlg::RsaSha2_512,
        },
    ];

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("test hex")
    }

    fn string(value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, value);
        out
    }

    /// Second field of a `.pub`-like line, decoded.
    fn blob_of_line(line: &str) -> Vec<u8> {
        let b64 = line.split_whitespace().nth(1).expect("line has a key");
        Base64::decode_vec(b64).expect("fixture base64")
    }

    /// Split a signature blob into its name and inner signature.
    fn split_sig(blob: &[u8]) -> (String, Vec<u8>) {
        let mut r = blob;
        let name = read_string(&mut r).expect("name");
        let raw = read_string(&mut r).expect("signature");
        assert!(r.is_empty());
        (String::from_utf8(name.to_vec()).unwrap(), raw.to_vec())
    }

    fn with_raw(name: &str, raw: &[u8]) -> Vec<u8> {
        let mut blob = string(name.as_bytes());
        put_string(&mut blob, raw);
        blob
    }

    /// A parsed SSHSIG (OpenSSH PROTOCOL.sshsig).
    struct SshSig {
        public_key: Vec<u8>,
        namespace: String,
        hash_alg: String,
        signature: Vec<u8>,
    }

    fn parse_sshsig(armored: &str) -> SshSig {
        let body: String = armored
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let bin = Base64::decode_vec(&body).expect("SSHSIG base64");
        let mut r = &bin[..];
        assert_eq!(&r[..6], b"SSHSIG");
        assert_eq!(&r[6..10], &[0, 0, 0, 1], "SSHSIG version 1");
        r = &r[10..];
        let mut next = || read_string(&mut r).expect("SSHSIG field").to_vec();
        let public_key = next();
        let namespace = String::from_utf8(next()).unwrap();
        let _reserved = next();
        let hash_alg = String::from_utf8(next()).unwrap();
        let signature = next();
        assert!(r.is_empty());
        SshSig {
            public_key,
            namespace,
            hash_alg,
            signature,
        }
    }

    /// The data an SSHSIG signature covers.
    fn sshsig_preimage(namespace: &str, hash_alg: &str, message: &[u8]) -> Vec<u8> {
        let hash = match hash_alg {
            "sha256" => Sha256::digest(message).to_vec(),
            "sha512" => Sha512::digest(message).to_vec(),
            other => panic!("unknown SSHSIG hash {other}"),
        };
        let mut out = b"SSHSIG".to_vec();
        put_string(&mut out, namespace.as_bytes());
        put_string(&mut out, b"");
        put_string(&mut out, hash_alg.as_bytes());
        put_string(&mut out, &hash);
        out
    }

    fn armor_sshsig(public_key: &PublicKey, signature_blob: &[u8]) -> String {
        let mut bin = b"SSHSIG".to_vec();
        bin.extend_from_slice(&1u32.to_be_bytes());
        put_string(&mut bin, public_key.blob());
        put_string(&mut bin, NAMESPACE.as_bytes());
        put_string(&mut bin, b"");
        put_string(&mut bin, b"sha512");
        put_string(&mut bin, signature_blob);
        let b64 = Base64::encode_string(&bin);
        let mut out = String::from("-----BEGIN SSH SIGNATURE-----\n");
        for chunk in b64.as_bytes().chunks(70) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str("-----END SSH SIGNATURE-----\n");
        out
    }

    /// Ask real OpenSSH (`ssh-keygen -Y check-novalidate`) whether `signature_blob`,
    /// made by `key` over the SSHSIG preimage of `message` (namespace `NAMESPACE`,
    /// hash sha512), is valid. `None` when ssh-keygen is not installed.
    fn openssh_accepts(key: &PublicKey, signature_blob: &[u8], message: &[u8]) -> Option<bool> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sshr-hostkey-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sig_path = dir.join("message.sig");
        let msg_path = dir.join("message");
        std::fs::write(&sig_path, armor_sshsig(key, signature_blob)).unwrap();
        std::fs::write(&msg_path, message).unwrap();
        let result = Command::new("ssh-keygen")
            .args(["-Y", "check-novalidate", "-n", NAMESPACE, "-s"])
            .arg(&sig_path)
            .stdin(std::fs::File::open(&msg_path).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        std::fs::remove_dir_all(&dir).ok();
        match result {
            Ok(status) => Some(status.success()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("ssh-keygen not installed: skipping the OpenSSH cross-check");
                None
            }
            Err(err) => panic!("running ssh-keygen: {err}"),
        }
    }

    /// Split an OpenSSH certificate (PROTOCOL.certkeys) of an Ed25519 or RSA key into
    /// (signed bytes, CA key blob, signature blob).
    fn split_cert(blob: &[u8]) -> (&[u8], &[u8], &[u8]) {
        let mut r = blob;
        let cert_type = read_string(&mut r).unwrap();
        let key_fields = match cert_type {
            b"ssh-ed25519-cert-v01@openssh.com" => 1,
            b"ssh-rsa-cert-v01@openssh.com" => 2,
            other => panic!("cert type {}", String::from_utf8_lossy(other)),
        };
        read_string(&mut r).unwrap(); // nonce
        for _ in 0..key_fields {
            read_string(&mut r).unwrap();
        }
        r = &r[8 + 4..]; // serial, type
        read_string(&mut r).unwrap(); // key id
        read_string(&mut r).unwrap(); // valid principals
        r = &r[8 + 8..]; // valid after, valid before
        for _ in 0..3 {
            read_string(&mut r).unwrap(); // critical options, extensions, reserved
        }
        let ca = read_string(&mut r).unwrap();
        let signed_len = blob.len() - r.len();
        let signature = read_string(&mut r).unwrap();
        assert!(r.is_empty());
        (&blob[..signed_len], ca, signature)
    }

    #[test]
    fn sig_alg_names() {
        let names: Vec<_> = SigAlg::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(
            names,
            [
                "ssh-ed25519",
                "ecdsa-sha2-nistp256",
                "ecdsa-sha2-nistp384",
                "rsa-sha2-512",
                "rsa-sha2-256"
            ]
        );
        for alg in SigAlg::ALL {
            assert_eq!(SigAlg::from_name(alg.name()), Some(alg));
            assert_eq!(alg.to_string(), alg.name());
        }
        assert_eq!(SigAlg::from_name("ssh-rsa"), None);
        assert_eq!(SigAlg::from_name("ssh-dss"), None);
        assert_eq!(SigAlg::from_name("ecdsa-sha2-nistp521"), None);
        assert_eq!(SigAlg::from_name(""), None);
        assert_eq!(SigAlg::RsaSha2_256.key_type_name(), "ssh-rsa");
        assert_eq!(SigAlg::RsaSha2_512.key_type_name(), "ssh-rsa");
        assert_eq!(SigAlg::EcdsaP384.key_type_name(), "ecdsa-sha2-nistp384");
    }

    /// RFC 8032 section 7.1, TEST 1 to 3: exact signature bytes through our wrappers.
    #[test]
    fn rfc8032_ed25519_vectors() {
        let vectors = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
                 5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                 085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
            (
                "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac\
                 18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            ),
        ];
        for (seed, public, message, signature) in vectors {
            let seed: [u8; 32] = unhex(seed).try_into().unwrap();
            let message = unhex(message);
            let expected_blob = with_raw("ssh-ed25519", &unhex(signature));

            // Through from_ed25519_seed and through an ssh_key keypair built from the seed.
            let from_seed = PrivateKey::from_ed25519_seed(&seed);
            let via_ssh_key = PrivateKey::from_ssh_key(
                ssh_key::PrivateKey::new(
                    KeypairData::Ed25519(Ed25519Keypair::from_seed(&seed)),
                    "rfc8032",
                )
                .unwrap(),
            )
            .unwrap();
            for key in [from_seed, via_ssh_key] {
                let mut public_blob = string(b"ssh-ed25519");
                put_string(&mut public_blob, &unhex(public));
                assert_eq!(key.public().to_blob(), public_blob);
                assert_eq!(key.sig_algs(), &[SigAlg::Ed25519]);

                let blob = key.sign(SigAlg::Ed25519, &message).unwrap();
                assert_eq!(hex::encode(&blob), hex::encode(&expected_blob));

                let public = PublicKey::from_blob(&public_blob).unwrap();
                assert_eq!(public.verify(None, &message, &blob), Ok(SigAlg::Ed25519));
                assert_eq!(
                    public.verify(Some(SigAlg::Ed25519), &message, &blob),
                    Ok(SigAlg::Ed25519)
                );
                let mut other = message.clone();
                other.push(0);
                assert_eq!(
                    public.verify(None, &other, &blob),
                    Err(VerifyError::BadSignature)
                );
            }
        }
    }

    #[test]
    fn openssh_keys_round_trip() {
        for f in &KEYS {
            let key =
                PrivateKey::from_openssh(f.private).unwrap_or_else(|e| panic!("{}: {e}", f.name));
            assert_eq!(key.comment(), format!("{}@sshr-test", f.name));

            // Re-encoding gives back ssh-keygen's file byte for byte.
            assert_eq!(key.to_openssh().unwrap().as_str(), f.private, "{}", f.name);
            let again = PrivateKey::from_openssh(&key.to_openssh().unwrap()).unwrap();
            assert_eq!(again.public(), key.public());

            // Public key text, blob and fingerprint agree with ssh-keygen's.
            let line_without_comment = f.public.split(' ').take(2).collect::<Vec<_>>().join(" ");
            assert_eq!(key.public().to_openssh(), line_without_comment);
            assert_eq!(key.public().to_string(), line_without_comment);
            let public = PublicKey::from_openssh(f.public).unwrap();
            assert_eq!(public, key.public());
            assert_eq!(
                PublicKey::from_openssh(&line_without_comment).unwrap(),
                public
            );
            assert_eq!(public.to_blob(), blob_of_line(f.public));
            assert_eq!(PublicKey::from_blob(&public.to_blob()).unwrap(), public);
            let expected_fp = f.fingerprint.split(' ').nth(1).unwrap();
            assert!(expected_fp.starts_with("SHA256:"));
            assert_eq!(public.fingerprint(), expected_fp, "{}", f.name);
            assert_eq!(
                format!("{key:?}"),
                format!("PrivateKey({} {expected_fp})", public.algorithm_name())
            );

            let kind = f.sshsig_alg.key_type_name();
            assert_eq!(public.algorithm_name(), kind);
            for alg in SigAlg::ALL {
                assert_eq!(public.accepts(alg), alg.key_type_name() == kind);
            }
            let expected_sign_algs: &[SigAlg] = match f.sshsig_alg {
                SigAlg::RsaSha2_512 => rsa_alg::SIGN_ALGS,
                alg => &[alg][..],
            };
            assert_eq!(key.sig_algs(), expected_sign_algs, "{}", f.name);
        }
    }

    #[test]
    fn generated_ed25519_key() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
        let key = PrivateKey::generate_ed25519(&mut rng);
        let other = PrivateKey::generate_ed25519(&mut rng);
        assert_ne!(key.public(), other.public());
        let text = key.to_openssh().unwrap();
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let reloaded = PrivateKey::from_openssh(&text).unwrap();
        assert_eq!(reloaded.public(), key.public());
        let blob = key.sign(SigAlg::Ed25519, b"data").unwrap();
        assert_eq!(reloaded.sign(SigAlg::Ed25519, b"data").unwrap(), blob);
        assert_eq!(
            key.public().verify(Some(SigAlg::Ed25519), b"data", &blob),
            Ok(SigAlg::Ed25519)
        );
        let preimage = sshsig_preimage(NAMESPACE, "sha512", MESSAGE);
        if let Some(ok) = openssh_accepts(
            &key.public(),
            &key.sign(SigAlg::Ed25519, &preimage).unwrap(),
            MESSAGE,
        ) {
            assert!(ok, "OpenSSH rejected a generated key's signature");
        }
    }

    /// `ssh-keygen -Y sign` signatures of every key type verify with our `verify`.
    #[test]
    fn verifies_openssh_sshsig_signatures() {
        let mut cases: Vec<(&str, &str, &str, SigAlg)> = KEYS
            .iter()
            .map(|f| (f.name, f.public, f.sshsig, f.sshsig_alg))
            .collect();
        cases.push((
            "ed25519 (sha256 message hash)",
            fixture!("ed25519.pub"),
            fixture!("ed25519-sha256.sig"),
            SigAlg::Ed25519,
        ));
        for (name, public, armored, alg) in cases {
            let key = PublicKey::from_openssh(public).unwrap();
            let sig = parse_sshsig(armored);
            assert_eq!(sig.public_key, key.to_blob(), "{name}");
            assert_eq!(sig.namespace, NAMESPACE);
            assert_eq!(split_sig(&sig.signature).0, alg.name(), "{name}");
            let preimage = sshsig_preimage(&sig.namespace, &sig.hash_alg, MESSAGE);
            assert_eq!(
                key.verify(None, &preimage, &sig.signature),
                Ok(alg),
                "{name}"
            );
            assert_eq!(key.verify(Some(alg), &preimage, &sig.signature), Ok(alg));
            // Wrong namespace, wrong message.
            let other = sshsig_preimage("other", &sig.hash_alg, MESSAGE);
            assert_eq!(
                key.verify(Some(alg), &other, &sig.signature),
                Err(VerifyError::BadSignature),
                "{name}"
            );
            let other = sshsig_preimage(NAMESPACE, &sig.hash_alg, b"other message");
            assert_eq!(
                key.verify(Some(alg), &other, &sig.signature),
                Err(VerifyError::BadSignature),
                "{name}"
            );
        }
    }

    /// OpenSSH certificates signed by `ssh-keygen -s -t <alg>`: the only way to get
    /// real OpenSSH `rsa-sha2-256` (and legacy `ssh-rsa`) signatures from ssh-keygen.
    #[test]
    fn verifies_openssh_certificate_signatures() {
        let cases = [
            (
                fixture!("user-ca-rsa-sha2-256-cert.pub"),
                fixture!("rsa2048.pub"),
                SigAlg::RsaSha2_256,
            ),
            (
                fixture!("user-ca-rsa-sha2-512-cert.pub"),
                fixture!("rsa2048.pub"),
                SigAlg::RsaSha2_512,
            ),
            (
                fixture!("user-ca-ed25519-cert.pub"),
                fixture!("ed25519.pub"),
                SigAlg::Ed25519,
            ),
            (
                fixture!("user-ca-ecdsa256-cert.pub"),
                fixture!("ecdsa256.pub"),
                SigAlg::EcdsaP256,
            ),
            (
                fixture!("user-ca-ecdsa384-cert.pub"),
                fixture!("ecdsa384.pub"),
                SigAlg::EcdsaP384,
            ),
        ];
        for (cert, ca_pub, alg) in cases {
            let blob = blob_of_line(cert);
            let (signed, ca_blob, signature) = split_cert(&blob);
            let ca = PublicKey::from_blob(ca_blob).unwrap();
            assert_eq!(ca, PublicKey::from_openssh(ca_pub).unwrap());
            assert_eq!(split_sig(signature).0, alg.name());
            assert_eq!(ca.verify(Some(alg), signed, signature), Ok(alg));
            assert_eq!(ca.verify(None, signed, signature), Ok(alg));
            assert_eq!(
                ca.verify(None, &signed[1..], signature),
                Err(VerifyError::BadSignature)
            );
        }

        // The verifier checks the hash named in the blob: relabelling an RSA signature
        // as the other SHA-2 variant fails.
        let blob = blob_of_line(fixture!("user-ca-rsa-sha2-256-cert.pub"));
        let (signed, ca_blob, signature) = split_cert(&blob);
        let ca = PublicKey::from_blob(ca_blob).unwrap();
        let relabelled = with_raw("rsa-sha2-512", &split_sig(signature).1);
        assert_eq!(
            ca.verify(None, signed, &relabelled),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            ca.verify(Some(SigAlg::RsaSha2_256), signed, signature),
            Ok(SigAlg::RsaSha2_256)
        );
        assert_eq!(
            ca.verify(Some(SigAlg::RsaSha2_512), signed, signature),
            Err(VerifyError::UnexpectedAlgorithm {
                expected: SigAlg::RsaSha2_512,
                signature: SigAlg::RsaSha2_256,
            })
        );
    }

    /// A real OpenSSH `ssh-rsa` (SHA-1) signature is refused, however it is labelled.
    #[test]
    fn refuses_ssh_rsa_sha1_signatures() {
        let blob = blob_of_line(fixture!("user-ca-ssh-rsa-cert.pub"));
        let (signed, ca_blob, signature) = split_cert(&blob);
        let ca = PublicKey::from_blob(ca_blob).unwrap();
        assert_eq!(split_sig(signature).0, "ssh-rsa");
        let refused = Err(VerifyError::UnsupportedAlgorithm("ssh-rsa".into()));
        assert_eq!(ca.verify(None, signed, signature), refused);
        assert_eq!(
            ca.verify(Some(SigAlg::RsaSha2_256), signed, signature),
            refused
        );
        assert_eq!(
            ca.verify(Some(SigAlg::RsaSha2_512), signed, signature),
            refused
        );
        // Relabelled as SHA-2 it does not verify either (the DigestInfo says SHA-1).
        let raw = split_sig(signature).1;
        for name in ["rsa-sha2-256", "rsa-sha2-512"] {
            assert_eq!(
                ca.verify(None, signed, &with_raw(name, &raw)),
                Err(VerifyError::BadSignature)
            );
        }
    }

    /// Our signatures, for every key type and algorithm we sign with, pass real
    /// OpenSSH's `ssh-keygen -Y check-novalidate`; a tampered one does not.
    #[test]
    fn openssh_verifies_our_signatures() {
        let preimage = sshsig_preimage(NAMESPACE, "sha512", MESSAGE);
        let mut checked = Vec::new();
        // rsa3072 signs like rsa2048, only slower in debug builds.
        for f in KEYS.iter().filter(|f| f.name != "rsa3072") {
            let key = PrivateKey::from_openssh(f.private).unwrap();
            let public = key.public();
            for &alg in key.sig_algs() {
                let mut blob = key.sign(alg, &preimage).unwrap();
                assert_eq!(split_sig(&blob).0, alg.name());
                assert_eq!(public.verify(Some(alg), &preimage, &blob), Ok(alg));
                let Some(ok) = openssh_accepts(&public, &blob, MESSAGE) else {
                    return;
                };
                assert!(ok, "OpenSSH rejected our {} {alg} signature", f.name);
                checked.push(alg);
                // ... and the check can fail.
                *blob.last_mut().unwrap() ^= 1;
                assert_eq!(openssh_accepts(&public, &blob, MESSAGE), Some(false));
            }
        }
        for alg in [SigAlg::Ed25519, SigAlg::EcdsaP256, SigAlg::EcdsaP384] {
            assert!(checked.contains(&alg), "{alg} not cross-checked");
        }
        if !rsa_alg::SIGN_ALGS.is_empty() {
            assert!(checked.contains(&SigAlg::RsaSha2_256));
            assert!(checked.contains(&SigAlg::RsaSha2_512));
        }
    }

    /// ECDSA signatures are `string(mpint r || mpint s)` with minimal mpints: a zero byte
    /// in front when the top bit is set, none otherwise. Deterministic (RFC 6979)
    /// signatures over 12 messages include both shapes; OpenSSH accepts them all.
    #[test]
    fn ecdsa_signature_encoding() {
        for (f, field_len) in [(&KEYS[1], 32), (&KEYS[2], 48)] {
            let key = PrivateKey::from_openssh(f.private).unwrap();
            let alg = key.sig_algs()[0];
            let (mut padded, mut unpadded) = (0, 0);
            for i in 0..12u8 {
                let message = [MESSAGE, &[i]].concat();
                let preimage = sshsig_preimage(NAMESPACE, "sha512", &message);
                let blob = key.sign(alg, &preimage).unwrap();
                let (name, raw) = split_sig(&blob);
                assert_eq!(name, alg.name());
                let mut r = &raw[..];
                for _ in 0..2 {
                    let m = read_string(&mut r).expect("mpint");
                    assert!(!m.is_empty() && m.len() <= field_len + 1);
                    if m[0] == 0 {
                        assert!(m.len() > 1 && m[1] & 0x80 != 0, "non-minimal mpint");
                        padded += 1;
                    } else {
                        assert!(m[0] & 0x80 == 0, "negative mpint");
                        unpadded += 1;
                    }
                }
                assert!(r.is_empty());
                assert_eq!(key.public().verify(Some(alg), &preimage, &blob), Ok(alg));
                if let Some(ok) = openssh_accepts(&key.public(), &blob, &message) {
                    assert!(ok, "OpenSSH rejected {alg} signature {i}");
                }
            }
            assert!(padded > 0 && unpadded > 0, "{padded} {unpadded}");
        }
    }

    #[test]
    fn rsa_signing() {
        let key = PrivateKey::from_openssh(KEYS[3].private).unwrap();
        let public = key.public();
        if rsa_alg::SIGN_ALGS.is_empty() {
            // Without the `rsa` crate (see the comment on `rsa_alg`).
            assert!(key.sig_algs().is_empty());
            for alg in [SigAlg::RsaSha2_512, SigAlg::RsaSha2_256] {
                assert!(matches!(
                    key.sign(alg, b"data"),
                    Err(KeyError::UnsupportedSignatureAlgorithm { key: "ssh-rsa", .. })
                ));
            }
            return;
        }
        assert_eq!(key.sig_algs(), &[SigAlg::RsaSha2_512, SigAlg::RsaSha2_256]);
        let data = b"exchange hash";
        for alg in [SigAlg::RsaSha2_512, SigAlg::RsaSha2_256] {
            let blob = key.sign(alg, data).unwrap();
            let (name, raw) = split_sig(&blob);
            assert_eq!(name, alg.name());
            assert_eq!(raw.len(), 256, "padded to the modulus length");
            // PKCS#1 v1.5 is deterministic (the blinding does not change the result).
            assert_eq!(key.sign(alg, data).unwrap(), blob);
            assert_eq!(public.verify(Some(alg), data, &blob), Ok(alg));
            let other = if alg == SigAlg::RsaSha2_256 {
                SigAlg::RsaSha2_512
            } else {
                SigAlg::RsaSha2_256
            };
            assert_eq!(
                public.verify(None, data, &with_raw(other.name(), &raw)),
                Err(VerifyError::BadSignature)
            );
            assert_eq!(
                public.verify(Some(other), data, &blob),
                Err(VerifyError::UnexpectedAlgorithm {
                    expected: other,
                    signature: alg
                })
            );
        }
    }

    #[test]
    fn rsa_key_sizes() {
        let small = PublicKey::from_openssh(fixture!("rsa1024.pub"));
        assert!(matches!(
            small,
            Err(KeyError::UnsupportedKeySize { bits: 1024, .. })
        ));
        assert!(small
            .unwrap_err()
            .to_string()
            .starts_with("unsupported RSA key size: 1024 bits (supported: 2048 to "));
        assert!(matches!(
            PrivateKey::from_openssh(fixture!("rsa1024")),
            Err(KeyError::UnsupportedKeySize { bits: 1024, .. })
        ));
        assert_eq!(
            PublicKey::from_blob(&blob_of_line(fixture!("rsa1024.pub"))),
            Err(VerifyError::UnsupportedKeySize {
                bits: 1024,
                max: MAX_RSA_VERIFY_BITS
            })
        );

        // 5120 bits: beyond ssh-key's verifier, within OpenSSH's (and ours with `rsa`).
        let big = PublicKey::from_openssh(fixture!("rsa5120.pub"));
        if MAX_RSA_VERIFY_BITS < 5120 {
            assert!(matches!(
                big,
                Err(KeyError::UnsupportedKeySize { bits: 5120, .. })
            ));
        } else {
            let big = big.unwrap();
            let sig = parse_sshsig(fixture!("rsa5120.sig"));
            let preimage = sshsig_preimage(NAMESPACE, &sig.hash_alg, MESSAGE);
            assert_eq!(
                big.verify(None, &preimage, &sig.signature),
                Ok(SigAlg::RsaSha2_512)
            );
        }
    }

    #[test]
    fn tampered_signatures_are_bad() {
        for f in &KEYS {
            let key = PublicKey::from_openssh(f.public).unwrap();
            let sig = parse_sshsig(f.sshsig);
            let preimage = sshsig_preimage(NAMESPACE, &sig.hash_alg, MESSAGE);
            let (name, raw) = split_sig(&sig.signature);
            for index in [raw.len() - 1, 8, 12] {
                let mut bad = raw.clone();
                bad[index] ^= 0x01;
                assert_eq!(
                    key.verify(None, &preimage, &with_raw(&name, &bad)),
                    Err(VerifyError::BadSignature),
                    "{} byte {index}",
                    f.name
                );
            }
            let mut data = preimage.clone();
            data[0] ^= 0x20;
            assert_eq!(
                key.verify(None, &data, &sig.signature),
                Err(VerifyError::BadSignature)
            );
        }
    }

    #[test]
    fn algorithm_must_fit_key_and_announcement() {
        let ed = PublicKey::from_openssh(fixture!("ed25519.pub")).unwrap();
        let p256 = PublicKey::from_openssh(fixture!("ecdsa256.pub")).unwrap();
        let rsa = PublicKey::from_openssh(fixture!("rsa2048.pub")).unwrap();
        let ed_sig = parse_sshsig(fixture!("ed25519.sig")).signature;
        let p256_sig = parse_sshsig(fixture!("ecdsa256.sig")).signature;
        let rsa_sig = parse_sshsig(fixture!("rsa2048.sig")).signature;
        let data = sshsig_preimage(NAMESPACE, "sha512", MESSAGE);

        let mismatch = |key: &str, signature: &str| {
            Err(VerifyError::AlgorithmMismatch {
                key: key.into(),
                signature: signature.into(),
            })
        };
        // Signature type vs key type.
        assert_eq!(
            p256.verify(None, &data, &ed_sig),
            mismatch("ecdsa-sha2-nistp256", "ssh-ed25519")
        );
        assert_eq!(
            ed.verify(None, &data, &rsa_sig),
            mismatch("ssh-ed25519", "rsa-sha2-512")
        );
        assert_eq!(
            rsa.verify(None, &data, &p256_sig),
            mismatch("ssh-rsa", "ecdsa-sha2-nistp256")
        );
        let p384_sig = parse_sshsig(fixture!("ecdsa384.sig")).signature;
        assert_eq!(
            p256.verify(None, &data, &p384_sig),
            mismatch("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384")
        );
        // Announced algorithm vs key type, and vs the blob.
        assert_eq!(
            ed.verify(Some(SigAlg::RsaSha2_256), &data, &ed_sig),
            mismatch("ssh-ed25519", "rsa-sha2-256")
        );
        assert_eq!(
            rsa.verify(Some(SigAlg::RsaSha2_256), &data, &rsa_sig),
            Err(VerifyError::UnexpectedAlgorithm {
                expected: SigAlg::RsaSha2_256,
                signature: SigAlg::RsaSha2_512,
            })
        );
        assert_eq!(
            rsa.verify(Some(SigAlg::RsaSha2_512), &data, &rsa_sig),
            Ok(SigAlg::RsaSha2_512)
        );
        // Names we do not know.
        let raw = split_sig(&ed_sig).1;
        for name in [
            "ssh-dss",
            "ecdsa-sha2-nistp521",
            "sk-ssh-ed25519@openssh.com",
        ] {
            assert_eq!(
                ed.verify(None, &data, &with_raw(name, &raw)),
                Err(VerifyError::UnsupportedAlgorithm(name.into()))
            );
        }
        for name in ["", "ssh ed25519", "ssh-ed25519\n", &"x".repeat(65)] {
            assert_eq!(
                ed.verify(None, &data, &with_raw(name, &raw)),
                Err(VerifyError::MalformedSignature)
            );
        }
    }

    #[test]
    fn malformed_signature_blobs() {
        let data = sshsig_preimage(NAMESPACE, "sha512", MESSAGE);
        for f in &KEYS {
            let key = PublicKey::from_openssh(f.public).unwrap();
            let good = parse_sshsig(f.sshsig).signature;
            for len in 0..good.len() {
                assert_eq!(
                    key.verify(None, &data, &good[..len]),
                    Err(VerifyError::MalformedSignature),
                    "{} truncated to {len}",
                    f.name
                );
            }
            let mut trailing = good.clone();
            trailing.push(0);
            assert_eq!(
                key.verify(None, &data, &trailing),
                Err(VerifyError::MalformedSignature)
            );
            let mut huge = good.clone();
            huge[..4].copy_from_slice(&[0xff; 4]);
            assert_eq!(
                key.verify(None, &data, &huge),
                Err(VerifyError::MalformedSignature)
            );
            // Inner signature of the wrong shape.
            let (name, raw) = split_sig(&good);
            let shorter = with_raw(&name, &raw[..raw.len() - 1]);
            let longer = with_raw(&name, &[&raw[..], &[0]].concat());
            let expected_shorter = if name.starts_with("rsa-") {
                // Padded back to the modulus length like OpenSSH does; then it is wrong.
                VerifyError::BadSignature
            } else {
                VerifyError::MalformedSignature
            };
            assert_eq!(
                key.verify(None, &data, &shorter),
                Err(expected_shorter),
                "{}",
                f.name
            );
            assert_eq!(
                key.verify(None, &data, &longer),
                Err(VerifyError::MalformedSignature),
                "{}",
                f.name
            );
            assert_eq!(
                key.verify(None, &data, &with_raw(&name, &[])),
                Err(VerifyError::MalformedSignature)
            );
        }

        // ECDSA: non-minimal, negative or oversized mpints are malformed.
        let key = PublicKey::from_openssh(fixture!("ecdsa256.pub")).unwrap();
        let (name, raw) = split_sig(&parse_sshsig(fixture!("ecdsa256.sig")).signature);
        let mut r = &raw[..];
        let (sig_r, sig_s) = (read_string(&mut r).unwrap(), read_string(&mut r).unwrap());
        let ecdsa = |r: &[u8], s: &[u8]| {
            let mut inner = string(r);
            put_string(&mut inner, s);
            key.verify(None, &data, &with_raw(&name, &inner))
        };
        assert_eq!(ecdsa(sig_r, sig_s), Ok(SigAlg::EcdsaP256));
        let stripped = |m: &[u8]| m.strip_prefix(&[0]).unwrap_or(m).to_vec();
        let (r_bytes, s_bytes) = (stripped(sig_r), stripped(sig_s));
        let non_minimal = [&[0, 0][..], &r_bytes].concat();
        assert_eq!(
            ecdsa(&non_minimal, sig_s),
            Err(VerifyError::MalformedSignature)
        );
        let negative = [&[0x80][..], &s_bytes].concat();
        assert_eq!(
            ecdsa(sig_r, &negative),
            Err(VerifyError::MalformedSignature)
        );
        let oversized = [&[0x01][..], &[0u8; 32]].concat();
        assert_eq!(
            ecdsa(sig_r, &oversized),
            Err(VerifyError::MalformedSignature)
        );
        assert_eq!(ecdsa(&[], sig_s), Err(VerifyError::MalformedSignature));
        let mut with_extra = string(sig_r);
        put_string(&mut with_extra, sig_s);
        with_extra.push(0);
        assert_eq!(
            key.verify(None, &data, &with_raw(&name, &with_extra)),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn malformed_and_unsupported_key_blobs() {
        for f in &KEYS {
            let blob = blob_of_line(f.public);
            for len in 0..blob.len() {
                assert_eq!(
                    PublicKey::from_blob(&blob[..len]),
                    Err(VerifyError::MalformedKey),
                    "{} truncated to {len}",
                    f.name
                );
            }
            let mut trailing = blob.clone();
            trailing.push(0);
            assert_eq!(
                PublicKey::from_blob(&trailing),
                Err(VerifyError::MalformedKey)
            );
        }
        for (public, name) in [
            (fixture!("dsa.pub"), "ssh-dss"),
            (fixture!("ecdsa521.pub"), "ecdsa-sha2-nistp521"),
        ] {
            assert_eq!(
                PublicKey::from_blob(&blob_of_line(public)),
                Err(VerifyError::UnsupportedKeyType(name.into()))
            );
            assert!(matches!(
                PublicKey::from_openssh(public),
                Err(KeyError::UnsupportedKeyType(n)) if n == name
            ));
        }
        assert_eq!(
            PublicKey::from_blob(&string(b"ssh-ed25519-cert-v01@openssh.com")),
            Err(VerifyError::UnsupportedKeyType(
                "ssh-ed25519-cert-v01@openssh.com".into()
            ))
        );
        assert_eq!(
            PublicKey::from_blob(&string(b"\x00bad")),
            Err(VerifyError::MalformedKey)
        );
        assert_eq!(
            PublicKey::from_blob(&[0xff, 0xff, 0xff, 0xff, b's']),
            Err(VerifyError::MalformedKey)
        );

        // An Ed25519 "point" that does not decompress.
        let bad_point = (0u8..=255)
            .map(|i| {
                let mut y = [0u8; 32];
                y[0] = i;
                y[31] = 0x10;
                y
            })
            .find(|y| ed25519_dalek::VerifyingKey::from_bytes(y).is_err())
            .expect("some y is not on the curve");
        let mut blob = string(b"ssh-ed25519");
        put_string(&mut blob, &bad_point);
        assert_eq!(PublicKey::from_blob(&blob), Err(VerifyError::MalformedKey));

        // RSA with a non-minimal mpint (ssh-key decodes strictly).
        let rsa = blob_of_line(fixture!("rsa2048.pub"));
        let mut r = &rsa[..];
        read_string(&mut r).unwrap();
        let e = read_string(&mut r).unwrap();
        let n = read_string(&mut r).unwrap();
        let mut blob = string(b"ssh-rsa");
        put_string(&mut blob, &[&[0][..], e].concat());
        put_string(&mut blob, n);
        assert_eq!(PublicKey::from_blob(&blob), Err(VerifyError::MalformedKey));
    }

    #[test]
    fn private_key_errors() {
        let err = PrivateKey::from_openssh(fixture!("ed25519_encrypted")).unwrap_err();
        assert!(matches!(err, KeyError::Encrypted));
        assert_eq!(err.to_string(), "encrypted private keys are not supported");
        // Its public half is fine.
        PublicKey::from_openssh(fixture!("ed25519_encrypted.pub")).unwrap();

        assert!(matches!(
            PrivateKey::from_openssh(fixture!("dsa")),
            Err(KeyError::UnsupportedKeyType(n)) if n == "ssh-dss"
        ));
        assert!(matches!(
            PrivateKey::from_openssh(fixture!("ecdsa521")),
            Err(KeyError::UnsupportedKeyType(n)) if n == "ecdsa-sha2-nistp521"
        ));
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_openssh(pem),
            Err(KeyError::NotOpenSshFormat("PKCS#1 PEM"))
        ));
        assert!(matches!(
            PrivateKey::from_openssh("not a key"),
            Err(KeyError::Format(_))
        ));
        let truncated = &KEYS[0].private[..KEYS[0].private.len() / 2];
        assert!(PrivateKey::from_openssh(truncated).is_err());

        // Halves that do not belong together.
        let a = Ed25519Keypair::from_seed(&[1; 32]);
        let b = Ed25519Keypair::from_seed(&[2; 32]);
        let mixed = Ed25519Keypair {
            public: b.public,
            private: a.private.clone(),
        };
        let mixed = ssh_key::PrivateKey::new(KeypairData::Ed25519(mixed), "").unwrap();
        assert!(matches!(
            PrivateKey::from_ssh_key(mixed),
            Err(KeyError::Signing(_))
        ));

        // Signing with an algorithm the key does not have.
        let key = PrivateKey::from_openssh(KEYS[0].private).unwrap();
        for alg in [SigAlg::RsaSha2_256, SigAlg::EcdsaP256] {
            assert!(matches!(
                key.sign(alg, b"x"),
                Err(KeyError::UnsupportedSignatureAlgorithm { key: "ssh-ed25519", alg: a }) if a == alg
            ));
        }
        let key = PrivateKey::from_openssh(KEYS[1].private).unwrap();
        assert!(key.sign(SigAlg::EcdsaP384, b"x").is_err());
    }

    #[test]
    fn public_key_lines() {
        let ed = PublicKey::from_openssh(fixture!("ed25519.pub")).unwrap();
        let b64 = fixture!("ed25519.pub").split(' ').nth(1).unwrap();
        for line in [
            format!("ssh-ed25519 {b64}"),
            format!("ssh-ed25519\t{b64}\tcomment with spaces\r\n"),
            format!("  ssh-ed25519  {b64}  "),
        ] {
            assert_eq!(PublicKey::from_openssh(&line).unwrap(), ed, "{line:?}");
        }
        assert!(matches!(
            PublicKey::from_openssh(""),
            Err(KeyError::InvalidPublicKey(_))
        ));
        assert!(matches!(
            PublicKey::from_openssh("ssh-ed25519"),
            Err(KeyError::InvalidPublicKey(_))
        ));
        assert!(matches!(
            PublicKey::from_openssh("ssh-ed25519 AAAA!!!"),
            Err(KeyError::InvalidPublicKey(_))
        ));
        assert!(matches!(
            PublicKey::from_openssh(&format!("ssh-ed25519 {}", &b64[..b64.len() - 4])),
            Err(KeyError::InvalidPublicKey(_))
        ));
        let p256_b64 = fixture!("ecdsa256.pub").split(' ').nth(1).unwrap();
        assert!(matches!(
            PublicKey::from_openssh(&format!("ssh-ed25519 {p256_b64}")),
            Err(KeyError::KeyTypeMismatch { .. })
        ));
        assert_eq!(
            format!("{ed:?}"),
            format!("PublicKey(ssh-ed25519 {})", ed.fingerprint())
        );
    }

    #[test]
    fn authorized_keys_file() {
        let entries = parse_authorized_keys(fixture!("authorized_keys"));
        let key = |public: &str| PublicKey::from_openssh(public).unwrap();
        let ok = |i: usize| entries[i].as_ref().unwrap();
        let err_line = |i: usize| match &entries[i] {
            Err(KeyError::AuthorizedKeysLine { line, source }) => (*line, &**source),
            other => panic!("entry {i}: {other:?}"),
        };
        assert_eq!(entries.len(), 9);

        assert_eq!(
            *ok(0),
            AuthorizedKey {
                key: key(fixture!("ed25519.pub")),
                options: None,
                comment: "ed25519@sshr-test".into(),
                line: 3,
            }
        );
        assert_eq!(
            *ok(1),
            AuthorizedKey {
                key: key(fixture!("ecdsa256.pub")),
                options: Some(r#"command="echo 'hello world' # not a comment",no-pty"#.into()),
                comment: "with a comment".into(),
                line: 5,
            }
        );
        assert_eq!(
            *ok(2),
            AuthorizedKey {
                key: key(fixture!("rsa2048.pub")),
                options: Some(r#"restrict,from="10.0.0.1""#.into()),
                comment: String::new(),
                line: 6,
            }
        );
        assert_eq!(
            *ok(3),
            AuthorizedKey {
                key: key(fixture!("ecdsa384.pub")),
                options: None,
                comment: "tab separated".into(),
                line: 8,
            }
        );
        let (line, err) = err_line(4);
        assert_eq!(line, 9);
        assert!(
            matches!(err, KeyError::InvalidPublicKey("invalid base64")),
            "{err}"
        );
        assert_eq!(
            *ok(5),
            AuthorizedKey {
                key: key(fixture!("rsa3072.pub")),
                options: Some(r#"environment="A=\"quoted\" value""#.into()),
                comment: "escaped quote".into(),
                line: 10,
            }
        );
        let (line, err) = err_line(6);
        assert_eq!(line, 11);
        assert!(matches!(err, KeyError::InvalidPublicKey(_)), "{err}");
        let (line, err) = err_line(7);
        assert_eq!(line, 12);
        assert!(
            matches!(err, KeyError::UnsupportedKeyType(n) if n == "ssh-dss"),
            "{err}"
        );
        let (line, err) = err_line(8);
        assert_eq!(line, 13);
        assert!(matches!(err, KeyError::KeyTypeMismatch { .. }), "{err}");
        assert!(entries[8]
            .as_ref()
            .unwrap_err()
            .to_string()
            .starts_with("line 13: "));

        // Options without a key, unterminated quotes, CRLF line ends, empty input.
        let b64 = fixture!("ed25519.pub").split(' ').nth(1).unwrap();
        let text =
            format!("no-pty\r\ncommand=\"oops ssh-ed25519 {b64}\r\nno-pty ssh-ed25519 {b64}\r\n");
        let entries = parse_authorized_keys(&text);
        assert_eq!(entries.len(), 3);
        assert!(entries[0].is_err() && entries[1].is_err());
        let last = entries[2].as_ref().unwrap();
        assert_eq!(last.options.as_deref(), Some("no-pty"));
        assert_eq!(last.comment, "");
        assert!(parse_authorized_keys("").is_empty());
        assert!(parse_authorized_keys("\n# only a comment\n   \n").is_empty());
    }
}
