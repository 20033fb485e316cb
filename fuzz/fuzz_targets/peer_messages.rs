//! Any bytes as a message from a peer, on every protocol: a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopsy_wire::{
    admission::Admission, exec, frame::decode, member::Record, pair, replica, session, sync,
    transfer,
};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Admission>(data);
    let _ = decode::<pair::Message>(data);
    let _ = decode::<pair::Hello>(data);
    if let Ok(exec::Request::Start(start)) = decode::<exec::Request>(data) {
        let _ = start.within_limits();
    }
    let _ = decode::<exec::Reply>(data);
    let _ = decode::<transfer::Request>(data);
    match decode::<transfer::Data>(data) {
        Ok(transfer::Data::Offer { entries }) => {
            let _ = entries.iter().map(transfer::Entry::name_len).sum::<usize>();
        }
        Ok(transfer::Data::Files { files }) => {
            let _ = transfer::Whole::unpack(&files);
        }
        _ => {}
    }
    // A packed table as it comes, whatever frame it came in.
    let _ = transfer::Whole::unpack(data);
    let _ = decode::<transfer::Reply>(data);
    if let Ok(request) = decode::<session::Request>(data) {
        let _ = request.within_limits();
    }
    let _ = decode::<session::Input>(data);
    let _ = decode::<session::Reply>(data);
    if let Ok(record) = decode::<replica::Record>(data) {
        let _ = record.within_limits();
        let _ = record.signed_bytes("ctx");
        let _ = record.clock.version();
    }
    if let Ok(message) = decode::<sync::Message>(data) {
        let _ = message.within_limits();
    }
    if let Ok(record) = decode::<Record>(data) {
        let _ = record.within_limits();
        let _ = record.signed_bytes();
        let _ = record.key();
    }
});
