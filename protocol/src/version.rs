//! Protocol version exchange (RFC 4253 4.2).
//!
//! Servers may send other lines before their identification string; lines end in CR LF
//! (a bare LF is accepted, as OpenSSH does); the identification line is at most 255
//! bytes including CR LF.

use crate::error::PeerMisbehaved;

/// Longest identification line, CR LF included (RFC 4253 4.2).
pub const MAX_VERSION_LINE: usize = 255;
/// Pre-banner lines a server may send before we give up (OpenSSH allows 1024 too).
pub const MAX_PREAMBLE_LINES: usize = 1024;
/// Longest pre-banner line we accept; they are not bounded by the RFC but must be by us.
pub const MAX_PREAMBLE_LINE: usize = 8192;

/// Incremental parser of the peer's identification line.
#[derive(Debug)]
pub struct VersionParser {
    allow_preamble: bool,
    preamble_lines: usize,
}

/// Outcome of feeding bytes to the parser.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Nothing complete yet: keep all input and call again with more.
    NeedMore,
    /// A pre-banner line was skipped; `consumed` bytes can be dropped.
    Preamble { consumed: usize },
    /// The identification line (without CR LF); `consumed` includes the line end.
    Version { line: String, consumed: usize },
}

impl VersionParser {
    /// `allow_preamble` is true when reading a server's identification (client role).
    pub fn new(allow_preamble: bool) -> Self {
        Self {
            allow_preamble,
            preamble_lines: 0,
        }
    }

    pub fn parse(&mut self, input: &[u8]) -> Result<Parsed, PeerMisbehaved> {
        let is_version = input.starts_with(b"SSH-");
        let cap = if is_version || !self.allow_preamble {
            MAX_VERSION_LINE
        } else {
            MAX_PREAMBLE_LINE
        };
        let Some(nl) = input.iter().take(cap).position(|&b| b == b'\n') else {
            if input.len() >= cap {
                return Err(if is_version {
                    PeerMisbehaved::VersionTooLong
                } else if self.allow_preamble {
                    PeerMisbehaved::TooMuchPreamble
                } else {
                    PeerMisbehaved::BadVersion(lossy(&input[..64]))
                });
            }
            // A peer that is not speaking SSH at all: fail as soon as we can tell.
            if !self.allow_preamble && !prefix_compatible(input) {
                return Err(PeerMisbehaved::BadVersion(lossy(input)));
            }
            return Ok(Parsed::NeedMore);
        };
        let consumed = nl + 1;
        let mut line = &input[..nl];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if !line.starts_with(b"SSH-") {
            if !self.allow_preamble {
                return Err(PeerMisbehaved::BadVersion(lossy(line)));
            }
            self.preamble_lines += 1;
            if self.preamble_lines > MAX_PREAMBLE_LINES {
                return Err(PeerMisbehaved::TooMuchPreamble);
            }
            return Ok(Parsed::Preamble { consumed });
        }
        // RFC 4253 4.2: printable US-ASCII except space and minus in the version fields;
        // we only need protoversion and a printable line.
        if line.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
            return Err(PeerMisbehaved::BadVersion(lossy(line)));
        }
        let proto = line[4..].split(|&b| b == b'-').next().unwrap_or_default();
        if proto != b"2.0" && proto != b"1.99" {
            return Err(PeerMisbehaved::BadVersion(lossy(line)));
        }
        if line.len() < 8 {
            return Err(PeerMisbehaved::BadVersion(lossy(line)));
        }
        Ok(Parsed::Version {
            line: lossy(line),
            consumed,
        })
    }
}

fn prefix_compatible(input: &[u8]) -> bool {
    let n = input.len().min(4);
    input[..n] == b"SSH-"[..n]
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(255)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(p: &mut VersionParser, mut input: &[u8]) -> Result<String, PeerMisbehaved> {
        loop {
            match p.parse(input)? {
                Parsed::NeedMore => panic!("incomplete"),
                Parsed::Preamble { consumed } => input = &input[consumed..],
                Parsed::Version { line, .. } => return Ok(line),
            }
        }
    }

    #[test]
    fn crlf_and_bare_lf() {
        let mut p = VersionParser::new(false);
        assert_eq!(
            version(&mut p, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").unwrap(),
            "SSH-2.0-OpenSSH_9.2p1 Debian-2"
        );
        assert_eq!(version(&mut p, b"SSH-2.0-foo\n").unwrap(), "SSH-2.0-foo");
        assert_eq!(
            version(&mut p, b"SSH-1.99-foo\r\n").unwrap(),
            "SSH-1.99-foo"
        );
    }

    #[test]
    fn preamble_only_from_servers() {
        let input = b"hello there\r\nwelcome\nSSH-2.0-srv\r\n";
        assert_eq!(
            version(&mut VersionParser::new(true), input).unwrap(),
            "SSH-2.0-srv"
        );
        assert!(matches!(
            VersionParser::new(false).parse(input),
            Err(PeerMisbehaved::BadVersion(_))
        ));
    }

    #[test]
    fn limits() {
        let mut long = b"SSH-2.0-".to_vec();
        long.resize(300, b'a');
        assert_eq!(
            VersionParser::new(true).parse(&long),
            Err(PeerMisbehaved::VersionTooLong)
        );
        assert!(matches!(
            VersionParser::new(false).parse(b"SSH-1.5-old\r\n"),
            Err(PeerMisbehaved::BadVersion(_))
        ));
        assert!(matches!(
            VersionParser::new(false).parse(b"GET / HTTP/1.1"),
            Err(PeerMisbehaved::BadVersion(_))
        ));
        assert_eq!(
            VersionParser::new(false).parse(b"SSH-2.0-x"),
            Ok(Parsed::NeedMore)
        );
        let mut p = VersionParser::new(true);
        let mut input = Vec::new();
        for _ in 0..=MAX_PREAMBLE_LINES {
            input.extend_from_slice(b"x\n");
        }
        let mut at = 0;
        let err = loop {
            match p.parse(&input[at..]) {
                Ok(Parsed::Preamble { consumed }) => at += consumed,
                Ok(other) => panic!("{other:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(err, PeerMisbehaved::TooMuchPreamble);
    }
}
