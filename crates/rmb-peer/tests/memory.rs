//! The receiver memory in a real redis-server: replies kept for copies are capped in
//! entries and bytes (remote twins choose how many requests they send), expired ones
//! make room again, and what is kept outlives the process (a new memory on the same
//! Redis finds it, with the same hash key).

use bytes::Bytes;
use rmb_peer::memory::{Budget, RedisMemory, ANSWERS};
use rmb_peer::redis_conn::Backoff;
use rmb_sdk::memory::ReplyKey;
use rmb_sdk::Memory as _;
use rmb_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

async fn open(url: &str, budget: Budget) -> RedisMemory {
    RedisMemory::open(url, Backoff::default(), budget, &CancellationToken::new())
        .await
        .unwrap()
        .expect("not cancelled")
}

async fn kept(memory: &RedisMemory, key: u64) -> Option<Bytes> {
    memory.reply(ReplyKey(key), 0).await.unwrap()
}

#[tokio::test]
async fn kept_replies_are_capped_in_entries_and_bytes_and_survive_a_restart() {
    let redis = RedisServer::start().unwrap();
    let now = 1_000_000;
    let budget = Budget {
        replies: 2,
        reply_bytes: 1000,
    };
    let memory = open(&redis.url(), budget).await;
    let frame = |n: usize| Bytes::from(vec![7u8; n]);
    for key in 1..=3 {
        memory
            .keep_reply(ReplyKey(key), frame(10), now + 60, now)
            .await
            .unwrap();
    }
    assert_eq!(kept(&memory, 1).await, Some(frame(10)));
    assert_eq!(kept(&memory, 2).await, Some(frame(10)));
    assert_eq!(kept(&memory, 3).await, None, "over the entry cap");

    // Once the first two expire (by the caller's clock), they leave the count.
    let later = now + 61;
    memory
        .keep_reply(ReplyKey(4), frame(900), later + 60, later)
        .await
        .unwrap();
    assert_eq!(kept(&memory, 4).await, Some(frame(900)));
    memory
        .keep_reply(ReplyKey(5), frame(200), later + 60, later)
        .await
        .unwrap();
    assert_eq!(kept(&memory, 5).await, None, "over the byte cap");
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let counted: usize = redis::cmd("ZCARD")
        .arg(ANSWERS)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(counted, 1);

    // A restarted peer opens the same memory: same hash key, same replies.
    let again = open(&redis.url(), budget).await;
    assert_eq!(kept(&again, 4).await, Some(frame(900)));
    let probe = rmb_core::Address::twin(9);
    assert_eq!(
        memory.request_key(&probe, &rmb_core::Address::twin(1), "u"),
        again.request_key(&probe, &rmb_core::Address::twin(1), "u"),
    );
}
