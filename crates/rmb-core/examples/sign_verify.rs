//! Builds, signs, encodes, decodes and verifies one envelope, then encrypts its payload
//! for a second twin: the whole of rmb-core in thirty lines.

use rmb_core::prost::Message as _;
use rmb_core::proto::{Message, Payload, Request};
use rmb_core::{envelope, jwt, time, Address, E2eKey, Envelope, KeyType, Signer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let alice = Signer::from_secret("//Alice", KeyType::Sr25519)?;
    let bob_e2e = E2eKey::from_secret(&format!("0x{}", "11".repeat(32)))?;
    let alice_e2e = E2eKey::from_secret(rmb_core::identity::DEV_PHRASE)?;
    println!("alice: {alice:?}");

    let now = time::now();
    let mut env = Envelope {
        uid: "demo-1".into(),
        expiration: 60,
        source: Some(Address::twin(1)),
        destination: Some(Address::twin(2)),
        message: Some(Message::Request(Request {
            command: "demo.hello".into(),
        })),
        payload: Some(Payload::Cipher(
            alice_e2e.encrypt(&bob_e2e.public_key(), b"hi bob")?,
        )),
        ..Default::default()
    };
    envelope::stamp(&mut env, now);
    envelope::sign(&mut env, &alice);
    let wire = env.encode_to_vec();
    println!("signed envelope: {} bytes on the wire", wire.len());

    let received = Envelope::decode(&wire[..])?;
    envelope::verify(&received, &alice.public_key())?;
    let Some(Payload::Cipher(cipher)) = &received.payload else {
        unreachable!()
    };
    let plain = bob_e2e.decrypt(&alice_e2e.public_key(), cipher)?;
    println!(
        "verified; bob decrypts: {:?}",
        String::from_utf8_lossy(&plain)
    );

    let token = jwt::create(&alice, 1, None, now, 60);
    println!("relay connection token: {token}");
    Ok(())
}
