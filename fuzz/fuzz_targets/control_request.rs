//! Any bytes as a control API request body: a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = loopsy_wire::control::decode_request(data);
});
