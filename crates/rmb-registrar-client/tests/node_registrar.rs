//! Our registrar client against node-registrar (the test kit's double, which answers
//! as node-registrar's handlers do, in each of their known shapes): lookups, create,
//! update, `ensure_account`, records written by other clients, a registrar whose clock
//! is off.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rmb_core::{KeyType, Signer};
use rmb_registrar_client::{ClientError, RegistrarClient, Twin};
use rmb_testkit::node_registrar::{Flavor, NodeRegistrar};

const FLAVORS: [Flavor; 3] = [Flavor::DbAccount, Flavor::Lean, Flavor::Wrapped];

fn signer(kind: KeyType) -> Signer {
    Signer::from_seed(&rand::random::<[u8; 32]>(), kind).unwrap()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn e2e_key() -> [u8; 33] {
    rmb_core::E2eKey::from_bytes(&rand::random::<[u8; 32]>())
        .unwrap()
        .public_key()
}

fn patches(registrar: &NodeRegistrar) -> usize {
    registrar
        .received()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count()
}

#[tokio::test]
async fn create_lookup_update_and_ensure_against_each_shape() {
    for flavor in FLAVORS {
        let registrar = NodeRegistrar::start(flavor).await;
        // zos4 and the Go client are configured with the API root; ours with the host.
        for base in [registrar.api_url(), registrar.url()] {
            let client = RegistrarClient::new(&base).unwrap();
            for kind in [KeyType::Ed25519, KeyType::Sr25519] {
                let s = signer(kind);
                let key = e2e_key();
                let twin = client
                    .ensure_account(&s, &strings(&["relay.example.com"]), Some(key))
                    .await
                    .unwrap_or_else(|e| panic!("{flavor:?} {kind} {base}: {e}"));
                let expected = Twin {
                    twin_id: twin.twin_id,
                    public_key: s.public_key(),
                    relays: strings(&["relay.example.com"]),
                    rmb_enc_key: Some(key),
                };
                assert_eq!(*twin, expected, "{flavor:?}");
                let fresh = RegistrarClient::new(&base).unwrap();
                assert_eq!(
                    fresh.get_twin(twin.twin_id).await.unwrap().as_deref(),
                    Some(&expected)
                );
                assert_eq!(
                    fresh
                        .get_twin_by_public_key(&s.public_key())
                        .await
                        .unwrap()
                        .as_deref(),
                    Some(&expected)
                );
                assert_eq!(fresh.get_twin(9999).await.unwrap(), None, "{flavor:?}");
                assert_eq!(fresh.get_twin_by_public_key(&[9; 32]).await.unwrap(), None);

                // node-registrar answers an update with a message: the client reads the
                // account back.
                let moved = strings(&["wss://r2.example:8443"]);
                let updated = client
                    .update_account(&s, twin.twin_id, Some(&moved), None)
                    .await
                    .unwrap_or_else(|e| panic!("{flavor:?} {kind}: {e}"));
                assert_eq!(updated.relays, strings(&["r2.example:8443"]));
                assert_eq!(updated.rmb_enc_key, Some(key));

                // Nothing to change: no PATCH.
                let before = patches(&registrar);
                let same = client
                    .ensure_account(&s, &strings(&["r2.example:8443"]), Some(key))
                    .await
                    .unwrap();
                assert_eq!(same, updated);
                assert_eq!(patches(&registrar), before);
                // A new e2e key: one PATCH.
                let new_key = e2e_key();
                let rekeyed = client
                    .ensure_account(&s, &strings(&["r2.example:8443"]), Some(new_key))
                    .await
                    .unwrap();
                assert_eq!(rekeyed.rmb_enc_key, Some(new_key));
                assert_eq!(patches(&registrar), before + 1);
            }
        }
    }
}

#[tokio::test]
async fn what_we_send_is_what_node_registrar_verifies() {
    let registrar = NodeRegistrar::start(Flavor::DbAccount).await;
    let client = RegistrarClient::new(&registrar.api_url()).unwrap();
    let s = signer(KeyType::Sr25519);
    let twin = client.create_account(&s, &[], None).await.unwrap();
    client
        .update_account(&s, twin.twin_id, Some(&strings(&["r.example"])), None)
        .await
        .unwrap();
    let received = registrar.received();
    let create = received.iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(create.path_and_query, "/api/v1/accounts/");
    let body: serde_json::Value = serde_json::from_slice(&create.body).unwrap();
    let signature = STANDARD
        .decode(body["signature"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        signature.len(),
        64,
        "node-registrar verifies raw signatures only"
    );
    let patch = received.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(
        patch.path_and_query,
        format!("/api/v1/accounts/{}", twin.twin_id)
    );
    let header = patch.headers["x-auth"].to_str().unwrap();
    let (_, sig) = header.split_once(':').unwrap();
    assert_eq!(STANDARD.decode(sig).unwrap().len(), 64);
    // The double stored what it was sent.
    assert_eq!(registrar.accounts()[0].relays, strings(&["r.example"]));
}

#[tokio::test]
async fn records_written_by_other_clients_are_read_in_our_form() {
    for flavor in FLAVORS {
        let registrar = NodeRegistrar::start(flavor).await;
        let client = RegistrarClient::new(&registrar.url()).unwrap();
        let node = signer(KeyType::Ed25519);
        let key = e2e_key();
        // As zos4 registers a node (relays from zosbase pkg/environment, rmb_enc_key
        // ""), and as node-registrar documents the e2e key (base64).
        let zos = registrar.insert(
            &STANDARD.encode(node.public_key()),
            &["wss://relay.dev.grid.tf", "wss://relay.02.dev.grid.tf"],
            "",
        );
        let farmer = signer(KeyType::Sr25519);
        let documented = registrar.insert(
            &STANDARD.encode(farmer.public_key()),
            &[
                "wss://Relay.Example.com:443/",
                "not a relay!",
                "r.example:8443",
            ],
            &STANDARD.encode(key),
        );
        let junk = registrar.insert(&STANDARD.encode([7u8; 32]), &[], "not a key");
        let id = |n: u64| u32::try_from(n).unwrap();
        let zos = client.get_twin(id(zos)).await.unwrap().unwrap();
        assert_eq!(
            zos.relays,
            strings(&["relay.dev.grid.tf", "relay.02.dev.grid.tf"])
        );
        assert_eq!(zos.rmb_enc_key, None);
        let documented = client.get_twin(id(documented)).await.unwrap().unwrap();
        assert_eq!(
            documented.relays,
            strings(&["relay.example.com", "r.example:8443"])
        );
        assert_eq!(documented.rmb_enc_key, Some(key));
        let junk = client.get_twin(id(junk)).await.unwrap().unwrap();
        assert_eq!(junk.rmb_enc_key, None, "an unusable key reads as none");
    }
}

#[tokio::test]
async fn a_registrar_clock_off_by_a_minute_is_followed_once() {
    for flavor in [Flavor::DbAccount, Flavor::Wrapped] {
        let registrar = NodeRegistrar::start(flavor).await;
        registrar.set_clock_offset(60);
        let client = RegistrarClient::new(&registrar.url()).unwrap();
        let s = signer(KeyType::Ed25519);
        let twin = client.create_account(&s, &[], None).await.unwrap();
        assert_eq!(twin.public_key, s.public_key());
        let creates = registrar
            .received()
            .iter()
            .filter(|r| r.method == "POST")
            .count();
        assert_eq!(
            creates, 2,
            "refused with server_time, then signed at that time"
        );

        // Other refusals are reported, not retried.
        match client.create_account(&s, &[], None).await {
            Err(ClientError::Rejected {
                status: 409,
                message,
            }) => assert!(message.contains("already exists"), "{message}"),
            other => panic!("expected 409, got {other:?}"),
        }
    }
}
