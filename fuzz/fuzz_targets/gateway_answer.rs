//! Any datagram as a gateway's answer to PCP or NAT-PMP: a response or an error, never a
//! panic. Any device on the LAN can send one that looks as if the gateway did.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopsy_mesh::portmap::{natpmp, pcp};

fuzz_target!(|data: &[u8]| {
    let _ = pcp::decode(data);
    let _ = natpmp::decode(data);
});
