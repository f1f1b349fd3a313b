//! The PROXY protocol header (v1 text, v2 binary) that a load balancer sends before the
//! client's bytes on `proxy_protocol.listen` connections, naming the real client.
//!
//! The header is read off the socket and nothing more: the client's identification
//! line often arrives in the same segment, and it belongs to the session. Each step
//! peeks at what has arrived, decides from the bytes seen so far how many of them are
//! header ([`frame`]), and reads exactly those. Everything is bounded: v1 headers are at
//! most 107 bytes (the spec's own limit), v2 headers at most [`MAX_HEADER`] bytes
//! including TLVs, and the whole header must arrive within the configured
//! `header_timeout`. Parsing proper is the `ppp` crate's.
//!
//! See HAProxy's `doc/proxy-protocol.txt` for the wire format.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use sshr_protocol::text::printable;

/// The longest v1 header, CRLF included (`doc/proxy-protocol.txt`, 2.1).
const MAX_V1: usize = 107;
/// The longest v2 header taken, the 16 fixed bytes and the addresses and TLVs
/// included. Load balancers send a few dozen bytes of TLVs (AWS's VPC endpoint id,
/// HAProxy's unique id); the format allows 64 KiB, which no one needs.
pub const MAX_HEADER: usize = 4096;
/// `PROXY `: how a v1 header starts.
const V1_START: &[u8] = b"PROXY ";
/// The fixed part of a v2 header: the 12-byte signature, version and command, family and
/// protocol, and the length of the rest.
const V2_FIXED: usize = 16;

/// What the load balancer said about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied TCP connection from this client (`PROXY TCP4`/`TCP6`, v2 `PROXY`).
    Proxied(SocketAddr),
    /// The load balancer's own connection, a health check: v2 `LOCAL`, v1 `UNKNOWN`.
    /// Nothing follows that the proxy should serve.
    Local,
}

/// Why a connection did not start with a usable PROXY header. Shown in one line, with
/// nothing the peer sent copied into it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("no complete PROXY header within {0:?}")]
    TimedOut(Duration),
    /// Closed (or reset) after this many bytes of header; after none, by a health check
    /// that only connects (see [`HeaderError::is_health_check`]).
    #[error("connection closed after {0} bytes of PROXY header")]
    Closed(usize),
    #[error("an SSH identification line instead of a PROXY header (a client bypassing the load balancer?)")]
    SshInsteadOfHeader,
    #[error(
        "no PROXY header (the connection starts with neither \"PROXY \" nor the v2 signature)"
    )]
    NotProxy,
    #[error("PROXY v1 header without CRLF within {MAX_V1} bytes")]
    V1TooLong,
    #[error("PROXY v2 header of {0} bytes, more than the {MAX_HEADER} taken")]
    V2TooLong(usize),
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("unsupported PROXY header: {0}")]
    Unsupported(&'static str),
    #[error("reading the PROXY header: {0}")]
    Io(io::ErrorKind),
}

impl HeaderError {
    /// The `reason` label of `sshr_proxy_protocol_errors_total`: a fixed, small set.
    pub fn label(&self) -> &'static str {
        match self {
            HeaderError::TimedOut(_) => "timeout",
            HeaderError::Closed(_) => "closed",
            HeaderError::SshInsteadOfHeader | HeaderError::NotProxy => "missing",
            HeaderError::V1TooLong | HeaderError::V2TooLong(_) => "too_long",
            HeaderError::Malformed(_) => "malformed",
            HeaderError::Unsupported(_) => "unsupported",
            HeaderError::Io(_) => "io",
        }
    }

    /// Whether this is how a balancer's TCP health check ends: it connects and closes
    /// without a byte (AWS NLB, HAProxy without `check-send-proxy`). Not worth a
    /// warning.
    pub fn is_health_check(&self) -> bool {
        matches!(self, HeaderError::Closed(0))
    }

    fn malformed(e: impl fmt::Display) -> Self {
        // ppp's messages are fixed text and numbers, but some hold a literal CRLF.
        HeaderError::Malformed(printable(&e.to_string(), 160))
    }
}

/// Reads the PROXY header that starts `stream`, and nothing after it, within `limit`.
pub async fn read_header(
    stream: &mut TcpStream,
    limit: Duration,
) -> Result<ProxyHeader, HeaderError> {
    crate::rt::timeout(limit, read_header_unbounded(stream))
        .await
        .map_err(|_| HeaderError::TimedOut(limit))?
}

/// [`read_header`] without the time limit. Each round consumes at least one byte (peek
/// waits for data), so there are at most [`MAX_HEADER`] rounds.
async fn read_header_unbounded(stream: &mut TcpStream) -> Result<ProxyHeader, HeaderError> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut have = 0;
    loop {
        let peeked = match stream.peek(&mut buf[have..]).await.map_err(io::Error::from) {
            Ok(n) => n,
            // Reset before a byte: a balancer's plain TCP health check, as a close is.
            Err(e) if have == 0 && e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(HeaderError::Io(e.kind())),
        };
        if peeked == 0 {
            return Err(HeaderError::Closed(have));
        }
        let complete = frame(&buf[..have + peeked])?;
        // (A header's end is never before bytes that were incomplete without it.)
        let end = complete.unwrap_or(have + peeked).max(have);
        stream
            .read_exact(&mut buf[have..end])
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => HeaderError::Closed(have),
                kind => HeaderError::Io(kind),
            })?;
        have = end;
        if complete.is_some() {
            return parse(&buf[..have]);
        }
    }
}

/// How long the header is, judged from its first bytes: `Some(length)` once they hold
/// all of it, `None` while every byte seen so far belongs to the header, or why these
/// bytes cannot be the start of one.
pub fn frame(bytes: &[u8]) -> Result<Option<usize>, HeaderError> {
    let v2 = ppp::v2::PROTOCOL_PREFIX;
    let starts = |sig: &[u8]| {
        let n = bytes.len().min(sig.len());
        bytes[..n] == sig[..n]
    };
    if starts(v2) {
        if bytes.len() < V2_FIXED {
            return Ok(None);
        }
        let len = V2_FIXED + u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
        if len > MAX_HEADER {
            return Err(HeaderError::V2TooLong(len));
        }
        Ok((bytes.len() >= len).then_some(len))
    } else if starts(V1_START) {
        // A v1 header ends at its first LF; a byte on from there is the client's.
        match bytes.iter().position(|&b| b == b'\n') {
            Some(lf) if lf < MAX_V1 => Ok(Some(lf + 1)),
            Some(_) => Err(HeaderError::V1TooLong),
            None if bytes.len() >= MAX_V1 => Err(HeaderError::V1TooLong),
            None => Ok(None),
        }
    } else if bytes.starts_with(b"SSH-") {
        Err(HeaderError::SshInsteadOfHeader)
    } else {
        Err(HeaderError::NotProxy)
    }
}

/// One whole header, as [`frame`] delimited it.
pub fn parse(header: &[u8]) -> Result<ProxyHeader, HeaderError> {
    if header.starts_with(ppp::v2::PROTOCOL_PREFIX) {
        parse_v2(header)
    } else {
        parse_v1(header)
    }
}

fn parse_v1(header: &[u8]) -> Result<ProxyHeader, HeaderError> {
    use ppp::v1::Addresses;
    let parsed = ppp::v1::Header::try_from(header).map_err(HeaderError::malformed)?;
    // ppp stops at the first CR: a header with a stray CR inside is not what we framed.
    if parsed.header.len() != header.len() {
        return Err(HeaderError::Malformed("stray CR in a v1 header".into()));
    }
    let client = match parsed.addresses {
        Addresses::Tcp4(a) => SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
        Addresses::Tcp6(a) => SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
        // "the receiver must ignore anything presented before the CRLF": the balancer's
        // own connection, as a health check.
        Addresses::Unknown => return Ok(ProxyHeader::Local),
    };
    Ok(proxied(client))
}

fn parse_v2(header: &[u8]) -> Result<ProxyHeader, HeaderError> {
    use ppp::v2::{Addresses, Command, Protocol};
    let parsed = ppp::v2::Header::try_from(header).map_err(HeaderError::malformed)?;
    if parsed.len() != header.len() {
        return Err(HeaderError::Malformed("length field disagrees".into()));
    }
    // The TLVs must add up to the declared length: a balancer that gets this wrong
    // may have got the addresses wrong too. (At most MAX_HEADER / 3 of them.)
    if let Some(Err(e)) = parsed.tlvs().find(Result::is_err) {
        return Err(HeaderError::malformed(e));
    }
    if parsed.command == Command::Local {
        // "the receiver must ... ignore the address information"
        return Ok(ProxyHeader::Local);
    }
    if parsed.protocol == Protocol::Datagram {
        return Err(HeaderError::Unsupported("UDP (only TCP is proxied)"));
    }
    let client = match parsed.addresses {
        Addresses::IPv4(a) => SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
        Addresses::IPv6(a) => SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
        Addresses::Unspecified => {
            return Err(HeaderError::Unsupported(
                "PROXY command without addresses (AF_UNSPEC)",
            ))
        }
        Addresses::Unix(_) => return Err(HeaderError::Unsupported("unix socket addresses")),
    };
    Ok(proxied(client))
}

/// A balancer listening on IPv6 may name an IPv4 client as `::ffff:192.0.2.7`: it is
/// the IPv4 client, for penalties, hooks and logs alike.
fn proxied(client: SocketAddr) -> ProxyHeader {
    let ip = crate::core::values::canonical_ip(client.ip());
    ProxyHeader::Proxied(SocketAddr::new(ip, client.port()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::Ipv6Addr;

    use super::*;

    const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

    /// A v2 header: version 2 with `command`, `family_proto`, then `body`.
    fn v2(command: u8, family_proto: u8, body: &[u8]) -> Vec<u8> {
        let mut h = SIG.to_vec();
        h.push(0x20 | command);
        h.push(family_proto);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    /// IPv4 addresses and ports of a v2 PROXY header, then TLVs.
    fn v2_tcp4(src: [u8; 4], sport: u16, tlvs: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&src);
        body.extend_from_slice(&[10, 0, 0, 1]);
        body.extend_from_slice(&sport.to_be_bytes());
        body.extend_from_slice(&22u16.to_be_bytes());
        body.extend_from_slice(tlvs);
        v2(0x1, 0x11, &body)
    }

    /// A TLV: type, big-endian length, value.
    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut t = vec![kind];
        t.extend_from_slice(&(value.len() as u16).to_be_bytes());
        t.extend_from_slice(value);
        t
    }

    fn whole(bytes: &[u8]) -> Result<ProxyHeader, HeaderError> {
        match frame(bytes)? {
            Some(len) => parse(&bytes[..len]),
            None => panic!("incomplete: {bytes:?}"),
        }
    }

    fn client(addr: &str) -> ProxyHeader {
        ProxyHeader::Proxied(addr.parse().unwrap())
    }

    #[test]
    fn v1_headers() {
        let tcp4 = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 22\r\nSSH-2.0-OpenSSH_9.6\r\n";
        assert_eq!(frame(tcp4).unwrap(), Some(40));
        assert_eq!(whole(tcp4).unwrap(), client("192.0.2.7:51234"));
        let tcp6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 22\r\n";
        assert_eq!(whole(tcp6).unwrap(), client("[2001:db8::7]:4000"));
        let mapped = b"PROXY TCP6 ::ffff:192.0.2.7 ::ffff:10.0.0.1 4000 22\r\n";
        assert_eq!(whole(mapped).unwrap(), client("192.0.2.7:4000"));
        assert_eq!(whole(b"PROXY UNKNOWN\r\n").unwrap(), ProxyHeader::Local);
        assert_eq!(
            whole(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").unwrap(),
            ProxyHeader::Local
        );
        // The longest there is: two full-length IPv6 addresses and 5-digit ports.
        let long = format!(
            "PROXY TCP6 {a} {a} 65535 65535\r\n",
            a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(long.len(), 104);
        assert!(matches!(
            whole(long.as_bytes()),
            Ok(ProxyHeader::Proxied(_))
        ));
    }

    #[test]
    fn v2_headers_with_tlvs() {
        let mut tlvs = tlv(0x05, b"unique-id-1234");
        tlvs.extend(tlv(0x04, &[])); // NOOP
        tlvs.extend(tlv(0xEA, b"vpce-0123456789abcdef")); // AWS
        let mut h = v2_tcp4([192, 0, 2, 9], 40000, &tlvs);
        let len = h.len();
        h.extend_from_slice(b"SSH-2.0-x\r\n");
        assert_eq!(frame(&h).unwrap(), Some(len));
        assert_eq!(whole(&h).unwrap(), client("192.0.2.9:40000"));

        let mut body = Vec::new();
        body.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5).octets());
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&[0x1f, 0x90, 0, 22]);
        body.extend(tlv(0x01, b"h2"));
        assert_eq!(
            whole(&v2(0x1, 0x21, &body)).unwrap(),
            client("[2001:db8::5]:8080")
        );
    }

    #[test]
    fn v2_local_is_a_health_check_whatever_the_addresses() {
        assert_eq!(whole(&v2(0x0, 0x00, &[])).unwrap(), ProxyHeader::Local);
        let mut local = v2_tcp4([127, 0, 0, 1], 1, &tlv(0x05, b"check"));
        local[12] = 0x20;
        assert_eq!(whole(&local).unwrap(), ProxyHeader::Local);
    }

    #[test]
    fn partial_headers_are_incomplete_until_their_end() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 22\r\n";
        let v2h = v2_tcp4([192, 0, 2, 9], 40000, &tlv(0x05, b"id"));
        for h in [&v1[..], &v2h[..]] {
            for cut in 1..h.len() {
                assert_eq!(frame(&h[..cut]).unwrap(), None, "cut at {cut}");
            }
            assert_eq!(frame(h).unwrap(), Some(h.len()));
        }
    }

    #[test]
    fn garbage_and_ssh_clients_fail_at_once() {
        assert!(matches!(
            frame(b"SSH-2.0-OpenSSH_9.6\r\n"),
            Err(HeaderError::SshInsteadOfHeader)
        ));
        assert!(matches!(
            frame(b"GET / HTTP/1.0"),
            Err(HeaderError::NotProxy)
        ));
        assert!(matches!(frame(b"PROXz"), Err(HeaderError::NotProxy)));
        assert!(matches!(
            frame(b"\r\n\r\n\0\r\nQUIX"),
            Err(HeaderError::NotProxy)
        ));
        assert!(matches!(frame(b"\x00"), Err(HeaderError::NotProxy)));
    }

    #[test]
    fn malformed_headers_say_what_is_wrong_in_one_line() {
        let cases: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 999.0.2.7 10.0.0.1 51234 22\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 22\r\n".to_vec(),
            b"PROXY TCP5 192.0.2.7 10.0.0.1 1 22\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1\n".to_vec(),
            b"PROXY TCP4 192.0.2.7\r10.0.0.1 1 22\r\n".to_vec(),
            b"PROXY TCP4 \xff\xfe 10.0.0.1 1 22\r\n".to_vec(),
            v2(0x1, 0x11, &[1, 2, 3]), // too short for IPv4
            v2(0x2, 0x11, &[0; 12]),   // command 2
            v2(0x1, 0x51, &[0; 12]),   // family 5
            v2_tcp4([1, 2, 3, 4], 1, &[0x05, 0, 9, b'x']), // TLV overruns
            v2_tcp4([1, 2, 3, 4], 1, &[0x05]), // leftover byte
            {
                let mut h = v2_tcp4([1, 2, 3, 4], 1, &[]);
                h[12] = 0x11; // version 1 in a v2 signature
                h
            },
        ];
        for case in cases {
            let err = whole(&case).unwrap_err();
            assert!(
                matches!(err, HeaderError::Malformed(_)),
                "{case:?}: {err:?}"
            );
            assert_eq!(err.label(), "malformed");
            let text = err.to_string();
            assert!(
                !text.chars().any(char::is_control) && text.len() < 300,
                "{text:?}"
            );
        }
        assert!(matches!(
            whole(&v2(0x1, 0x12, &[0; 12])),
            Err(HeaderError::Unsupported(_))
        ));
        assert!(matches!(
            whole(&v2(0x1, 0x00, &[])),
            Err(HeaderError::Unsupported(_))
        ));
        assert!(matches!(
            whole(&v2(0x1, 0x31, &[0; 216])),
            Err(HeaderError::Unsupported(_))
        ));
    }

    #[test]
    fn over_long_headers_are_refused_before_they_are_read() {
        let mut v1 = b"PROXY UNKNOWN ".to_vec();
        v1.resize(MAX_V1, b'a');
        assert!(matches!(frame(&v1), Err(HeaderError::V1TooLong)));
        v1.extend_from_slice(b"\r\n");
        assert!(matches!(frame(&v1), Err(HeaderError::V1TooLong)));
        let mut big = v2(0x1, 0x11, &[]);
        big[14..16].copy_from_slice(&(MAX_HEADER as u16).to_be_bytes());
        assert!(matches!(
            frame(&big[..16]),
            Err(HeaderError::V2TooLong(n)) if n == MAX_HEADER + 16
        ));
        let at_cap = v2_tcp4(
            [1, 2, 3, 4],
            1,
            &tlv(0x04, &vec![0; MAX_HEADER - 16 - 12 - 3]),
        );
        assert_eq!(at_cap.len(), MAX_HEADER);
        assert_eq!(whole(&at_cap).unwrap(), client("1.2.3.4:1"));
    }

    #[test]
    fn mangled_headers_never_panic_and_stay_in_bounds() {
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        let seeds: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 22\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 22\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2_tcp4([192, 0, 2, 9], 40000, &tlv(0x05, b"unique-id")),
            v2(0x0, 0x00, &[]),
            v2(0x1, 0x21, &[7; 36]),
        ];
        for round in 0..20_000u32 {
            let mut bytes = seeds[round as usize % seeds.len()].clone();
            for _ in 0..1 + rng.next_u32() % 4 {
                let at = rng.next_u32() as usize % bytes.len().max(1);
                match rng.next_u32() % 4 {
                    0 if !bytes.is_empty() => bytes[at] = rng.next_u32() as u8,
                    1 => bytes.truncate(at),
                    2 => bytes.insert(at.min(bytes.len()), rng.next_u32() as u8),
                    _ => bytes.extend_from_slice(&[rng.next_u32() as u8; 3]),
                }
            }
            match frame(&bytes) {
                Ok(Some(len)) => {
                    assert!(len <= bytes.len() && len <= MAX_HEADER, "{bytes:?}");
                    if let Err(e) = parse(&bytes[..len]) {
                        let text = e.to_string();
                        assert!(!text.chars().any(char::is_control), "{text:?}");
                    }
                }
                Ok(None) => assert!(bytes.len() < MAX_HEADER, "{bytes:?}"),
                Err(e) => assert!(!e.to_string().chars().any(char::is_control)),
            }
        }
    }

    // Over real sockets: what is read, what is left for the session, and time.

    /// Runs `check` on the accepted side of a loopback connection whose other side
    /// `client` drives on a thread.
    fn over_socket<C, F, Fut>(client: C, check: F)
    where
        C: FnOnce(std::net::TcpStream) + Send + 'static,
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let peer =
                    std::thread::spawn(move || client(std::net::TcpStream::connect(addr).unwrap()));
                let stream = listener.accept().await.unwrap();
                check(stream).await;
                peer.join().unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    async fn rest_of(mut stream: TcpStream) -> Vec<u8> {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        rest
    }

    #[test]
    fn reads_exactly_the_header_and_leaves_the_ssh_stream() {
        for header in [
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 22\r\n".to_vec(),
            v2_tcp4([192, 0, 2, 7], 51234, &tlv(0x05, b"uid")),
        ] {
            over_socket(
                move |mut c| {
                    // One segment: header and identification line together.
                    let mut all = header;
                    all.extend_from_slice(b"SSH-2.0-OpenSSH_9.6\r\n");
                    c.write_all(&all).unwrap();
                },
                |mut s| async move {
                    let got = read_header(&mut s, Duration::from_secs(10)).await;
                    assert_eq!(got.unwrap(), client("192.0.2.7:51234"));
                    assert_eq!(rest_of(s).await, b"SSH-2.0-OpenSSH_9.6\r\n");
                },
            );
        }
    }

    #[test]
    fn a_header_trickling_in_is_read_whole() {
        let header = v2_tcp4([192, 0, 2, 8], 7, &tlv(0x05, b"slow"));
        over_socket(
            move |mut c| {
                c.set_nodelay(true).unwrap();
                for chunk in header.chunks(5) {
                    c.write_all(chunk).unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
                c.write_all(b"SSH-2.0-x\r\n").unwrap();
            },
            |mut s| async move {
                let got = read_header(&mut s, Duration::from_secs(10)).await;
                assert_eq!(got.unwrap(), client("192.0.2.8:7"));
                assert_eq!(rest_of(s).await, b"SSH-2.0-x\r\n");
            },
        );
    }

    #[test]
    fn a_header_that_stops_halfway_times_out() {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        over_socket(
            move |mut c| {
                c.write_all(b"PROXY TCP4 192.0.2.7 ").unwrap();
                // Hold the connection open until the server gave up.
                let _ = done_rx.recv_timeout(Duration::from_secs(30));
            },
            move |mut s| async move {
                let got = read_header(&mut s, Duration::from_millis(300)).await;
                assert!(matches!(got, Err(HeaderError::TimedOut(_))), "{got:?}");
                let _ = done_tx.send(());
            },
        );
    }

    #[test]
    fn truncated_headers_and_garbage_over_a_socket() {
        over_socket(
            |mut c| c.write_all(&v2_tcp4([1, 2, 3, 4], 1, &[])[..20]).unwrap(),
            |mut s| async move {
                let got = read_header(&mut s, Duration::from_secs(10)).await;
                assert!(matches!(got, Err(HeaderError::Closed(20))), "{got:?}");
            },
        );
        over_socket(
            |mut c| c.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").unwrap(),
            |mut s| async move {
                let got = read_header(&mut s, Duration::from_secs(10)).await;
                assert!(
                    matches!(got, Err(HeaderError::SshInsteadOfHeader)),
                    "{got:?}"
                );
                assert_eq!(got.unwrap_err().label(), "missing");
            },
        );
        over_socket(
            |mut c| {
                let mut long = b"PROXY TCP4 ".to_vec();
                long.resize(300, b'9');
                let _ = c.write_all(&long);
            },
            |mut s| async move {
                let got = read_header(&mut s, Duration::from_secs(10)).await;
                assert!(matches!(got, Err(HeaderError::V1TooLong)), "{got:?}");
            },
        );
        // Health checks that only connect: closed, or reset, before a byte.
        over_socket(
            |_| {},
            |mut s| async move {
                let got = read_header(&mut s, Duration::from_secs(10)).await;
                assert!(matches!(got, Err(HeaderError::Closed(0))), "{got:?}");
                assert!(got.unwrap_err().is_health_check());
            },
        );
        over_socket(
            |c| {
                socket2::SockRef::from(&c)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap()
            },
            |mut s| async move {
                // Peek after the reset arrived.
                glommio::timer::sleep(Duration::from_millis(100)).await;
                let got = read_header(&mut s, Duration::from_secs(10)).await;
                assert!(matches!(got, Err(HeaderError::Closed(0))), "{got:?}");
            },
        );
        // Not once a byte of header came.
        over_socket(
            |mut c| c.write_all(b"PROXY ").unwrap(),
            |mut s| async move {
                let got = read_header(&mut s, Duration::from_secs(10)).await;
                assert!(matches!(got, Err(HeaderError::Closed(6))), "{got:?}");
                assert!(!got.unwrap_err().is_health_check());
            },
        );
    }

    #[test]
    fn local_ignores_what_follows() {
        over_socket(
            |mut c| c.write_all(&v2(0x0, 0x00, &[])).unwrap(),
            |mut s| async move {
                let got = read_header(&mut s, Duration::from_secs(10)).await;
                assert_eq!(got.unwrap(), ProxyHeader::Local);
            },
        );
    }
}
