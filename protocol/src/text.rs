//! Text a peer sent, made safe to show a human: in a log line, in an error, in a
//! DISCONNECT to the other side.
//!
//! Anything a peer sends is hostile until bounded. A user name with a newline in it would
//! forge a second log line, an escape sequence would repaint an operator's terminal, and a
//! 60 KB name list copied into every log line and DISCONNECT turns each unauthenticated
//! connection into 120 KB of output. Every string from the wire that ends up in text for
//! people goes through one of these: control characters and other invisible code points
//! are escaped (`\n`, `\u{1b}`), and the length is capped with a note of what was cut.

use std::fmt;

use crate::wire::NameList;

/// Characters of one untrusted field shown before it is cut.
pub const MAX_FIELD_CHARS: usize = 128;
/// Names of a peer's name-list shown in an error before the rest is only counted.
pub const MAX_LISTED_NAMES: usize = 8;
/// Characters of one name of such a list.
const MAX_NAME_CHARS: usize = 64;

/// A string from the peer, shown quoted, escaped and cut at [`MAX_FIELD_CHARS`]:
/// `"ali\nce"`, `"aaaa…" (+4000 bytes)`.
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let shown = write_escaped(f, self.0, MAX_FIELD_CHARS)?;
        f.write_str("\"")?;
        if shown < self.0.len() {
            write!(f, " (+{} bytes)", self.0.len() - shown)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `s` with control and invisible characters escaped, cut after `max_chars` characters
/// (with "…" marking the cut). No quotes: for text inside a sentence.
pub fn printable(s: &str, max_chars: usize) -> String {
    struct Escaped<'a>(&'a str, usize);
    impl fmt::Display for Escaped<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let shown = write_escaped(f, self.0, self.1)?;
            if shown < self.0.len() {
                f.write_str("…")?;
            }
            Ok(())
        }
    }
    Escaped(s, max_chars).to_string()
}

/// A peer's name-list for an error message: the first [`MAX_LISTED_NAMES`] names,
/// each escaped and cut, then how many more there were.
pub fn name_list_summary(list: NameList<'_>) -> String {
    let mut out = String::new();
    let mut count = 0usize;
    for name in list.iter() {
        if count < MAX_LISTED_NAMES {
            if count > 0 {
                out.push(',');
            }
            out.push_str(&printable(name, MAX_NAME_CHARS));
        }
        count += 1;
    }
    if count > MAX_LISTED_NAMES {
        out.push_str(&format!(" (+{} more)", count - MAX_LISTED_NAMES));
    }
    out
}

/// `s` with only control and invisible characters escaped (quotes left alone), cut
/// after `max_chars` characters: the last line of defence of a log writer, which must
/// keep one event on one line whatever a field holds.
pub fn one_line(s: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    let invisible = |c: char| needs_escape(c) && c != '"' && c != '\\';
    if s.chars().count() <= max_chars && !s.chars().any(invisible) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max_chars * 2));
    for (n, c) in s.chars().enumerate() {
        if n == max_chars {
            out.push_str(&format!("… (+{} bytes)", s.len() - out_len_of(s, n)));
            break;
        }
        if invisible(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Byte length of the first `chars` characters of `s`.
fn out_len_of(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(at, _)| at)
}

/// Writes `s` escaped, at most `max_chars` characters of it; returns how many bytes of
/// `s` were shown.
fn write_escaped(
    f: &mut fmt::Formatter<'_>,
    s: &str,
    max_chars: usize,
) -> Result<usize, fmt::Error> {
    for (n, (at, c)) in s.char_indices().enumerate() {
        if n == max_chars {
            return Ok(at);
        }
        if needs_escape(c) {
            write!(f, "{}", c.escape_default())?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(s.len())
}

/// Control characters, the quote and backslash (so that the quoting cannot be forged),
/// and code points that change how text is shown without being seen: bidirectional
/// overrides, zero-width characters, line and paragraph separators.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '"'
        || c == '\\'
        || matches!(c,
            '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_escapes_cannot_forge_a_line() {
        let forged = "root\n2026-01-01T00:00:00Z  INFO authenticated; relaying user=root";
        let shown = Untrusted(forged).to_string();
        assert!(!shown.contains('\n'));
        assert!(shown.starts_with("\"root\\n2026"));
        assert_eq!(
            Untrusted("a\u{1b}[2Jb\r\"\\").to_string(),
            "\"a\\u{1b}[2Jb\\r\\\"\\\\\""
        );
        assert_eq!(Untrusted("élan").to_string(), "\"élan\"");
        assert_eq!(printable("a\u{202e}b\u{2028}", 10), "a\\u{202e}b\\u{2028}");
        assert_eq!(one_line("user=\"x\"\nforged", 100), "user=\"x\"\\nforged");
        assert!(matches!(
            one_line("plain", 100),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(one_line("abcdef", 2), "ab… (+4 bytes)");
    }

    #[test]
    fn long_fields_are_cut_with_a_count() {
        let long = "x".repeat(5000);
        let shown = Untrusted(&long).to_string();
        assert!(shown.len() < MAX_FIELD_CHARS + 32, "{shown}");
        assert!(shown.ends_with(&format!(" (+{} bytes)", 5000 - MAX_FIELD_CHARS)));
        assert_eq!(printable(&long, 3), "xxx…");
        assert_eq!(printable("xxx", 3), "xxx");
    }

    #[test]
    fn name_lists_show_eight_names_and_count_the_rest() {
        let many: Vec<String> = (0..5000).map(|i| format!("alg{i}@example")).collect();
        let joined = many.join(",");
        let summary = name_list_summary(NameList(&joined));
        assert!(summary.starts_with("alg0@example,alg1@example,"));
        assert!(summary.ends_with(" (+4992 more)"), "{summary}");
        assert!(summary.len() < 200);
        assert_eq!(name_list_summary(NameList("a,b")), "a,b");
        let evil = format!("{},x", "\n".repeat(300));
        assert!(!name_list_summary(NameList(&evil)).contains('\n'));
    }
}
