//! One authenticated WebSocket session: a reader that routes what the client sends, and
//! a writer that drains the session's mailbox. They run as two tasks so a client that
//! reads slowly never slows down its own sending, nor anyone else's.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use parking_lot::Mutex;
use rmb_core::prost::Message as _;
use rmb_core::proto::EnvelopeHeader;
use rmb_core::Envelope;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::mailbox::{Mailbox, QueuedFrame};
use crate::metrics::Metrics;
use crate::route::{self, ReplyTo};
use crate::session_key::SessionKey;
use crate::state::{Outcome, RelayState};

/// Frames written per flush.
const WRITE_BATCH: usize = 64;

/// Why the writer closes the socket; read by the writer when it stops.
type CloseSlot = Arc<Mutex<Option<CloseFrame>>>;

/// Longest close reason, in bytes: a close frame is a control frame (at most 125 bytes
/// of payload, 2 of them the code). A longer one breaks the client's connection with a
/// protocol error instead of telling it why.
const MAX_CLOSE_REASON: usize = 123;

fn close_with(slot: &CloseSlot, code: u16, reason: impl Into<String>) {
    let mut slot = slot.lock();
    if slot.is_none() {
        let mut reason = reason.into();
        if reason.len() > MAX_CLOSE_REASON {
            let mut end = MAX_CLOSE_REASON - '…'.len_utf8();
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push('…');
        }
        *slot = Some(CloseFrame {
            code,
            reason: reason.into(),
        });
    }
}

/// Runs a session until the client leaves, a newer connection replaces it, it breaks
/// the protocol, or the relay shuts down. `slot` is the session's connection permit,
/// given back when this returns (or unwinds).
pub async fn run(
    socket: WebSocket,
    key: SessionKey,
    state: Arc<RelayState>,
    slot: OwnedSemaphorePermit,
) {
    let _slot = slot;
    let conn = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let stop = state.shutdown.child_token();
    let close: CloseSlot = Arc::default();
    let metrics = state.metrics.clone();
    Metrics::inc(&metrics.connections_total);

    let mailbox = match state.backend.attach(&key, conn, stop.clone()).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(session = %key, error = %e, "cannot attach session");
            let mut socket = socket;
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: close_code::ERROR,
                    reason: "relay storage unavailable, retry later".into(),
                })))
                .await;
            state.backend.detach(&key, conn).await;
            return;
        }
    };
    tracing::debug!(session = %key, conn, "session connected");

    let (sink, stream) = socket.split();
    // The writer stops on its own token, cancelled only once the close reason is chosen,
    // so the close frame always carries it.
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        sink,
        state.clock.clone(),
        mailbox.clone(),
        writer_stop.clone(),
        close.clone(),
        metrics.clone(),
    ));
    read_loop(stream, &key, &mailbox, &state, &stop, &close).await;
    if state.shutdown.is_cancelled() {
        close_with(&close, close_code::AWAY, "relay shutting down");
    } else if !stop.is_cancelled() {
        close_with(&close, close_code::NORMAL, "bye");
    } else {
        close_with(
            &close,
            close_code::NORMAL,
            "replaced by a newer connection of the same session",
        );
    }
    stop.cancel();
    writer_stop.cancel();
    let _ = writer.await;
    state.backend.detach(&key, conn).await;
    tracing::debug!(session = %key, conn, "session ended");
}

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    key: &SessionKey,
    mailbox: &Mailbox,
    state: &Arc<RelayState>,
    stop: &CancellationToken,
    close: &CloseSlot,
) {
    // Created once: a fresh `cancelled()` per frame would lock the token every time.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    // Counted locally and published when the socket has nothing more ready (or every
    // 64 frames): shared counters touched by every reader on every core per frame cost
    // more than the routing itself.
    let mut counted = ReadCounters {
        metrics: &state.metrics,
        frames: 0,
        bytes: 0,
    };
    loop {
        let msg = match stream.next().now_or_never() {
            Some(msg) if counted.frames < 64 => msg,
            ready => {
                counted.publish();
                match ready {
                    Some(msg) => msg,
                    None => tokio::select! {
                        biased;
                        _ = &mut stopped => return,
                        msg = stream.next() => msg,
                    },
                }
            }
        };
        if stop.is_cancelled() {
            return;
        }
        let data = match msg {
            None | Some(Ok(Message::Close(_))) => return,
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(_))) => {
                state.metrics.protocol_violation("text_frame");
                tracing::info!(session = %key, "closing: text frame received");
                close_with(
                    close,
                    close_code::UNSUPPORTED,
                    "text frames are not supported: send binary protobuf envelopes",
                );
                return;
            }
            Some(Err(e)) => {
                let text = e.to_string();
                if text.contains("too long") || text.contains("too big") {
                    state.metrics.protocol_violation("oversized_frame");
                    tracing::info!(session = %key, error = %text, "closing: frame too large");
                    close_with(
                        close,
                        close_code::SIZE,
                        format!(
                            "message too large: at most {} bytes",
                            state.config.max_envelope_size
                        ),
                    );
                } else {
                    tracing::debug!(session = %key, error = %text, "websocket read error");
                }
                return;
            }
        };
        counted.frames += 1;
        counted.bytes += data.len() as u64;
        if let Err(reason) = handle_frame(data, key, mailbox, state).await {
            counted.publish();
            close_with(close, close_code::INVALID, reason);
            return;
        }
    }
}

/// Frames read but not yet added to the shared metrics; published on drop too, so
/// every way out of the read loop counts them.
struct ReadCounters<'a> {
    metrics: &'a Metrics,
    frames: u64,
    bytes: u64,
}

impl ReadCounters<'_> {
    fn publish(&mut self) {
        if self.frames > 0 {
            Metrics::add(&self.metrics.messages_in, self.frames);
            Metrics::add(&self.metrics.bytes_in, self.bytes);
            self.frames = 0;
            self.bytes = 0;
        }
    }
}

impl Drop for ReadCounters<'_> {
    fn drop(&mut self) {
        self.publish();
    }
}

/// Routes one binary frame. `Err` closes the connection with that reason.
async fn handle_frame(
    data: Bytes,
    key: &SessionKey,
    mailbox: &Mailbox,
    state: &Arc<RelayState>,
) -> Result<(), String> {
    // Only the routing header is decoded: the payload is never copied or read.
    let env = match EnvelopeHeader::decode(data.clone()) {
        Ok(env) => env,
        Err(e) => {
            state.metrics.protocol_violation("undecodable_frame");
            tracing::info!(session = %key, error = %e, "closing: undecodable frame");
            return Err(format!("frame is not a valid protobuf envelope: {e}"));
        }
    };
    let now = state.clock.now();
    let refusal = match state.from_session(key, &env, &data, now).await {
        Outcome::Delivered | Outcome::Queued | Outcome::Federated => return Ok(()),
        Outcome::Duplicate => {
            // Silently: the sender's retransmission is fine, it just must not run twice.
            Metrics::inc(&state.metrics.duplicates);
            return Ok(());
        }
        Outcome::Pong => {
            // The pong echoes the ping's payload, so this one is decoded in full.
            let ping = Envelope::decode(&data[..])
                .map_err(|e| format!("frame is not a valid protobuf envelope: {e}"))?;
            mailbox.push(QueuedFrame {
                data: Bytes::from(route::pong(&ping, key).encode_to_vec()),
                deadline: now + route::ERROR_EXPIRATION,
            });
            return Ok(());
        }
        Outcome::Refused(refusal) => refusal,
    };
    state.refuse(&ReplyTo::of(&env, key), &refusal, now).await;
    Ok(())
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    clock: crate::clock::CoarseClock,
    mailbox: Arc<Mailbox>,
    stop: CancellationToken,
    close: CloseSlot,
    metrics: Arc<Metrics>,
) {
    let mut batch: Vec<QueuedFrame> = Vec::with_capacity(WRITE_BATCH);
    'outer: loop {
        if stop.is_cancelled() {
            break;
        }
        let expired = mailbox.pop_batch(clock.now(), WRITE_BATCH, &mut batch);
        if expired > 0 {
            Metrics::add(&metrics.expired, expired as u64);
        }
        if batch.is_empty() {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = mailbox.notified() => continue,
            }
        }
        for (i, frame) in batch.iter().enumerate() {
            if sink
                .feed(Message::Binary(frame.data.clone()))
                .await
                .is_err()
            {
                mailbox.requeue_front(batch.split_off(i));
                break 'outer;
            }
        }
        if sink.flush().await.is_err() {
            // We cannot know what reached the client: keep it all (receivers de-duplicate
            // by uid; losing an accepted message is worse than a repeat).
            mailbox.requeue_front(std::mem::take(&mut batch));
            break;
        }
        Metrics::add(&metrics.messages_out, batch.len() as u64);
        Metrics::add(
            &metrics.bytes_out,
            batch.iter().map(|f| f.data.len() as u64).sum(),
        );
        batch.clear();
    }
    let frame = close.lock().take();
    let _ = sink.send(Message::Close(frame)).await;
    let _ = sink.close().await;
}
