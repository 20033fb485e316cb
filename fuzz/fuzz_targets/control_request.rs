//! Any bytes as a control API request body, or as a frame of a terminal hand-over (either
//! way): a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopsy_wire::{frame, handover};

fuzz_target!(|data: &[u8]| {
    let _ = loopsy_wire::control::decode_request(data);
    let _ = frame::decode::<handover::ToNode>(data);
    let _ = frame::decode::<handover::ToClient>(data);
});
