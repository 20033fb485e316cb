//! Any bytes as one line to `loopsy mcp`: a JSON-RPC message or the error to answer,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = loopsy_mcp::stdio::parse(data);
});
