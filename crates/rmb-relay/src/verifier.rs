//! Verifying the signatures of federated envelopes many at a time, off the async
//! workers. Verification is what a receiving relay spends most of its CPU on (an ed25519
//! verification costs more than the rest of an envelope's path together): batched with
//! [`rmb_core::identity::verify_many`] it costs about half per envelope, and on the
//! blocking pool it runs on every core without holding up the sessions' readers and
//! writers.
//!
//! Posts that arrive while a batch is being verified wait together for the next one, so
//! batches grow with the load on their own. A post that arrives while nothing else is
//! being verified is verified at once where it is: a batch of one would cost it a
//! channel hop and two thread hops (a third of a lone federated envelope's latency on
//! a 2-core machine) and save nothing. At most one post is verified that way at a time,
//! so the async workers never carry the load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rmb_core::identity::{self, Check, KeyCache, SignatureError};
use rmb_core::{envelope, Envelope};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most signatures in one batch (ed25519-dalek's gain flattens out beyond some tens).
const MAX_BATCH: usize = 64;
/// Signatures waiting for a batch before posts wait for room.
const WAITING: usize = 4096;

struct Job {
    public_key: Vec<u8>,
    digest: [u8; 16],
    signature: Vec<u8>,
    reply: oneshot::Sender<Result<(), SignatureError>>,
}

/// The handle posts verify through; the batching task runs on the relay's tasks until
/// shutdown.
pub struct Verifier {
    /// `None`: every caller verifies inline (`threads` 0).
    tx: Option<mpsc::Sender<Job>>,
    /// Signatures being verified now, inline or in batches.
    verifying: AtomicUsize,
    /// The sources' keys, parsed once (shared with the batches).
    keys: Arc<KeyCache>,
}

/// Counts one signature as being verified until dropped (also when the post gives up).
struct Verifying<'a>(&'a AtomicUsize);

impl Drop for Verifying<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Verifier {
    /// Starts the batching task; at most `threads` batches are verified at once (0: no
    /// batches, each caller verifies its own).
    pub fn start(threads: usize, shutdown: CancellationToken, tasks: &TaskTracker) -> Verifier {
        if threads == 0 {
            return Verifier {
                tx: None,
                verifying: AtomicUsize::new(0),
                keys: Arc::default(),
            };
        }
        let keys = Arc::new(KeyCache::default());
        let (tx, rx) = mpsc::channel(WAITING);
        tasks.spawn(run(rx, threads, keys.clone(), shutdown));
        Verifier {
            tx: Some(tx),
            verifying: AtomicUsize::new(0),
            keys,
        }
    }

    /// [`envelope::verify`] of `env` against `public_key`, the same answer, batched with
    /// whatever else is waiting. After shutdown it verifies here, alone.
    pub async fn verify(&self, env: &Envelope, public_key: &[u8]) -> Result<(), SignatureError> {
        let signature = env.signature.as_deref().unwrap_or_default();
        let Some(tx) = self.tx.as_ref().filter(|_| !signature.is_empty()) else {
            return envelope::verify_cached(env, public_key, &self.keys);
        };
        let alone = self.verifying.fetch_add(1, Ordering::AcqRel) == 0;
        let _verifying = Verifying(&self.verifying);
        if alone {
            return envelope::verify_cached(env, public_key, &self.keys);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            public_key: public_key.to_vec(),
            digest: envelope::challenge_digest(env),
            signature: signature.to_vec(),
            reply,
        };
        if tx.send(job).await.is_ok() {
            if let Ok(result) = answer.await {
                return result;
            }
        }
        envelope::verify_cached(env, public_key, &self.keys)
    }
}

/// Default verification threads: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    threads: usize,
    keys: Arc<KeyCache>,
    shutdown: CancellationToken,
) {
    let running = Arc::new(Semaphore::new(threads));
    loop {
        // A permit first: while every thread is busy, posts pile up into the next batch.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = running.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            job = rx.recv() => match job { Some(job) => job, None => return },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let keys = keys.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_batch(batch, &keys);
        });
    }
}

fn verify_batch(batch: Vec<Job>, keys: &KeyCache) {
    let checks: Vec<Check<'_>> = batch
        .iter()
        .map(|job| Check {
            public_key: &job.public_key,
            message: &job.digest,
            signature: &job.signature,
        })
        .collect();
    let results = identity::verify_many_cached(&checks, keys);
    drop(checks);
    for (job, result) in batch.into_iter().zip(results) {
        // A post that gave up waiting no longer listens: nothing to do.
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmb_core::{Address, KeyType, Signer};

    fn signed(signer: &Signer, uid: &str) -> Envelope {
        let mut env = Envelope {
            uid: uid.into(),
            source: Some(Address::twin(1)),
            ..Default::default()
        };
        envelope::sign(&mut env, signer);
        env
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_posts_at_once_get_the_answers_single_verification_gives() {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let verifier = Arc::new(Verifier::start(2, shutdown.clone(), &tasks));
        let signer = Signer::from_seed(&[7; 32], KeyType::Ed25519).unwrap();
        let other = Signer::from_seed(&[8; 32], KeyType::Ed25519).unwrap();
        let key = signer.public_key();
        let mut waiting = Vec::new();
        for i in 0..200 {
            // Every seventh signed by someone else, every eleventh unsigned.
            let mut env = signed(if i % 7 == 0 { &other } else { &signer }, &i.to_string());
            if i % 11 == 0 {
                env.signature = None;
            }
            let verifier = verifier.clone();
            waiting.push(tokio::spawn(async move {
                let batched = verifier.verify(&env, &key).await;
                (batched, envelope::verify(&env, &key))
            }));
        }
        let mut refused = 0;
        for w in waiting {
            let (batched, single) = w.await.unwrap();
            assert_eq!(batched, single);
            refused += usize::from(batched.is_err());
        }
        // 0..200: 29 multiples of 7, 19 of 11, 3 of both (0, 77, 154).
        assert_eq!(refused, 29 + 19 - 3);
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        let late = signed(&other, "late");
        assert!(
            verifier.verify(&late, &key).await.is_err(),
            "after shutdown it still verifies, alone"
        );
        assert!(verifier.verify(&signed(&signer, "ok"), &key).await.is_ok());
        let inline = Verifier::start(0, CancellationToken::new(), &tasks);
        assert!(inline.verify(&signed(&signer, "ok"), &key).await.is_ok());
        assert!(inline.verify(&signed(&other, "no"), &key).await.is_err());
    }
}
