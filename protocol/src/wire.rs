//! SSH wire encoding (RFC 4251 section 5): a borrowing reader and append-only writers.
//!
//! Readers never allocate: strings come back as slices of the input.

use core::fmt;

/// A value did not parse. Carries what was being read so that a log line says how the
/// peer's message was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("{0} is not valid ASCII")]
    NotAscii(&'static str),
    #[error("{0} has a non-canonical encoding")]
    NonCanonical(&'static str),
    #[error("{0} bytes left over after the message")]
    TrailingBytes(usize),
}

#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("len", &self.buf.len())
            .field("pos", &self.pos)
            .finish()
    }
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(WireError::Truncated(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        Ok(self.u8(what)? != 0)
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// `string`: uint32 length followed by that many bytes.
    pub fn string(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u32(what)? as usize;
        self.bytes(n, what)
    }

    pub fn utf8(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        core::str::from_utf8(self.string(what)?).map_err(|_| WireError::NotUtf8(what))
    }

    /// `name-list` (RFC 4251 5): comma-separated US-ASCII names.
    pub fn name_list(&mut self, what: &'static str) -> Result<NameList<'a>, WireError> {
        let s = self.string(what)?;
        if !s.is_ascii() {
            return Err(WireError::NotAscii(what));
        }
        // Checked ASCII above, so this cannot fail.
        Ok(NameList(
            core::str::from_utf8(s).map_err(|_| WireError::NotAscii(what))?,
        ))
    }

    /// `mpint` as its raw two's complement bytes (sign byte included when present).
    pub fn mpint(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        self.string(what)
    }

    /// Fails if anything is left: a message with trailing bytes is malformed.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.buf.len() - self.pos.min(self.buf.len()) {
            0 => Ok(()),
            n => Err(WireError::TrailingBytes(n)),
        }
    }
}

/// A parsed name-list, borrowed from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NameList<'a>(pub &'a str);

impl<'a> NameList<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let s = self.0;
        s.split(',').filter(|n| !n.is_empty())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(v as u8);
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s);
}

pub fn put_name_list<'n>(out: &mut Vec<u8>, names: impl IntoIterator<Item = &'n str>) {
    let at = out.len();
    put_u32(out, 0);
    let mut first = true;
    for n in names {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(n.as_bytes());
    }
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Encodes an unsigned big-endian integer as an `mpint`: leading zeros stripped and a
/// zero byte prepended when the top bit is set (RFC 4251 5).
pub fn put_mpint_unsigned(out: &mut Vec<u8>, be: &[u8]) {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    let digits = &be[start..];
    let pad = digits.first().is_some_and(|&b| b & 0x80 != 0);
    put_u32(out, (digits.len() + pad as usize) as u32);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_primitives() {
        let mut v = Vec::new();
        put_u8(&mut v, 7);
        put_bool(&mut v, true);
        put_u32(&mut v, 0xdead_beef);
        put_string(&mut v, b"hello");
        put_name_list(&mut v, ["a", "bc", "d"]);
        let mut r = Reader::new(&v);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert!(r.bool("b").unwrap());
        assert_eq!(r.u32("c").unwrap(), 0xdead_beef);
        assert_eq!(r.string("d").unwrap(), b"hello");
        let nl = r.name_list("e").unwrap();
        assert_eq!(nl.iter().collect::<Vec<_>>(), ["a", "bc", "d"]);
        assert!(nl.contains("bc") && !nl.contains("b"));
        r.finish().unwrap();
    }

    #[test]
    fn mpint_examples_from_rfc4251() {
        let enc = |be: &[u8]| {
            let mut v = Vec::new();
            put_mpint_unsigned(&mut v, be);
            v
        };
        assert_eq!(enc(&[0]), [0, 0, 0, 0]);
        assert_eq!(
            enc(&[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]),
            [0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]
        );
        assert_eq!(enc(&[0x80]), [0, 0, 0, 2, 0, 0x80]);
        assert_eq!(enc(&[0, 0, 0x80]), [0, 0, 0, 2, 0, 0x80]);
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(r.string("blob"), Err(WireError::Truncated("blob")));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.string("blob"), Err(WireError::Truncated("blob")));
        let r = Reader::new(&[1]);
        assert_eq!(r.finish(), Err(WireError::TrailingBytes(1)));
    }
}
