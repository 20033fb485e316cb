//! NAT-PMP messages (RFC 6886), pure encoding and decoding.
//!
//! A client asks the gateway's UDP port 5351 for its external address (opcode 0) and
//! for a mapping of a TCP (opcode 2) or UDP (opcode 1) port; the answer repeats the
//! opcode plus 128, a result code and the seconds since the gateway's mapping table
//! began (its epoch). A request with lifetime 0 deletes a mapping.

use std::net::Ipv4Addr;

use super::{DecodeError, Transport};

pub const VERSION: u8 = 0;
const OP_EXTERNAL_ADDRESS: u8 = 0;
const RESPONSE: u8 = 128;
/// The result code of a gateway that does not speak the version asked.
pub const UNSUPPORTED_VERSION: u16 = 1;

fn opcode(transport: Transport) -> u8 {
    match transport {
        Transport::Udp => 1,
        Transport::Tcp => 2,
    }
}

/// Asks for the gateway's external address.
pub fn external_address_request() -> [u8; 2] {
    [VERSION, OP_EXTERNAL_ADDRESS]
}

/// Asks for (or, with lifetime 0, deletes) a mapping of `internal_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequest {
    pub transport: Transport,
    pub internal_port: u16,
    pub suggested_port: u16,
    pub lifetime: u32,
}

impl MapRequest {
    pub fn encode(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[0] = VERSION;
        out[1] = opcode(self.transport);
        // 2..4 reserved.
        out[4..6].copy_from_slice(&self.internal_port.to_be_bytes());
        out[6..8].copy_from_slice(&self.suggested_port.to_be_bytes());
        out[8..12].copy_from_slice(&self.lifetime.to_be_bytes());
        out
    }
}

/// A gateway's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// The answer to a request of another version (or a failed request of any kind
    /// whose fields beyond the result were left out).
    Failed {
        opcode: u8,
        result: u16,
        epoch: u32,
    },
    ExternalAddress {
        epoch: u32,
        ip: Ipv4Addr,
    },
    Map {
        transport: Transport,
        epoch: u32,
        internal_port: u16,
        external_port: u16,
        lifetime: u32,
    },
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads a gateway's answer; anything that is not a well-formed NAT-PMP response is an
/// error (never a panic).
pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
    if bytes.len() < 8 {
        return Err(DecodeError::TooShort);
    }
    if bytes[0] != VERSION {
        return Err(DecodeError::Version(bytes[0]));
    }
    let op = bytes[1];
    if op & RESPONSE == 0 {
        return Err(DecodeError::NotAResponse);
    }
    let opcode = op & !RESPONSE;
    let result = u16_at(bytes, 2);
    let epoch = u32_at(bytes, 4);
    if result != 0 {
        return Ok(Response::Failed {
            opcode,
            result,
            epoch,
        });
    }
    match opcode {
        OP_EXTERNAL_ADDRESS => {
            if bytes.len() < 12 {
                return Err(DecodeError::TooShort);
            }
            let ip = Ipv4Addr::new(bytes[8], bytes[9], bytes[10], bytes[11]);
            Ok(Response::ExternalAddress { epoch, ip })
        }
        1 | 2 => {
            if bytes.len() < 16 {
                return Err(DecodeError::TooShort);
            }
            Ok(Response::Map {
                transport: if opcode == 1 {
                    Transport::Udp
                } else {
                    Transport::Tcp
                },
                epoch,
                internal_port: u16_at(bytes, 8),
                external_port: u16_at(bytes, 10),
                lifetime: u32_at(bytes, 12),
            })
        }
        other => Err(DecodeError::Opcode(other)),
    }
}

/// What a result code means, for the log.
pub fn describe(result: u16) -> &'static str {
    match result {
        0 => "success",
        1 => "unsupported version",
        2 => "not authorized or refused",
        3 => "network failure",
        4 => "out of resources",
        5 => "unsupported opcode",
        _ => "unknown result code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_rfc_6886_layouts() {
        // RFC 6886 3.2: version 0, opcode 0.
        assert_eq!(external_address_request(), [0, 0]);
        // RFC 6886 3.3: version, opcode (2 = TCP), reserved, internal port, suggested
        // external port, requested lifetime (7200 s = 0x1c20).
        let request = MapRequest {
            transport: Transport::Tcp,
            internal_port: 7717,
            suggested_port: 7717,
            lifetime: 7200,
        };
        assert_eq!(
            request.encode(),
            [0, 2, 0, 0, 0x1e, 0x25, 0x1e, 0x25, 0, 0, 0x1c, 0x20]
        );
        let delete = MapRequest {
            transport: Transport::Udp,
            internal_port: 1,
            suggested_port: 0,
            lifetime: 0,
        };
        assert_eq!(delete.encode(), [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn responses_decode_from_rfc_6886_layouts() {
        // RFC 6886 3.2: version, 128, result, epoch, external IPv4.
        let external = [0, 128, 0, 0, 0, 0, 0, 9, 203, 0, 113, 5];
        assert_eq!(
            decode(&external),
            Ok(Response::ExternalAddress {
                epoch: 9,
                ip: Ipv4Addr::new(203, 0, 113, 5)
            })
        );
        // RFC 6886 3.3: version, 130, result, epoch, internal, mapped external, lifetime.
        let map = [
            0, 130, 0, 0, 0, 0, 1, 0, 0x1e, 0x25, 0xc3, 0x50, 0, 0, 0x0e, 0x10,
        ];
        assert_eq!(
            decode(&map),
            Ok(Response::Map {
                transport: Transport::Tcp,
                epoch: 256,
                internal_port: 7717,
                external_port: 50000,
                lifetime: 3600
            })
        );
        // RFC 6886 3.5: the 8-byte answer to another version.
        assert_eq!(
            decode(&[0, 129, 0, 1, 0, 0, 0, 3]),
            Ok(Response::Failed {
                opcode: 1,
                result: UNSUPPORTED_VERSION,
                epoch: 3
            })
        );
    }

    #[test]
    fn hostile_or_truncated_packets_are_errors() {
        let map = [
            0u8, 130, 0, 0, 0, 0, 1, 0, 0x1e, 0x25, 0xc3, 0x50, 0, 0, 0x0e, 0x10,
        ];
        for len in 0..map.len() {
            assert!(decode(&map[..len]).is_err(), "{len} bytes");
        }
        assert_eq!(decode(&[2; 16]), Err(DecodeError::Version(2)));
        assert_eq!(
            decode(&[0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::NotAResponse)
        );
        assert_eq!(
            decode(&[0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Opcode(72))
        );
        // Every byte string of a few lengths, at random: nothing panics.
        let mut seed = 0x2545_f491_u32;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let len = (seed % 24) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 24)) as u8).collect();
            if let Some(first) = bytes.first_mut() {
                *first = VERSION;
            }
            let _ = decode(&bytes);
        }
    }
}
