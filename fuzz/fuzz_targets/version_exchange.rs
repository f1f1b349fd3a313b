//! The identification-line parser in both roles on arbitrary input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sshr_protocol::version::{Parsed, VersionParser, MAX_VERSION_LINE};

fuzz_target!(|data: &[u8]| {
    for allow_preamble in [false, true] {
        let mut p = VersionParser::new(allow_preamble);
        let mut input = data;
        loop {
            match p.parse(input) {
                Ok(Parsed::NeedMore) | Err(_) => break,
                Ok(Parsed::Preamble { consumed }) => {
                    assert!(allow_preamble && consumed > 0 && consumed <= input.len());
                    input = &input[consumed..];
                }
                Ok(Parsed::Version { line, consumed }) => {
                    assert!(line.starts_with("SSH-") && consumed <= MAX_VERSION_LINE);
                    break;
                }
            }
        }
    }
});
