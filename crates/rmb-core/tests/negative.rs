//! Bad input of every kind is refused with the right error.

use rmb_core::e2e::{self, E2eKey};
use rmb_core::identity::{self, IdentityError};
use rmb_core::proto::{Address, Envelope, Error, Message, Payload, Request};
use rmb_core::{envelope, jwt, E2eError, JwtError, JwtPolicy, KeyType, SignatureError, Signer};

const MNEMONIC: &str = "neck stage box cup core magic produce exercise happy rely vocal then";
const OTHER: &str = "0x340f7341b312bcc61aeea7a76d759d809b8601cbc6d22cb2817278e346137a5d";

fn signer(kt: KeyType) -> Signer {
    Signer::from_secret(MNEMONIC, kt).unwrap()
}

fn sample() -> Envelope {
    Envelope {
        uid: "uid-1".into(),
        tags: Some("a,b".into()),
        timestamp: 1_700_000_000,
        expiration: 300,
        source: Some(Address::session(1, "s1")),
        destination: Some(Address::session(2, "s2")),
        message: Some(Message::Request(Request {
            command: "calc.add".into(),
        })),
        signature: None,
        schema: Some("application/json".into()),
        federation: Some("relay.example".into()),
        payload: Some(Payload::Plain(b"{}".to_vec())),
        relays: vec!["r1".into()],
    }
}

type Tamper = fn(&mut Envelope);

/// One tampering per field the signature covers.
fn tamperings() -> Vec<(&'static str, Tamper)> {
    vec![
        ("uid", |e| e.uid.push('x')),
        ("tags", |e| e.tags = Some("a,c".into())),
        ("tags removed", |e| e.tags = None),
        ("timestamp", |e| e.timestamp += 1),
        ("expiration", |e| e.expiration += 1),
        ("source twin", |e| e.source.as_mut().unwrap().twin = 9),
        ("source session", |e| {
            e.source.as_mut().unwrap().connection = Some("s9".into())
        }),
        ("source removed", |e| e.source = None),
        ("destination twin", |e| {
            e.destination.as_mut().unwrap().twin = 9
        }),
        ("destination session", |e| {
            e.destination.as_mut().unwrap().connection = None
        }),
        ("command", |e| {
            e.message = Some(Message::Request(Request {
                command: "calc.sub".into(),
            }))
        }),
        ("message kind", |e| {
            e.message = Some(Message::Error(Error {
                code: 1,
                message: String::new(),
            }))
        }),
        ("schema", |e| e.schema = Some("text/plain".into())),
        ("federation", |e| e.federation = None),
        ("plain payload", |e| {
            e.payload = Some(Payload::Plain(b"{ }".to_vec()))
        }),
        ("payload removed", |e| e.payload = None),
        ("relays", |e| e.relays.push("r2".into())),
    ]
}

#[test]
fn tampering_with_any_signed_field_breaks_the_signature() {
    for kt in [KeyType::Ed25519, KeyType::Sr25519] {
        let signer = signer(kt);
        let mut env = sample();
        envelope::sign(&mut env, &signer);
        envelope::verify(&env, &signer.public_key()).unwrap();
        for (what, tamper) in tamperings() {
            let mut bad = env.clone();
            tamper(&mut bad);
            assert_eq!(
                envelope::verify(&bad, &signer.public_key()),
                Err(SignatureError::Mismatch(kt)),
                "{kt}: tampered {what} still verifies"
            );
        }
    }
}

#[test]
fn error_and_cipher_fields_are_covered_too() {
    let signer = signer(KeyType::Ed25519);
    let mut env = sample();
    env.message = Some(Message::Error(Error {
        code: 404,
        message: "nope".into(),
    }));
    env.payload = Some(Payload::Cipher(vec![1, 2, 3]));
    envelope::sign(&mut env, &signer);
    let cases: Vec<(&str, Tamper)> = vec![
        ("error code", |e| {
            e.message = Some(Message::Error(Error {
                code: 405,
                message: "nope".into(),
            }))
        }),
        ("error message", |e| {
            e.message = Some(Message::Error(Error {
                code: 404,
                message: "nop".into(),
            }))
        }),
        ("cipher", |e| {
            e.payload = Some(Payload::Cipher(vec![1, 2, 4]))
        }),
    ];
    for (what, tamper) in cases {
        let mut bad = env.clone();
        tamper(&mut bad);
        assert!(
            envelope::verify(&bad, &signer.public_key()).is_err(),
            "tampered {what}"
        );
    }
}

#[test]
fn signature_shape_errors() {
    let signer = signer(KeyType::Ed25519);
    let mut env = sample();
    envelope::sign(&mut env, &signer);
    let pk = signer.public_key();

    let mut wrong_type = env.clone();
    wrong_type.signature.as_mut().unwrap()[0] = b's';
    // An ed25519 key is usually not even a valid sr25519 (ristretto) point.
    assert!(matches!(
        envelope::verify(&wrong_type, &pk),
        Err(SignatureError::Mismatch(KeyType::Sr25519)
            | SignatureError::BadPublicKey(KeyType::Sr25519))
    ));

    let mut unknown_type = env.clone();
    unknown_type.signature.as_mut().unwrap()[0] = b'x';
    assert_eq!(
        envelope::verify(&unknown_type, &pk),
        Err(SignatureError::UnknownType(b'x'))
    );

    let mut truncated = env.clone();
    truncated.signature.as_mut().unwrap().truncate(64);
    assert_eq!(
        envelope::verify(&truncated, &pk),
        Err(SignatureError::BadLength(64))
    );

    let mut missing = env.clone();
    missing.signature = None;
    assert_eq!(
        envelope::verify(&missing, &pk),
        Err(SignatureError::Missing)
    );
    missing.signature = Some(vec![]);
    assert_eq!(
        envelope::verify(&missing, &pk),
        Err(SignatureError::Missing)
    );

    let other = Signer::from_secret(OTHER, KeyType::Ed25519).unwrap();
    assert_eq!(
        envelope::verify(&env, &other.public_key()),
        Err(SignatureError::Mismatch(KeyType::Ed25519))
    );
    assert_eq!(
        envelope::verify(&env, &pk[..31]),
        Err(SignatureError::BadPublicKeyLength(31))
    );
}

/// Keys whose signatures anyone can make: the ed25519 identity and small-order points,
/// and the ristretto identity (sr25519). With them, a signature of R = identity and
/// s = 0 verifies for every message (the loose ed25519 check and schnorrkel both accept
/// it), so whoever registers such a key (the registrar's proof verifies too) creates a
/// twin everyone can sign as: envelopes, JWTs and registrar updates included.
fn weak_keys() -> Vec<(KeyType, [u8; 32], [u8; 64])> {
    let mut ed_identity = [0u8; 32];
    ed_identity[0] = 1;
    // The point of order 2, (0, -1): y = p - 1.
    let mut ed_order_2 = [0xff; 32];
    ed_order_2[0] = 0xec;
    ed_order_2[31] = 0x7f;
    // R = the ed25519 identity, s = 0.
    let mut ed_sig = [0u8; 64];
    ed_sig[0] = 1;
    // R = the ristretto identity (all zero), s = 0 with schnorrkel's marker bit.
    let mut sr_sig = [0u8; 64];
    sr_sig[63] = 0x80;
    vec![
        (KeyType::Ed25519, ed_identity, ed_sig),
        (KeyType::Ed25519, ed_order_2, ed_sig),
        (KeyType::Sr25519, [0u8; 32], sr_sig),
    ]
}

#[test]
fn weak_keys_verify_nothing() {
    for (kt, key, raw) in weak_keys() {
        // Several messages: with the order-2 key the forgery works for about half.
        for message in [&b"hello"[..], b"1700000000:7", b"", b"any message at all"] {
            let result = identity::verify_raw(kt, &key, message, &raw);
            assert_eq!(
                result,
                Err(SignatureError::WeakPublicKey(kt)),
                "{kt} key {key:02x?} over {message:?}"
            );
            let mut typed = vec![kt.type_byte()];
            typed.extend_from_slice(&raw);
            assert_eq!(
                identity::verify(&key, message, &typed),
                Err(SignatureError::WeakPublicKey(kt))
            );
            weak_keys_verify_nothing_in_batches_either(kt, &key, message, &typed);
        }
    }
}

/// The batch and cached paths of the relay and the SDK say what `verify` says: a batch
/// of ed25519 signatures is checked with the cofactored equation, which the
/// R = identity, s = 0 forgery passes for a small-order key.
fn weak_keys_verify_nothing_in_batches_either(
    kt: KeyType,
    key: &[u8; 32],
    message: &[u8],
    typed: &[u8],
) {
    let honest = signer(KeyType::Ed25519);
    let honest_key = honest.public_key();
    let honest_sig = honest.sign(message).to_vec();
    let mut checks = vec![
        identity::Check {
            public_key: &honest_key,
            message,
            signature: &honest_sig,
        };
        4
    ];
    checks.push(identity::Check {
        public_key: key,
        message,
        signature: typed,
    });
    let weak = Err(SignatureError::WeakPublicKey(kt));
    let cache = identity::KeyCache::default();
    for results in [
        identity::verify_many(&checks),
        identity::verify_many_cached(&checks, &cache),
        identity::verify_many_cached(&checks, &cache),
    ] {
        assert_eq!(results[..4], [Ok(()), Ok(()), Ok(()), Ok(())]);
        assert_eq!(
            results[4], weak,
            "{kt} key {key:02x?} in a batch over {message:?}"
        );
    }
    for _ in 0..2 {
        assert_eq!(identity::verify_cached(&cache, key, message, typed), weak);
    }
}

fn policy() -> JwtPolicy {
    JwtPolicy {
        max_lifetime: 3600,
        max_clock_skew: 60,
    }
}

#[test]
fn jwt_time_rules() {
    let s = signer(KeyType::Sr25519);
    let pk = s.public_key();
    let now = 1_800_000_000;
    let verify = |token: &str, now| jwt::parse(token).unwrap().verify(&pk, now, &policy());

    let token = jwt::create(&s, 7, None, now, 60);
    assert_eq!(verify(&token, now).unwrap().sub, 7);
    assert_eq!(
        verify(&token, now + 60),
        Err(JwtError::Expired {
            exp: now + 60,
            now: now + 60
        })
    );

    let future = jwt::create(&s, 7, None, now + 61, 60);
    assert_eq!(
        verify(&future, now),
        Err(JwtError::IssuedInFuture { iat: now + 61, now })
    );
    let slightly_future = jwt::create(&s, 7, None, now + 30, 60);
    assert!(
        verify(&slightly_future, now).is_ok(),
        "small clock skew is tolerated"
    );

    let long = jwt::create(&s, 7, None, now, 3601);
    assert_eq!(
        verify(&long, now),
        Err(JwtError::LifetimeTooLong {
            lifetime: 3601,
            max: 3600
        })
    );
}

#[test]
fn jwt_signed_by_another_key_or_forged_is_refused() {
    let s = signer(KeyType::Ed25519);
    let other = Signer::from_secret(OTHER, KeyType::Ed25519).unwrap();
    let now = 1_800_000_000;
    let token = jwt::create(&other, 7, Some("s1"), now, 60);
    let err = jwt::parse(&token)
        .unwrap()
        .verify(&s.public_key(), now, &policy())
        .unwrap_err();
    assert!(
        matches!(err, JwtError::BadSignature(SignatureError::Mismatch(_))),
        "{err}"
    );

    // Claims swapped for another twin's while keeping the signature.
    let good = jwt::create(&s, 7, None, now, 60);
    let forged_claims = jwt::create(&s, 8, None, now, 60);
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = forged_claims.split('.').nth(1).unwrap();
    let forged = parts.join(".");
    let token = jwt::parse(&forged).unwrap();
    assert_eq!(token.claims().sub, 8);
    assert!(matches!(
        token.verify(&s.public_key(), now, &policy()),
        Err(JwtError::BadSignature(_))
    ));
}

#[test]
fn malformed_jwts() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let b = |s: &str| URL_SAFE_NO_PAD.encode(s);
    let claims = b(r#"{"sub":7,"iat":1,"exp":2}"#);
    let cases = [
        String::new(),
        "abc".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        format!("!!!.{claims}.AA"),
        format!("{}.{claims}.AA", b("not json")),
        format!("{}.{claims}.AA", b(r#"{"alg":"HS256"}"#)),
        format!("{}.{claims}.AA", b(r#"{"typ":"JWT"}"#)),
        format!(
            "{}.{}.AA",
            b(r#"{"alg":"RS512"}"#),
            b(r#"{"sub":"seven","iat":1,"exp":2}"#)
        ),
        format!(
            "{}.{}.AA",
            b(r#"{"alg":"RS512"}"#),
            b(r#"{"iat":1,"exp":2}"#)
        ),
        format!("{}.{claims}.%%%", b(r#"{"alg":"RS512"}"#)),
    ];
    for token in &cases {
        assert!(jwt::parse(token).is_err(), "{token:?} parsed");
    }
    // Well-formed, but the signature is not 65 bytes.
    let short_sig = format!("{}.{claims}.AA", b(r#"{"alg":"RS512"}"#));
    let err = jwt::parse(&short_sig)
        .unwrap()
        .verify_signature(&[0; 32])
        .unwrap_err();
    assert_eq!(err, JwtError::BadSignature(SignatureError::BadLength(1)));
    let backwards = format!(
        "{}.{}.AA",
        b(r#"{"alg":"RS512"}"#),
        b(r#"{"sub":7,"iat":5,"exp":2}"#)
    );
    let err = jwt::parse(&backwards)
        .unwrap()
        .verify(&[0; 32], 3, &policy())
        .unwrap_err();
    assert_eq!(err, JwtError::ExpiresBeforeIssued { iat: 5, exp: 2 });
}

#[test]
fn corrupted_or_misdirected_ciphertext_is_refused() {
    let a = E2eKey::from_secret(MNEMONIC).unwrap();
    let b = E2eKey::from_secret(OTHER).unwrap();
    let cipher = a.encrypt(&b.public_key(), b"secret").unwrap();
    assert_eq!(b.decrypt(&a.public_key(), &cipher).unwrap(), b"secret");
    for i in [0, 12, cipher.len() - 1] {
        let mut bad = cipher.clone();
        bad[i] ^= 1;
        assert_eq!(
            b.decrypt(&a.public_key(), &bad),
            Err(E2eError::DecryptFailed),
            "byte {i}"
        );
    }
    // Decrypting with the wrong peer key gives a different shared key.
    assert_eq!(
        b.decrypt(&b.public_key(), &cipher),
        Err(E2eError::DecryptFailed)
    );
    assert_eq!(
        b.decrypt(&a.public_key(), &cipher[..27]),
        Err(E2eError::TooShort(27))
    );
    assert_eq!(
        a.encrypt(&[2; 32], b"x"),
        Err(E2eError::BadPublicKeyLength(32))
    );
    for tag in [0x00, 0x04, 0x05] {
        let mut not_compressed = a.public_key();
        not_compressed[0] = tag;
        assert_eq!(
            a.encrypt(&not_compressed, b"x"),
            Err(E2eError::BadPublicKey),
            "tag {tag}"
        );
    }
    let mut off_curve = [0xffu8; 33];
    off_curve[0] = 0x02;
    assert_eq!(a.encrypt(&off_curve, b"x"), Err(E2eError::BadPublicKey));
    assert!(e2e::parse_public_key(&a.public_key()).is_ok());
}

#[test]
fn bad_secrets_are_refused_with_clear_errors() {
    let bad = |s: &str, kt| Signer::from_secret(s, kt).unwrap_err();
    // Unknown word, bad checksum, wrong word count.
    assert!(matches!(
        bad(
            "neck stage box cup core magic produce exercise happy rely vocal thenx",
            KeyType::Sr25519
        ),
        IdentityError::BadMnemonic(_)
    ));
    assert!(matches!(
        bad(
            "neck stage box cup core magic produce exercise happy rely vocal vocal",
            KeyType::Sr25519
        ),
        IdentityError::BadMnemonic(_)
    ));
    assert!(matches!(
        bad("neck stage box", KeyType::Ed25519),
        IdentityError::BadMnemonic(_)
    ));
    // Hex of the wrong length or with non-hex digits.
    assert!(matches!(
        bad("0x1234", KeyType::Sr25519),
        IdentityError::BadHexSeed(_)
    ));
    assert!(matches!(
        bad(&format!("0x{}", "zz".repeat(32)), KeyType::Sr25519),
        IdentityError::BadHexSeed(_)
    ));
    assert_eq!(
        bad(&format!("{OTHER}///pw"), KeyType::Sr25519),
        IdentityError::PasswordWithHexSeed
    );
    assert_eq!(
        bad("//Alice/soft", KeyType::Ed25519),
        IdentityError::SoftDerivationEd25519
    );
    assert_eq!(
        "rsa".parse::<KeyType>(),
        Err(IdentityError::UnknownKeyType("rsa".into()))
    );
    // No error message repeats the secret.
    let err = bad(
        "neck stage box cup core magic produce exercise happy rely vocal thenx",
        KeyType::Sr25519,
    );
    assert!(!err.to_string().contains("neck stage"), "{err}");
}

#[test]
fn derivation_paths_behave_like_substrate() {
    let sr = |s: &str| {
        Signer::from_secret(s, KeyType::Sr25519)
            .unwrap()
            .public_key()
    };
    assert_ne!(sr("//Alice"), sr("//Bob"));
    assert_ne!(sr("//Alice"), sr("/Alice"), "hard and soft differ");
    assert_ne!(sr(MNEMONIC), sr(&format!("{MNEMONIC}///password")));
    assert_eq!(sr("//Alice/1"), sr("//Alice/1"));
    assert!(matches!(
        Signer::from_secret("//Alice//", KeyType::Sr25519),
        Err(IdentityError::EmptyJunction)
    ));
    assert_eq!(
        E2eKey::from_secret("//Alice").unwrap_err(),
        E2eError::DerivedSecret
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    for kt in [KeyType::Ed25519, KeyType::Sr25519] {
        let s = signer(kt);
        let debug = format!("{s:?}");
        assert!(debug.contains(&hex::encode(s.public_key())));
        assert!(!debug.contains("aa4e323b"), "{debug}");
    }
    let e2e = E2eKey::from_secret(MNEMONIC).unwrap();
    let debug = format!("{e2e:?}");
    assert!(!debug.contains("aa4e323b"), "{debug}");
    assert!(!format!("{:?}", e2e.shared_key(&e2e.public_key()).unwrap()).contains("64"));
    let m = identity::generate_mnemonic(24).unwrap();
    assert_eq!(m.split(' ').count(), 24);
    assert!(identity::generate_mnemonic(13).is_err());
}
