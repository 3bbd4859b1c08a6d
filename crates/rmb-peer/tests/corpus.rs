//! The malformed-JSON corpus (tests/corpus/json) on a live rmb-peer's Redis lists: every
//! file is pushed, byte for byte, to both `msgbus.system.local` and
//! `msgbus.system.reply`. The peer drops each one (replying with an error on the
//! request's `ret` list when it can read one, §4), never
//! stops, and serves a valid request afterwards.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use redis::AsyncCommands;
use rmb_peer::Stats;
use rmb_testkit::TestRegistrar;

#[path = "../../rmb-relay/tests/corpus/load.rs"]
mod load;

#[tokio::test]
async fn malformed_messages_on_the_redis_lists_are_dropped_and_the_peer_keeps_serving() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let corpus = load::load(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/json"),
            15,
        );
        let reg = TestRegistrar::start().await.unwrap();
        let relay = Relay::start("127.0.0.1", &reg.url()).await;
        let (a, redis_a) = peer(&reg, &[&relay], PeerOpts::default()).await;
        let (b, redis_b) = peer(&reg, &[&relay], PeerOpts::default()).await;
        let _svc = service(&redis_b.url(), "echo", echo);
        let mut redis = redis::Client::open(redis_a.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        for (_, data) in &corpus {
            for list in ["msgbus.system.local", "msgbus.system.reply"] {
                let _: () = redis.lpush(list, data.as_slice()).await.unwrap();
            }
        }

        // Files that are JSON objects with a readable `ret` get an error there (with
        // their `ref`); all of them name `corpus.errors`.
        let expected: std::collections::BTreeSet<String> = corpus
            .iter()
            .filter_map(|(_, data)| serde_json::from_slice::<serde_json::Value>(data).ok())
            .filter(|json| json["ret"] == "corpus.errors")
            .map(|json| json["ref"].as_str().unwrap().to_string())
            .collect();
        assert!(expected.len() >= 5, "{expected:?}");
        let mut answered = std::collections::BTreeSet::new();
        for _ in &expected {
            let error = brpop(&redis_a.url(), "corpus.errors").await;
            let code = error["err"]["code"].as_u64();
            assert!(matches!(code, Some(100 | 101)), "{error}");
            answered.insert(error["ref"].as_str().unwrap().to_string());
        }
        assert_eq!(answered, expected);
        // Every readable file counted as malformed on both lists (a file that is not
        // UTF-8 cannot even be read as a string: it is dropped as a failed pop).
        let readable = corpus
            .iter()
            .filter(|(_, data)| std::str::from_utf8(data).is_ok())
            .count() as u64;
        eventually("the peer went through the whole corpus", || {
            Stats::get(&a.stats().malformed) >= 2 * readable
        })
        .await;

        lpush(
            &redis_a.url(),
            "msgbus.system.local",
            &request("after", "echo", "c3RpbGwgdXA=", &[b.twin_id()], "app.ret"),
        )
        .await;
        let reply = brpop(&redis_a.url(), "app.ret").await;
        assert_eq!(reply["ref"], "after");
        assert_eq!(reply["dat"], "c3RpbGwgdXA=");
        assert!(list(&redis_a.url(), "corpus.errors").await.is_empty());
        assert!(list(&redis_a.url(), "corpus.nowhere").await.is_empty());
    })
    .await
    .expect("the corpus scenario took too long");
}
