use std::cell::Cell;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand_chacha::rand_core::SeedableRng as _;
use sha2::{Digest as _, Sha256, Sha512};
use ssh_encoding::base64::{Base64, Encoding as _};
use ssh_key::private::{Ed25519Keypair, KeypairData};

use super::*;
use crate::crypto::{self, CryptoProvider};
use crate::wire::{put_string, Reader};

thread_local! {
    /// The provider this thread's test signs and verifies with: the default, or the
    /// one [`again_with`] sets (each test runs on a thread of its own).
    static PROVIDER: Cell<&'static CryptoProvider> = Cell::new(crypto::default_provider());
}

/// The provider of this test (see [`PROVIDER`]).
fn p() -> &'static CryptoProvider {
    PROVIDER.with(Cell::get)
}

/// Whether `alg` makes the same signature every time with this test's provider: Ed25519
/// and RSA always do; ECDSA with RFC 6979 nonces in the RustCrypto provider, not in
/// AWS-LC, which mixes its random numbers into the nonce.
fn deterministic(alg: SigAlg) -> bool {
    !matches!(
        alg,
        SigAlg::EcdsaP256 | SigAlg::EcdsaP384 | SigAlg::EcdsaP521
    ) || p().name == "rustcrypto"
}

/// The tests that sign or verify, run again with each other provider built in.
#[cfg(all(feature = "aws-lc-rs", feature = "rustcrypto"))]
macro_rules! again_with {
    ($module:ident, $provider:path, $($test:ident),+ $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    super::PROVIDER.with(|p| p.set(&$provider));
                    super::$test();
                }
            )+
        }
    };
}

#[cfg(all(feature = "aws-lc-rs", feature = "rustcrypto"))]
again_with!(
    with_rustcrypto,
    crate::crypto::rust_crypto::PROVIDER,
    rfc8032_ed25519_vectors,
    openssh_keys_round_trip,
    generated_ed25519_key,
    verifies_openssh_sshsig_signatures,
    verifies_openssh_certificate_signatures,
    refuses_ssh_rsa_sha1_signatures,
    our_signatures_match_openssh_fixtures,
    ecdsa_signature_encoding,
    rsa_signing,
    rsa_key_sizes,
    tampered_signatures_are_bad,
    algorithm_must_fit_key_and_announcement,
    malformed_signature_blobs,
    malformed_and_unsupported_key_blobs,
    private_key_errors,
    public_key_lines,
    authorized_keys_file,
    ecdsa_key_with_a_short_private_scalar
);

/// Fixtures made by OpenSSH 9.2 with `protocol/tests/data/hostkey/generate.sh`.
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/data/hostkey/", $name))
    };
}

const NAMESPACE: &str = "sshr-hostkey-test";
const MESSAGE: &[u8] = include_bytes!("../../tests/data/hostkey/message.txt");

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

const KEYS: [KeyFixture; 7] = [
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
    KeyFixture {
        name: "ecdsa521",
        private: fixture!("ecdsa521"),
        public: fixture!("ecdsa521.pub"),
        fingerprint: fixture!("ecdsa521.fp"),
        sshsig: fixture!("ecdsa521.sig"),
        sshsig_alg: SigAlg::EcdsaP521,
    },
    // OpenSSH's smallest RSA key (`RequiredRSASize` defaults to it).
    KeyFixture {
        name: "rsa1024",
        private: fixture!("rsa1024"),
        public: fixture!("rsa1024.pub"),
        fingerprint: fixture!("rsa1024.fp"),
        sshsig: fixture!("rsa1024.sig"),
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
    let mut r = Reader::new(blob);
    let name = r.string("name").unwrap();
    let raw = r.string("signature").unwrap();
    r.finish().unwrap();
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
    let mut r = Reader::new(&bin);
    assert_eq!(r.bytes(6, "magic").unwrap(), b"SSHSIG");
    assert_eq!(r.u32("version").unwrap(), 1, "SSHSIG version 1");
    let mut next = || r.string("SSHSIG field").unwrap().to_vec();
    let public_key = next();
    let namespace = String::from_utf8(next()).unwrap();
    let _reserved = next();
    let hash_alg = String::from_utf8(next()).unwrap();
    let signature = next();
    r.finish().unwrap();
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
    let mut r = Reader::new(blob);
    let cert_type = r.string("cert type").unwrap();
    let key_fields = match cert_type {
        b"ssh-ed25519-cert-v01@openssh.com" => 1,
        b"ssh-rsa-cert-v01@openssh.com" => 2,
        other => panic!("cert type {}", String::from_utf8_lossy(other)),
    };
    r.string("nonce").unwrap();
    for _ in 0..key_fields {
        r.string("public key field").unwrap();
    }
    r.bytes(8 + 4, "serial, type").unwrap();
    r.string("key id").unwrap();
    r.string("valid principals").unwrap();
    r.bytes(8 + 8, "valid after, valid before").unwrap();
    for what in ["critical options", "extensions", "reserved"] {
        r.string(what).unwrap();
    }
    let ca = r.string("signature key").unwrap();
    let signed_len = blob.len() - r.remaining().len();
    let signature = r.string("signature").unwrap();
    r.finish().unwrap();
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
            "ecdsa-sha2-nistp521",
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
    assert_eq!(
        SigAlg::from_name("ecdsa-sha2-nistp521-cert-v01@openssh.com"),
        None
    );
    assert_eq!(SigAlg::from_name(""), None);
    assert_eq!(SigAlg::RsaSha2_256.key_type_name(), "ssh-rsa");
    assert_eq!(SigAlg::RsaSha2_512.key_type_name(), "ssh-rsa");
    assert_eq!(SigAlg::EcdsaP384.key_type_name(), "ecdsa-sha2-nistp384");
    assert_eq!(SigAlg::EcdsaP521.key_type_name(), "ecdsa-sha2-nistp521");
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

            let blob = key.sign(p(), SigAlg::Ed25519, &message).unwrap();
            assert_eq!(hex::encode(&blob), hex::encode(&expected_blob));

            let public = PublicKey::from_blob(&public_blob).unwrap();
            assert_eq!(
                public.verify(p(), None, &message, &blob),
                Ok(SigAlg::Ed25519)
            );
            assert_eq!(
                public.verify(p(), Some(SigAlg::Ed25519), &message, &blob),
                Ok(SigAlg::Ed25519)
            );
            let mut other = message.clone();
            other.push(0);
            assert_eq!(
                public.verify(p(), None, &other, &blob),
                Err(VerifyError::BadSignature)
            );
        }
    }
}

#[test]
fn openssh_keys_round_trip() {
    for f in &KEYS {
        let key = PrivateKey::from_openssh(f.private).unwrap_or_else(|e| panic!("{}: {e}", f.name));
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
            SigAlg::RsaSha2_512 => alg::RSA_SIGN_ALGS,
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
    let blob = key.sign(p(), SigAlg::Ed25519, b"data").unwrap();
    assert_eq!(reloaded.sign(p(), SigAlg::Ed25519, b"data").unwrap(), blob);
    assert_eq!(
        key.public()
            .verify(p(), Some(SigAlg::Ed25519), b"data", &blob),
        Ok(SigAlg::Ed25519)
    );
    let preimage = sshsig_preimage(NAMESPACE, "sha512", MESSAGE);
    if let Some(ok) = openssh_accepts(
        &key.public(),
        &key.sign(p(), SigAlg::Ed25519, &preimage).unwrap(),
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
            key.verify(p(), None, &preimage, &sig.signature),
            Ok(alg),
            "{name}"
        );
        assert_eq!(
            key.verify(p(), Some(alg), &preimage, &sig.signature),
            Ok(alg)
        );
        // Wrong namespace, wrong message.
        let other = sshsig_preimage("other", &sig.hash_alg, MESSAGE);
        assert_eq!(
            key.verify(p(), Some(alg), &other, &sig.signature),
            Err(VerifyError::BadSignature),
            "{name}"
        );
        let other = sshsig_preimage(NAMESPACE, &sig.hash_alg, b"other message");
        assert_eq!(
            key.verify(p(), Some(alg), &other, &sig.signature),
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
        (
            fixture!("user-ca-ecdsa521-cert.pub"),
            fixture!("ecdsa521.pub"),
            SigAlg::EcdsaP521,
        ),
    ];
    for (cert, ca_pub, alg) in cases {
        let blob = blob_of_line(cert);
        let (signed, ca_blob, signature) = split_cert(&blob);
        let ca = PublicKey::from_blob(ca_blob).unwrap();
        assert_eq!(ca, PublicKey::from_openssh(ca_pub).unwrap());
        assert_eq!(split_sig(signature).0, alg.name());
        assert_eq!(ca.verify(p(), Some(alg), signed, signature), Ok(alg));
        assert_eq!(ca.verify(p(), None, signed, signature), Ok(alg));
        assert_eq!(
            ca.verify(p(), None, &signed[1..], signature),
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
        ca.verify(p(), None, signed, &relabelled),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        ca.verify(p(), Some(SigAlg::RsaSha2_256), signed, signature),
        Ok(SigAlg::RsaSha2_256)
    );
    assert_eq!(
        ca.verify(p(), Some(SigAlg::RsaSha2_512), signed, signature),
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
    assert_eq!(ca.verify(p(), None, signed, signature), refused);
    assert_eq!(
        ca.verify(p(), Some(SigAlg::RsaSha2_256), signed, signature),
        refused
    );
    assert_eq!(
        ca.verify(p(), Some(SigAlg::RsaSha2_512), signed, signature),
        refused
    );
    // Relabelled as SHA-2 it does not verify either (the DigestInfo says SHA-1).
    let raw = split_sig(signature).1;
    for name in ["rsa-sha2-256", "rsa-sha2-512"] {
        assert_eq!(
            ca.verify(p(), None, signed, &with_raw(name, &raw)),
            Err(VerifyError::BadSignature)
        );
    }
}

/// Our signatures are the ones OpenSSH makes or accepts, for every key type and
/// algorithm we sign with. Ed25519 (RFC 8032) and RSA PKCS#1 v1.5 signatures are
/// deterministic, so signing what ssh-keygen signed gives its bytes exactly. OpenSSH's
/// ECDSA nonces are random, the RustCrypto provider's are not (RFC 6979): its are compared
/// with `ecdsa*-ours.sig`, which `generate.sh` had `ssh-keygen -Y check-novalidate`
/// accept. AWS-LC's ECDSA signatures (random nonces, as OpenSSH's) are checked to verify
/// here and, when `ssh-keygen` is installed, in OpenSSH.
#[test]
fn our_signatures_match_openssh_fixtures() {
    let preimage = sshsig_preimage(NAMESPACE, "sha512", MESSAGE);
    let mut checked = Vec::new();
    // rsa3072 signs like rsa2048, only slower in debug builds.
    for f in KEYS.iter().filter(|f| f.name != "rsa3072") {
        let key = PrivateKey::from_openssh(f.private).unwrap();
        let expected = match f.sshsig_alg {
            SigAlg::EcdsaP256 => fixture!("ecdsa256-ours.sig"),
            SigAlg::EcdsaP384 => fixture!("ecdsa384-ours.sig"),
            SigAlg::EcdsaP521 => fixture!("ecdsa521-ours.sig"),
            _ => f.sshsig,
        };
        let expected = parse_sshsig(expected);
        assert_eq!(expected.hash_alg, "sha512");
        let ours = key.sign(p(), f.sshsig_alg, &preimage).unwrap();
        if !deterministic(f.sshsig_alg) {
            let public = key.public();
            let verified = public.verify(p(), Some(f.sshsig_alg), &preimage, &ours);
            assert_eq!(verified, Ok(f.sshsig_alg), "{}", f.name);
            if let Some(ok) = openssh_accepts(&public, &ours, MESSAGE) {
                assert!(ok, "OpenSSH rejected the {} signature", f.name);
            }
            checked.push(f.sshsig_alg);
            continue;
        }
        assert_eq!(
            hex::encode(&ours),
            hex::encode(&expected.signature),
            "{}",
            f.name
        );
        checked.push(f.sshsig_alg);
    }

    // rsa-sha2-256, which ssh-keygen only makes as a certificate authority.
    let rsa = PrivateKey::from_openssh(fixture!("rsa2048")).unwrap();
    let blob = blob_of_line(fixture!("user-ca-rsa-sha2-256-cert.pub"));
    let (signed, ca, signature) = split_cert(&blob);
    assert_eq!(ca, rsa.public_key().blob());
    assert_eq!(
        rsa.sign(p(), SigAlg::RsaSha2_256, signed).unwrap(),
        signature
    );
    checked.push(SigAlg::RsaSha2_256);

    for alg in SigAlg::ALL {
        assert!(checked.contains(&alg), "{alg} not compared with OpenSSH");
    }
}

/// Writes `ecdsa*-ours.sig` (run by `generate.sh` after it makes new keys).
#[test]
#[ignore = "writes fixtures; run by protocol/tests/data/hostkey/generate.sh"]
fn write_our_ecdsa_signature_fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostkey");
    let preimage = sshsig_preimage(NAMESPACE, "sha512", MESSAGE);
    for (name, private) in [
        ("ecdsa256", fixture!("ecdsa256")),
        ("ecdsa384", fixture!("ecdsa384")),
        ("ecdsa521", fixture!("ecdsa521")),
    ] {
        let key = PrivateKey::from_openssh(private).unwrap();
        let blob = key.sign(p(), key.sig_algs()[0], &preimage).unwrap();
        let path = dir.join(format!("{name}-ours.sig"));
        std::fs::write(&path, armor_sshsig(key.public_key(), &blob)).unwrap();
    }
}

/// ECDSA signatures are `string(mpint r || mpint s)` with minimal mpints: a zero byte
/// in front when the top bit is set, none otherwise. Deterministic (RFC 6979)
/// signatures over 12 messages include both shapes. (P-521 scalars fill 66 bytes with
/// a top byte of 0 or 1; minimal, a scalar whose top byte is 0 takes 65 bytes, or 66
/// with the zero byte in front when the next byte has its top bit set, as OpenSSH's
/// `sshbuf_put_bignum2` writes them.) (That OpenSSH accepts our encoding is
/// `our_signatures_match_openssh_fixtures`.)
#[test]
fn ecdsa_signature_encoding() {
    for (f, field_len) in [(&KEYS[1], 32), (&KEYS[2], 48), (&KEYS[5], 66)] {
        let key = PrivateKey::from_openssh(f.private).unwrap();
        let alg = key.sig_algs()[0];
        let (mut padded, mut unpadded) = (0, 0);
        for i in 0..12u8 {
            let message = [MESSAGE, &[i]].concat();
            let preimage = sshsig_preimage(NAMESPACE, "sha512", &message);
            let blob = key.sign(p(), alg, &preimage).unwrap();
            let (name, raw) = split_sig(&blob);
            assert_eq!(name, alg.name());
            let mut r = Reader::new(&raw);
            for _ in 0..2 {
                let m = r.mpint("mpint").unwrap();
                assert!(!m.is_empty() && m.len() <= field_len + 1);
                if m[0] == 0 {
                    assert!(m.len() > 1 && m[1] & 0x80 != 0, "non-minimal mpint");
                    padded += 1;
                } else {
                    assert!(m[0] & 0x80 == 0, "negative mpint");
                    unpadded += 1;
                }
            }
            r.finish().unwrap();
            assert_eq!(
                key.public().verify(p(), Some(alg), &preimage, &blob),
                Ok(alg)
            );
        }
        assert!(padded > 0 && unpadded > 0, "{padded} {unpadded}");
    }
}

#[test]
fn rsa_signing() {
    let key = PrivateKey::from_openssh(KEYS[3].private).unwrap();
    let public = key.public();
    if alg::RSA_SIGN_ALGS.is_empty() {
        // Without the `rsa` crate (see the comment on `rsa_alg`).
        assert!(key.sig_algs().is_empty());
        for alg in [SigAlg::RsaSha2_512, SigAlg::RsaSha2_256] {
            assert!(matches!(
                key.sign(p(), alg, b"data"),
                Err(KeyError::UnsupportedSignatureAlgorithm { key: "ssh-rsa", .. })
            ));
        }
        return;
    }
    assert_eq!(key.sig_algs(), &[SigAlg::RsaSha2_512, SigAlg::RsaSha2_256]);
    let data = b"exchange hash";
    for alg in [SigAlg::RsaSha2_512, SigAlg::RsaSha2_256] {
        let blob = key.sign(p(), alg, data).unwrap();
        let (name, raw) = split_sig(&blob);
        assert_eq!(name, alg.name());
        assert_eq!(raw.len(), 256, "padded to the modulus length");
        // PKCS#1 v1.5 is deterministic (the blinding does not change the result).
        assert_eq!(key.sign(p(), alg, data).unwrap(), blob);
        assert_eq!(public.verify(p(), Some(alg), data, &blob), Ok(alg));
        let other = if alg == SigAlg::RsaSha2_256 {
            SigAlg::RsaSha2_512
        } else {
            SigAlg::RsaSha2_256
        };
        assert_eq!(
            public.verify(p(), None, data, &with_raw(other.name(), &raw)),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            public.verify(p(), Some(other), data, &blob),
            Err(VerifyError::UnexpectedAlgorithm {
                expected: other,
                signature: alg
            })
        );
    }
}

#[test]
fn rsa_key_sizes() {
    // 1024 bits, OpenSSH's floor, parses; a caller may require more.
    let small = PublicKey::from_openssh(fixture!("rsa1024.pub")).unwrap();
    assert_eq!(small.rsa_bits(), Some(1024));
    assert_eq!(small.check_rsa_size(MIN_RSA_BITS), Ok(()));
    assert_eq!(small.check_rsa_size(1024), Ok(()));
    let refused = small.check_rsa_size(2048).unwrap_err();
    assert_eq!(
        refused,
        VerifyError::RsaKeyTooSmall {
            bits: 1024,
            min: 2048
        }
    );
    assert_eq!(
        refused.to_string(),
        "RSA key of 1024 bits is smaller than the required 2048 bits"
    );
    assert!(matches!(
        KeyError::from(refused),
        KeyError::RsaKeyTooSmall {
            bits: 1024,
            min: 2048
        }
    ));
    let rsa2048 = PublicKey::from_openssh(fixture!("rsa2048.pub")).unwrap();
    assert_eq!(rsa2048.rsa_bits(), Some(2048));
    assert_eq!(rsa2048.check_rsa_size(2048), Ok(()));
    assert_eq!(
        rsa2048.check_rsa_size(3072),
        Err(VerifyError::RsaKeyTooSmall {
            bits: 2048,
            min: 3072
        })
    );
    // Other key types have no RSA size.
    for name in ["ed25519", "ecdsa256", "ecdsa521"] {
        let f = KEYS.iter().find(|f| f.name == name).unwrap();
        let key = PublicKey::from_openssh(f.public).unwrap();
        assert_eq!(key.rsa_bits(), None);
        assert_eq!(key.check_rsa_size(16384), Ok(()));
    }
    let private = PrivateKey::from_openssh(fixture!("rsa1024")).unwrap();
    assert_eq!(private.public(), small);

    // Below the floor nothing parses: a 1015-bit modulus.
    let rsa = blob_of_line(fixture!("rsa1024.pub"));
    let mut r = Reader::new(&rsa);
    r.string("key type").unwrap();
    let e = r.mpint("e").unwrap();
    let mut n = vec![0x7f];
    n.extend([0xff; 126]);
    let mut blob = string(b"ssh-rsa");
    put_string(&mut blob, e);
    put_string(&mut blob, &n);
    let too_small = PublicKey::from_blob(&blob).unwrap_err();
    assert_eq!(
        too_small,
        VerifyError::UnsupportedKeySize {
            bits: 1015,
            max: MAX_RSA_VERIFY_BITS
        }
    );
    assert_eq!(
        too_small.to_string(),
        format!(
            "unsupported RSA key size: 1015 bits (supported: 1024 to {MAX_RSA_VERIFY_BITS} bits)"
        )
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
            big.verify(p(), None, &preimage, &sig.signature),
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
                key.verify(p(), None, &preimage, &with_raw(&name, &bad)),
                Err(VerifyError::BadSignature),
                "{} byte {index}",
                f.name
            );
        }
        let mut data = preimage.clone();
        data[0] ^= 0x20;
        assert_eq!(
            key.verify(p(), None, &data, &sig.signature),
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
        p256.verify(p(), None, &data, &ed_sig),
        mismatch("ecdsa-sha2-nistp256", "ssh-ed25519")
    );
    assert_eq!(
        ed.verify(p(), None, &data, &rsa_sig),
        mismatch("ssh-ed25519", "rsa-sha2-512")
    );
    assert_eq!(
        rsa.verify(p(), None, &data, &p256_sig),
        mismatch("ssh-rsa", "ecdsa-sha2-nistp256")
    );
    let p384_sig = parse_sshsig(fixture!("ecdsa384.sig")).signature;
    assert_eq!(
        p256.verify(p(), None, &data, &p384_sig),
        mismatch("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384")
    );
    // A P-521 signature relabelled as P-384 (and the other way round) is refused for
    // its shape or by the key, never verified on the wrong curve.
    let p384 = PublicKey::from_openssh(fixture!("ecdsa384.pub")).unwrap();
    let p521 = PublicKey::from_openssh(fixture!("ecdsa521.pub")).unwrap();
    let p521_sig = parse_sshsig(fixture!("ecdsa521.sig")).signature;
    assert_eq!(
        p384.verify(p(), None, &data, &p521_sig),
        mismatch("ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
    );
    assert_eq!(
        p521.verify(p(), None, &data, &p384_sig),
        mismatch("ecdsa-sha2-nistp521", "ecdsa-sha2-nistp384")
    );
    assert_eq!(
        p384.verify(
            p(),
            None,
            &data,
            &with_raw("ecdsa-sha2-nistp384", &split_sig(&p521_sig).1)
        ),
        Err(VerifyError::MalformedSignature)
    );
    // Announced algorithm vs key type, and vs the blob.
    assert_eq!(
        ed.verify(p(), Some(SigAlg::RsaSha2_256), &data, &ed_sig),
        mismatch("ssh-ed25519", "rsa-sha2-256")
    );
    assert_eq!(
        rsa.verify(p(), Some(SigAlg::RsaSha2_256), &data, &rsa_sig),
        Err(VerifyError::UnexpectedAlgorithm {
            expected: SigAlg::RsaSha2_256,
            signature: SigAlg::RsaSha2_512,
        })
    );
    assert_eq!(
        rsa.verify(p(), Some(SigAlg::RsaSha2_512), &data, &rsa_sig),
        Ok(SigAlg::RsaSha2_512)
    );
    // Names we do not know.
    let raw = split_sig(&ed_sig).1;
    for name in [
        "ssh-dss",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "sk-ssh-ed25519@openssh.com",
    ] {
        assert_eq!(
            ed.verify(p(), None, &data, &with_raw(name, &raw)),
            Err(VerifyError::UnsupportedAlgorithm(name.into()))
        );
    }
    for name in ["", "ssh ed25519", "ssh-ed25519\n", &"x".repeat(65)] {
        assert_eq!(
            ed.verify(p(), None, &data, &with_raw(name, &raw)),
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
                key.verify(p(), None, &data, &good[..len]),
                Err(VerifyError::MalformedSignature),
                "{} truncated to {len}",
                f.name
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            key.verify(p(), None, &data, &trailing),
            Err(VerifyError::MalformedSignature)
        );
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&[0xff; 4]);
        assert_eq!(
            key.verify(p(), None, &data, &huge),
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
            key.verify(p(), None, &data, &shorter),
            Err(expected_shorter),
            "{}",
            f.name
        );
        assert_eq!(
            key.verify(p(), None, &data, &longer),
            Err(VerifyError::MalformedSignature),
            "{}",
            f.name
        );
        assert_eq!(
            key.verify(p(), None, &data, &with_raw(&name, &[])),
            Err(VerifyError::MalformedSignature)
        );
    }

    // ECDSA: non-minimal, negative or oversized mpints are malformed.
    let key = PublicKey::from_openssh(fixture!("ecdsa256.pub")).unwrap();
    let (name, raw) = split_sig(&parse_sshsig(fixture!("ecdsa256.sig")).signature);
    let mut r = Reader::new(&raw);
    let (sig_r, sig_s) = (r.mpint("r").unwrap(), r.mpint("s").unwrap());
    let ecdsa = |r: &[u8], s: &[u8]| {
        let mut inner = string(r);
        put_string(&mut inner, s);
        key.verify(p(), None, &data, &with_raw(&name, &inner))
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
        key.verify(p(), None, &data, &with_raw(&name, &with_extra)),
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
    let dsa = fixture!("dsa.pub");
    assert_eq!(
        PublicKey::from_blob(&blob_of_line(dsa)),
        Err(VerifyError::UnsupportedKeyType("ssh-dss".into()))
    );
    assert!(matches!(
        PublicKey::from_openssh(dsa),
        Err(KeyError::UnsupportedKeyType(n)) if n == "ssh-dss"
    ));
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
    // From the wire it is checked by the verification, which fails whatever the
    // signature (here a well-formed one of another key over the same data)...
    let key = PublicKey::from_blob(&blob).unwrap();
    let signer = PrivateKey::from_openssh(fixture!("ed25519")).unwrap();
    let data = b"exchange hash";
    let sig = signer.sign(p(), SigAlg::Ed25519, data).unwrap();
    signer.public().verify(p(), None, data, &sig).unwrap();
    assert!(key.verify(p(), None, data, &sig).is_err());
    // ...and written down by an operator it is refused when read.
    let line = format!("ssh-ed25519 {}", Base64::encode_string(&blob));
    let err = PublicKey::from_openssh(&line).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid public key: the Ed25519 key is not a curve point"
    );

    // RSA with a non-minimal mpint (ssh-key decodes strictly).
    let rsa = blob_of_line(fixture!("rsa2048.pub"));
    let mut r = Reader::new(&rsa);
    r.string("key type").unwrap();
    let e = r.mpint("e").unwrap();
    let n = r.mpint("n").unwrap();
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
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n";
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
            key.sign(p(), alg, b"x"),
            Err(KeyError::UnsupportedSignatureAlgorithm { key: "ssh-ed25519", alg: a }) if a == alg
        ));
    }
    let key = PrivateKey::from_openssh(KEYS[1].private).unwrap();
    assert!(key.sign(p(), SigAlg::EcdsaP384, b"x").is_err());
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

/// RFC 6979 appendix A.2.7: P-521 with SHA-512, message "sample": the nonce and the
/// signature, through our P-521 signer.
#[test]
fn rfc6979_p521_sha512_vector() {
    let x = unhex(concat!(
        "00FAD06DAA62BA3B25D2FB40133DA757205DE67F5BB0018FEE8C86E1B68C7E75C",
        "AA896EB32F1F47C70855836A6D16FCC1466F6D8FBEC67DB89EC0C08B0E996B83538"
    ));
    let expected_k = concat!(
        "01DAE2EA071F8110DC26882D4D5EAE0621A3256FC8847FB9022E2B7D28E6F1019",
        "8B1574FDD03A9053C08A1854A168AA5A57470EC97DD5CE090124EF52A2F7ECBFFD3"
    );
    let expected_r = concat!(
        "00C328FAFCBD79DD77850370C46325D987CB525569FB63C5D3BC53950E6D4C5F17",
        "4E25A1EE9017B5D450606ADD152B534931D7D4E8455CC91F9B15BF05EC36E377FA"
    );
    let expected_s = concat!(
        "617CCE7CF5064806C467F678D3B4080D6F1CC50AF26CA209417308281B68AF28",
        "2623EAA63E5B5C0723D8B8C37FF0777B1A20F8CCB1DCCC43997F1EE0E44DA4A67A"
    );
    let h: [u8; 64] = Sha512::digest(b"sample").into();
    let k = crate::crypto::rust_sig::rfc6979_nonce(&x.clone().try_into().unwrap(), &h).unwrap();
    use p521::elliptic_curve::ff::PrimeField as _;
    assert_eq!(hex::encode_upper(k.to_repr()), expected_k);

    let secret = p521::SecretKey::from_slice(&x).unwrap();
    let private = ssh_key::private::EcdsaPrivateKey::<66>::from(secret);
    let raw = crate::crypto::rust_sig::p521_sign(&private, b"sample").unwrap();
    let mut r = Reader::new(&raw);
    // Minimal mpints: both scalars start with a zero byte, which is dropped; r's next
    // byte has its top bit set, so r gets a zero byte in front again.
    assert_eq!(hex::encode_upper(r.mpint("r").unwrap()), expected_r);
    assert_eq!(hex::encode_upper(r.mpint("s").unwrap()), expected_s);
    r.finish().unwrap();
}

/// A P-521 key whose private scalar ssh-keygen wrote in 65 bytes (its top byte is
/// zero), as it does for about half of them: ssh-key alone refuses the file, we read it,
/// and it signs what OpenSSH accepts.
#[test]
fn ecdsa_key_with_a_short_private_scalar() {
    let text = fixture!("ecdsa521-short");
    assert!(
        ssh_key::PrivateKey::from_openssh(text.trim()).is_err(),
        "the fixture must have a short scalar"
    );
    let key = PrivateKey::from_openssh(text).unwrap();
    let public = PublicKey::from_openssh(fixture!("ecdsa521-short.pub")).unwrap();
    assert_eq!(key.public(), public);
    assert_eq!(key.comment(), "ecdsa521-short@sshr-test");
    let preimage = sshsig_preimage(NAMESPACE, "sha512", MESSAGE);
    let blob = key.sign(p(), SigAlg::EcdsaP521, &preimage).unwrap();
    assert_eq!(
        public.verify(p(), Some(SigAlg::EcdsaP521), &preimage, &blob),
        Ok(SigAlg::EcdsaP521)
    );
    if let Some(ok) = openssh_accepts(&public, &blob, MESSAGE) {
        assert!(ok, "OpenSSH rejected the signature");
    }
    // Written back (the scalar at full length), it reads again, here and in OpenSSH.
    let written = key.to_openssh().unwrap();
    let again = PrivateKey::from_openssh(&written).unwrap();
    assert_eq!(again.public(), public);
    let again_blob = again.sign(p(), SigAlg::EcdsaP521, &preimage).unwrap();
    if deterministic(SigAlg::EcdsaP521) {
        assert_eq!(again_blob, blob);
    }
    assert!(public
        .verify(p(), Some(SigAlg::EcdsaP521), &preimage, &again_blob)
        .is_ok());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, written.as_bytes()).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    match Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&path)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8(out.stdout).unwrap();
            assert_eq!(PublicKey::from_openssh(&line).unwrap(), public);
        }
        Err(e) => eprintln!("ssh-keygen not run ({e}): skipping the OpenSSH cross-check"),
    }
    // Other files stay refused as before: an encrypted one, a broken one.
    assert!(matches!(
        PrivateKey::from_openssh(fixture!("ed25519_encrypted")),
        Err(KeyError::Encrypted)
    ));
    let broken = text.replacen("b3Bl", "b3Bm", 1);
    assert!(matches!(
        PrivateKey::from_openssh(&broken),
        Err(KeyError::Format(_))
    ));
}

/// What one provider signs, every provider verifies, for every key type (AWS-LC's ECDSA
/// against RustCrypto's, RSA through both hashes); a changed byte fails everywhere.
#[test]
fn providers_verify_each_other() {
    let data = b"exchange hash of a proxied login";
    let providers = crypto::providers();
    for f in KEYS.iter() {
        let key = PrivateKey::from_openssh(f.private).unwrap();
        let public = key.public();
        for &alg in key.sig_algs() {
            for signer in &providers {
                let blob = key.sign(signer, alg, data).unwrap();
                for verifier in &providers {
                    let what = format!("{} {alg} {} -> {}", f.name, signer.name, verifier.name);
                    assert_eq!(
                        public.verify(verifier, Some(alg), data, &blob),
                        Ok(alg),
                        "{what}"
                    );
                    assert_eq!(
                        public.verify(verifier, Some(alg), b"another hash", &blob),
                        Err(VerifyError::BadSignature),
                        "{what}"
                    );
                }
            }
        }
    }
}
