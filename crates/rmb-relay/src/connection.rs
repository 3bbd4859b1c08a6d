//! One authenticated WebSocket session: a reader that routes what the client sends, and
//! a writer that drains the session's mailbox. They run as two tasks so a client that
//! reads slowly never slows down its own sending, nor anyone else's.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use parking_lot::Mutex;
use rmb_core::prost::Message as _;
use rmb_core::proto::EnvelopeHeader;
use rmb_core::Envelope;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::mailbox::{Mailbox, QueuedFrame};
use crate::metrics::Metrics;
use crate::route::{self, ReplyTo};
use crate::session_key::SessionKey;
use crate::state::{Outcome, Refusal, RelayState};

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
    hold: Option<rmb_http::ReadHold>,
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
        Writer {
            clock: state.clock.clone(),
            mailbox: mailbox.clone(),
            stop: writer_stop.clone(),
            close: close.clone(),
            metrics: metrics.clone(),
            ping_every: state.config.ws_ping_interval,
        },
    ));
    read_loop(stream, &key, &mailbox, &state, &stop, &close, hold).await;
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
    hold: Option<rmb_http::ReadHold>,
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
    // Heard from at this coarse second; checked now and then, not timed per frame.
    // Whole seconds: a session heard from at 10.9 and checked at 11.0 is 1 "second"
    // old, so the timeout is passed only when more than `idle` whole seconds went by
    // (a session is closed after between `idle` and `idle` + 1 s of silence).
    let idle = state.config.ws_idle_timeout;
    let mut heard = state.clock.now();
    let mut check = tokio::time::interval((idle / 4).max(Duration::from_millis(10)));
    check.reset();
    let mut routing = Routing {
        state,
        mailbox,
        close,
        pending: None,
    };
    // Every `return` below ends the reading, not the function: the frames still being
    // routed are waited for after it.
    let reading = async {
        loop {
            // What finished, in the order the frames came.
            while let Some(handled) = routing.next_ready() {
                if !routing.settle(handled, &mut counted, &mut stopped).await {
                    return;
                }
                heard = state.clock.now();
            }
            // No room: only finished routing makes some (nothing is read meanwhile).
            let room = routing.in_flight() < MAX_ROUTING;
            let ready = if room {
                stream.next().now_or_never()
            } else {
                None
            };
            let msg = match ready {
                Some(msg) if counted.frames < 64 => msg,
                ready => {
                    counted.publish();
                    match ready {
                        Some(msg) => msg,
                        None => tokio::select! {
                            biased;
                            _ = &mut stopped => return,
                            Some(handled) = routing.next_done(), if routing.in_flight() > 0 => {
                                if !routing.settle(handled, &mut counted, &mut stopped).await {
                                    return;
                                }
                                heard = state.clock.now();
                                continue;
                            }
                            msg = stream.next(), if room => msg,
                            _ = check.tick() => {
                                if state.clock.now().saturating_sub(heard) > idle.as_secs().max(1) {
                                    Metrics::inc(&state.metrics.idle_closed);
                                    tracing::debug!(session = %key, "closing: idle");
                                    close_with(
                                        close,
                                        close_code::POLICY,
                                        format!("idle: nothing received for {} s (answer pings)", idle.as_secs()),
                                    );
                                    return;
                                }
                                continue;
                            }
                        },
                    }
                }
            };
            if stop.is_cancelled() {
                return;
            }
            // The bytes of this message stay charged to the read budget until it is handed
            // on (queued, delivered, federated) or refused: the routing future holds them.
            let held = hold.as_ref().and_then(rmb_http::ReadHold::take);
            heard = state.clock.now();
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
                Some(Err(e)) if rmb_http::is_read_budget_exhausted(&e) => {
                    Metrics::inc(&state.metrics.read_budget_exhausted);
                    tracing::info!(session = %key, "closing: out of memory for incoming messages");
                    close_with(
                        close,
                        close_code::AGAIN,
                        "relay is out of memory for incoming messages, retry later",
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
            // Only the routing header is decoded: the payload is never copied or read.
            let env = match EnvelopeHeader::decode(data.clone()) {
                Ok(env) => env,
                Err(e) => {
                    counted.publish();
                    state.metrics.protocol_violation("undecodable_frame");
                    tracing::info!(session = %key, error = %e, "closing: undecodable frame");
                    close_with(
                        close,
                        close_code::INVALID,
                        format!("frame is not a valid protobuf envelope: {e}"),
                    );
                    return;
                }
            };
            // Order: a frame is first polled here, in the order frames came, and routed
            // without waiting for a registrar lookup; what it waits for then is storage,
            // which took it in that first poll and answers in that order. A frame whose
            // destination's record is not cached did nothing (`NeedsLookup`): it is routed
            // alone, after those before it and before those after it, as it may wait.
            let mut routed: Pin<Box<RoutingFuture<'_>>> =
                Box::pin(handle_frame(data, env, key, state, held, false));
            let handled = match futures_util::poll!(routed.as_mut()) {
                Poll::Ready(Ok(Handled::NeedsLookup(undone))) => {
                    // Kept boxed while it waits: its fields would grow every reader.
                    while let Some(handled) = routing.next_done().await {
                        if !routing.settle(handled, &mut counted, &mut stopped).await {
                            return;
                        }
                    }
                    let Undone { data, env, held } = *undone;
                    // Boxed: inline, its state would be part of every idle session's reader.
                    Box::pin(handle_frame(data, env, key, state, held, true)).await
                }
                Poll::Ready(handled) if routing.in_flight() == 0 => handled,
                // Finished, but after frames still being routed: taken in its turn.
                Poll::Ready(handled) => {
                    routing.push(Box::pin(std::future::ready(handled)));
                    continue;
                }
                Poll::Pending => {
                    routing.push(routed);
                    continue;
                }
            };
            if !routing.settle(handled, &mut counted, &mut stopped).await {
                return;
            }
            heard = state.clock.now();
        }
    };
    reading.await;
    // A frame being routed holds its bytes in the read budget until it is stored, and
    // storage has it already: dropping it here would free the budget while the bytes
    // still wait in storage's queue, so a client that sends and disconnects over and
    // over could queue any amount behind a slow Redis. Bounded by the storage timeout.
    while routing.next_done().await.is_some() {}
}

/// Most frames of one session being routed at once. The reader goes on reading while
/// earlier frames wait for storage (with Redis, every frame does), so one connection
/// fills a pipeline instead of paying a round trip per frame; their bytes stay charged
/// to the read budget meanwhile.
const MAX_ROUTING: usize = 64;

/// What the reader does after a frame was routed.
enum Next {
    Read,
    /// The twin is over its rate limit: stop reading for a while.
    Pause,
    Close,
}

/// The frames of one session still being routed (waiting for storage or a lookup),
/// oldest first, and what acting on their results needs.
struct Routing<'a> {
    state: &'a RelayState,
    mailbox: &'a Mailbox,
    close: &'a CloseSlot,
    /// Created for the first frame that waits and dropped once none does: an idle
    /// session holds no queue.
    pending: Option<FuturesOrdered<Pin<Box<RoutingFuture<'a>>>>>,
}

impl<'a> Routing<'a> {
    fn in_flight(&self) -> usize {
        self.pending.as_ref().map_or(0, FuturesOrdered::len)
    }

    fn push(&mut self, routed: Pin<Box<RoutingFuture<'a>>>) {
        self.pending
            .get_or_insert_with(FuturesOrdered::new)
            .push_back(routed);
    }

    /// The oldest frame's result once it is routed; `None` when none is being routed.
    async fn next_done(&mut self) -> Option<Result<Handled, String>> {
        let done = self.pending.as_mut()?.next().await;
        self.drop_if_empty();
        done
    }

    /// The oldest frame's result if it is routed already.
    fn next_ready(&mut self) -> Option<Result<Handled, String>> {
        let done = self.pending.as_mut()?.next().now_or_never().flatten();
        self.drop_if_empty();
        done
    }

    fn drop_if_empty(&mut self) {
        if self.pending.as_ref().is_some_and(FuturesOrdered::is_empty) {
            self.pending = None;
        }
    }

    /// Acts on a routed frame's result, taken in the order the frames came: a pong is
    /// written only once every frame sent before its ping was routed, so it still
    /// confirms them all (D1).
    fn finish(&self, handled: Result<Handled, String>, counted: &mut ReadCounters<'_>) -> Next {
        match handled {
            Ok(Handled::Routed) => Next::Read,
            // The read loop routes these again, alone, before they get here: only a
            // first poll can leave a frame undone. Not silently, should that change.
            Ok(Handled::NeedsLookup(_)) => {
                tracing::error!("a frame left undone reached the end of routing: dropped");
                Next::Read
            }
            Ok(Handled::Pong(frame)) => {
                self.mailbox.push(frame);
                Next::Read
            }
            Ok(Handled::OverLimit) => {
                counted.publish();
                Next::Pause
            }
            Err(reason) => {
                counted.publish();
                close_with(self.close, close_code::INVALID, reason);
                Next::Close
            }
        }
    }

    /// [`finish`](Self::finish), then the pause it asks for. `false`: the session stops.
    async fn settle(
        &mut self,
        handled: Result<Handled, String>,
        counted: &mut ReadCounters<'_>,
        stopped: &mut Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> bool {
        match self.finish(handled, counted) {
            Next::Read => true,
            Next::Close => false,
            Next::Pause => self.pause(counted, stopped).await,
        }
    }

    /// The cheapest refusal is not reading: the frame over the limit got its relay
    /// error, the ones behind it wait in the socket (and the client's TCP window fills)
    /// until the twin's next window, instead of each costing a decode, a de-dup claim
    /// and an error frame while others wait for the cores. Bounded so a long window
    /// does not look like a dead reader. Frames already being routed finish first.
    async fn pause(
        &mut self,
        counted: &mut ReadCounters<'_>,
        stopped: &mut Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> bool {
        while let Some(handled) = self.next_done().await {
            if let Next::Close = self.finish(handled, counted) {
                return false;
            }
        }
        let state = self.state;
        let pause = pause_for(state.limiter.next_window(state.clock.now()));
        Metrics::inc(&state.metrics.rate_limit_pauses);
        tokio::select! {
            biased;
            _ = stopped.as_mut() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }
}

/// Longest a reader stops reading a session whose twin is over its rate limit.
const MAX_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// Shortest pause: the limiter counts on the coarse clock (up to 100 ms behind), so a
/// window that has begun by the system clock may not have begun for the limiter yet;
/// without a floor the reader would refuse frame after frame until it had.
const MIN_LIMIT_PAUSE: Duration = Duration::from_millis(100);

/// How long to stop reading until the unix second `next_window`, between
/// [`MIN_LIMIT_PAUSE`] and [`MAX_LIMIT_PAUSE`]. Checked arithmetic on the system clock.
fn pause_for(next_window: u64) -> Duration {
    // A window start past what `SystemTime` holds is simply far away.
    std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(next_window))
        .map_or(MAX_LIMIT_PAUSE, |until| {
            until
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        })
        .clamp(MIN_LIMIT_PAUSE, MAX_LIMIT_PAUSE)
}

/// What became of a frame the session sent.
#[derive(Debug)]
enum Handled {
    /// Routed, dropped as a copy, answered, or refused for a reason of its own.
    Routed,
    /// Refused because its twin is over the rate limit: the reader pauses.
    OverLimit,
    /// A ping: the pong to write once the frames before it are routed.
    Pong(QueuedFrame),
    /// Nothing done: the frame needs a registrar lookup; here it is back.
    NeedsLookup(Box<Undone>),
}

/// A frame [`handle_frame`] left undone, with its read-budget bytes.
#[derive(Debug)]
struct Undone {
    data: Bytes,
    env: EnvelopeHeader,
    held: Option<OwnedSemaphorePermit>,
}

/// A frame being routed.
type RoutingFuture<'a> = dyn Future<Output = Result<Handled, String>> + Send + 'a;

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
/// `may_wait`: for a registrar lookup too; if not, a frame that would needs one is left
/// undone ([`Handled::NeedsLookup`], which gives its read-budget bytes back).
async fn handle_frame(
    data: Bytes,
    env: EnvelopeHeader,
    key: &SessionKey,
    state: &Arc<RelayState>,
    held: Option<OwnedSemaphorePermit>,
    may_wait: bool,
) -> Result<Handled, String> {
    let now = state.clock.now();
    let outcome = state
        .from_session_with(key, &env, &data, now, may_wait)
        .await;
    let refusal = match outcome {
        Outcome::NeedsLookup => {
            return Ok(Handled::NeedsLookup(Box::new(Undone { data, env, held })));
        }
        Outcome::Delivered | Outcome::Queued | Outcome::Federated => return Ok(Handled::Routed),
        Outcome::Duplicate => {
            // Silently: the sender's retransmission is fine, it just must not run twice.
            Metrics::inc(&state.metrics.duplicates);
            return Ok(Handled::Routed);
        }
        Outcome::Pong => {
            // The pong echoes the ping's payload, so this one is decoded in full.
            let ping = Envelope::decode(&data[..])
                .map_err(|e| format!("frame is not a valid protobuf envelope: {e}"))?;
            return Ok(Handled::Pong(QueuedFrame::new(
                Bytes::from(route::pong(&ping, key).encode_to_vec()),
                now + route::ERROR_EXPIRATION,
            )));
        }
        Outcome::Refused(refusal) => refusal,
    };
    let over_limit = matches!(refusal, Refusal::RateLimited { .. });
    state.refuse(&ReplyTo::of(&env, key), &refusal, now).await;
    Ok(if over_limit {
        Handled::OverLimit
    } else {
        Handled::Routed
    })
}

/// What the writer needs besides the socket.
struct Writer {
    clock: crate::clock::CoarseClock,
    mailbox: Arc<Mailbox>,
    stop: CancellationToken,
    close: CloseSlot,
    metrics: Arc<Metrics>,
    ping_every: Duration,
}

/// Longest the writer waits to hand the close frame to a client that does not read.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

async fn write_loop(mut sink: SplitSink<WebSocket, Message>, w: Writer) {
    // Grown as frames come, and let go while the session is idle: 64 frames' worth
    // held by every idle session was the largest part of its memory.
    let mut batch: Vec<QueuedFrame> = Vec::new();
    let mut ping = tokio::time::interval(w.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    loop {
        if w.stop.is_cancelled() {
            break;
        }
        let expired = w.mailbox.pop_batch(w.clock.now(), WRITE_BATCH, &mut batch);
        if expired > 0 {
            Metrics::add(&w.metrics.expired, expired as u64);
        }
        if batch.is_empty() {
            batch = Vec::new();
            tokio::select! {
                biased;
                _ = w.stop.cancelled() => break,
                _ = w.mailbox.notified() => continue,
                _ = ping.tick() => {
                    // The reader closes a session it hears nothing from; a client that
                    // answers pings is heard from even when it has nothing to send.
                    let sent = tokio::select! {
                        _ = w.stop.cancelled() => break,
                        sent = sink.send(Message::Ping(Bytes::new())) => sent,
                    };
                    if sent.is_err() {
                        break;
                    }
                    continue;
                }
            }
        }
        // A session that is never idle is pinged too: a client that only receives
        // (a stream of replies) is heard from by its pongs alone.
        let ping_due = ping.tick().now_or_never().is_some();
        // A client that stops reading must not hold the writer: the session ending (by
        // the idle timeout, a newer connection, shutdown) interrupts the write.
        let mut fed = 0;
        let written = tokio::select! {
            biased;
            _ = w.stop.cancelled() => false,
            written = write_batch(&mut sink, &batch, ping_due, &mut fed) => written,
        };
        if written {
            // Durable copies of what was written may go now.
            w.mailbox.confirm_written(&batch);
            Metrics::add(&w.metrics.messages_out, batch.len() as u64);
            let bytes = batch.iter().map(|f| f.data.len() as u64).sum();
            Metrics::add(&w.metrics.bytes_out, bytes);
            batch.clear();
        } else {
            keep_unwritten(&w.mailbox, std::mem::take(&mut batch), fed, &w.metrics);
            break;
        }
    }
    let frame = w.close.lock().take();
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let _ = sink.send(Message::Close(frame)).await;
        let _ = sink.close().await;
    })
    .await;
}

/// Feeds `batch` (after a ping if `ping_first`) and flushes it; `false`: the socket
/// failed. `fed` counts the frames handed to the socket so far (they may have reached
/// the client); it stays true when the write is interrupted part-way.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &[QueuedFrame],
    ping_first: bool,
    fed: &mut usize,
) -> bool {
    if ping_first && sink.feed(Message::Ping(Bytes::new())).await.is_err() {
        return false;
    }
    for frame in batch {
        *fed += 1;
        if sink
            .feed(Message::Binary(frame.data.clone()))
            .await
            .is_err()
        {
            return false;
        }
    }
    sink.flush().await.is_ok()
}

/// After a failed write: frames never handed to the socket go back to the front of the
/// mailbox (the next connection gets them, in order). Of those that may have reached
/// the client, requests are dropped, not sent again: a receiver that does not
/// de-duplicate (the original rmb-peer, the Go router, the TypeScript client) would run
/// them twice (design D1). Replies and errors go back: a second copy of a reply is
/// matched to nothing and dropped.
fn keep_unwritten(mailbox: &Mailbox, mut batch: Vec<QueuedFrame>, fed: usize, metrics: &Metrics) {
    let fed = fed.min(batch.len());
    let unsent = batch.split_off(fed);
    let before = batch.len();
    let (requests, others): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|frame| frame_is_request(&frame.data));
    // Their stored copies go too: re-delivered after a restart, they could run twice.
    mailbox.confirm_written(&requests);
    let mut batch = others;
    let dropped = before - batch.len();
    if dropped > 0 {
        Metrics::add(&metrics.unconfirmed_requests_dropped, dropped as u64);
        tracing::info!(
            dropped,
            "requests that may have reached a broken connection are not sent again"
        );
    }
    batch.extend(unsent);
    mailbox.requeue_front(batch);
}

fn frame_is_request(frame: &Bytes) -> bool {
    EnvelopeHeader::decode(frame.clone()).is_ok_and(|h| route::header_is_request(&h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmb_core::proto::{MessageKind, RequestHeader, Skipped};

    fn frame(uid: &'static str, kind: MessageKind) -> QueuedFrame {
        let header = EnvelopeHeader {
            uid: Bytes::from_static(uid.as_bytes()),
            kind: Some(kind),
            ..Default::default()
        };
        QueuedFrame::new(Bytes::from(header.encode_to_vec()), 100)
    }

    fn request(uid: &'static str) -> QueuedFrame {
        frame(
            uid,
            MessageKind::Request(RequestHeader {
                command: Bytes::from_static(b"calc.add"),
            }),
        )
    }

    fn reply(uid: &'static str) -> QueuedFrame {
        frame(uid, MessageKind::Response(Skipped {}))
    }

    fn uids(mailbox: &Mailbox) -> Vec<String> {
        let mut out = Vec::new();
        mailbox.pop_batch(0, 100, &mut out);
        out.iter()
            .map(|f| EnvelopeHeader::decode(f.data.clone()).unwrap().uid_text())
            .collect()
    }

    #[test]
    fn a_limited_reader_pauses_until_the_next_window_at_most_a_second() {
        assert_eq!(pause_for(0), MIN_LIMIT_PAUSE, "a window that has begun");
        assert_eq!(pause_for(u64::MAX), MAX_LIMIT_PAUSE, "no overflow, bounded");
        let next = rmb_core::time::now() + 3600;
        assert_eq!(pause_for(next), MAX_LIMIT_PAUSE);
    }

    #[test]
    fn requests_that_may_have_reached_a_broken_socket_are_not_written_again() {
        let mailbox = Mailbox::new(Default::default());
        mailbox.push(request("later"));
        let metrics = Metrics::default();
        let batch = vec![request("r1"), reply("p1"), request("r2"), reply("p2")];
        // The first three were handed to the socket before it failed.
        keep_unwritten(&mailbox, batch, 3, &metrics);
        // Replies may repeat (a second one matches nothing); requests must not.
        assert_eq!(uids(&mailbox), ["p1", "p2", "later"]);
        assert_eq!(metrics.unconfirmed_requests_dropped.get(), 2);
    }
}
