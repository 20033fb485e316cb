//! Any text as a pairing code: a typed error, never a panic; a code that parses encodes
//! back to a code that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopsy_wire::pair::Code;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for candidate in [text.to_owned(), format!("LOOPSY1-{text}")] {
        if let Ok(code) = Code::from_text(&candidate) {
            assert_eq!(Code::from_text(&code.to_text()), Ok(code));
        }
    }
});
