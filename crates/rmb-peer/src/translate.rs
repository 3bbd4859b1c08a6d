//! The §4 JSON messages to and from envelopes. Pure functions: the peer's loops do the
//! Redis and relay I/O around them.

use rmb_core::peer_api::{
    self, ErrorCode, IncomingRequest, IncomingResponse, JsonError, OutgoingRequest,
    OutgoingResponse, SYSTEM_REPLY, VERSION_COMMAND,
};
use rmb_core::time::{effective_ttl, DEFAULT_TTL};
use rmb_core::Address;
use rmb_sdk::{Incoming, Kind, Outgoing};
use serde_json::Value;

/// A message from a local list that cannot be acted on, with what is needed to tell
/// the sender (when it could be read): for a request the app's `ret` list, for a reply
/// the remote requester's address (`dst`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput {
    pub code: ErrorCode,
    pub message: String,
    /// Where to report: `ret` of a request, `dst` of a reply, if readable.
    pub reply_to: Option<String>,
    /// The app's `ref`, if readable.
    pub reference: Option<String>,
}

/// What the peer keeps of a local app's request while it waits for the replies: where
/// they go and what they carry back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub uid: String,
    /// The app's `ref`, returned in every reply.
    pub reference: Option<String>,
    /// The app's `ret` list.
    pub reply_to: String,
    pub command: String,
    pub destinations: Vec<u32>,
    /// The envelopes' timestamp (unix seconds).
    pub timestamp: u64,
    /// Unix second at which the request expires.
    pub deadline: u64,
}

impl Tracked {
    /// Bytes this takes in memory, about (for byte caps).
    pub fn size(&self) -> usize {
        self.uid.len()
            + self.reference.as_ref().map_or(0, String::len)
            + self.reply_to.len()
            + self.command.len()
            + 4 * self.destinations.len()
            + 64
    }
}

/// A request moved off `msgbus.system.local`, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRequest {
    /// Stored as the request's backlog before sending.
    pub tracked: Tracked,
    /// One envelope per destination, all with the same uid.
    pub envelopes: Vec<Outgoing>,
}

/// What became of an outgoing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalRequest {
    Send(PreparedRequest),
    /// Its `now + exp` is already past: dropped (with a log line).
    Expired {
        reference: Option<String>,
        age: u64,
    },
}

/// Reads `<key>` and `ref` from a message that did not parse as a whole.
fn salvage(json: &str, key: &str) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(json) else {
        return (None, None);
    };
    let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_string);
    (text(key), text("ref"))
}

/// Parses an outgoing request and builds its envelopes (uid `uid`, source `me`).
pub fn local_request(
    json: &str,
    uid: &str,
    me: &Address,
    now: u64,
) -> Result<LocalRequest, BadInput> {
    let request: OutgoingRequest = serde_json::from_str(json).map_err(|e| {
        let (reply_to, reference) = salvage(json, "ret");
        BadInput {
            code: ErrorCode::InvalidMessage,
            message: format!("invalid request message: {e}"),
            reply_to,
            reference,
        }
    })?;
    let bad = |code: ErrorCode, message: String| BadInput {
        code,
        message,
        reply_to: Some(request.reply_to.clone()),
        reference: request.reference.clone(),
    };
    let body = peer_api::decode_data(&request.data).map_err(|e| {
        bad(
            ErrorCode::InvalidPayload,
            format!("dat is not standard base64: {e}"),
        )
    })?;
    if request.destinations.is_empty() || request.destinations.contains(&0) {
        return Err(bad(
            ErrorCode::InvalidMessage,
            "dst must list one or more twin ids (not 0)".into(),
        ));
    }
    if request.command.is_empty() {
        return Err(bad(ErrorCode::InvalidMessage, "cmd is empty".into()));
    }
    let ttl = effective_ttl(request.expiration);
    // The app's clock stamps the request; a missing or future one means now.
    let timestamp = match request.timestamp {
        0 => now,
        t => t.min(now),
    };
    // Saturating: `now` comes from the caller and `timestamp` may equal it (found by
    // the fuzz target peer_system_local with a clock at u64::MAX).
    let deadline = timestamp.saturating_add(ttl);
    if deadline <= now {
        return Ok(LocalRequest::Expired {
            reference: request.reference,
            age: now - timestamp,
        });
    }
    let mut destinations = request.destinations.clone();
    destinations.sort_unstable();
    destinations.dedup();
    let tracked = Tracked {
        uid: uid.to_string(),
        reference: request.reference.clone(),
        reply_to: request.reply_to.clone(),
        command: request.command.clone(),
        destinations,
        timestamp,
        deadline,
    };
    let envelopes = tracked
        .destinations
        .iter()
        .map(|dst| {
            let mut out = Outgoing::request(
                uid,
                me.clone(),
                Address::twin(*dst),
                request.command.clone(),
                body.clone(),
                ttl,
            );
            out.timestamp = timestamp;
            out.tags = request.tags.clone();
            out.schema = request.schema.clone();
            out
        })
        .collect();
    Ok(LocalRequest::Send(PreparedRequest { tracked, envelopes }))
}

/// Parses a service's reply into the response envelope to send back. `request_schema`
/// is the schema of the request it answers, when the peer still knows it: a reply
/// carries it unless the service set another (PROTOCOL.md §6).
/// What the peer remembers of a request it handed to a service, for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    pub schema: Option<String>,
    /// Unix seconds at which the request expires.
    pub deadline: u64,
}

impl RequestInfo {
    /// How it is kept in Redis (the value of the request's seen marker).
    pub fn to_marker(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}\ns:{schema}", self.deadline),
            None => self.deadline.to_string(),
        }
    }

    /// Reads [`RequestInfo::to_marker`] back.
    pub fn from_marker(marker: &str) -> Option<RequestInfo> {
        let (deadline, schema) = match marker.split_once('\n') {
            Some((deadline, schema)) => (deadline, Some(schema.strip_prefix("s:")?.to_string())),
            None => (marker, None),
        };
        Some(RequestInfo {
            schema,
            deadline: deadline.parse().ok()?,
        })
    }

    /// Bytes this takes in memory, about.
    pub fn size(&self) -> usize {
        self.schema.as_ref().map_or(0, String::len) + 32
    }
}

/// The envelopes of an accepted request again, for `destinations` (after a restart,
/// under `--resend always`): the same uid and deadline as the first time.
pub fn envelopes_again(
    request: &str,
    tracked: &Tracked,
    me: &Address,
    destinations: &[u32],
) -> Option<Vec<Outgoing>> {
    let LocalRequest::Send(prepared) =
        local_request(request, &tracked.uid, me, tracked.timestamp).ok()?
    else {
        return None;
    };
    let envelopes = prepared
        .envelopes
        .into_iter()
        .filter(|e| destinations.contains(&e.destination.twin))
        .map(|mut e| {
            e.timestamp = tracked.timestamp;
            e.expiration = tracked.deadline.saturating_sub(tracked.timestamp);
            e
        })
        .collect();
    Some(envelopes)
}

/// The `dst` and `ref` of a service's reply (which request it answers), if readable.
pub fn reply_target(json: &str) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Target {
        dst: String,
        #[serde(rename = "ref")]
        reference: String,
    }
    let target: Target = serde_json::from_str(json).ok()?;
    Some((target.dst, target.reference))
}

/// The envelope for a service's reply. `request` finds what the peer remembers of the
/// request by the reply's `dst` and `ref`: its schema (the reply's default) and its
/// deadline (the reply lives until then; [`DEFAULT_TTL`] for a request it does not know).
pub fn local_reply(
    json: &str,
    me: &Address,
    request: impl FnOnce(&str, &str) -> Option<RequestInfo>,
) -> Result<Outgoing, BadInput> {
    let reply: OutgoingResponse = serde_json::from_str(json).map_err(|e| {
        let (reply_to, reference) = salvage(json, "dst");
        BadInput {
            code: ErrorCode::InvalidMessage,
            message: format!("invalid reply message: {e}"),
            reply_to,
            reference,
        }
    })?;
    let bad = |code, message: String| BadInput {
        code,
        message,
        reply_to: Some(reply.destination.clone()),
        reference: Some(reply.reference.clone()),
    };
    let destination: Address = reply
        .destination
        .parse()
        .map_err(|e| bad(ErrorCode::InvalidMessage, format!("invalid dst: {e}")))?;
    let known = request(&reply.destination, &reply.reference);
    let schema = reply
        .schema
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| known.as_ref().and_then(|r| r.schema.clone()));
    let ttl = known.map_or(DEFAULT_TTL, |r| {
        rmb_sdk::reply_ttl(r.deadline, reply.timestamp)
    });
    let mut out = match &reply.error {
        Some(err) => Outgoing::error(
            reply.reference.clone(),
            me.clone(),
            destination,
            err.code,
            err.message.clone(),
            schema,
            ttl,
        ),
        None => {
            let body = peer_api::decode_data(&reply.data).map_err(|e| {
                bad(
                    ErrorCode::InvalidPayload,
                    format!("dat is not standard base64: {e}"),
                )
            })?;
            Outgoing::response(
                reply.reference.clone(),
                me.clone(),
                destination,
                body,
                schema,
                ttl,
            )
        }
    };
    out.timestamp = reply.timestamp;
    Ok(out)
}

/// The list and JSON for a request from a remote twin.
pub fn incoming_request(msg: &Incoming) -> Option<(String, String)> {
    let Kind::Request { command } = &msg.kind else {
        return None;
    };
    let json = IncomingRequest {
        version: 1,
        reference: msg.uid.clone(),
        source: msg.source.to_string(),
        command: command.clone(),
        expiration: msg.expiration,
        data: peer_api::encode_data(&msg.payload),
        tags: msg.tags.clone(),
        reply_to: SYSTEM_REPLY.to_string(),
        schema: msg.schema.clone(),
        timestamp: msg.timestamp,
    };
    Some((
        peer_api::command_list(command),
        serde_json::to_string(&json).expect("serializable"),
    ))
}

/// Whether `msg` asks for the peer's version ([`VERSION_COMMAND`]), which the peer
/// answers itself.
pub fn is_version_request(msg: &Incoming) -> bool {
    matches!(&msg.kind, Kind::Request { command } if command == VERSION_COMMAND)
}

/// The answer to `rmb.version`, as the original rmb-peer gives it
/// (threefoldtech/rmb-rs, src/peer/plugins/rmb.rs): the version as a JSON string with
/// schema `application/json`. The original's version is `git describe --tags`, so a
/// release reads `"v1.2.3"`; ours is the crate version in that shape.
pub fn version_reply(request: &Incoming, me: &Address, now: u64) -> Outgoing {
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let deadline = request.timestamp.saturating_add(request.expiration);
    Outgoing::response(
        request.uid.clone(),
        me.clone(),
        request.source.clone(),
        serde_json::to_vec(&version).expect("a string serializes"),
        Some(rmb_sdk::DEFAULT_SCHEMA.into()),
        rmb_sdk::reply_ttl(deadline, now),
    )
}

/// The JSON for the app's `ret` list for a reply from a remote twin.
pub fn incoming_reply(msg: &Incoming, backlog: &Tracked) -> String {
    let error = match &msg.kind {
        Kind::Error { code, message } => Some(JsonError {
            code: *code,
            message: message.clone(),
        }),
        _ => None,
    };
    let json = IncomingResponse {
        version: 1,
        reference: backlog.reference.clone(),
        data: peer_api::encode_data(&msg.payload),
        source: msg.source.to_string(),
        schema: msg.schema.clone(),
        timestamp: msg.timestamp,
        error,
    };
    serde_json::to_string(&json).expect("serializable")
}

/// The JSON for an error the peer reports itself (relay errors: `source` "0", code 0).
pub fn error_reply(
    reference: Option<String>,
    source: String,
    error: JsonError,
    now: u64,
) -> String {
    let json = IncomingResponse {
        version: 1,
        reference,
        data: String::new(),
        source,
        schema: None,
        timestamp: now,
        error: Some(error),
    };
    serde_json::to_string(&json).expect("serializable")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmb_core::proto::Message;

    fn me() -> Address {
        Address::twin(5)
    }

    #[test]
    fn a_request_becomes_one_envelope_per_destination() {
        let json = r#"{"ver":1,"ref":"r1","cmd":"calc.add","exp":0,"dat":"aGk=","tag":"t","dst":[7,8],"ret":"app.ret","shm":"application/json","now":990}"#;
        let LocalRequest::Send(p) = local_request(json, "u-1", &me(), 1000).unwrap() else {
            panic!("expected a request to send")
        };
        assert_eq!(
            p.tracked,
            Tracked {
                uid: "u-1".into(),
                reference: Some("r1".into()),
                reply_to: "app.ret".into(),
                command: "calc.add".into(),
                destinations: vec![7, 8],
                timestamp: 990,
                deadline: 1290,
            }
        );
        assert_eq!(p.envelopes.len(), 2);
        for (out, dst) in p.envelopes.iter().zip([7, 8]) {
            assert_eq!(out.uid, "u-1");
            assert_eq!(out.destination, Address::twin(dst));
            assert_eq!(out.payload.as_deref(), Some(&b"hi"[..]));
            assert_eq!((out.timestamp, out.expiration), (990, 300));
            assert_eq!(out.tags.as_deref(), Some("t"));
            assert_eq!(out.schema.as_deref(), Some("application/json"));
            assert!(matches!(&out.message, Message::Request(r) if r.command == "calc.add"));
        }
    }

    /// The fuzz target peer_system_local's first crash: a request without a timestamp
    /// at a clock of u64::MAX overflowed `timestamp + ttl`.
    #[test]
    fn a_request_at_the_end_of_time_does_not_overflow() {
        let json =
            r#"{"ver":1,"cmd":"zos.system.version","exp":10,"dat":"","dst":[1,2,3],"ret":"q"}"#;
        // The deadline saturates at the clock itself: the request has no time left.
        let result = local_request(json, "u-1", &me(), u64::MAX);
        assert!(
            matches!(result, Ok(LocalRequest::Expired { age: 0, .. })),
            "{result:?}"
        );
    }

    #[test]
    fn ttl_is_capped_and_expired_requests_are_recognised() {
        let json = r#"{"ver":1,"ref":null,"cmd":"c","exp":99999,"dat":"","tag":null,"dst":[7],"ret":"r","shm":null,"now":0}"#;
        let LocalRequest::Send(p) = local_request(json, "u", &me(), 1000).unwrap() else {
            panic!()
        };
        assert_eq!(p.tracked.deadline - 1000, 1800);
        let old = r#"{"ver":1,"ref":"old","cmd":"c","exp":60,"dat":"","tag":null,"dst":[7],"ret":"r","shm":null,"now":100}"#;
        assert_eq!(
            local_request(old, "u", &me(), 1000).unwrap(),
            LocalRequest::Expired {
                reference: Some("old".into()),
                age: 900
            }
        );
    }

    #[test]
    fn malformed_requests_report_to_ret_when_readable() {
        let bad_b64 = r#"{"ver":1,"ref":"r","cmd":"c","exp":5,"dat":"%%%","tag":null,"dst":[7],"ret":"app.ret","shm":null,"now":0}"#;
        let e = local_request(bad_b64, "u", &me(), 1000).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPayload);
        assert_eq!(e.reply_to.as_deref(), Some("app.ret"));
        assert_eq!(e.reference.as_deref(), Some("r"));
        let bad_dst = r#"{"ref":"r2","ret":"app.ret","cmd":"c","dst":"seven"}"#;
        let e = local_request(bad_dst, "u", &me(), 1000).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        assert_eq!(
            (e.reply_to.as_deref(), e.reference.as_deref()),
            (Some("app.ret"), Some("r2"))
        );
        let garbage = local_request("{not json", "u", &me(), 1000).unwrap_err();
        assert_eq!((garbage.reply_to, garbage.reference), (None, None));
        let no_dst = r#"{"ref":"r","cmd":"c","dst":[],"ret":"x"}"#;
        assert_eq!(
            local_request(no_dst, "u", &me(), 1000).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn replies_keep_the_request_schema_unless_the_service_sets_one() {
        let json =
            r#"{"ver":1,"ref":"uid-9","dat":"b2s=","dst":"7:s1","shm":null,"now":0,"err":null}"#;
        let out = local_reply(json, &me(), |dst, uid| {
            assert_eq!((dst, uid), ("7:s1", "uid-9"));
            Some(RequestInfo {
                schema: Some("application/json".into()),
                deadline: 60,
            })
        })
        .unwrap();
        assert_eq!(out.expiration, 60, "the reply lives as long as its request");
        assert_eq!(out.uid, "uid-9");
        assert_eq!(out.destination, Address::session(7, "s1"));
        assert_eq!(out.schema.as_deref(), Some("application/json"));
        assert_eq!(out.payload.as_deref(), Some(&b"ok"[..]));
        let json = r#"{"ver":1,"ref":"u","dat":"","dst":"7","shm":"text/plain","now":0,"err":{"code":7,"message":"no"}}"#;
        let out = local_reply(json, &me(), |_, _| None).unwrap();
        assert_eq!(out.schema.as_deref(), Some("text/plain"));
        assert_eq!(
            out.expiration, DEFAULT_TTL,
            "an unknown request: the default"
        );
        assert!(matches!(&out.message, Message::Error(e) if e.code == 7 && e.message == "no"));
        let bad = r#"{"ver":1,"ref":"u","dat":"","dst":"zero","now":0}"#;
        let e = local_reply(bad, &me(), |_, _| None).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("u"));
    }

    #[test]
    fn a_request_is_rebuilt_with_its_uid_and_deadline() {
        let json = r#"{"ver":1,"ref":"r1","cmd":"calc.add","exp":100,"dat":"aGk=","dst":[7,8],"ret":"app.ret","now":0}"#;
        let LocalRequest::Send(first) = local_request(json, "u-1", &me(), 1000).unwrap() else {
            panic!()
        };
        let again = envelopes_again(json, &first.tracked, &me(), &[8]).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].uid, "u-1");
        assert_eq!(again[0].destination, Address::twin(8));
        assert_eq!((again[0].timestamp, again[0].expiration), (1000, 100));
        assert_eq!(again[0].payload.as_deref(), Some(&b"hi"[..]));
    }

    #[test]
    fn request_info_survives_redis() {
        for info in [
            RequestInfo {
                schema: Some("application/json".into()),
                deadline: 99,
            },
            RequestInfo {
                schema: Some(String::new()),
                deadline: 1,
            },
            RequestInfo {
                schema: None,
                deadline: 7,
            },
        ] {
            assert_eq!(RequestInfo::from_marker(&info.to_marker()), Some(info));
        }
        assert_eq!(RequestInfo::from_marker("x"), None);
    }

    #[test]
    fn incoming_messages_become_the_section_4_json() {
        let msg = Incoming {
            uid: "u1".into(),
            source: Address::session(9, "s"),
            kind: Kind::Request {
                command: "calc.add".into(),
            },
            payload: b"hi".to_vec(),
            schema: Some("application/json".into()),
            tags: None,
            timestamp: 100,
            expiration: 60,
        };
        let (list, json) = incoming_request(&msg).unwrap();
        assert_eq!(list, "msgbus.calc.add");
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"ver":1,"ref":"u1","src":"9:s","cmd":"calc.add","exp":60,
                "dat":"aGk=","tag":null,"ret":"msgbus.system.reply",
                "shm":"application/json","now":100})
        );
        let reply = Incoming {
            kind: Kind::Error {
                code: 3,
                message: "bad".into(),
            },
            source: Address::twin(9),
            ..msg
        };
        let backlog = Tracked {
            uid: "u1".into(),
            reference: Some("app-ref".into()),
            reply_to: "app.ret".into(),
            command: "calc.add".into(),
            destinations: vec![9],
            timestamp: 100,
            deadline: 160,
        };
        let value: Value = serde_json::from_str(&incoming_reply(&reply, &backlog)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"ver":1,"ref":"app-ref","dat":"aGk=","src":"9",
                "shm":"application/json","now":100,"err":{"code":3,"message":"bad"}})
        );
    }
}
