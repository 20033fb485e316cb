//! Known answers shared with the browser app (`crates/web/app/test/vectors/`): the TypeScript
//! side computes them, and this checks that the Rust side produces the very same bytes, so a
//! phone's browser and a node agree on pairing codes, the pairing handshake, frames and
//! signed records. The TypeScript tests check the same files against the TypeScript side.

use std::path::PathBuf;

use data_encoding::HEXLOWER;
use loopsy_wire::{
    admission::Admission,
    frame, member,
    pair::{self, Code, CodeError, Done, Hello, NOISE_PATTERN},
    replica, session, sync,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

fn vectors(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../web/app/test/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn hex(value: &Value) -> Vec<u8> {
    let text = value.as_str().expect("a hex string");
    HEXLOWER.decode(text.as_bytes()).expect("hex")
}

fn text(value: &Value) -> &str {
    value.as_str().expect("a string")
}

#[test]
fn pairing_codes_read_and_write_as_in_the_browser() {
    let v = vectors("pair.json");
    let c = &v["code"];
    let code = Code {
        inviter: hex(&c["inviter"]),
        addrs: c["addrs"]
            .as_array()
            .expect("addrs")
            .iter()
            .map(hex)
            .collect(),
        invite: hex(&c["invite"]).try_into().expect("8 bytes"),
        secret: hex(&c["secret"]).try_into().expect("16 bytes"),
        expires: c["expires"].as_u64().expect("expires"),
    };
    assert_eq!(code.to_text(), text(&c["text"]));
    assert_eq!(Code::from_text(text(&c["text"])), Ok(code));
    for bad in v["bad_codes"].as_array().expect("bad codes") {
        let got = Code::from_text(text(&bad["text"]));
        let kind = match got {
            Err(CodeError::NotACode) => "not_a_code",
            Err(CodeError::Mistyped) => "mistyped",
            Err(CodeError::UnknownVersion) => "unknown_version",
            Err(CodeError::Malformed(_)) => "malformed",
            Ok(_) => "ok",
        };
        assert_eq!(kind, text(&bad["error"]), "{}", text(&bad["text"]));
    }
}

#[test]
fn the_pairing_handshake_matches_the_browser_byte_for_byte() {
    let v = vectors("pair.json");
    let invite: [u8; 8] = hex(&v["code"]["invite"]).try_into().expect("8 bytes");
    let secret: [u8; 16] = hex(&v["code"]["secret"]).try_into().expect("16 bytes");
    let psk = pair::psk(&invite, &secret);
    assert_eq!(psk.to_vec(), hex(&v["psk"]));
    let inviter_id = hex(&v["code"]["inviter"]);
    let joiner_id = hex(&v["joiner"]);
    let prologue = pair::prologue(&inviter_id, &joiner_id);
    assert_eq!(prologue, hex(&v["prologue"]));

    // The daemon's `pair::handshake` builds exactly this (pattern, psk at 0, prologue); the
    // fixed ephemeral keys are the only addition, for known answers.
    let build = |ephemeral: &[u8], initiator: bool| {
        let builder = snow::Builder::new(NOISE_PATTERN.parse().expect("pattern"))
            .psk(0, &psk)
            .and_then(|b| b.prologue(&prologue))
            .expect("builder")
            .fixed_ephemeral_key_for_testing_only(ephemeral);
        if initiator {
            builder.build_initiator()
        } else {
            builder.build_responder()
        }
        .expect("handshake state")
    };
    let (e_joiner, e_inviter) = (
        hex(&v["ephemeral"]["joiner"]),
        hex(&v["ephemeral"]["inviter"]),
    );
    let mut joiner = build(&e_joiner, true);
    let mut inviter = build(&e_inviter, false);
    let mut buf = vec![0u8; 65_535];

    let n = joiner.write_message(&[], &mut buf).expect("message 1");
    assert_eq!(buf[..n], hex(&v["message1"])[..], "message 1");
    let n = inviter
        .read_message(&hex(&v["message1"]), &mut buf)
        .expect("read 1");
    assert_eq!(n, 0);

    let payload2 = hex(&v["payload2"]);
    let hello: Hello = frame::decode(&payload2).expect("the inviter's hello");
    assert_eq!(hello.name, "desktop");
    assert_eq!(hello.kind, pair::Kind::Device);
    let n = inviter
        .write_message(&payload2, &mut buf)
        .expect("message 2");
    assert_eq!(buf[..n], hex(&v["message2"])[..], "message 2");
    let n = joiner
        .read_message(&hex(&v["message2"]), &mut buf)
        .expect("read 2");
    assert_eq!(buf[..n], payload2[..]);

    assert_eq!(joiner.get_handshake_hash(), &hex(&v["handshake_hash"])[..]);
    assert_eq!(inviter.get_handshake_hash(), &hex(&v["handshake_hash"])[..]);
    assert_eq!(
        pair::check_code(joiner.get_handshake_hash()),
        text(&v["check_code"])
    );

    let mut joiner = joiner.into_transport_mode().expect("transport");
    let mut inviter = inviter.into_transport_mode().expect("transport");
    let sealed_hello = hex(&v["sealed_hello"]);
    let n = inviter
        .read_message(&sealed_hello, &mut buf)
        .expect("the joiner's sealed hello");
    let theirs: Hello = frame::decode(&buf[..n]).expect("a hello");
    assert_eq!(theirs.name, "phone");
    // The browser says what it is; the Rust side writes it back in the same place.
    assert_eq!(theirs.kind, pair::Kind::Browser);
    let mut plain = Vec::new();
    ciborium::into_writer(&theirs, &mut plain).expect("cbor");
    let n = joiner.write_message(&plain, &mut buf).expect("seal");
    assert_eq!(buf[..n], sealed_hello[..], "sealed hello");

    let mut plain = Vec::new();
    ciborium::into_writer(&Done { ok: true }, &mut plain).expect("cbor");
    let n = inviter.write_message(&plain, &mut buf).expect("seal");
    assert_eq!(buf[..n], hex(&v["sealed_done"])[..], "sealed done");

    for frame_hex in v["frames"].as_array().expect("frames") {
        same_bytes::<pair::Message>(frame_hex, pair::MAX_FRAME);
    }
}

/// Decodes a frame as `T` and encodes it again: the bytes must be the browser's.
fn same_bytes<T: Serialize + DeserializeOwned>(frame_hex: &Value, max: usize) {
    let bytes = hex(frame_hex);
    let (body, used) = frame::split(&bytes, max)
        .expect("within the cap")
        .expect("a whole frame");
    assert_eq!(used, bytes.len());
    let message: T =
        frame::decode(body).unwrap_or_else(|e| panic!("{} does not decode: {e}", text(frame_hex)));
    assert_eq!(
        frame::encode(&message, max).expect("encode"),
        bytes,
        "{}",
        text(frame_hex)
    );
}

fn each<T: Serialize + DeserializeOwned>(v: &Value, key: &str, max: usize) {
    let list = v[key].as_array().expect("a list");
    assert!(!list.is_empty());
    for frame_hex in list {
        same_bytes::<T>(frame_hex, max);
    }
}

#[test]
fn the_browsers_frames_are_what_the_rust_types_write() {
    let v = vectors("frames.json");
    each::<session::Request>(&v, "session_request", session::MAX_FRAME);
    each::<session::Input>(&v, "session_input", session::MAX_FRAME);
    each::<session::Reply>(&v, "session_reply", session::MAX_FRAME);
    each::<Admission>(&v, "admission", loopsy_wire::admission::MAX_FRAME);
    each::<sync::Message>(&v, "sync", sync::MAX_FRAME);
}

fn verify(author: &[u8], message: &[u8], signature: &[u8]) -> bool {
    // An Ed25519 peer ID is the identity multihash (2 bytes of header) of the protobuf key.
    let key = libp2p::identity::PublicKey::try_decode_protobuf(&author[2..]).expect("a key");
    key.verify(message, signature)
}

#[test]
fn records_the_browser_reads_are_signed_as_rust_signs_them() {
    let v = vectors("records.json");
    let bytes = hex(&v["session"]["record"]);
    let record: replica::Record = frame::decode(&bytes).expect("a registry record");
    assert_eq!(
        record.signed_bytes("sessions"),
        hex(&v["session"]["signed_bytes"])
    );
    assert!(verify(
        &record.author,
        &record.signed_bytes("sessions"),
        &record.signature
    ));
    assert!(!verify(
        &record.author,
        &record.signed_bytes("ctx"),
        &record.signature
    ));
    let info: session::Info =
        frame::decode(record.value.as_deref().expect("a value")).expect("session info");
    assert_eq!(info.name.as_deref(), Some("agent"));
    let mut again = Vec::new();
    ciborium::into_writer(&record, &mut again).expect("cbor");
    assert_eq!(again, bytes);

    let members = v["members"].as_array().expect("members");
    assert!(members.len() >= 2);
    for m in members {
        let bytes = hex(&m["record"]);
        let record: member::Record = frame::decode(&bytes).expect("a member record");
        assert_eq!(record.signed_bytes(), hex(&m["signed_bytes"]));
        assert!(verify(
            &record.author,
            &record.signed_bytes(),
            &record.signature
        ));
        let mut again = Vec::new();
        ciborium::into_writer(&record, &mut again).expect("cbor");
        assert_eq!(again, bytes);
    }
}
