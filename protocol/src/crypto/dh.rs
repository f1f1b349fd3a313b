//! Finite-field Diffie-Hellman (RFC 4253 8, RFC 8268, RFC 4419): the MODP groups 14 to 18
//! of RFC 3526, or a group a server chose in a group exchange.
//!
//! Every provider uses this module: AWS-LC has Diffie-Hellman, but aws-lc-rs does not
//! expose it. The arithmetic is crypto-bigint's Montgomery exponentiation, whose running
//! time does not depend on the exponent's value (a fixed 4-bit window over all of its
//! bits, each table entry picked by a constant-time select), so the private exponent does
//! not leak through timing. Public values (p, g, the peer's value) are checked with
//! ordinary comparisons.
//!
//! Private exponents are [`EXPONENT_BITS`] long with the top bit set. 512 bits give 256
//! bits of strength against the generic (Pollard lambda) attacks on the exponent, as much
//! as the strongest cipher and exchange hash we negotiate; the groups themselves are
//! weaker (RFC 3526 8 estimates 110 to 310 bits from 2048 to 8192). OpenSSH's
//! `dh_gen_key` takes twice the bits its cipher needs, at least 512. Fixed-size exponents
//! keep an 8192-bit exchange to two exponentiations of 512 bits each per side.
//!
//! Values cross this module as the contents of SSH `mpint`s (RFC 4251 5): the peer's are
//! parsed strictly (no negative values, no unneeded leading zero byte), ours are encoded
//! canonically, so the exchange hash can take them as sent.

use std::borrow::Cow;

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Uint, U2048, U3072, U4096, U512, U6144, U8192};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, Zeroizing};

use super::{CryptoError, EphemeralKey, KeyAgreement, Secret};

/// Length of every private exponent, in bits.
pub const EXPONENT_BITS: usize = 512;

/// The smallest modulus we use or accept, in bits (RFC 8270).
pub const MIN_BITS: u32 = 2048;

/// The largest modulus we use or accept, in bits (RFC 4419 3).
pub const MAX_BITS: u32 = 8192;

/// A prime modulus p and a generator g.
#[derive(Clone, PartialEq, Eq)]
pub struct Group {
    /// Big-endian, no leading zero byte; odd, [`MIN_BITS`] to [`MAX_BITS`] bits.
    p: Cow<'static, [u8]>,
    /// Big-endian, no leading zero byte; 1 < g < p - 1.
    g: Cow<'static, [u8]>,
}

/// RFC 3526 3, the 2048-bit MODP group 14 (`diffie-hellman-group14-sha256`).
pub static GROUP14: Group = Group::rfc3526(&MODP_2048);
/// RFC 3526 4, the 3072-bit MODP group 15 (group exchange only).
pub static GROUP15: Group = Group::rfc3526(&MODP_3072);
/// RFC 3526 5, the 4096-bit MODP group 16 (`diffie-hellman-group16-sha512`).
pub static GROUP16: Group = Group::rfc3526(&MODP_4096);
/// RFC 3526 6, the 6144-bit MODP group 17 (group exchange only).
pub static GROUP17: Group = Group::rfc3526(&MODP_6144);
/// RFC 3526 7, the 8192-bit MODP group 18 (`diffie-hellman-group18-sha512`).
pub static GROUP18: Group = Group::rfc3526(&MODP_8192);

/// The groups a group exchange server offers, smallest first.
pub static RFC3526_GROUPS: [&Group; 5] = [&GROUP14, &GROUP15, &GROUP16, &GROUP17, &GROUP18];

impl Group {
    const fn rfc3526(p: &'static [u8]) -> Group {
        Group {
            p: Cow::Borrowed(p),
            g: Cow::Borrowed(&[2]),
        }
    }

    /// The group a server sent in SSH_MSG_KEX_DH_GEX_GROUP (RFC 4419 3), from the
    /// contents of its two mpints. Refuses a modulus outside [`MIN_BITS`]..=[`MAX_BITS`],
    /// an even one (never prime) and a generator outside 2..=p-2. Primality is not
    /// tested (nor does OpenSSH): the server chooses the group it also signs.
    pub fn from_peer(p: &[u8], g: &[u8]) -> Result<Group, GroupError> {
        let p = unsigned(p).map_err(|_| GroupError::Encoding)?;
        let g = unsigned(g).map_err(|_| GroupError::Encoding)?;
        let bits = bit_len(p);
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(GroupError::Size(bits));
        }
        if p.last().is_some_and(|b| b & 1 == 0) {
            return Err(GroupError::EvenModulus);
        }
        let group = Group {
            p: Cow::Owned(p.to_vec()),
            g: Cow::Owned(g.to_vec()),
        };
        if !group.is_inner(g) {
            return Err(GroupError::Generator);
        }
        Ok(group)
    }

    /// The size of p in bits.
    pub fn bits(&self) -> u32 {
        bit_len(&self.p)
    }

    /// p, big-endian without leading zeros (encode with `wire::put_mpint_unsigned`).
    pub fn prime(&self) -> &[u8] {
        &self.p
    }

    /// g, big-endian without leading zeros.
    pub fn generator(&self) -> &[u8] {
        &self.g
    }

    /// 1 < v < p - 1, for `v` without leading zeros (RFC 4253 8).
    fn is_inner(&self, v: &[u8]) -> bool {
        if matches!(v, [] | [1]) {
            return false;
        }
        // p is odd, so p - 1 only clears its lowest bit, and keeps its length.
        let mut p_minus_1 = self.p.to_vec();
        if let Some(last) = p_minus_1.last_mut() {
            *last &= !1;
        }
        v.len() < p_minus_1.len() || (v.len() == p_minus_1.len() && v < &p_minus_1[..])
    }

    /// The peer's public value (e or f), from its mpint contents: 1 < v < p - 1, and, as
    /// OpenSSH's `dh_pub_is_valid` requires, at least 4 bits set (with g = 2, a value with
    /// a single bit set gives its exponent away).
    fn check_public<'v>(&self, v: &'v [u8]) -> Result<&'v [u8], CryptoError> {
        let v = unsigned(v)?;
        let bits_set: u32 = v.iter().map(|b| b.count_ones()).sum();
        if !self.is_inner(v) || bits_set < 4 {
            return Err(CryptoError::BadPeerValue);
        }
        Ok(v)
    }

    /// Our key pair for a given exponent (big-endian, [`EXPONENT_BITS`] long).
    pub(crate) fn key_from_exponent(&self, exponent: Zeroizing<[u8; EXPONENT_BITS / 8]>) -> DhKey {
        let y = modpow(&self.p, &self.g, &exponent);
        DhKey {
            group: self.clone(),
            exponent,
            public: mpint_contents(&y),
        }
    }
}

/// What was wrong with the group a server chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    #[error("p or g is not a non-negative mpint in its shortest form")]
    Encoding,
    #[error("p has {0} bits, outside {MIN_BITS}..={MAX_BITS}")]
    Size(u32),
    #[error("p is even")]
    EvenModulus,
    #[error("g is not between 2 and p - 2")]
    Generator,
}

impl core::fmt::Debug for Group {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Group({} bits, g = ", self.bits())?;
        for b in self.g.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        f.write_str(if self.g.len() > 8 { "..)" } else { ")" })
    }
}

impl KeyAgreement for Group {
    fn generate(&self, rng: &mut dyn CryptoRngCore) -> Result<Box<dyn EphemeralKey>, CryptoError> {
        let mut exponent = Zeroizing::new([0u8; EXPONENT_BITS / 8]);
        rng.fill_bytes(&mut exponent[..]);
        // Exactly EXPONENT_BITS bits, so 1 < x < p - 1 for every group we accept.
        exponent[0] |= 0x80;
        Ok(Box::new(self.key_from_exponent(exponent)))
    }
}

/// One side's ephemeral key: x, and g^x mod p.
pub(crate) struct DhKey {
    group: Group,
    exponent: Zeroizing<[u8; EXPONENT_BITS / 8]>,
    /// g^x mod p as mpint contents.
    public: Vec<u8>,
}

impl EphemeralKey for DhKey {
    /// e or f, the contents of its mpint.
    fn public(&self) -> &[u8] {
        &self.public
    }

    /// K = peer^x mod p, big-endian (with leading zeros up to a whole number of limbs;
    /// the mpint encoding of K strips them). `peer` is the contents of the peer's mpint.
    fn agree(self: Box<Self>, peer: &[u8]) -> Result<Secret, CryptoError> {
        let peer = self.group.check_public(peer)?;
        Ok(modpow(&self.group.p, peer, &self.exponent))
    }
}

/// base^exponent mod p, with the smallest integer size that holds p (at most 8192 bits,
/// as every [`Group`] is). `base` < p.
fn modpow(p: &[u8], base: &[u8], exponent: &[u8; EXPONENT_BITS / 8]) -> Secret {
    match p.len() {
        0..=256 => modpow_sized::<{ U2048::LIMBS }>(p, base, exponent),
        257..=384 => modpow_sized::<{ U3072::LIMBS }>(p, base, exponent),
        385..=512 => modpow_sized::<{ U4096::LIMBS }>(p, base, exponent),
        513..=768 => modpow_sized::<{ U6144::LIMBS }>(p, base, exponent),
        _ => modpow_sized::<{ U8192::LIMBS }>(p, base, exponent),
    }
}

fn modpow_sized<const LIMBS: usize>(
    p: &[u8],
    base: &[u8],
    exponent: &[u8; EXPONENT_BITS / 8],
) -> Secret {
    // Every Group's p is odd, which Montgomery arithmetic needs (`new` panics otherwise).
    let params = DynResidueParams::new(&uint::<LIMBS>(p));
    let mut x = U512::from_be_slice(exponent);
    let mut y = DynResidue::new(&uint::<LIMBS>(base), params)
        .pow_bounded_exp(&x, EXPONENT_BITS)
        .retrieve();
    x.zeroize();
    let mut out = Zeroizing::new(Vec::with_capacity(Uint::<LIMBS>::BYTES));
    for word in y.as_words().iter().rev() {
        out.extend_from_slice(&word.to_be_bytes());
    }
    y.zeroize();
    out
}

/// A big-endian value of at most `LIMBS` limbs as a `Uint`.
fn uint<const LIMBS: usize>(be: &[u8]) -> Uint<LIMBS> {
    let mut padded = Zeroizing::new(vec![0u8; Uint::<LIMBS>::BYTES]);
    let at = padded.len() - be.len();
    padded[at..].copy_from_slice(be);
    Uint::from_be_slice(&padded)
}

/// The magnitude of a non-negative mpint from its string contents (RFC 4251 5: no
/// unneeded leading zero byte; zero is the empty string). Refuses negative values.
fn unsigned(mpint: &[u8]) -> Result<&[u8], CryptoError> {
    match mpint {
        [first, ..] if first & 0x80 != 0 => Err(CryptoError::BadPeerValue),
        [0, rest @ ..] if rest.first().is_none_or(|b| b & 0x80 == 0) => {
            Err(CryptoError::BadPeerValue)
        }
        [0, rest @ ..] => Ok(rest),
        _ => Ok(mpint),
    }
}

/// The contents of the mpint of a big-endian unsigned value.
fn mpint_contents(be: &[u8]) -> Vec<u8> {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    let digits = &be[start..];
    let mut out = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_some_and(|b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

/// Bits of a big-endian value without leading zeros.
fn bit_len(be: &[u8]) -> u32 {
    match be.first() {
        None => 0,
        Some(first) => (be.len() as u32 - 1) * 8 + (8 - first.leading_zeros()),
    }
}

/// Upper-case hex to bytes, at compile time.
const fn hex<const N: usize>(s: &str) -> [u8; N] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("not upper-case hex"),
        }
    }
    let s = s.as_bytes();
    assert!(s.len() == 2 * N, "hex string of the wrong length");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = (nibble(s[2 * i]) << 4) | nibble(s[2 * i + 1]);
        i += 1;
    }
    out
}

// The primes of RFC 3526, p = 2^N - 2^(N-64) - 1 + 2^64 * (floor(2^(N-130) * pi) + c):
// checked by the tests below against a hash of each, computed from that formula.
/// RFC 3526 group 14: the 2048-bit MODP prime.
const MODP_2048: [u8; 256] = hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
));
/// RFC 3526 group 15: the 3072-bit MODP prime.
const MODP_3072: [u8; 384] = hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
));
/// RFC 3526 group 16: the 4096-bit MODP prime.
const MODP_4096: [u8; 512] = hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7",
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8",
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2",
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9",
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
));
/// RFC 3526 group 17: the 6144-bit MODP prime.
const MODP_6144: [u8; 768] = hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7",
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8",
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2",
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9",
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C93402849236C3FAB4D27C7026",
    "C1D4DCB2602646DEC9751E763DBA37BDF8FF9406AD9E530EE5DB382F413001AE",
    "B06A53ED9027D831179727B0865A8918DA3EDBEBCF9B14ED44CE6CBACED4BB1B",
    "DB7F1447E6CC254B332051512BD7AF426FB8F401378CD2BF5983CA01C64B92EC",
    "F032EA15D1721D03F482D7CE6E74FEF6D55E702F46980C82B5A84031900B1C9E",
    "59E7C97FBEC7E8F323A97A7E36CC88BE0F1D45B7FF585AC54BD407B22B4154AA",
    "CC8F6D7EBF48E1D814CC5ED20F8037E0A79715EEF29BE32806A1D58BB7C5DA76",
    "F550AA3D8A1FBFF0EB19CCB1A313D55CDA56C9EC2EF29632387FE8D76E3C0468",
    "043E8F663F4860EE12BF2D5B0B7474D6E694F91E6DCC4024FFFFFFFFFFFFFFFF",
));
/// RFC 3526 group 18: the 8192-bit MODP prime.
const MODP_8192: [u8; 1024] = hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7",
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8",
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2",
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9",
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C93402849236C3FAB4D27C7026",
    "C1D4DCB2602646DEC9751E763DBA37BDF8FF9406AD9E530EE5DB382F413001AE",
    "B06A53ED9027D831179727B0865A8918DA3EDBEBCF9B14ED44CE6CBACED4BB1B",
    "DB7F1447E6CC254B332051512BD7AF426FB8F401378CD2BF5983CA01C64B92EC",
    "F032EA15D1721D03F482D7CE6E74FEF6D55E702F46980C82B5A84031900B1C9E",
    "59E7C97FBEC7E8F323A97A7E36CC88BE0F1D45B7FF585AC54BD407B22B4154AA",
    "CC8F6D7EBF48E1D814CC5ED20F8037E0A79715EEF29BE32806A1D58BB7C5DA76",
    "F550AA3D8A1FBFF0EB19CCB1A313D55CDA56C9EC2EF29632387FE8D76E3C0468",
    "043E8F663F4860EE12BF2D5B0B7474D6E694F91E6DBE115974A3926F12FEE5E4",
    "38777CB6A932DF8CD8BEC4D073B931BA3BC832B68D9DD300741FA7BF8AFC47ED",
    "2576F6936BA424663AAB639C5AE4F5683423B4742BF1C978238F16CBE39D652D",
    "E3FDB8BEFC848AD922222E04A4037C0713EB57A81A23F0C73473FC646CEA306B",
    "4BCBC8862F8385DDFA9D4B7FA2C087E879683303ED5BDD3A062B3CF5B3A278A6",
    "6D2A13F83F44F82DDF310EE074AB6A364597E899A0255DC164F31CC50846851D",
    "F9AB48195DED7EA1B1D510BD7EE74D73FAF36BC31ECFA268359046F4EB879F92",
    "4009438B481C6CD7889A002ED5EE382BC9190DA6FC026E479558E4475677E9AA",
    "9E3050E2765694DFC81F56E880B96E7160C980DD98EDD3DFFFFFFFFFFFFFFFFF",
));

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;
    use sha2::{Digest as _, Sha256};

    fn sha256_hex(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn exponent(s: &str) -> Zeroizing<[u8; 64]> {
        Zeroizing::new(hex::decode(s).unwrap().try_into().unwrap())
    }

    /// Output of protocol/tests/data/kex/gen_dh_vectors.py (Python integers, the primes
    /// rebuilt from RFC 3526's formula): for each group, SHA-256 of p, and of the mpint
    /// contents of e = g^x, f = g^y and K = f^x mod p.
    const X: &str = "98c8bf39aa79893b2605473eefe01521b814c894fdc26e1c952504cbf50fcfdfd7fcc6e65638cd7b91cf6a55f136100130c0c0c4a77246d954bd44464c90d075";
    const Y: &str = "a62a0eb6fd60e64a2e1d0550017ba25de58cadede83c9b89556246ecc0cce7900ece8a313d91020cd9093b68a368b8dfa2339d65e0cecb96e355a2fd2805fb90";
    #[rustfmt::skip]
    const VECTORS: [(u32, &str, &str, &str, &str); 5] = [
        (14, "d66436f79bbd6b2e38c0ffbd079be904d2641415e2e67140e09448be9a60890e", "e36f53a59b99097c1ed01dab2a2e16066191c4c0a9ab8f52b7fea96a4a97d7aa", "9593f3c14161b9a90edec5a0729a0d759878ad27bdfae65f57bd006adecb5718", "557df1ffddaecf3d8f8297d39d50224ced33b0599655b016b4616ddaac0ecb24"),
        (15, "48cf8b092fbce4359d9871abf74f98e25b6163379eaa15cd9087e800c6d1c55c", "7aa32ecc06efad835394d97ed5b98e0e462ba165c583ce45696c832a094c4c7b", "030d3376e09bad466014c81282876139b50f4d0d508c8556f114e121591aa85b", "5602e80f0f858865d7a62e25d952641319f245f08756e50522e5fb1bda335e9d"),
        (16, "4ee95187682bcb230ad26a95205f6920e84708f6251b3894329b09ec23919e33", "9d2092881c212b16aa8b8f054a6c5a1c1e786b0fe640f67be7878d2cebe81c52", "c93def2032d38196e8f339eed45c5d65fe951b076c9dafe7a5266e7a67b21e7d", "15ac42ce43e5ac4484bedf0ae065fe197966b558be343f5e2e87e94abf38192a"),
        (17, "d1bfe6d0925ce7e4da262b62861514a7755e35831e429f343e7b864848657efd", "c1396c7f4f39d46f33eca8d017c17ff55dc030585260a9d4e1a1ca2094d7722d", "5eb12290ef4f124c5c29302f954e9357a5c746767435d1ee027bbc01e0edf05d", "6d872168cb07dc603995a4703f8e541c5a1284c2397167c902f6a19f6eb71d55"),
        (18, "39ab4feab950a3128fb71accb9fc3965d857012e081998a85996e3ea8b3c3bcf", "f637b4279deeda84dba706ad27ee005039994cbaeb1789e11bb8a1330722b82d", "b72ae87e105567463a3f5662c04604a20953850f3a633f420bc821df0d5a7b8c", "de3255f6b14c3dc60853a021131731b7fd6585cb632c801325e905759ba65fcf"),
    ];

    #[test]
    fn rfc3526_primes_and_fixed_exponent_known_answers() {
        for ((number, p_hash, e_hash, f_hash, k_hash), group) in VECTORS.iter().zip(RFC3526_GROUPS)
        {
            let what = format!("group {number}");
            assert_eq!(sha256_hex(group.prime()), *p_hash, "{what}: p");
            assert_eq!(group.generator(), [2], "{what}: g");
            // The shape RFC 3526 gives every prime: 64 one bits at either end.
            let p = group.prime();
            assert!(p[..8].iter().chain(&p[p.len() - 8..]).all(|b| *b == 0xff));
            let ours = Box::new(group.key_from_exponent(exponent(X)));
            let theirs = Box::new(group.key_from_exponent(exponent(Y)));
            assert_eq!(sha256_hex(ours.public()), *e_hash, "{what}: e");
            assert_eq!(sha256_hex(theirs.public()), *f_hash, "{what}: f");
            let f = theirs.public().to_vec();
            let e = ours.public().to_vec();
            let k1 = ours.agree(&f).unwrap();
            let k2 = theirs.agree(&e).unwrap();
            assert_eq!(k1, k2, "{what}");
            assert_eq!(sha256_hex(&mpint_contents(&k1)), *k_hash, "{what}: K");
        }
        let bits: Vec<u32> = RFC3526_GROUPS.iter().map(|g| g.bits()).collect();
        assert_eq!(bits, [2048, 3072, 4096, 6144, 8192]);
    }

    #[test]
    fn peer_values_outside_the_group_are_refused() {
        let group = &GROUP14;
        let key = || Box::new(group.key_from_exponent(exponent(X)));
        let p = mpint_contents(group.prime());
        let mut p_minus_1 = p.clone();
        *p_minus_1.last_mut().unwrap() -= 1;
        let mut p_minus_2 = p.clone();
        *p_minus_2.last_mut().unwrap() -= 2;
        for bad in [
            &[][..],                      // 0
            &[1],                         // 1
            &[2],                         // one bit set: gives the exponent away
            &[0x07],                      // three bits set
            &p_minus_1[..],               // p - 1
            &p[..],                       // p
            &[0x80, 0, 0, 0, 0, 0, 0, 1], // negative
            &[0, 0x7f, 0xff, 0xff, 0xff], // unneeded leading zero
        ] {
            assert_eq!(
                key().agree(bad).unwrap_err(),
                CryptoError::BadPeerValue,
                "{bad:02x?}"
            );
        }
        // The edges that are inside: 4 bits set, and p - 2.
        assert!(key().agree(&[0x0f]).is_ok());
        assert!(key().agree(&p_minus_2).is_ok());
        let mut bigger = vec![1];
        bigger.extend_from_slice(&p);
        assert!(key().agree(&bigger).is_err());
    }

    #[test]
    fn groups_from_a_server_are_bounded() {
        let p = mpint_contents(GROUP16.prime());
        let g = Group::from_peer(&p, &[5]).unwrap();
        assert_eq!((g.bits(), g.generator()), (4096, &[5][..]));
        assert_eq!(format!("{g:?}"), "Group(4096 bits, g = 05)");
        // A 2047-bit modulus (drop the top bit of group 14) and a 8200-bit one.
        let mut small = GROUP14.prime().to_vec();
        small[0] &= 0x7f;
        assert_eq!(Group::from_peer(&small, &[2]), Err(GroupError::Size(2047)));
        let mut large = vec![0x00, 0xff];
        large.extend_from_slice(GROUP18.prime());
        assert_eq!(Group::from_peer(&large, &[2]), Err(GroupError::Size(8200)));
        let mut even = p.clone();
        *even.last_mut().unwrap() ^= 1;
        assert_eq!(Group::from_peer(&even, &[2]), Err(GroupError::EvenModulus));
        let mut p_minus_1 = p.clone();
        *p_minus_1.last_mut().unwrap() -= 1;
        for g in [&[][..], &[1], &p_minus_1[..], &p[..]] {
            assert_eq!(
                Group::from_peer(&p, g),
                Err(GroupError::Generator),
                "{g:02x?}"
            );
        }
        assert_eq!(
            Group::from_peer(&p[1..], &[2]),
            Err(GroupError::Encoding),
            "p without its sign byte reads as negative"
        );
        // A group from a peer works like ours.
        let a = Box::new(g.key_from_exponent(exponent(X)));
        let b = Box::new(g.key_from_exponent(exponent(Y)));
        let (ea, eb) = (a.public().to_vec(), b.public().to_vec());
        assert_eq!(a.agree(&eb).unwrap(), b.agree(&ea).unwrap());
    }

    #[test]
    fn generated_keys_agree() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
        for group in [&GROUP14, &GROUP18] {
            let a = group.generate(&mut rng).unwrap();
            let b = group.generate(&mut rng).unwrap();
            assert_ne!(a.public(), b.public());
            let (pa, pb) = (a.public().to_vec(), b.public().to_vec());
            assert_eq!(a.agree(&pb).unwrap(), b.agree(&pa).unwrap());
        }
    }

    #[test]
    fn mpint_forms() {
        assert_eq!(unsigned(&[]), Ok(&[][..]));
        assert_eq!(unsigned(&[0x7f]), Ok(&[0x7f][..]));
        assert_eq!(unsigned(&[0, 0x80]), Ok(&[0x80][..]));
        assert!(unsigned(&[0]).is_err());
        assert!(unsigned(&[0, 1]).is_err());
        assert!(unsigned(&[0xff]).is_err());
        assert_eq!(mpint_contents(&[0, 0, 0x80, 1]), [0, 0x80, 1]);
        assert_eq!(mpint_contents(&[0, 0x7f]), [0x7f]);
        assert_eq!(mpint_contents(&[0, 0]), [0u8; 0]);
        assert_eq!(
            (bit_len(&[]), bit_len(&[1]), bit_len(&[0x80, 0])),
            (0, 1, 16)
        );
    }
}
