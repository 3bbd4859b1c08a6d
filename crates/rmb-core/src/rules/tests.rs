//! Every rule, at its limit and one past it.

use super::*;
use crate::prost::Message as _;
use crate::proto::{Error, Message, Payload, Ping, Pong, Request, Response};

const NOW: u64 = 1_700_000_000;

/// A request as our SDK sends it: every rule passes.
fn request() -> Envelope {
    Envelope {
        uid: "2c6bd4a8-1c5f-4a8e-9d0e-5b1f1f3f0a01".into(),
        tags: Some("dedup".into()),
        timestamp: NOW,
        expiration: 300,
        source: Some(Address::twin(7)),
        destination: Some(Address::session(9, "k3j5h2l4m1")),
        message: Some(Message::Request(Request {
            command: "zos.deployment.deploy".into(),
        })),
        signature: Some([&b"e"[..], &[1u8; 64]].concat()),
        schema: Some("application/json".into()),
        federation: Some("relay.grid.tf_relay.02.grid.tf".into()),
        payload: Some(Payload::Plain(b"{}".to_vec())),
        relays: vec!["relay.grid.tf".into(), "127.0.0.1:8080".into()],
    }
}

/// Checks both views: the full envelope, and the header decoded from its bytes.
fn check(rules: &Rules, env: &Envelope) -> Result<(), Violation> {
    let header = EnvelopeHeader::decode(bytes::Bytes::from(env.encode_to_vec())).unwrap();
    let from_header = rules.check_header(&header, NOW);
    let from_envelope = rules.check_envelope(env, NOW);
    assert_eq!(from_header, from_envelope, "header and envelope disagree");
    from_envelope
}

fn check_default(env: &Envelope) -> Result<(), Violation> {
    check(&Rules::default(), env)
}

fn with(change: impl FnOnce(&mut Envelope)) -> Envelope {
    let mut env = request();
    change(&mut env);
    env
}

#[test]
fn what_real_clients_send_passes() {
    check_default(&request()).unwrap();
    // The TypeScript client: tags "", session of 10 random characters, relays filled,
    // schema always application/json (PROTOCOL.md §6).
    check_default(&with(|e| {
        e.tags = Some(String::new());
        e.source = Some(Address::session(7, "a1b2c3d4e5"));
        e.destination = Some(Address::twin(9));
        e.federation = None;
    }))
    .unwrap();
    // rmb-sdk-go: no tags, no relays, federation = the destination's relay.
    check_default(&with(|e| {
        e.tags = None;
        e.relays.clear();
        e.federation = Some("relay.grid.tf".into());
    }))
    .unwrap();
    // The original rmb-peer's response: 3600 s, no schema, a response.
    check_default(&with(|e| {
        e.message = Some(Message::Response(Response {}));
        e.expiration = 3600;
        e.schema = None;
        e.federation = None;
        e.relays.clear();
    }))
    .unwrap();
}

#[test]
fn the_timestamp_may_be_ahead_by_the_skew_and_no_more() {
    let skew = Rules::default().max_future_skew;
    check_default(&with(|e| e.timestamp = NOW + skew)).unwrap();
    assert_eq!(
        check_default(&with(|e| e.timestamp = NOW + skew + 1)),
        Err(Violation::FromTheFuture {
            timestamp: NOW + skew + 1,
            now: NOW,
            ahead: skew + 1,
            max_skew: skew
        })
    );
    // The timestamp/expiration shift: 1733000000,300 -> 173300000030,0.
    let shifted = with(|e| (e.timestamp, e.expiration) = (173_300_000_030, 0));
    assert!(matches!(
        check_default(&shifted),
        Err(Violation::FromTheFuture { .. })
    ));
    // No overflow near the top of the range.
    assert!(matches!(
        check_default(&with(|e| e.timestamp = u64::MAX)),
        Err(Violation::FromTheFuture { .. })
    ));
    let rules = Rules::default();
    assert!(rules.check_times(u64::MAX, 0, u64::MAX).is_err());
}

#[test]
fn the_lifetime_is_capped() {
    let max = Rules::default().max_lifetime;
    check_default(&with(|e| e.expiration = max)).unwrap();
    assert_eq!(
        check_default(&with(|e| e.expiration = max + 1)),
        Err(Violation::LifetimeTooLong {
            expiration: max + 1,
            max
        })
    );
    assert!(matches!(
        check_default(&with(|e| e.expiration = u64::MAX)),
        Err(Violation::LifetimeTooLong { .. })
    ));
}

#[test]
fn an_expired_envelope_is_refused_at_its_deadline() {
    check_default(&with(|e| (e.timestamp, e.expiration) = (NOW - 10, 11))).unwrap();
    assert_eq!(
        check_default(&with(|e| (e.timestamp, e.expiration) = (NOW - 10, 10))),
        Err(Violation::Expired {
            timestamp: NOW - 10,
            expiration: 10,
            now: NOW
        })
    );
    assert!(matches!(
        check_default(&with(|e| (e.timestamp, e.expiration) = (0, 0))),
        Err(Violation::Expired { .. })
    ));
}

/// Each length cap: the limit passes, one byte more is refused with the field named.
#[test]
fn every_text_field_has_a_length_cap() {
    let r = Rules::default();
    type Set = fn(&mut Envelope, String);
    let cases: [(Field, usize, Set); 7] = [
        (Field::Uid, r.max_uid_len, |e, v| e.uid = v),
        (Field::Tags, r.max_tags_len, |e, v| e.tags = Some(v)),
        (Field::Command, r.max_command_len, |e, v| {
            e.message = Some(Message::Request(Request { command: v }))
        }),
        (Field::Schema, r.max_schema_len, |e, v| {
            e.schema = Some(format!("text/{}", &v[5..]))
        }),
        (Field::Federation, r.max_federation_len, |e, v| {
            e.federation = Some(v)
        }),
        (Field::SourceSession, r.max_session_len, |e, v| {
            e.source = Some(Address::session(7, v))
        }),
        (Field::DestinationSession, r.max_session_len, |e, v| {
            e.destination = Some(Address::session(9, v))
        }),
    ];
    for (field, max, set) in cases {
        check_default(&with(|e| set(e, "a".repeat(max)))).unwrap();
        assert_eq!(
            check_default(&with(|e| set(e, "a".repeat(max + 1)))),
            Err(Violation::TooLong {
                field,
                len: max + 1,
                max
            }),
            "{field}"
        );
    }
    check_default(&with(|e| e.relays = vec!["a".repeat(r.max_relay_len)])).unwrap();
    assert_eq!(
        check_default(&with(
            |e| e.relays = vec!["ok".into(), "a".repeat(r.max_relay_len + 1)]
        )),
        Err(Violation::TooLong {
            field: Field::Relay(1),
            len: r.max_relay_len + 1,
            max: r.max_relay_len
        })
    );
}

#[test]
fn the_number_of_relays_is_capped() {
    let max = Rules::default().max_relays;
    check_default(&with(|e| e.relays = vec!["r".into(); max])).unwrap();
    assert_eq!(
        check_default(&with(|e| e.relays = vec!["r".into(); max + 1])),
        Err(Violation::TooManyRelays {
            count: max + 1,
            max
        })
    );
}

#[test]
fn limits_come_from_the_rules_given() {
    let strict = Rules {
        max_uid_len: 36,
        ..Rules::default()
    };
    check(&strict, &request()).unwrap();
    assert!(matches!(
        check(&strict, &with(|e| e.uid.push('x'))),
        Err(Violation::TooLong {
            field: Field::Uid,
            ..
        })
    ));
}

#[test]
fn a_uid_and_a_command_must_not_be_empty() {
    assert_eq!(
        check_default(&with(|e| e.uid.clear())),
        Err(Violation::Empty { field: Field::Uid })
    );
    assert_eq!(
        check_default(&with(
            |e| e.message = Some(Message::Request(Request::default()))
        )),
        Err(Violation::Empty {
            field: Field::Command
        })
    );
    // Empty tags, schema, federation and session ids are what real clients send.
    check_default(&with(|e| {
        e.tags = Some(String::new());
        e.schema = Some(String::new());
        e.federation = Some(String::new());
        e.source = Some(Address::session(7, ""));
    }))
    .unwrap();
    assert_eq!(
        check_default(&with(|e| e.relays = vec![String::new()])),
        Err(Violation::Empty {
            field: Field::Relay(0)
        })
    );
}

#[test]
fn characters_outside_each_fields_set_are_refused() {
    let bad = |env: Envelope, field: Field| {
        let got = check_default(&env);
        assert!(
            matches!(got, Err(Violation::BadCharacter { field: f, .. }) if f == field),
            "{field}: {got:?}"
        );
    };
    bad(with(|e| e.uid = "a b".into()), Field::Uid);
    bad(with(|e| e.uid = "ab\u{e9}".into()), Field::Uid);
    bad(with(|e| e.tags = Some("a\nb".into())), Field::Tags);
    bad(
        with(|e| {
            e.message = Some(Message::Request(Request {
                command: "zos deploy".into(),
            }))
        }),
        Field::Command,
    );
    bad(
        with(|e| e.schema = Some("application/json{\"a".into())),
        Field::Schema,
    );
    assert!(matches!(
        check_default(&with(|e| e.schema = Some("loyapplication/json".into()))),
        Err(Violation::NotAMediaType { .. })
    ));
    bad(
        with(|e| e.federation = Some("relay/grid".into())),
        Field::Federation,
    );
    bad(
        with(|e| e.source = Some(Address::session(7, "a\tb"))),
        Field::SourceSession,
    );
    bad(
        with(|e| e.destination = Some(Address::session(9, "x y"))),
        Field::DestinationSession,
    );
    bad(
        with(|e| e.relays = vec!["ok".into(), "}relay".into()]),
        Field::Relay(1),
    );
}

#[test]
fn invalid_utf8_in_a_header_field_is_a_bad_character() {
    let mut header = EnvelopeHeader::decode(bytes::Bytes::from(request().encode_to_vec())).unwrap();
    header.uid = bytes::Bytes::from_static(b"ab\xff");
    assert!(matches!(
        Rules::default().check_header(&header, NOW),
        Err(Violation::BadCharacter {
            field: Field::Uid,
            at: 2,
            byte: 0xff,
            ..
        })
    ));
}

#[test]
fn signatures_must_be_present_and_well_shaped() {
    assert_eq!(
        check_default(&with(|e| e.signature = None)),
        Err(Violation::Unsigned)
    );
    assert_eq!(
        check_default(&with(|e| e.signature = Some(vec![]))),
        Err(Violation::Unsigned)
    );
    assert_eq!(
        check_default(&with(|e| e.signature = Some(vec![b'e'; 64]))),
        Err(Violation::BadSignatureLength { len: 64 })
    );
    assert_eq!(
        check_default(&with(|e| e.signature = Some(vec![b'e'; 66]))),
        Err(Violation::BadSignatureLength { len: 66 })
    );
    assert_eq!(
        check_default(&with(|e| e.signature = Some(vec![b'x'; 65]))),
        Err(Violation::BadSignatureType { byte: b'x' })
    );
    check_default(&with(|e| e.signature = Some(vec![b's'; 65]))).unwrap();
}

#[test]
fn sources_and_destinations_are_required_except_for_pings_and_relay_errors() {
    assert_eq!(
        check_default(&with(|e| e.destination = None)),
        Err(Violation::NoDestination)
    );
    assert_eq!(
        check_default(&with(|e| e.destination = Some(Address::twin(0)))),
        Err(Violation::NoDestination)
    );
    assert_eq!(
        check_default(&with(|e| e.source = None)),
        Err(Violation::NoSource)
    );
    // A relay's error (PROTOCOL.md §3.2): no source, unsigned.
    check_default(&with(|e| {
        e.source = None;
        e.signature = None;
        e.message = Some(Message::Error(Error {
            code: 0,
            message: "destination offline".into(),
        }));
    }))
    .unwrap();
    // The TypeScript client's ping: empty destination, no signature (PROTOCOL.md §6);
    // the relay's pong: no source.
    check_default(&with(|e| {
        e.destination = Some(Address::default());
        e.signature = None;
        e.message = Some(Message::Ping(Ping {}));
        e.expiration = 40;
    }))
    .unwrap();
    check_default(&with(|e| {
        e.source = None;
        e.signature = None;
        e.message = Some(Message::Pong(Pong {}));
    }))
    .unwrap();
}

#[test]
fn an_envelope_without_a_message_is_refused() {
    assert_eq!(
        check_default(&with(|e| e.message = None)),
        Err(Violation::NoMessage)
    );
}

#[test]
fn messages_name_the_field_the_value_and_the_limit() {
    let msg = |env: Envelope| check_default(&env).unwrap_err().to_string();
    assert_eq!(
        msg(with(|e| e.uid = "u".repeat(65))),
        "uid is 65 bytes, longer than the limit of 64"
    );
    assert_eq!(
        msg(with(|e| e.source = Some(Address::session(7, "a b")))),
        "source session id has byte 0x20 at offset 1, outside its allowed characters \
         (printable ASCII without spaces)"
    );
    assert_eq!(
        msg(with(|e| e.expiration = 9000)),
        "expiration 9000 s is longer than the limit of 7200 s"
    );
    assert!(msg(with(|e| e.relays = vec!["r".into(); 17])).contains("17 entries"));
}

#[test]
fn destinations_are_compared_exactly() {
    let env = request();
    check_destination(&env, &Address::session(9, "k3j5h2l4m1")).unwrap();
    assert_eq!(
        check_destination(&env, &Address::twin(9)),
        Err(Violation::NotForUs {
            found: "9:k3j5h2l4m1".into(),
            expected: "9".into()
        })
    );
    let to_twin = with(|e| e.destination = Some(Address::twin(9)));
    assert_eq!(
        check_destination(&to_twin, &Address::session(9, "")),
        Err(Violation::NotForUs {
            found: "9".into(),
            expected: "9:\"\"".into()
        })
    );
    assert!(check_destination(&with(|e| e.destination = None), &Address::twin(9)).is_err());
}

mod keys {
    use super::*;

    fn keys(env: &Envelope, key: &HashKey) -> (u64, Option<u64>) {
        let header = EnvelopeHeader::decode(bytes::Bytes::from(env.encode_to_vec())).unwrap();
        let of_header = (message_key(key, &header), signature_key(key, &header));
        let of_envelope = (message_key(key, env), signature_key(key, env));
        assert_eq!(
            of_header, of_envelope,
            "header and envelope hash differently"
        );
        of_envelope
    }

    #[test]
    fn a_copy_has_both_keys_of_its_original() {
        let key = HashKey::random();
        assert_eq!(keys(&request(), &key), keys(&request(), &key));
    }

    #[test]
    fn the_message_key_covers_kind_both_addresses_and_uid() {
        let key = HashKey::from_bytes(&[3; 64]);
        let (original, _) = keys(&request(), &key);
        let changes: [fn(&mut Envelope); 7] = [
            |e| e.uid.push('x'),
            |e| e.message = Some(Message::Response(Response {})),
            |e| e.source = Some(Address::twin(8)),
            |e| e.source = Some(Address::session(7, "")),
            |e| e.destination = Some(Address::twin(9)),
            |e| e.destination = Some(Address::session(9, "k3j5h2l4m")),
            |e| e.destination = Some(Address::session(10, "k3j5h2l4m1")),
        ];
        for change in changes {
            assert_ne!(keys(&with(change), &key).0, original);
        }
        // What it does not cover: a re-stamped or re-signed copy is the same message.
        let restamped = with(|e| {
            e.timestamp += 5;
            e.signature = Some(vec![b's'; 65]);
            e.tags = None;
        });
        assert_eq!(keys(&restamped, &key).0, original);
    }

    #[test]
    fn the_signature_key_covers_source_twin_and_signature_only() {
        let key = HashKey::from_bytes(&[3; 64]);
        let (_, original) = keys(&request(), &key);
        assert!(original.is_some());
        let shifted = with(|e| {
            e.uid.truncate(30);
            e.message = Some(Message::Response(Response {}));
            e.source = Some(Address::session(7, "x"));
        });
        assert_eq!(keys(&shifted, &key).1, original);
        assert_ne!(
            keys(&with(|e| e.source = Some(Address::twin(8))), &key).1,
            original
        );
        assert_ne!(
            keys(&with(|e| e.signature = Some(vec![b's'; 65])), &key).1,
            original
        );
        assert_eq!(keys(&with(|e| e.signature = None), &key).1, None);
        assert_eq!(keys(&with(|e| e.signature = Some(vec![])), &key).1, None);
    }

    #[test]
    fn keys_depend_on_the_secret() {
        let a = keys(&request(), &HashKey::from_bytes(&[1; 64]));
        let b = keys(&request(), &HashKey::from_bytes(&[2; 64]));
        assert_ne!(a.0, b.0);
        assert_ne!(a.1, b.1);
        assert_eq!(format!("{:?}", HashKey::random()), "HashKey(..)");
    }
}
