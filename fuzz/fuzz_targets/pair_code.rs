//! Any text as a pairing code, long or short: a typed error, never a panic; a code that
//! parses encodes back to a code that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopsy_wire::pair::{Code, MAX_SHORT_TEXT, ShortCode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for candidate in [text.to_owned(), format!("LOOPSY1-{text}")] {
        if let Ok(code) = Code::from_text(&candidate) {
            assert_eq!(Code::from_text(&code.to_text()), Ok(code));
        }
    }
    if let Ok(short) = ShortCode::from_text(text) {
        let written = short.to_text();
        assert!(written.len() <= MAX_SHORT_TEXT);
        assert_eq!(ShortCode::from_text(&written), Ok(short));
    }
});
