//! The daemon's log output: `tracing` events on stderr, one event per line whatever a
//! field holds.
//!
//! Fields that come from a peer are wrapped in [`Untrusted`](sshr_protocol::text::Untrusted)
//! where they are logged (quoted, escaped, cut). This writer is the second line: it
//! escapes control and invisible characters in every field and message and caps each at
//! [`MAX_FIELD_CHARS`], so that a field someone forgot to wrap still cannot forge a line
//! or flood the log.

use std::fmt::{self, Write as _};

use sshr_protocol::text::one_line;
use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;

/// Characters of one field or message written; the rest is cut and counted.
pub const MAX_FIELD_CHARS: usize = 2048;

/// Writes one field: `name=value`, or the bare message.
fn write_field(w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let mut text = String::new();
    write!(text, "{value:?}")?;
    let text = one_line(&text, MAX_FIELD_CHARS);
    match field.name() {
        "message" => w.write_str(&text),
        name if name.starts_with("log.") => Ok(()),
        name => write!(w, "{name}={text}"),
    }
}

/// Installs the stderr subscriber (`RUST_LOG` filters; `info` by default).
pub fn init() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(tracing_subscriber::fmt::format::debug_fn(write_field).delimited(" "))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_field_cannot_forge_a_line_or_flood_the_log() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(write_field).delimited(" "))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let user = "root\n2026-11-30T00:00:00Z  INFO authenticated; relaying user=root";
            let huge = "n".repeat(60_000);
            tracing::info!(user = %user, list = %huge, "refused {}", "x\ry");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("user=root\\n2026"), "{text}");
        assert!(text.contains("refused x\\ry"), "{text}");
        assert!(text.len() < MAX_FIELD_CHARS + 400, "{} bytes", text.len());
        assert!(text.contains("(+57952 bytes)"), "{text}");
    }
}
