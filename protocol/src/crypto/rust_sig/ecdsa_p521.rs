//! ECDSA P-521 signing (`ecdsa-sha2-nistp521`, RFC 5656: SHA-512 over the data) with
//! deterministic nonces (RFC 6979 section 3.2).
//!
//! ssh-key 0.6.7 signs P-521 through `p521` 0.13, whose signer draws its nonce from the
//! operating system's random numbers: unlike P-256 and P-384, whose signers follow
//! RFC 6979. This crate takes no randomness from the OS (the caller passes every seed),
//! so the nonce is derived here as RFC 6979 says and the signature is made with the
//! `ecdsa` crate's primitive. Verifying goes through ssh-key (SHA-512, as OpenSSH).
//!
//! RFC 6979 with P-521 and SHA-512: qlen = 521 bits, rlen = 528 bits (66 bytes), hlen =
//! 512 bits. `bits2octets(H(m))` is the hash left-padded to 66 bytes (it is already
//! smaller than q); each candidate `T` is 66 bytes of HMAC_DRBG output, of which
//! `bits2int` keeps the leftmost 521 bits (a right shift by 7).

use ecdsa::hazmat::{bits2field, sign_prehashed};
use p521::elliptic_curve::ff::PrimeField as _;
use p521::elliptic_curve::subtle::ConstantTimeEq as _;
use rfc6979::HmacDrbg;
use sha2::{Digest as _, Sha512};
use ssh_key::private::EcdsaPrivateKey;
use zeroize::{Zeroize as _, Zeroizing};

use crate::hostkey::KeyError;

/// Bytes of a P-521 scalar (`rlen` / 8).
const SCALAR_LEN: usize = 66;

/// RFC 6979 candidates tried before giving up: one in about 2^520 is rejected, so the
/// bound is never reached by chance.
const MAX_CANDIDATES: usize = 16;

/// The RFC 6979 nonce `k` for the private scalar `x` (66 bytes, big-endian) and the
/// message hash `h` (SHA-512 of the message).
pub(crate) fn rfc6979_nonce(x: &[u8; SCALAR_LEN], h: &[u8; 64]) -> Option<p521::Scalar> {
    let mut h1 = [0u8; SCALAR_LEN];
    h1[SCALAR_LEN - h.len()..].copy_from_slice(h);
    let mut drbg = HmacDrbg::<Sha512>::new(x, &h1, &[]);
    for _ in 0..MAX_CANDIDATES {
        let mut t = Zeroizing::new([0u8; SCALAR_LEN]);
        drbg.fill_bytes(&mut t[..]);
        // bits2int: the leftmost 521 of the 528 bits.
        let mut k = Zeroizing::new(p521::FieldBytes::default());
        let mut carry = 0u8;
        for (out, byte) in k.iter_mut().zip(t.iter()) {
            *out = carry | (byte >> 7);
            carry = byte << 1;
        }
        // `from_repr` refuses k >= q; zero is refused next.
        let candidate: Option<p521::Scalar> = p521::Scalar::from_repr(*k).into();
        if let Some(k) = candidate {
            if !bool::from(k.ct_eq(&p521::Scalar::ZERO)) {
                return Some(k);
            }
        }
    }
    None
}

/// Sign `data` with the P-521 private key: `mpint r || mpint s`, the inside of the
/// SSH signature blob (RFC 5656 section 3.1.2).
pub(crate) fn sign(
    private: &EcdsaPrivateKey<SCALAR_LEN>,
    data: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let failed = |_| KeyError::Signing("P-521 signature failed");
    let key = p521::ecdsa::SigningKey::from_slice(private.as_slice()).map_err(failed)?;
    let mut x = Zeroizing::new([0u8; SCALAR_LEN]);
    x.copy_from_slice(&Zeroizing::new(key.to_bytes()));
    let h: [u8; 64] = Sha512::digest(data).into();
    let mut k = rfc6979_nonce(&x, &h).ok_or(KeyError::Signing("no P-521 nonce"))?;
    let z = bits2field::<p521::NistP521>(&h).map_err(failed)?;
    let signed = sign_prehashed::<p521::NistP521, _>(key.as_nonzero_scalar().as_ref(), k, &z);
    k.zeroize();
    let (signature, _recovery) = signed.map_err(failed)?;
    // ssh-key writes r and s as minimal mpints, as OpenSSH's sshbuf_put_bignum2 does.
    let signature = ssh_key::Signature::try_from(&signature)
        .map_err(|_| KeyError::Signing("P-521 signature encoding failed"))?;
    Ok(signature.as_bytes().to_vec())
}
