//! `kind = "http"`: a Web API answering a POST per login (`docs/providers.md`).
//!
//! Each lookup is one `POST {url}` with the JSON of [`LoginRequest`]; the directory
//! answers 200 with the JSON of [`answer::parse`], or 404 for a user it does not know.
//! Any other status, a refused connection or a timeout is an outage
//! ([`HookError::Unavailable`], [`HookError::Timeout`]), so the chain falls back on its
//! last good answer rather than on the next provider.
//!
//! One [`ureq::Agent`] serves every helper thread: its pool keeps connections alive
//! between logins, so a busy proxy pays the TCP (and TLS) handshake once per
//! connection, not once per login.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sshr_protocol::text::{printable, Untrusted};

use super::answer::{self, LoginRequest};
use super::Backend;
use crate::hooks::{HookContext, HookError, Lookup};

/// Largest answer read; a directory sending more is broken or hostile.
pub const MAX_ANSWER_BYTES: u64 = 1 << 20;
/// Idle connections kept for the directory, enough for every helper thread of a busy
/// proxy to find one.
const IDLE_CONNECTIONS: usize = 64;
/// How much of an error answer's body is read to quote its first line in the log.
const ERROR_BODY_BYTES: u64 = 4096;

/// The directory at `url`.
pub struct Http {
    /// The URL requests go to, as configured (it may hold credentials).
    url: String,
    /// The URL as the log shows it: no user info, no query.
    shown: String,
    /// The `Authorization` header value, if any. Never logged.
    authorization: Option<String>,
    agent: ureq::Agent,
}

impl Http {
    /// The directory at `url` (`http://` or `https://`), asked with `Authorization:
    /// Bearer <token>` when `bearer_token_file` is given (read now, surrounding
    /// whitespace removed), trusting the PEM certificates of `ca_file` instead of the
    /// system's roots for `https`. A request that takes longer than `timeout`, from
    /// name resolution to the last byte of the answer, fails.
    ///
    /// Fails on what the operator must fix: a URL that does not parse, a token or CA
    /// file that cannot be read or holds nothing usable.
    pub fn open(
        url: &str,
        bearer_token_file: Option<&PathBuf>,
        ca_file: Option<&PathBuf>,
        timeout: Duration,
    ) -> Result<Http, String> {
        let shown = url_for_log(url);
        let uri: ureq::http::Uri = url
            .parse()
            .map_err(|e| format!("url {shown} does not parse: {e}"))?;
        let scheme = uri.scheme_str().unwrap_or("");
        if scheme != "http" && scheme != "https" {
            return Err(format!("url {shown} must start with http:// or https://"));
        }
        let authorization = match bearer_token_file {
            None => None,
            Some(path) => {
                let token = read_token(path)?;
                if scheme == "http" {
                    tracing::warn!(
                        url = %shown,
                        "the bearer token is sent over plain http: anyone on the path can read it"
                    );
                }
                Some(format!("Bearer {token}"))
            }
        };
        let roots = match ca_file {
            None => ureq::tls::RootCerts::PlatformVerifier,
            Some(path) => read_roots(path)?,
        };
        let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // Statuses are answers to read (404: unknown user), not transport errors.
            .http_status_as_error(false)
            // A redirect is a misconfigured URL: fail on it rather than post the login
            // (and the token) somewhere else.
            .max_redirects(0)
            .max_redirects_will_error(false)
            // The directory is reached directly: a proxy from the environment of the
            // daemon would be a surprise, and could see the token.
            .proxy(None)
            .max_idle_connections(IDLE_CONNECTIONS)
            .max_idle_connections_per_host(IDLE_CONNECTIONS)
            .user_agent(concat!("sshr/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .into();
        Ok(Http {
            url: url.to_owned(),
            shown,
            authorization,
            agent,
        })
    }

    fn failed(&self, error: ureq::Error) -> HookError {
        match error {
            ureq::Error::Timeout(_) => HookError::Timeout,
            ureq::Error::BodyExceedsLimit(_) => HookError::InvalidData(format!(
                "answer from {} is larger than {MAX_ANSWER_BYTES} bytes",
                self.shown
            )),
            // ureq's messages name the failure (connection refused, a TLS alert), never
            // the request's headers.
            other => HookError::Unavailable(format!("POST {}: {other}", self.shown)),
        }
    }
}

/// The bearer token in `path`, trimmed. The error never shows the file's content.
fn read_token(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read bearer_token_file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("bearer_token_file {} is empty", path.display()));
    }
    // The token goes into a header line: a control character or non-ASCII byte
    // would break it (or smuggle another header).
    if !token.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(format!(
            "bearer_token_file {} holds characters that cannot go into an HTTP header",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// The certificates of the PEM file `path`, as the only roots to trust.
fn read_roots(path: &PathBuf) -> Result<ureq::tls::RootCerts, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(format!("ca_file {}: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "ca_file {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(ureq::tls::RootCerts::Specific(Arc::new(certs)))
}

/// `url` without what may be secret: the user info (`user:password@`) and the query
/// (`?key=...`), so that it can be logged.
pub fn url_for_log(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (path, cut) = match path.find(['?', '#']) {
        Some(i) => (&path[..i], "?…"),
        None => (path, ""),
    };
    printable(&format!("{scheme}{host}{path}{cut}"), 256)
}

impl Backend for Http {
    fn describe(&self) -> String {
        format!("http {}", self.shown)
    }

    fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError> {
        let body = LoginRequest::new(ctx).to_json();
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request.send(body).map_err(|e| self.failed(e))?;
        let status = response.status().as_u16();
        match status {
            200 => {
                let answer = response
                    .body_mut()
                    .with_config()
                    .limit(MAX_ANSWER_BYTES)
                    .read_to_vec()
                    .map_err(|e| self.failed(e))?;
                answer::parse(ctx, &answer)
            }
            // Read the (short) body so that the connection goes back to the pool.
            404 => {
                let _ = error_line(&mut response);
                Ok(Lookup::Unknown)
            }
            _ => {
                let line = error_line(&mut response);
                let why = if line.is_empty() {
                    String::new()
                } else {
                    format!(": {}", Untrusted(&line))
                };
                Err(HookError::Unavailable(format!(
                    "POST {} answered HTTP {status} for user {}{why}",
                    self.shown,
                    Untrusted(&ctx.user)
                )))
            }
        }
    }
}

/// The first line of an error answer's body (the directory's explanation, if it sent
/// one), to be shown as [`Untrusted`].
fn error_line(response: &mut ureq::http::Response<ureq::Body>) -> String {
    let body = response
        .body_mut()
        .with_config()
        .limit(ERROR_BODY_BYTES)
        .read_to_vec()
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    line.unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_url_has_no_credentials() {
        for (url, shown) in [
            ("https://dir.example/sshr", "https://dir.example/sshr"),
            (
                "https://sshr:s3cret@dir.example:8443/v1/login",
                "https://dir.example:8443/v1/login",
            ),
            ("http://a@b@dir.example", "http://dir.example"),
            (
                "https://dir.example/login?key=s3cret#x",
                "https://dir.example/login?…",
            ),
            ("https://dir.example?key=s3cret", "https://dir.example?…"),
        ] {
            assert_eq!(url_for_log(url), shown, "{url}");
        }
    }

    #[test]
    fn open_refuses_what_the_operator_must_fix() {
        let t = Duration::from_secs(1);
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = Http::open("http://127.0.0.1:1/", Some(&missing), None, t)
            .err()
            .unwrap();
        assert!(err.contains("cannot read bearer_token_file"), "{err}");

        let token = dir.path().join("token");
        std::fs::write(&token, "  \n").unwrap();
        let err = Http::open("http://127.0.0.1:1/", Some(&token), None, t)
            .err()
            .unwrap();
        assert!(err.contains("is empty"), "{err}");
        std::fs::write(&token, "s3cret\r\nX-Evil: 1\n").unwrap();
        let err = Http::open("http://127.0.0.1:1/", Some(&token), None, t)
            .err()
            .unwrap();
        assert!(!err.contains("s3cret"), "{err}");

        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let err = Http::open("https://127.0.0.1:1/", None, Some(&ca), t)
            .err()
            .unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");

        let err = Http::open("ftp://dir.example/", None, None, t)
            .err()
            .unwrap();
        assert!(err.contains("http:// or https://"), "{err}");
    }

    #[test]
    fn describe_hides_credentials() {
        let http = Http::open(
            "https://u:p@dir.example/x?k=v",
            None,
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(http.describe(), "http https://dir.example/x?…");
    }
}
