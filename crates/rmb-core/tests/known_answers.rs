//! Every known answer in `test-vectors/` reproduced: keys, envelope challenges and
//! signatures, JWTs and e2e ciphertexts from the reference Rust crate and the
//! TypeScript client.

mod common;

use common::{hex, load, opt_s, rmb_rs_envelope, s, ts_envelope};
use prost::Message as _;
use rmb_core::e2e::SharedKey;
use rmb_core::proto::{Envelope, Payload};
use rmb_core::{envelope, jwt, E2eError, E2eKey, JwtPolicy, KeyType, Signer};

fn key_type(v: &serde_json::Value) -> KeyType {
    s(v).parse().unwrap()
}

#[test]
fn vendored_vectors_match_shared_copy() {
    // The repo carries its own copy so a clone anywhere can run the tests; when the
    // shared contract folder is beside the repo, the copies must not have drifted.
    let shared = common::vectors_dir().join("../../shared/test-vectors");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let ours = common::vectors_dir().join(entry.file_name());
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(&ours).unwrap_or_default(),
            "{} differs from the shared copy",
            ours.display()
        );
    }
}

#[test]
fn rmb_rs_keys_are_reproduced() {
    let doc = load("rmb-rs-keys.json");
    for key in doc["keys"].as_array().unwrap() {
        let label = s(&key["label"]);
        let secret = s(&key["secret"]);
        let ed = Signer::from_secret(secret, KeyType::Ed25519).unwrap();
        assert_eq!(
            ed.public_key().to_vec(),
            hex(&key["ed25519_public_key"]),
            "{label} ed25519"
        );
        let sr = Signer::from_secret(secret, KeyType::Sr25519).unwrap();
        assert_eq!(
            sr.public_key().to_vec(),
            hex(&key["sr25519_public_key"]),
            "{label} sr25519"
        );
        match opt_s(&key["e2e_secp256k1_public_key"]) {
            Some(public) => {
                let e2e = E2eKey::from_secret(secret).unwrap();
                assert_eq!(hex::encode(e2e.public_key()), public, "{label} e2e");
                let from_secret_bytes =
                    E2eKey::from_bytes(&hex(&key["e2e_secp256k1_secret"]).try_into().unwrap())
                        .unwrap();
                assert_eq!(from_secret_bytes.public_key(), e2e.public_key());
            }
            None => assert_eq!(
                E2eKey::from_secret(secret).unwrap_err(),
                E2eError::DerivedSecret
            ),
        }
    }
}

#[test]
fn dev_alice_matches_protocol_doc() {
    let sr = Signer::from_secret("//Alice", KeyType::Sr25519).unwrap();
    assert_eq!(
        hex::encode(sr.public_key()),
        "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d"
    );
    let ed = Signer::from_secret("//Alice", KeyType::Ed25519).unwrap();
    assert_eq!(
        hex::encode(ed.public_key()),
        "88dc3417d5058ec4b4503e0c12ea1a0a89be200fe98922423d4334014fa6b0ee"
    );
    let explicit = format!("{}//Alice", rmb_core::identity::DEV_PHRASE);
    let sr2 = Signer::from_secret(&explicit, KeyType::Sr25519).unwrap();
    assert_eq!(sr.public_key(), sr2.public_key());
}

#[test]
fn ts_client_keys_are_reproduced() {
    let doc = load("ts-client.json");
    for (name, key) in doc["keys"].as_object().unwrap() {
        let secret = s(&key["secret"]);
        for kt in [KeyType::Ed25519, KeyType::Sr25519] {
            let signer = Signer::from_secret(secret, kt).unwrap();
            assert_eq!(
                signer.public_key().to_vec(),
                hex(&key[kt.as_str()]["public_key_hex"]),
                "{name} {kt}"
            );
        }
        let e2e = E2eKey::from_secret(secret).unwrap();
        assert_eq!(
            e2e.public_key().to_vec(),
            hex(&key["secp256k1_public_key_hex"]),
            "{name}"
        );
    }
}

#[test]
fn rmb_rs_envelopes_are_reproduced() {
    let doc = load("rmb-rs-envelopes.json");
    let secret = s(&doc["secret"]);
    for vector in doc["envelopes"].as_array().unwrap() {
        let name = s(&vector["name"]);
        let env = rmb_rs_envelope(&vector["fields"]);
        assert_eq!(
            envelope::challenge(&env),
            hex(&vector["challenge_bytes"]),
            "{name} challenge"
        );
        assert_eq!(
            envelope::challenge_digest(&env).to_vec(),
            hex(&vector["md5_digest"]),
            "{name} md5"
        );
        // rust-protobuf writes fields in another order; decoding must not care.
        let decoded = Envelope::decode(&hex(&vector["unsigned_envelope_protobuf"])[..]).unwrap();
        assert_eq!(decoded, env, "{name} decode");

        for sig in vector["signatures"].as_array().unwrap() {
            let kt = key_type(&sig["key_type"]);
            let public_key = hex(&sig["signer_public_key"]);
            let signed = Envelope::decode(&hex(&sig["signed_envelope_protobuf"])[..]).unwrap();
            assert_eq!(
                signed.signature.as_deref(),
                Some(&hex(&sig["signature"])[..])
            );
            envelope::verify(&signed, &public_key).unwrap_or_else(|e| panic!("{name} {kt}: {e}"));

            let signer = Signer::from_secret(secret, kt).unwrap();
            assert_eq!(signer.public_key().to_vec(), public_key);
            let mut ours = env.clone();
            envelope::sign(&mut ours, &signer);
            envelope::verify(&ours, &public_key).unwrap();
            if sig["deterministic"].as_bool().unwrap() {
                assert_eq!(
                    ours.signature.unwrap(),
                    hex(&sig["signature"]),
                    "{name} {kt} signature"
                );
            }
        }
    }
}

#[test]
fn ts_client_envelopes_are_reproduced_byte_for_byte() {
    let doc = load("ts-client.json");
    let secret = s(&doc["keys"]["mnemonic"]["secret"]);
    for vector in doc["envelopes"].as_array().unwrap() {
        let name = format!("{} {}", s(&vector["name"]), s(&vector["key_type"]));
        let kt = key_type(&vector["key_type"]);
        let public_key = hex(&vector["public_key_hex"]);
        let env = ts_envelope(&vector["fields"]);
        assert_eq!(
            env.encode_to_vec(),
            hex(&vector["unsigned_protobuf_hex"]),
            "{name} encoding"
        );
        assert_eq!(
            envelope::challenge_digest(&env).to_vec(),
            hex(&vector["challenge_md5_hex"]),
            "{name} md5"
        );
        let signed = Envelope::decode(&hex(&vector["protobuf_hex"])[..]).unwrap();
        envelope::verify(&signed, &public_key).unwrap_or_else(|e| panic!("{name}: {e}"));

        let signer = Signer::from_secret(secret, kt).unwrap();
        let mut ours = env.clone();
        envelope::sign(&mut ours, &signer);
        envelope::verify(&ours, &public_key).unwrap();
        if vector["deterministic"].as_bool().unwrap() {
            assert_eq!(
                ours.signature.as_deref().unwrap(),
                &hex(&vector["signature_hex"])[..]
            );
            assert_eq!(
                ours.encode_to_vec(),
                hex(&vector["protobuf_hex"]),
                "{name} signed encoding"
            );
        }
    }
}

#[test]
fn ts_client_send_capture_verifies_and_decrypts() {
    let doc = load("ts-client.json");
    let capture = &doc["client_send_capture"];
    let sender = &doc["keys"]["mnemonic"];
    let receiver = E2eKey::from_secret(s(&doc["keys"]["other"]["secret"])).unwrap();
    let env = Envelope::decode(&hex(&capture["protobuf_hex"])[..]).unwrap();
    assert_eq!(env.uid, s(&capture["uid"]));
    envelope::verify(&env, &hex(&sender["ed25519"]["public_key_hex"])).unwrap();
    let Some(Payload::Cipher(cipher)) = &env.payload else {
        panic!("expected a cipher payload");
    };
    assert_eq!(cipher, &hex(&capture["cipher_hex"]));
    let plain = receiver
        .decrypt(&hex(&sender["secp256k1_public_key_hex"]), cipher)
        .unwrap();
    assert_eq!(plain, s(&capture["decrypted"]).as_bytes());
}

#[test]
fn rmb_rs_jwts_are_reproduced() {
    let doc = load("rmb-rs-jwt.json");
    let secret = s(&doc["secret"]);
    for vector in doc["tokens"].as_array().unwrap() {
        let kt = key_type(&vector["key_type"]);
        let public_key = hex(&vector["signer_public_key"]);
        let sid = opt_s(&vector["sid"]);
        for which in ["fixed", "live"] {
            let token_text = s(&vector[format!("{which}_token")]);
            let decoded = &vector[format!("{which}_decoded")];
            let expected_claims = &vector[format!("{which}_claims")];
            let token = jwt::parse(token_text).unwrap();
            assert_eq!(token.signed_text(), s(&decoded["signing_input"]));
            assert_eq!(token.signature(), &hex(&decoded["signature_hex"])[..]);
            let claims = token.claims().clone();
            assert_eq!(claims.sub, 7);
            assert_eq!(claims.sid, sid);
            assert_eq!(claims.iat, expected_claims["iat"].as_u64().unwrap());
            assert_eq!(claims.exp, expected_claims["exp"].as_u64().unwrap());
            // Verify as a relay would at a moment inside the token's life.
            token
                .verify(&public_key, claims.iat + 1, &JwtPolicy::default())
                .unwrap_or_else(|e| panic!("{which} {kt}: {e}"));
        }
        // ed25519 is deterministic: we must produce the very same token.
        if kt == KeyType::Ed25519 {
            let signer = Signer::from_secret(secret, kt).unwrap();
            let ours = jwt::create(&signer, 7, sid.as_deref(), 1_700_000_000, 300);
            assert_eq!(ours, s(&vector["fixed_token"]));
        }
    }
}

#[test]
fn ts_client_jwts_verify() {
    let doc = load("ts-client.json");
    for vector in doc["jwts"].as_array().unwrap() {
        let token = jwt::parse(s(&vector["jwt"])).unwrap();
        assert_eq!(token.signed_text(), s(&vector["signed_text"]));
        assert_eq!(token.claims().sub, 7);
        assert_eq!(token.claims().sid, opt_s(&vector["sid"]));
        let now = vector["now_ms"].as_u64().unwrap() / 1000;
        // exp = iat + 1000: inside the default maximum lifetime.
        token
            .verify(
                &hex(&vector["public_key_hex"]),
                now + 10,
                &JwtPolicy::default(),
            )
            .unwrap();
    }
}

#[test]
fn rmb_rs_e2e_ciphertexts_decrypt() {
    let doc = load("rmb-rs-e2e.json");
    for vector in doc["vectors"].as_array().unwrap() {
        let receiver = E2eKey::from_secret(s(&vector["receiver_secret"])).unwrap();
        let sender = E2eKey::from_secret(s(&vector["sender_secret"])).unwrap();
        assert_eq!(
            receiver.public_key().to_vec(),
            hex(&vector["receiver_public_key"])
        );
        assert_eq!(
            sender.public_key().to_vec(),
            hex(&vector["sender_public_key"])
        );
        let shared = receiver.shared_key(&sender.public_key()).unwrap();
        assert_eq!(
            shared.as_bytes().to_vec(),
            hex(&vector["shared_key_sha256"])
        );
        let plain = receiver
            .decrypt(&sender.public_key(), &hex(&vector["ciphertext"]))
            .unwrap();
        assert_eq!(plain, s(&vector["plaintext"]).as_bytes());
    }
}

#[test]
fn ts_client_e2e_is_reproduced_byte_for_byte() {
    let doc = load("ts-client.json");
    let keys = &doc["keys"];
    for vector in doc["e2e"].as_array().unwrap() {
        let sender = E2eKey::from_secret(s(&keys[s(&vector["sender"])]["secret"])).unwrap();
        let receiver = E2eKey::from_secret(s(&keys[s(&vector["receiver"])]["secret"])).unwrap();
        let shared = sender.shared_key(&receiver.public_key()).unwrap();
        assert_eq!(shared.as_bytes().to_vec(), hex(&vector["shared_key_hex"]));
        let nonce: [u8; 12] = hex(&vector["nonce_hex"]).try_into().unwrap();
        let cipher = shared.encrypt_with_nonce(&nonce, s(&vector["plaintext"]).as_bytes());
        assert_eq!(cipher, hex(&vector["ciphertext_hex"]));
        let back = receiver.decrypt(&sender.public_key(), &cipher).unwrap();
        assert_eq!(back, s(&vector["plaintext"]).as_bytes());
        let same = SharedKey::from_bytes(shared.as_bytes());
        assert_eq!(same.decrypt(&cipher).unwrap(), back);
    }
}
