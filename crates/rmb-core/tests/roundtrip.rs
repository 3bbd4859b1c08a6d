//! Property tests: whatever goes in comes back out.

use proptest::prelude::*;
use prost::Message as _;
use rmb_core::peer_api::{
    self, IncomingRequest, IncomingResponse, JsonError, OutgoingRequest, OutgoingResponse,
};
use rmb_core::proto::{Address, Envelope, Error, Message, Payload, Ping, Pong, Request, Response};
use rmb_core::{envelope, AddressError, E2eKey, KeyType, Signer};

fn address() -> impl Strategy<Value = Address> {
    (any::<u32>(), proptest::option::of("[a-z0-9-]{0,12}"))
        .prop_map(|(twin, connection)| Address { twin, connection })
}

fn message() -> impl Strategy<Value = Option<Message>> {
    prop_oneof![
        Just(None),
        "[a-z.]{0,20}".prop_map(|command| Some(Message::Request(Request { command }))),
        Just(Some(Message::Response(Response {}))),
        (any::<u32>(), ".{0,30}")
            .prop_map(|(code, message)| Some(Message::Error(Error { code, message }))),
        Just(Some(Message::Ping(Ping {}))),
        Just(Some(Message::Pong(Pong {}))),
    ]
}

fn payload() -> impl Strategy<Value = Option<Payload>> {
    prop_oneof![
        Just(None),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|p| Some(Payload::Plain(p))),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|p| Some(Payload::Cipher(p))),
    ]
}

prop_compose! {
    fn arb_envelope()(
        uid in "[a-f0-9-]{0,36}",
        tags in proptest::option::of(".{0,16}"),
        timestamp in any::<u64>(),
        expiration in any::<u64>(),
        source in proptest::option::of(address()),
        destination in proptest::option::of(address()),
        message in message(),
        signature in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..70)),
        schema in proptest::option::of("[a-z/]{0,20}"),
        federation in proptest::option::of("[a-z.]{0,20}"),
        payload in payload(),
        relays in proptest::collection::vec("[a-z.:0-9]{1,20}", 0..3),
    ) -> Envelope {
        Envelope { uid, tags, timestamp, expiration, source, destination, message, signature, schema, federation, payload, relays }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn envelopes_survive_encode_decode(env in arb_envelope()) {
        let bytes = env.encode_to_vec();
        prop_assert_eq!(Envelope::decode(&bytes[..]).unwrap(), env);
    }

    #[test]
    fn signed_envelopes_verify(mut env in arb_envelope(), sr in any::<bool>(), seed in any::<[u8; 32]>()) {
        let kt = if sr { KeyType::Sr25519 } else { KeyType::Ed25519 };
        let signer = Signer::from_seed(&seed, kt).unwrap();
        envelope::sign(&mut env, &signer);
        let decoded = Envelope::decode(&env.encode_to_vec()[..]).unwrap();
        prop_assert!(envelope::verify(&decoded, &signer.public_key()).is_ok());
    }

    #[test]
    fn encrypted_payloads_decrypt(a in any::<[u8; 32]>(), b in any::<[u8; 32]>(), plain in proptest::collection::vec(any::<u8>(), 0..2000)) {
        // A random 32-byte string is a valid secp256k1 scalar with overwhelming probability.
        let (Ok(a), Ok(b)) = (E2eKey::from_bytes(&a), E2eKey::from_bytes(&b)) else { return Ok(()) };
        let cipher = a.encrypt(&b.public_key(), &plain).unwrap();
        prop_assert_eq!(cipher.len(), plain.len() + 12 + 16);
        prop_assert_eq!(b.decrypt(&a.public_key(), &cipher).unwrap(), plain);
    }

    #[test]
    fn addresses_print_and_parse(twin in 1u32.., sid in proptest::option::of("[a-zA-Z0-9_:-]{1,20}")) {
        let addr = Address { twin, connection: sid };
        let text = addr.to_string();
        prop_assert_eq!(text.parse::<Address>().unwrap(), addr);
    }

    #[test]
    fn outgoing_requests_survive_json(
        reference in proptest::option::of("[a-z0-9]{1,10}"),
        command in "[a-z.]{1,20}",
        exp in 0u64..5000,
        data in proptest::collection::vec(any::<u8>(), 0..100),
        dst in proptest::collection::vec(1u32.., 1..4),
    ) {
        let req = OutgoingRequest {
            version: 1, reference, command, expiration: exp, data: peer_api::encode_data(&data),
            tags: None, destinations: dst, reply_to: "ret".into(), schema: None, timestamp: 5,
        };
        let json = serde_json::to_string(&req).unwrap();
        let back: OutgoingRequest = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(peer_api::decode_data(&back.data).unwrap(), data);
        prop_assert_eq!(back, req);
    }
}

#[test]
fn address_text_errors() {
    assert_eq!(
        "".parse::<Address>(),
        Err(AddressError::Empty(String::new()))
    );
    assert_eq!(
        "x".parse::<Address>(),
        Err(AddressError::BadTwin("x".into()))
    );
    assert_eq!(
        "0".parse::<Address>(),
        Err(AddressError::BadTwin("0".into()))
    );
    assert_eq!(
        "-1:s".parse::<Address>(),
        Err(AddressError::BadTwin("-1:s".into()))
    );
    assert_eq!(
        "4294967296".parse::<Address>(),
        Err(AddressError::BadTwin("4294967296".into()))
    );
    assert_eq!(
        "7:".parse::<Address>(),
        Err(AddressError::EmptySession("7:".into()))
    );
    assert_eq!("7".parse::<Address>().unwrap(), Address::twin(7));
    assert_eq!(
        " 7:s ".parse::<Address>().unwrap(),
        Address::session(7, "s")
    );
    assert_eq!(
        Address {
            twin: 7,
            connection: Some(String::new())
        }
        .to_string(),
        "7"
    );
}

#[test]
fn peer_json_matches_the_protocol_shapes() {
    // Exactly the JSON of PROTOCOL.md §4, as an app in another language writes it.
    let out: OutgoingRequest = serde_json::from_str(
        r#"{"ver":1,"ref":null,"cmd":"calc.add","exp":0,"dat":"eyJhIjoxfQ==","tag":null,"dst":[2,3],"ret":"my.ret","shm":null,"now":1700000000}"#,
    ).unwrap();
    assert_eq!(out.destinations, vec![2, 3]);
    assert_eq!(out.reference, None);
    assert_eq!(peer_api::decode_data(&out.data).unwrap(), br#"{"a":1}"#);
    assert_eq!(rmb_core::time::effective_ttl(out.expiration), 300);

    // Apps that leave out the optional fields still work.
    let minimal: OutgoingRequest =
        serde_json::from_str(r#"{"cmd":"x","dst":[1],"ret":"r"}"#).unwrap();
    assert_eq!(
        (minimal.version, minimal.expiration, minimal.data.as_str()),
        (1, 0, "")
    );
    // Missing required fields are errors that name the field.
    let err = serde_json::from_str::<OutgoingRequest>(r#"{"cmd":"x","ret":"r"}"#).unwrap_err();
    assert!(err.to_string().contains("dst"), "{err}");

    let incoming = IncomingRequest {
        version: 1,
        reference: "uid".into(),
        source: "7:s".into(),
        command: "calc.add".into(),
        expiration: 300,
        data: "e30=".into(),
        tags: None,
        reply_to: peer_api::SYSTEM_REPLY.into(),
        schema: Some("application/json".into()),
        timestamp: 1,
    };
    assert_eq!(
        serde_json::to_string(&incoming).unwrap(),
        r#"{"ver":1,"ref":"uid","src":"7:s","cmd":"calc.add","exp":300,"dat":"e30=","tag":null,"ret":"msgbus.system.reply","shm":"application/json","now":1}"#
    );

    let reply: OutgoingResponse = serde_json::from_str(
        r#"{"ver":1,"ref":"uid","dat":"","dst":"7","shm":null,"now":2,"err":{"code":1,"message":"boom"}}"#,
    ).unwrap();
    assert_eq!(
        reply.error,
        Some(JsonError {
            code: 1,
            message: "boom".into()
        })
    );

    let back = IncomingResponse {
        version: 1,
        reference: Some("mine".into()),
        data: String::new(),
        source: "9".into(),
        schema: None,
        timestamp: 3,
        error: Some(peer_api::ErrorCode::UnknownTwin.with_message("twin 9 not found")),
    };
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        r#"{"ver":1,"ref":"mine","dat":"","src":"9","shm":null,"now":3,"err":{"code":103,"message":"twin 9 not found"}}"#
    );
    assert_eq!(peer_api::command_list("calc.add"), "msgbus.calc.add");
    assert_eq!(peer_api::backlog_key("u"), "msgbus.backlog.u");
}

#[test]
fn fail_fast_tag_is_found_as_a_token() {
    let with = |tags: &str| Envelope {
        tags: Some(tags.into()),
        ..Default::default()
    };
    assert!(envelope::is_fail_fast(&with("fail-fast")));
    assert!(envelope::is_fail_fast(&with("a, fail-fast")));
    assert!(envelope::is_fail_fast(&with("a fail-fast b")));
    assert!(!envelope::is_fail_fast(&with("fail-faster")));
    assert!(!envelope::is_fail_fast(&Envelope::default()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn header_decode_reads_the_routing_fields_of_any_envelope(env in arb_envelope()) {
        use rmb_core::proto::{EnvelopeHeader, MessageKind};
        let bytes = bytes::Bytes::from(env.encode_to_vec());
        let header = EnvelopeHeader::decode(bytes).unwrap();
        prop_assert_eq!(header.uid_text(), env.uid.clone());
        prop_assert_eq!(header.tags_text(), env.tags.as_deref());
        prop_assert_eq!(header.timestamp, env.timestamp);
        prop_assert_eq!(header.expiration, env.expiration);
        prop_assert_eq!(&header.source, &env.source);
        prop_assert_eq!(&header.destination, &env.destination);
        let kind = match &env.message {
            None => None,
            Some(Message::Request(_)) => Some("request"),
            Some(Message::Response(_)) => Some("response"),
            Some(Message::Error(_)) => Some("error"),
            Some(Message::Ping(_)) => Some("ping"),
            Some(Message::Pong(_)) => Some("pong"),
        };
        let decoded = header.kind.map(|k| match k {
            MessageKind::Request(_) => "request",
            MessageKind::Response(_) => "response",
            MessageKind::Error(_) => "error",
            MessageKind::Ping(_) => "ping",
            MessageKind::Pong(_) => "pong",
        });
        prop_assert_eq!(decoded, kind);
    }
}
