//! The HTTP endpoint on `metrics_listen`:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /metrics` (and `GET /`, as before there were other paths) | 200, the Prometheus text format |
//! | `GET /healthz` | 200 `ok` while the process runs |
//! | `GET /readyz` | 200 `ready`, or 503 and the reason in one line ([`Readiness`]) |
//! | any other path | 404 |
//! | another method than `GET` or `HEAD` | 405 |
//!
//! One request per connection (`Connection: close`), parsed by `httparse`. Whoever can
//! reach the port is not trusted: a request head is at most [`MAX_REQUEST_BYTES`], a
//! connection gets [`CONNECTION_TIMEOUT`] in all, and [`WORKERS`] threads serve
//! connections one at a time each, so a client that dawdles costs one worker a few
//! seconds and never a thread of its own. (tiny_http, the usual small server, starts a
//! thread per connection without a read timeout.)

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;

use super::Readiness;

/// Threads serving connections.
pub const WORKERS: usize = 4;
/// Longest request head read (request line and headers; a body is never read).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time for a whole connection: reading the request and writing the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Headers parsed per request, at most.
const MAX_HEADERS: usize = 32;

/// Serves `listener` on [`WORKERS`] threads for the rest of the process.
pub fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    readiness: Arc<dyn Readiness>,
) -> io::Result<()> {
    let listener = Arc::new(listener);
    for _ in 0..WORKERS {
        let (listener, handle, readiness) = (listener.clone(), handle.clone(), readiness.clone());
        std::thread::Builder::new()
            .name("sshr-metrics".into())
            .spawn(move || loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let metrics = || {
                            handle.run_upkeep();
                            handle.render()
                        };
                        // A client that went away or broke the rules: nothing to do.
                        let _ = serve_connection(stream, &metrics, &*readiness);
                    }
                    // Out of file descriptors, say: do not spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            })?;
    }
    Ok(())
}

/// Reads one request from `stream` and answers it, within [`CONNECTION_TIMEOUT`].
fn serve_connection(
    mut stream: TcpStream,
    metrics: &dyn Fn() -> String,
    readiness: &dyn Readiness,
) -> io::Result<()> {
    let deadline = Instant::now() + CONNECTION_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    let answer = loop {
        let parsed = parse(&buf[..len]);
        if let Some(answer) = parsed {
            break answer;
        }
        if len == buf.len() {
            break Answer::status(431, "request head too large");
        }
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    };
    let response = answer.into_response(metrics, readiness);
    let mut sent = 0;
    while sent < response.len() {
        stream.set_write_timeout(Some(remaining(deadline)?))?;
        match stream.write(&response[sent..]) {
            Ok(0) => return Ok(()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    stream.shutdown(Shutdown::Write)
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Metrics { head_only: bool },
    Healthz { head_only: bool },
    Readyz { head_only: bool },
    Status(u16, &'static str),
}

impl Answer {
    fn status(code: u16, text: &'static str) -> Answer {
        Answer::Status(code, text)
    }

    fn into_response(self, metrics: &dyn Fn() -> String, readiness: &dyn Readiness) -> Vec<u8> {
        let (code, content_type, body, head_only) = match self {
            Answer::Metrics { head_only } => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics(),
                head_only,
            ),
            Answer::Healthz { head_only } => (200, "text/plain", "ok\n".into(), head_only),
            Answer::Readyz { head_only } => match readiness.ready() {
                Ok(()) => (200, "text/plain", "ready\n".into(), head_only),
                // One line, whatever a reason holds.
                Err(why) => (
                    503,
                    "text/plain",
                    format!("{}\n", why.replace(['\r', '\n'], " ")),
                    head_only,
                ),
            },
            Answer::Status(code, text) => (code, "text/plain", format!("{text}\n"), false),
        };
        let reason = match code {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        };
        let mut out = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(body.as_bytes());
        }
        out
    }
}

/// The answer to the request head in `buf`; `None` while it is incomplete.
fn parse(buf: &[u8]) -> Option<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => {
            Some(Answer::status(431, "too many request headers"))
        }
        Err(_) => Some(Answer::status(400, "bad request")),
        Ok(httparse::Status::Complete(_)) => {
            let head_only = match request.method {
                Some("GET") => false,
                Some("HEAD") => true,
                _ => return Some(Answer::status(405, "only GET and HEAD")),
            };
            let path = request.path.unwrap_or_default();
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            Some(match path {
                "/metrics" | "/" => Answer::Metrics { head_only },
                "/healthz" => Answer::Healthz { head_only },
                "/readyz" => Answer::Readyz { head_only },
                _ => Answer::status(404, "not found: try /metrics, /healthz or /readyz"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn routes() {
        let get = |path: &str| parse(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(get("/metrics"), Some(Answer::Metrics { head_only: false }));
        assert_eq!(get("/"), Some(Answer::Metrics { head_only: false }));
        assert_eq!(get("/healthz"), Some(Answer::Healthz { head_only: false }));
        assert_eq!(
            get("/readyz?verbose"),
            Some(Answer::Readyz { head_only: false })
        );
        assert!(matches!(get("/other"), Some(Answer::Status(404, _))));
        assert_eq!(
            parse(b"HEAD /readyz HTTP/1.0\r\n\r\n"),
            Some(Answer::Readyz { head_only: true })
        );
        assert!(matches!(
            parse(b"POST /readyz HTTP/1.1\r\n\r\n"),
            Some(Answer::Status(405, _))
        ));
        assert_eq!(parse(b"GET /readyz HTTP/1.1\r\nHost: x\r\n"), None);
        assert!(matches!(
            parse(b"GET /\x01 HTTP/1.1\r\n\r\n"),
            Some(Answer::Status(400, _))
        ));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(
            parse(many.as_bytes()),
            Some(Answer::Status(431, _))
        ));
    }

    struct Fixed(Mutex<Result<(), String>>);
    impl Readiness for Fixed {
        fn ready(&self) -> Result<(), String> {
            self.0.lock().unwrap().clone()
        }
    }

    fn exchange(listener: &TcpListener, readiness: &Fixed, request: &[u8]) -> String {
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.write_all(request).unwrap();
        let (server, _) = listener.accept().unwrap();
        serve_connection(server, &|| "sshr_sessions_total 3\n".into(), readiness).unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn idle_clients_neither_block_others_nor_stay() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        serve(listener, handle, Arc::new(Fixed(Mutex::new(Ok(()))))).unwrap();
        // Fewer idle clients than workers: the others still answer at once.
        let idle: Vec<TcpStream> = (0..WORKERS - 1)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(CONNECTION_TIMEOUT / 2))
            .unwrap();
        client.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).unwrap();
        assert!(out.ends_with("\r\n\r\nok\n"), "{out}");
        // An idle client is dropped after CONNECTION_TIMEOUT.
        for mut c in idle {
            c.set_read_timeout(Some(CONNECTION_TIMEOUT * 4)).unwrap();
            let started = Instant::now();
            assert_eq!(
                c.read(&mut [0u8; 16]).unwrap(),
                0,
                "closed without an answer"
            );
            assert!(started.elapsed() < CONNECTION_TIMEOUT * 4);
        }
    }

    #[test]
    fn answers_over_a_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let readiness = Fixed(Mutex::new(Ok(())));
        let out = exchange(&listener, &readiness, b"GET /readyz HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nready\n"), "{out}");

        *readiness.0.lock().unwrap() = Err("provider x failed: a\nb".into());
        let out = exchange(&listener, &readiness, b"GET /readyz HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        assert!(out.ends_with("\r\n\r\nprovider x failed: a b\n"), "{out}");
        let out = exchange(&listener, &readiness, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(out.ends_with("\r\n\r\nok\n"), "{out}");
        let out = exchange(&listener, &readiness, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(out.contains("Content-Length: 22\r\n"), "{out}");
        assert!(out.ends_with("sshr_sessions_total 3\n"), "{out}");
        let out = exchange(&listener, &readiness, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(out.ends_with("\r\n\r\n"), "{out}");

        // A head that never ends is cut off at MAX_REQUEST_BYTES.
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST_BYTES, b'a');
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = client.write_all(&huge);
            let mut out = String::new();
            let _ = client.read_to_string(&mut out);
            out
        });
        serve_connection(server, &String::new, &readiness).unwrap();
        let out = writer.join().unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    }
}
