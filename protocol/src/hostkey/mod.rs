//! Host keys, user keys and SSH signatures.
//!
//! Used in both roles of the transport (the server signs the exchange hash with its
//! host key, the client verifies it) and in publickey user authentication (the proxy
//! verifies a user's signature, and signs as a client to log in upstream).
//!
//! Key parsing comes from the `ssh-key` crate; the signature math from the crypto
//! provider ([`crate::crypto::Signatures`]: AWS-LC, or the RustCrypto crates). This
//! module picks the algorithms, frames the SSH wire encodings and enforces the policy:
//!
//! * supported key types: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ecdsa-sha2-nistp384`,
//!   `ecdsa-sha2-nistp521` and `ssh-rsa` keys of 1024 bits or more (OpenSSH's floor); a
//!   caller may require more of RSA keys ([`PublicKey::check_rsa_size`], as OpenSSH's
//!   `RequiredRSASize`);
//! * signature algorithms: the key types' own, plus `rsa-sha2-512` and `rsa-sha2-256`
//!   (RFC 8332) for RSA keys. Plain `ssh-rsa` (SHA-1) signatures are never produced
//!   nor accepted;
//! * the algorithm named inside a signature blob must fit the key type and, when the
//!   protocol already named one (negotiated host key algorithm, algorithm of a
//!   publickey userauth request), must equal it.
//!
//! Where things are: `alg.rs` names the algorithms and key types, `public.rs` and
//! `private.rs` hold the two key types and the key blob codec, `openssh.rs` reads and
//! writes OpenSSH's text formats (key files, public key lines, `authorized_keys`),
//! `signature.rs` signs and verifies through the provider: it checks a signature's
//! shape before the provider sees it, and keeps each private key's prepared signer.
//!
//! Secret key material lives in `ssh_key` private key types, which zeroize their
//! buffers on drop, and in the providers' prepared signers (AWS-LC frees its keys with
//! `OPENSSL_cleanse`; the RustCrypto keys zeroize on drop). Not covered: whatever
//! transient copies `ssh-key`'s PEM/base64 decoding and the `rsa` crate's big-integer
//! arithmetic leave behind.

mod alg;
mod error;
mod openssh;
mod private;
mod public;
mod signature;
#[cfg(test)]
mod tests;

pub use alg::{SigAlg, MAX_RSA_SIGN_BITS, MAX_RSA_VERIFY_BITS, MIN_RSA_BITS};
pub use error::{KeyError, VerifyError};
pub use openssh::{parse_authorized_keys, AuthorizedKey};
pub use private::PrivateKey;
pub use public::PublicKey;
