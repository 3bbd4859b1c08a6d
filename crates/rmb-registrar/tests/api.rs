//! The registrar over real HTTP, on a real SQLite file and a real PostgreSQL database:
//! every test body runs once per backend.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use rmb_core::KeyType;
use rmb_testkit::TestRegistrar;
use serde_json::{json, Value};

macro_rules! on_both_backends {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let db = dir.path().join("registrar.db");
                super::$body(&db.to_string_lossy()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let pg = rmb_testkit::Postgres::fresh_database().await.unwrap();
                super::$body(pg.url()).await;
                pg.drop_db().await.unwrap();
            }
        }
    )*};
}

on_both_backends!(
    lifecycle_and_persistence,
    pagination,
    concurrent_creates_with_one_key,
    concurrent_patches_with_one_header,
    create_refusals_change_nothing,
    update_refusals_change_nothing,
);

fn twin_id(account: &Value) -> u64 {
    account["twin_id"].as_u64().unwrap()
}

async fn lifecycle_and_persistence(db: &str) {
    let mut registrar = TestRegistrar::start_with(db).await.unwrap();
    let api = Api::new(&registrar.url());
    let ed = signer(KeyType::Ed25519);
    let sr = signer(KeyType::Sr25519);
    let raw = signer(KeyType::Ed25519);
    let enc = e2e_key_hex();

    // Create: typed ed25519, typed sr25519, raw 64-byte ed25519. Ids count from 1.
    let before = now();
    let (status, a) = api
        .create(&create_body(
            &ed,
            now(),
            &["r1.example.com", "10.0.0.1:8080"],
            Some(&enc),
        ))
        .await;
    let after = now();
    assert_eq!(status, 201, "{a}");
    assert_eq!(twin_id(&a), 1);
    let mut keys: Vec<&String> = a.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created_at",
            "public_key",
            "relays",
            "rmb_enc_key",
            "twin_id",
            "updated_at"
        ]
    );
    assert_eq!(a["public_key"], STANDARD.encode(ed.public_key()));
    assert_eq!(a["relays"], json!(["r1.example.com", "10.0.0.1:8080"]));
    assert_eq!(a["rmb_enc_key"], enc);
    let created_at = a["created_at"].as_u64().unwrap();
    assert!((before..=after).contains(&created_at));
    assert_eq!(a["updated_at"], a["created_at"]);

    let (status, b) = api.create(&create_body(&sr, now(), &[], None)).await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(twin_id(&b), 2);
    assert_eq!(b["rmb_enc_key"], Value::Null);

    let ts = now();
    let public_key = STANDARD.encode(raw.public_key());
    let typed = raw.sign(rmb_registrar_client::auth::create_challenge(ts, &public_key).as_bytes());
    let body = json!({"timestamp": ts, "public_key": public_key,
        "signature": STANDARD.encode(&typed[1..]), "relays": ["r2.example.com"]});
    let (status, c) = api.create(&body).await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(twin_id(&c), 3);

    // Get by id (with and without the trailing slash) and by key.
    assert_eq!(api.account(1).await, a);
    assert_eq!(api.get("/v1/accounts?twin_id=2").await, (200, b.clone()));
    let response = api
        .http
        .get(format!("{}/v1/accounts/", api.base))
        .query(&[("public_key", STANDARD.encode(sr.public_key()))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), b);
    // Unescaped, as some clients send it ('+' then arrives as a space).
    let raw_query = format!(
        "/v1/accounts?public_key={}",
        STANDARD.encode(sr.public_key())
    );
    assert_eq!(api.get(&raw_query).await, (200, b.clone()));

    // Update relays and e2e key; then clear the e2e key alone.
    let new_enc = e2e_key_hex();
    let t1 = now();
    let (status, updated) = api
        .patch(
            1,
            Some(&x_auth(&ed, 1, t1)),
            &json!({"relays": ["r3.example.com:443"], "rmb_enc_key": new_enc}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["relays"], json!(["r3.example.com:443"]));
    assert_eq!(updated["rmb_enc_key"], new_enc);
    assert_eq!(updated["created_at"], a["created_at"]);
    assert!(updated["updated_at"].as_u64() >= a["updated_at"].as_u64());
    assert_eq!(api.account(1).await, updated);

    let (status, cleared) = api
        .patch(
            1,
            Some(&x_auth(&ed, 1, t1 + 1)),
            &json!({"rmb_enc_key": null}),
        )
        .await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["rmb_enc_key"], Value::Null);
    assert_eq!(cleared["relays"], json!(["r3.example.com:443"]));
    // sr25519 X-Auth, and an update of the raw-signature account.
    let (status, b2) = api
        .patch(
            2,
            Some(&x_auth(&sr, 2, now())),
            &json!({"relays": ["sr.example"]}),
        )
        .await;
    assert_eq!(status, 200, "{b2}");
    assert_eq!(api.account(2).await["relays"], json!(["sr.example"]));

    // Restart on the same database: everything is still there, the replay guard too.
    let snapshot = api.all().await;
    assert_eq!(snapshot.len(), 3);
    registrar.restart().await.unwrap();
    assert_eq!(api.all().await, snapshot);
    let (status, body) = api
        .patch(
            1,
            Some(&x_auth(&ed, 1, t1 + 1)),
            &json!({"rmb_enc_key": null}),
        )
        .await;
    assert_eq!(status, 401, "replayed after restart: {body}");
    let (status, body) = api
        .patch(
            1,
            Some(&x_auth(&ed, 1, t1)),
            &json!({"relays": ["r3.example.com:443"], "rmb_enc_key": new_enc}),
        )
        .await;
    assert_eq!(status, 401, "first update replayed after restart: {body}");
    assert_eq!(api.all().await, snapshot);
    let d = register(&api, &signer(KeyType::Sr25519), &[]).await;
    assert_eq!(twin_id(&d), 4, "ids continue after restart");

    // A stopped server's database reopens in a new server too (no leftover locks).
    registrar.shutdown().await.unwrap();
    let again = TestRegistrar::start_with(db).await.unwrap();
    let api = Api::new(&again.url());
    assert_eq!(api.all().await.len(), 4);
    assert_eq!(api.account(1).await, snapshot[0]);
    let (status, _) = api.get("/health").await;
    assert_eq!(status, 200);
}

async fn pagination(db: &str) {
    let registrar = TestRegistrar::start_with(db).await.unwrap();
    let api = Api::new(&registrar.url());
    for _ in 0..7 {
        register(&api, &signer(KeyType::Ed25519), &[]).await;
    }
    let ids = |v: &Value| -> Vec<u64> { v.as_array().unwrap().iter().map(twin_id).collect() };
    let (status, page) = api.get("/v1/accounts?page=1&size=3").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), [1, 2, 3]);
    assert_eq!(
        ids(&api.get("/v1/accounts/?page=2&size=3").await.1),
        [4, 5, 6]
    );
    assert_eq!(ids(&api.get("/v1/accounts?page=3&size=3").await.1), [7]);
    assert!(ids(&api.get("/v1/accounts?page=4&size=3").await.1).is_empty());
    assert_eq!(ids(&api.get("/v1/accounts").await.1), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(ids(&api.get("/v1/accounts?size=500").await.1).len(), 7);
    for bad in ["page=0", "size=0", "size=501", "page=x", "size=-1"] {
        let (status, body) = api.get(&format!("/v1/accounts?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

async fn concurrent_creates_with_one_key(db: &str) {
    let registrar = TestRegistrar::start_with(db).await.unwrap();
    let api = Api::new(&registrar.url());
    for round in 1..=5u64 {
        let s = signer(KeyType::Sr25519);
        let body = create_body(&s, now(), &[], None);
        let (first, second) = tokio::join!(api.create(&body), api.create(&body));
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}: {first:?} {second:?}");
        assert_eq!(api.all().await.len() as u64, round);
    }
}

async fn concurrent_patches_with_one_header(db: &str) {
    let registrar = TestRegistrar::start_with(db).await.unwrap();
    let api = Api::new(&registrar.url());
    let s = signer(KeyType::Ed25519);
    let id = twin_id(&register(&api, &s, &["r0.example"]).await);
    let ts = now();
    for round in 0..5u64 {
        // The same header and body twice at once (a replay racing the original): one
        // succeeds.
        let header = x_auth(&s, id, ts + 2 * round);
        let one = json!({"relays": [format!("one{round}.example")]});
        let (first, second) = tokio::join!(
            api.patch(id, Some(&header), &one),
            api.patch(id, Some(&header), &one)
        );
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(statuses, [200, 401], "round {round}: {first:?} {second:?}");
        // Two different updates signed in the same second, at once: both are honest
        // and both succeed, one after the other.
        let header = x_auth(&s, id, ts + 2 * round + 1);
        let two = json!({"relays": [format!("two{round}.example")]});
        let three = json!({"rmb_enc_key": null});
        let (first, second) = tokio::join!(
            api.patch(id, Some(&header), &two),
            api.patch(id, Some(&header), &three)
        );
        assert_eq!(
            (first.0, second.0),
            (200, 200),
            "round {round}: {first:?} {second:?}"
        );
        assert_eq!(
            api.account(id).await["relays"],
            json!([format!("two{round}.example")])
        );
    }
}

/// Asserts a refusal with `status`, then that storage is exactly `snapshot`.
async fn refused(
    api: &Api,
    (status, body): (u16, Value),
    expected: u16,
    case: &str,
    snapshot: &[Value],
) {
    assert_eq!(status, expected, "{case}: {body}");
    assert_eq!(api.all().await, snapshot, "{case} changed storage");
}

async fn create_refusals_change_nothing(db: &str) {
    let registrar = TestRegistrar::start_with(db).await.unwrap();
    let api = Api::new(&registrar.url());
    let existing = signer(KeyType::Ed25519);
    register(&api, &existing, &["r1.example"]).await;
    let snapshot = api.all().await;
    let s = signer(KeyType::Sr25519);
    let other = signer(KeyType::Sr25519);
    let good = || create_body(&s, now(), &["r.example"], None);

    let mut forged = good();
    let mut sig = STANDARD
        .decode(forged["signature"].as_str().unwrap())
        .unwrap();
    sig[20] ^= 0x01;
    forged["signature"] = json!(STANDARD.encode(&sig));
    refused(
        &api,
        api.create(&forged).await,
        401,
        "forged signature",
        &snapshot,
    )
    .await;

    let mut wrong_key = create_body(&other, now(), &[], None);
    wrong_key["public_key"] = json!(STANDARD.encode(s.public_key()));
    refused(
        &api,
        api.create(&wrong_key).await,
        401,
        "signed by another key",
        &snapshot,
    )
    .await;

    let stale = create_body(&s, now() - 3600, &[], None);
    refused(
        &api,
        api.create(&stale).await,
        400,
        "stale timestamp",
        &snapshot,
    )
    .await;
    let future = create_body(&s, now() + 3600, &[], None);
    refused(
        &api,
        api.create(&future).await,
        400,
        "future timestamp",
        &snapshot,
    )
    .await;

    let mut bad = good();
    bad["public_key"] = json!("not base64!");
    refused(
        &api,
        api.create(&bad).await,
        400,
        "public_key not base64",
        &snapshot,
    )
    .await;
    let mut bad = good();
    bad["signature"] = json!("%%%");
    refused(
        &api,
        api.create(&bad).await,
        400,
        "signature not base64",
        &snapshot,
    )
    .await;
    let mut bad = good();
    bad["signature"] = json!(STANDARD.encode([1u8; 40]));
    refused(
        &api,
        api.create(&bad).await,
        400,
        "signature length",
        &snapshot,
    )
    .await;
    let mut bad = good();
    bad["public_key"] = json!(STANDARD.encode([1u8; 31]));
    refused(&api, api.create(&bad).await, 400, "31-byte key", &snapshot).await;

    let relays = ["ok.example", "bad host.example"];
    let body = create_body(&s, now(), &relays, None);
    refused(
        &api,
        api.create(&body).await,
        400,
        "bad relay host",
        &snapshot,
    )
    .await;
    let nine: Vec<String> = (0..9).map(|i| format!("r{i}.example")).collect();
    let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
    let body = create_body(&s, now(), &nine, None);
    refused(&api, api.create(&body).await, 400, "nine relays", &snapshot).await;
    let body = create_body(&s, now(), &["a.example", "a.example"], None);
    refused(
        &api,
        api.create(&body).await,
        400,
        "duplicate relay",
        &snapshot,
    )
    .await;

    let mut off_curve = [0xffu8; 33];
    off_curve[0] = 0x02;
    let body = create_body(&s, now(), &[], Some(&hex::encode(off_curve)));
    refused(
        &api,
        api.create(&body).await,
        400,
        "e2e key off the curve",
        &snapshot,
    )
    .await;
    let body = create_body(&s, now(), &[], Some("not hex"));
    refused(
        &api,
        api.create(&body).await,
        400,
        "e2e key not hex",
        &snapshot,
    )
    .await;

    let mut huge = good();
    huge["padding"] = json!("x".repeat(17 * 1024));
    refused(
        &api,
        api.create(&huge).await,
        413,
        "oversized body",
        &snapshot,
    )
    .await;
    refused(
        &api,
        api.create_raw(b"{\"timestamp\":".to_vec()).await,
        400,
        "truncated JSON",
        &snapshot,
    )
    .await;
    refused(
        &api,
        api.create(&json!({"timestamp": now()})).await,
        400,
        "missing fields",
        &snapshot,
    )
    .await;
    refused(
        &api,
        api.create(&json!({"timestamp": "soon", "public_key": "", "signature": ""}))
            .await,
        400,
        "wrong field type",
        &snapshot,
    )
    .await;

    let again = create_body(&existing, now(), &["other.example"], None);
    refused(
        &api,
        api.create(&again).await,
        409,
        "key already registered",
        &snapshot,
    )
    .await;

    // And the valid request still works afterwards, with the next id: no refusal
    // consumed one (not even the 409 on PostgreSQL, whose sequence never gives back).
    let (status, body) = api.create(&good()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["twin_id"], 2);
}

async fn update_refusals_change_nothing(db: &str) {
    let registrar = TestRegistrar::start_with(db).await.unwrap();
    let api = Api::new(&registrar.url());
    let a = signer(KeyType::Ed25519);
    let b = signer(KeyType::Sr25519);
    let id = twin_id(&register(&api, &a, &["r1.example"]).await);
    let b_id = twin_id(&register(&api, &b, &["r2.example"]).await);
    let mut snapshot = api.all().await;
    let change = json!({"relays": ["changed.example"]});
    let ts = now();

    refused(
        &api,
        api.patch(id, None, &change).await,
        401,
        "missing X-Auth",
        &snapshot,
    )
    .await;

    let header = x_auth(&a, id, ts);
    let (challenge, sig) = header.split_once(':').unwrap();
    let mut sig = STANDARD.decode(sig).unwrap();
    sig[30] ^= 0x80;
    let forged = format!("{challenge}:{}", STANDARD.encode(&sig));
    refused(
        &api,
        api.patch(id, Some(&forged), &change).await,
        401,
        "forged X-Auth",
        &snapshot,
    )
    .await;
    let by_other_key = x_auth(&b, id, ts);
    refused(
        &api,
        api.patch(id, Some(&by_other_key), &change).await,
        401,
        "X-Auth by another key",
        &snapshot,
    )
    .await;
    let for_other_twin = x_auth(&b, b_id, ts);
    refused(
        &api,
        api.patch(id, Some(&for_other_twin), &change).await,
        401,
        "X-Auth for another twin",
        &snapshot,
    )
    .await;
    let stale = x_auth(&a, id, ts - 3600);
    refused(
        &api,
        api.patch(id, Some(&stale), &change).await,
        401,
        "stale X-Auth",
        &snapshot,
    )
    .await;
    let future = x_auth(&a, id, ts + 3600);
    refused(
        &api,
        api.patch(id, Some(&future), &change).await,
        401,
        "future X-Auth",
        &snapshot,
    )
    .await;
    refused(
        &api,
        api.patch(id, Some("!!!:???"), &change).await,
        400,
        "X-Auth not base64",
        &snapshot,
    )
    .await;
    refused(
        &api,
        api.patch(id, Some("no colon"), &change).await,
        400,
        "X-Auth without colon",
        &snapshot,
    )
    .await;

    // Invalid bodies with a valid header: refused, and the header is not used up.
    let good_header = x_auth(&a, id, ts);
    let nine: Vec<String> = (0..9).map(|i| format!("r{i}.example")).collect();
    let mut off_curve = [0xffu8; 33];
    off_curve[0] = 0x03;
    for (body, status, case) in [
        (json!({"relays": ["bad_host"]}), 400, "bad relay host"),
        (json!({"relays": ["a.example:0"]}), 400, "port 0"),
        (json!({"relays": nine}), 400, "nine relays"),
        (
            json!({"rmb_enc_key": hex::encode(off_curve)}),
            400,
            "bad e2e key",
        ),
        (json!({"rmb_enc_key": "zz"}), 400, "e2e key not hex"),
        (
            json!({"public_key": STANDARD.encode(b.public_key())}),
            400,
            "changing the key",
        ),
        (json!({"relays": "r.example"}), 400, "relays not a list"),
        (
            json!({"relays": ["x".repeat(17 * 1024)]}),
            413,
            "oversized body",
        ),
    ] {
        refused(
            &api,
            api.patch(id, Some(&good_header), &body).await,
            status,
            case,
            &snapshot,
        )
        .await;
    }
    let (status, body) = api.patch(id, Some(&good_header), &change).await;
    assert_eq!(
        status, 200,
        "the header was consumed by a refused request: {body}"
    );
    snapshot = api.all().await;
    assert_eq!(snapshot[0]["relays"], json!(["changed.example"]));

    // Replays: the same header with the same body again is refused; an older header
    // (still in the window) arriving after a newer one is an honest client's, accepted
    // once.
    let back = json!({"relays": ["r1.example"]});
    refused(
        &api,
        api.patch(id, Some(&good_header), &change).await,
        401,
        "replayed X-Auth",
        &snapshot,
    )
    .await;
    let older = x_auth(&a, id, ts - 1);
    let (status, body) = api.patch(id, Some(&older), &back).await;
    assert_eq!(status, 200, "an older header inside the window: {body}");
    snapshot = api.all().await;
    refused(
        &api,
        api.patch(id, Some(&older), &back).await,
        401,
        "the older header replayed",
        &snapshot,
    )
    .await;

    // Unknown twins.
    let unknown = b_id + 100;
    let header = x_auth(&a, unknown, ts + 1);
    refused(
        &api,
        api.patch(unknown, Some(&header), &change).await,
        404,
        "PATCH unknown twin",
        &snapshot,
    )
    .await;
    refused(
        &api,
        api.by_id(unknown).await,
        404,
        "GET unknown twin",
        &snapshot,
    )
    .await;
    let query = format!(
        "/v1/accounts/?public_key={}",
        STANDARD.encode([9u8; 32]).replace('=', "%3D")
    );
    refused(
        &api,
        api.get(&query).await,
        404,
        "GET unknown key",
        &snapshot,
    )
    .await;
    // Unescaped '+' (arrives as a space), even at the start and the end of the key.
    let plus_key = STANDARD.encode([0xfbu8; 32]);
    assert!(plus_key.starts_with('+'));
    let query = format!(
        "/v1/accounts/?public_key={}",
        plus_key.trim_end_matches('=')
    );
    refused(
        &api,
        api.get(&query).await,
        404,
        "unknown key with '+'",
        &snapshot,
    )
    .await;
    refused(
        &api,
        api.get("/v1/accounts/?twin_id=abc").await,
        400,
        "twin_id not a number",
        &snapshot,
    )
    .await;
    refused(
        &api,
        api.get("/v1/accounts/?twin_id=1&public_key=AA").await,
        400,
        "two selectors",
        &snapshot,
    )
    .await;
    refused(
        &api,
        api.get("/v1/accounts/?public_key=!!").await,
        400,
        "key not base64",
        &snapshot,
    )
    .await;
    refused(
        &api,
        api.get("/v1/nothing").await,
        404,
        "unknown route",
        &snapshot,
    )
    .await;
}

#[tokio::test]
async fn health_and_metrics() {
    let registrar = TestRegistrar::start().await.unwrap();
    let api = Api::new(&registrar.url());
    assert_eq!(api.get("/health").await, (200, json!({"status": "ok"})));
    api.by_id(12345).await;
    let text = api.metrics().await;
    assert!(
        text.contains(
            "registrar_http_requests_total{route=\"/v1/accounts/\",method=\"GET\",status=\"404\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("registrar_store_duration_seconds_bucket{op=\"by_id\""),
        "{text}"
    );
}

/// Each server counts for itself: tests and `rmb up` run several in one process, and a
/// process-global recorder mixed their numbers (or left the second with none).
#[tokio::test]
async fn two_registrars_in_one_process_count_apart() {
    let (one, two) = (
        TestRegistrar::start().await.unwrap(),
        TestRegistrar::start().await.unwrap(),
    );
    let (api1, api2) = (Api::new(&one.url()), Api::new(&two.url()));
    let created = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("registrar_accounts_created_total "))
            .map(|v| v.to_string())
    };
    assert_eq!(created(&api1.metrics().await).as_deref(), Some("0"));
    let s = signer(KeyType::Ed25519);
    assert_eq!(api1.create(&create_body(&s, now(), &[], None)).await.0, 201);
    assert_eq!(created(&api1.metrics().await).as_deref(), Some("1"));
    let text = api2.metrics().await;
    assert_eq!(created(&text).as_deref(), Some("0"), "{text}");
    assert!(!text.contains("op=\"create\""), "{text}");
}

/// HTTP lets a client invent request methods: each one a stranger sends must not become
/// a new metric label (memory and the scraper's storage grow with them).
#[tokio::test]
async fn invented_methods_do_not_grow_metric_labels() {
    let registrar = TestRegistrar::start().await.unwrap();
    let api = Api::new(&registrar.url());
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        for path in ["/v1/accounts", "/no/such/route"] {
            let status = api
                .http
                .request(method.clone(), format!("{}{path}", api.base))
                .send()
                .await
                .unwrap()
                .status();
            assert!(matches!(status.as_u16(), 404 | 405), "{path}: {status}");
        }
    }
    let text = api.metrics().await;
    assert!(!text.contains("INVENTED"), "{text}");
    assert!(text.contains("method=\"other\""), "{text}");
}

#[tokio::test]
async fn a_shorter_time_window_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rmb_registrar::Config::new(dir.path().join("r.db").to_string_lossy());
    config.time_window = std::time::Duration::from_secs(0);
    config.max_body = 600;
    let registrar = TestRegistrar::start_with_config(config).await.unwrap();
    let api = Api::new(&registrar.url());
    let s = signer(KeyType::Ed25519);
    let (status, body) = api.create(&create_body(&s, now() - 5, &[], None)).await;
    // node-registrar's answer: 400 with the server's clock.
    assert_eq!(status, 400, "{body}");
    assert!(body["server_time"].as_u64().unwrap() >= now() - 1, "{body}");
    let mut padded = create_body(&s, now(), &[], None);
    padded["padding"] = json!("x".repeat(600));
    assert_eq!(api.create(&padded).await.0, 413);
    assert!(api.all().await.is_empty());
}

/// A weak key (the ed25519 identity, the ristretto identity) with the signature
/// R = identity, s = 0, which verifies for any message: before rmb_core refused weak
/// keys, this registered a twin that anyone could sign as, and update with a forged
/// X-Auth. Found while wiring the fuzz target `registrar_json` (its check that no
/// proof the fuzzer writes verifies); the input is in its corpus.
#[tokio::test]
async fn a_weak_key_anyone_can_sign_for_cannot_be_registered() {
    let dir = tempfile::tempdir().unwrap();
    let registrar = TestRegistrar::start_with(&dir.path().join("r.db").to_string_lossy())
        .await
        .unwrap();
    let api = Api::new(&registrar.url());
    let mut ed_identity = [0u8; 32];
    ed_identity[0] = 1;
    let mut ed_sig = [0u8; 64];
    ed_sig[0] = 1;
    let mut sr_sig = [0u8; 64];
    sr_sig[63] = 0x80;
    for (key, sig) in [(ed_identity, ed_sig), ([0u8; 32], sr_sig)] {
        let public_key = STANDARD.encode(key);
        let body = json!({
            "timestamp": now(),
            "public_key": public_key,
            "signature": STANDARD.encode(sig),
            "relays": ["r.example"],
        });
        let (status, answer) = api.create(&body).await;
        assert_eq!(status, 401, "{public_key}: {answer}");
    }
    assert!(api.all().await.is_empty());
}
