//! Any bytes through the frame splitter and the CBOR decoder: errors, never a panic, a hang
//! or an allocation the frame limit does not allow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopsy_wire::frame;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((body, used))) = frame::split(rest, 64 * 1024) {
        let _ = frame::decode::<ciborium::Value>(body);
        let _ = frame::decode::<loopsy_wire::control::Response>(body);
        rest = &rest[used..];
    }
});
