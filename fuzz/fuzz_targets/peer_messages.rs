//! Any bytes as a message from a peer, on every protocol: a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopsy_wire::{admission::Admission, frame::decode, member::Record, pair, sync};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Admission>(data);
    let _ = decode::<pair::Message>(data);
    let _ = decode::<pair::Hello>(data);
    if let Ok(message) = decode::<sync::Message>(data) {
        let _ = message.within_limits();
    }
    if let Ok(record) = decode::<Record>(data) {
        let _ = record.within_limits();
        let _ = record.signed_bytes();
        let _ = record.key();
    }
});
