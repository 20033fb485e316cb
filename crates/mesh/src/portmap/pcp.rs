//! PCP MAP messages (RFC 6887, version 2), pure encoding and decoding.
//!
//! A client sends the gateway's UDP port 5351 a MAP request: a 24-byte header (version,
//! opcode, requested lifetime, the client's own address) and a 36-byte body (a random
//! nonce, the protocol, the internal port, a suggested external port and address). The
//! answer repeats the body with the assigned external port and address, the granted
//! lifetime, a result code and the gateway's epoch. The same nonce renews the mapping;
//! lifetime 0 deletes it. A gateway that speaks only NAT-PMP answers UNSUPP_VERSION.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{DecodeError, Transport};

pub const VERSION: u8 = 2;
const OP_MAP: u8 = 1;
const RESPONSE: u8 = 0x80;
const HEADER: usize = 24;
const MAP_BODY: usize = 36;
/// The longest PCP message.
pub const MAX_MESSAGE: usize = 1100;
/// The result code of a gateway that does not speak the version asked.
pub const UNSUPP_VERSION: u8 = 1;

pub type Nonce = [u8; 12];

fn protocol_number(transport: Transport) -> u8 {
    match transport {
        Transport::Tcp => 6,
        Transport::Udp => 17,
    }
}

/// Asks for (or, with lifetime 0, deletes) a mapping of `internal_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequest {
    pub lifetime: u32,
    /// The address the request is sent from (the gateway checks it).
    pub client: Ipv4Addr,
    pub nonce: Nonce,
    pub transport: Transport,
    pub internal_port: u16,
    pub suggested_port: u16,
    /// `0.0.0.0`: any external address.
    pub suggested_ip: Ipv4Addr,
}

impl MapRequest {
    pub fn encode(&self) -> [u8; HEADER + MAP_BODY] {
        let mut out = [0u8; HEADER + MAP_BODY];
        out[0] = VERSION;
        out[1] = OP_MAP;
        // 2..4 reserved.
        out[4..8].copy_from_slice(&self.lifetime.to_be_bytes());
        out[8..24].copy_from_slice(&self.client.to_ipv6_mapped().octets());
        let body = &mut out[HEADER..];
        body[0..12].copy_from_slice(&self.nonce);
        body[12] = protocol_number(self.transport);
        // 13..16 reserved.
        body[16..18].copy_from_slice(&self.internal_port.to_be_bytes());
        body[18..20].copy_from_slice(&self.suggested_port.to_be_bytes());
        body[20..36].copy_from_slice(&self.suggested_ip.to_ipv6_mapped().octets());
        out
    }
}

/// A gateway's answer to a MAP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// The gateway speaks another version: PCP's own UNSUPP_VERSION, or NAT-PMP's answer
    /// (version 0) to a request of a version it does not know.
    UnsupportedVersion,
    /// A failure with no MAP body to match it by (PCP allows a bare header for some).
    Failed {
        result: u8,
        epoch: u32,
    },
    Map(Map),
}

/// A MAP answer: a success (`result` 0) or a failure that repeats the request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Map {
    pub result: u8,
    pub lifetime: u32,
    pub epoch: u32,
    pub nonce: Nonce,
    pub transport: Option<Transport>,
    pub internal_port: u16,
    pub external_port: u16,
    /// `None` when the assigned address is not an IPv4 one.
    pub external_ip: Option<Ipv4Addr>,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Reads a gateway's answer; anything that is not a well-formed response to a MAP
/// request is an error (never a panic).
pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
    // NAT-PMP's "unsupported version": version 0, opcode + 128, result 1.
    if bytes.len() >= 4 && bytes[0] == super::natpmp::VERSION {
        return match super::natpmp::decode(bytes) {
            Ok(super::natpmp::Response::Failed {
                result: super::natpmp::UNSUPPORTED_VERSION,
                ..
            }) => Ok(Response::UnsupportedVersion),
            _ => Err(DecodeError::Version(0)),
        };
    }
    if bytes.len() < HEADER {
        return Err(DecodeError::TooShort);
    }
    if bytes.len() > MAX_MESSAGE || !bytes.len().is_multiple_of(4) {
        return Err(DecodeError::BadLength(bytes.len()));
    }
    if bytes[1] & RESPONSE == 0 {
        return Err(DecodeError::NotAResponse);
    }
    let result = bytes[3];
    if result == UNSUPP_VERSION {
        return Ok(Response::UnsupportedVersion);
    }
    if bytes[0] != VERSION {
        return Err(DecodeError::Version(bytes[0]));
    }
    let opcode = bytes[1] & !RESPONSE;
    if opcode != OP_MAP {
        return Err(DecodeError::Opcode(opcode));
    }
    let lifetime = u32_at(bytes, 4);
    let epoch = u32_at(bytes, 8);
    if bytes.len() < HEADER + MAP_BODY {
        return if result == 0 {
            Err(DecodeError::TooShort)
        } else {
            Ok(Response::Failed { result, epoch })
        };
    }
    let body = &bytes[HEADER..HEADER + MAP_BODY];
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&body[0..12]);
    let transport = match body[12] {
        6 => Some(Transport::Tcp),
        17 => Some(Transport::Udp),
        _ => None,
    };
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&body[20..36]);
    Ok(Response::Map(Map {
        result,
        lifetime,
        epoch,
        nonce,
        transport,
        internal_port: u16_at(body, 16),
        external_port: u16_at(body, 18),
        external_ip: Ipv6Addr::from(ip).to_ipv4_mapped(),
    }))
}

/// What a result code means, for the log.
pub fn describe(result: u8) -> &'static str {
    match result {
        0 => "success",
        1 => "unsupported version",
        2 => "not authorized",
        3 => "malformed request",
        4 => "unsupported opcode",
        5 => "unsupported option",
        6 => "malformed option",
        7 => "network failure",
        8 => "no resources",
        9 => "unsupported protocol",
        10 => "user exceeded quota",
        11 => "cannot provide the external address",
        12 => "address mismatch (a NAT between this device and the gateway)",
        13 => "excessive remote peers",
        _ => "unknown result code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: Nonce = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn request() -> MapRequest {
        MapRequest {
            lifetime: 7200,
            client: Ipv4Addr::new(192, 168, 1, 2),
            nonce: NONCE,
            transport: Transport::Tcp,
            internal_port: 7717,
            suggested_port: 7717,
            suggested_ip: Ipv4Addr::UNSPECIFIED,
        }
    }

    /// A MAP answer as RFC 6887 lays it out (sections 7.2 and 11.1).
    fn answer(result: u8, external: [u8; 4]) -> Vec<u8> {
        let mut bytes = vec![2, 0x81, 0, result, 0, 0, 0x0e, 0x10, 0, 0, 0, 42];
        bytes.extend([0; 12]);
        bytes.extend(NONCE);
        bytes.extend([6, 0, 0, 0, 0x1e, 0x25, 0xc3, 0x50]);
        bytes.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        bytes.extend(external);
        bytes
    }

    #[test]
    fn a_map_request_has_the_rfc_6887_layout() {
        let mut expected = vec![2, 1, 0, 0, 0, 0, 0x1c, 0x20];
        expected.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 2]);
        expected.extend(NONCE);
        expected.extend([6, 0, 0, 0, 0x1e, 0x25, 0x1e, 0x25]);
        expected.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(request().encode().to_vec(), expected);
    }

    #[test]
    fn a_map_answer_decodes() {
        assert_eq!(
            decode(&answer(0, [203, 0, 113, 5])),
            Ok(Response::Map(Map {
                result: 0,
                lifetime: 3600,
                epoch: 42,
                nonce: NONCE,
                transport: Some(Transport::Tcp),
                internal_port: 7717,
                external_port: 50000,
                external_ip: Some(Ipv4Addr::new(203, 0, 113, 5)),
            }))
        );
        // Options after the body are allowed (and skipped).
        let mut with_option = answer(0, [203, 0, 113, 5]);
        with_option.extend([0x80, 0, 0, 0]);
        assert!(matches!(decode(&with_option), Ok(Response::Map(_))));
    }

    #[test]
    fn the_other_versions_say_so() {
        // NAT-PMP's answer to a version it does not speak (RFC 6886 3.5).
        assert_eq!(
            decode(&[0, 129, 0, 1, 0, 0, 0, 7]),
            Ok(Response::UnsupportedVersion)
        );
        // A PCP server of another version: UNSUPP_VERSION, header only.
        let mut header = vec![1, 0x81, 0, UNSUPP_VERSION];
        header.extend([0; 20]);
        assert_eq!(decode(&header), Ok(Response::UnsupportedVersion));
        // A failure without a body.
        let mut refused = vec![2, 0x81, 0, 2, 0, 0, 0, 30, 0, 0, 0, 9];
        refused.extend([0; 12]);
        assert_eq!(
            decode(&refused),
            Ok(Response::Failed {
                result: 2,
                epoch: 9
            })
        );
    }

    #[test]
    fn hostile_or_truncated_packets_are_errors() {
        let good = answer(0, [203, 0, 113, 5]);
        for len in 0..good.len() {
            assert!(decode(&good[..len]).is_err(), "{len} bytes");
        }
        let mut request_echo = good.clone();
        request_echo[1] = OP_MAP;
        assert_eq!(decode(&request_echo), Err(DecodeError::NotAResponse));
        let mut peer = good.clone();
        peer[1] = 0x82;
        assert_eq!(decode(&peer), Err(DecodeError::Opcode(2)));
        let mut huge = good.clone();
        huge.resize(MAX_MESSAGE + 4, 0);
        assert_eq!(decode(&huge), Err(DecodeError::BadLength(MAX_MESSAGE + 4)));
        // An IPv6 external address is not one this client can use.
        let mut v6 = good.clone();
        v6[HEADER + 20] = 0x20;
        assert!(matches!(
            decode(&v6),
            Ok(Response::Map(Map {
                external_ip: None,
                ..
            }))
        ));
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let len = (seed % 72) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 24)) as u8).collect();
            if let Some(first) = bytes.first_mut() {
                *first = if seed & 1 == 0 { VERSION } else { 0 };
            }
            let _ = decode(&bytes);
        }
    }
}
