//! Loading the known-answer files in `test-vectors/` (copied from `../shared`).

#![allow(dead_code)]

use std::path::PathBuf;

use rmb_core::proto::{Address, Envelope, Error, Message, Payload, Request, Response};
use serde_json::Value;

pub(crate) fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-vectors")
}

pub(crate) fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub(crate) fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

pub(crate) fn s(v: &Value) -> &str {
    v.as_str().expect("string")
}

pub(crate) fn opt_s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn address(v: &Value) -> Address {
    Address {
        twin: v["twin"].as_u64().unwrap() as u32,
        connection: opt_s(&v["connection"]),
    }
}

/// The message oneof from a `fields` object (both vector formats).
fn message(fields: &Value) -> Option<Message> {
    let m = if fields["message"].is_object() {
        &fields["message"]
    } else {
        fields
    };
    if let Some(req) = m.get("request") {
        return Some(Message::Request(Request {
            command: s(&req["command"]).to_string(),
        }));
    }
    if m.get("response").is_some() {
        return Some(Message::Response(Response {}));
    }
    if let Some(err) = m.get("error") {
        return Some(Message::Error(Error {
            code: err["code"].as_u64().unwrap() as u32,
            message: s(&err["message"]).to_string(),
        }));
    }
    None
}

/// An unsigned envelope from the rmb-rs vector `fields`.
pub(crate) fn rmb_rs_envelope(fields: &Value) -> Envelope {
    let payload = match &fields["payload"] {
        Value::Object(p) if p.contains_key("plain") => Some(Payload::Plain(hex(&p["plain"]))),
        Value::Object(p) if p.contains_key("cipher") => Some(Payload::Cipher(hex(&p["cipher"]))),
        _ => None,
    };
    Envelope {
        uid: s(&fields["uid"]).to_string(),
        tags: opt_s(&fields["tags"]),
        timestamp: fields["timestamp"].as_u64().unwrap(),
        expiration: fields["expiration"].as_u64().unwrap(),
        source: Some(address(&fields["source"])),
        destination: Some(address(&fields["destination"])),
        message: message(fields),
        signature: None,
        schema: opt_s(&fields["schema"]),
        federation: None,
        payload,
        relays: vec![],
    }
}

/// An unsigned envelope from the TypeScript vector `fields`: the client always sets
/// `tags` (empty string when none) and an empty `signature` before signing.
pub(crate) fn ts_envelope(fields: &Value) -> Envelope {
    Envelope {
        uid: s(&fields["uid"]).to_string(),
        tags: Some(opt_s(&fields["tags"]).unwrap_or_default()),
        timestamp: fields["timestamp"].as_u64().unwrap(),
        expiration: fields["expiration"].as_u64().unwrap(),
        source: Some(address(&fields["source"])),
        destination: Some(address(&fields["destination"])),
        message: message(fields),
        signature: Some(vec![]),
        schema: opt_s(&fields["schema"]),
        federation: None,
        payload: fields
            .get("plain_utf8")
            .map(|p| Payload::Plain(s(p).as_bytes().to_vec())),
        relays: fields["relays"]
            .as_array()
            .map(|a| a.iter().map(|r| s(r).to_string()).collect())
            .unwrap_or_default(),
    }
}
