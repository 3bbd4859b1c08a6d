//! Connections to every relay at once, sharing one outgoing queue.
//!
//! Each relay gets a task that connects with a fresh JWT (§3.1), then reads and writes
//! until the link breaks, then reconnects after a capped exponential backoff with
//! jitter. All connected tasks take envelopes from one shared queue, so an envelope
//! goes out over whichever relay is up: when one link dies the others simply keep
//! taking from the queue (fail-over costs nothing), and when none is up envelopes wait
//! in the queue until one is (or until their deadline passes).
//!
//! Delivery to the relay is confirmed: after writing, a link sends an envelope ping, and
//! the relay's pong (it reads a connection's frames in order) confirms everything
//! written before it. When a link breaks, what it wrote but the relay did not confirm
//! may or may not have been passed on, so a copy must not reach a receiver that would
//! run it again (docs/compatibility.md, "Not running a request twice"):
//! - a frame whose copy is harmless ([`Outbound::copy_safe`]: a reply, or a request to a
//!   receiver known to drop copies) goes back in the shared queue, for any link;
//! - any other frame waits for a new connection to the *same* relay URL, and is written
//!   there first if that connection's upgrade response says `rmb-dedup: 1` (the relay
//!   drops copies of what it already accepted); otherwise it is not sent again and its
//!   sender learns why ([`Unconfirmed::MaybeDelivered`]).
//!
//! Dead links are found by pinging: every `ping_interval` a connection sends a WebSocket
//! ping and an envelope ping (which the relay answers with a pong); a link on which
//! nothing arrived for `dead_after` is dropped and reconnected.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use rmb_core::prost::Message as _;
use rmb_core::proto::{EnvelopeHeader, MessageKind};
use rmb_core::{jwt, Address, Signer};
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use crate::error::{NotResent, Unconfirmed};
use crate::outgoing;

/// The upgrade response header by which a relay says that it drops copies of envelopes
/// it already accepted (design D1(a)); its value is `1`.
pub const DEDUP_HEADER: &str = "rmb-dedup";

/// Timing of the relay connections.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// First reconnect delay (doubled on each failure, jittered ±50%).
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How often an idle link is pinged.
    pub ping_interval: Duration,
    /// A link on which nothing arrived for this long is dropped.
    pub dead_after: Duration,
    /// Longest a connection attempt (TCP + TLS + handshake) may take.
    pub connect_timeout: Duration,
    /// Lifetime of the connection token (only checked when connecting).
    pub token_lifetime: u64,
    /// Outgoing envelopes waiting for a link before senders wait.
    pub queue_capacity: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            dead_after: Duration::from_secs(50),
            connect_timeout: Duration::from_secs(10),
            token_lifetime: 60,
            queue_capacity: 4096,
        }
    }
}

/// Where the fate of one envelope is reported: `Ok` once a relay confirmed it.
pub(crate) type Confirm = oneshot::Sender<Result<(), Unconfirmed>>;

/// One serialized envelope waiting to go out. Dropping it unsettled tells its sender
/// [`Unconfirmed::Closed`] (only shutdown does that).
#[derive(Debug)]
pub(crate) struct Outbound {
    pub frame: Bytes,
    /// Unix seconds after which it is not worth sending.
    pub deadline: u64,
    /// A copy of it cannot run anything twice (a reply, or a request to a receiver that
    /// drops copies), so after a broken link it may go out again over any link.
    pub copy_safe: bool,
    confirm: Option<Confirm>,
}

impl Outbound {
    pub(crate) fn new(frame: Bytes, deadline: u64, copy_safe: bool) -> Self {
        Outbound {
            frame,
            deadline,
            copy_safe,
            confirm: None,
        }
    }

    /// Reports this envelope's fate to `confirm`.
    pub(crate) fn confirmed_to(mut self, confirm: Confirm) -> Self {
        self.confirm = Some(confirm);
        self
    }

    fn settle(mut self, result: Result<(), Unconfirmed>) {
        if let Some(confirm) = self.confirm.take() {
            let _ = confirm.send(result);
        }
    }

    fn expired(&self, now: u64) -> bool {
        self.deadline <= now
    }
}

/// The live relay connections of a client.
pub(crate) struct Pool {
    queue: mpsc::Sender<Outbound>,
    connected: watch::Receiver<usize>,
    cancel: CancellationToken,
}

/// What a connection task needs.
struct Link {
    url: String,
    twin: u32,
    sid: Option<String>,
    signer: Signer,
    config: PoolConfig,
    queue: Arc<Mutex<mpsc::Receiver<Outbound>>>,
    requeue: mpsc::Sender<Outbound>,
    incoming: mpsc::Sender<Bytes>,
    connected: Arc<watch::Sender<usize>>,
    cancel: CancellationToken,
}

impl Pool {
    /// Starts one connection task per relay URL; incoming frames go to `incoming`.
    pub(crate) fn start(
        urls: &[String],
        twin: u32,
        sid: Option<String>,
        signer: Signer,
        config: PoolConfig,
        incoming: mpsc::Sender<Bytes>,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let (connected_tx, connected) = watch::channel(0usize);
        let connected_tx = Arc::new(connected_tx);
        for url in urls {
            let link = Link {
                url: url.trim_end_matches('/').to_string(),
                twin,
                sid: sid.clone(),
                signer: signer.clone(),
                config: config.clone(),
                queue: rx.clone(),
                requeue: tx.clone(),
                incoming: incoming.clone(),
                connected: connected_tx.clone(),
                cancel: cancel.clone(),
            };
            tokio::spawn(link.run());
        }
        Pool {
            queue: tx,
            connected,
            cancel,
        }
    }

    /// Queues a frame for the next healthy link. Waits while the queue is full; fails
    /// only when the client is shut down.
    pub(crate) async fn send(&self, frame: Outbound) -> Result<(), ()> {
        tokio::select! {
            sent = self.queue.send(frame) => sent.map_err(|_| ()),
            _ = self.cancel.cancelled() => Err(()),
        }
    }

    /// How many relays are connected right now.
    pub(crate) fn connected(&self) -> usize {
        *self.connected.borrow()
    }

    /// Waits until at least `n` relays are connected; false on timeout.
    pub(crate) async fn wait_connected(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.connected.clone();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Envelopes written on a link but not yet confirmed by the relay. After writing, a
/// link sends an envelope ping; the relay handles a connection's frames in order, so
/// its pong confirms everything written before the ping.
#[derive(Default)]
struct Acks {
    /// Written since the ping in flight was sent.
    unacked: Vec<Outbound>,
    /// The ping in flight, when it was sent, and what its pong will confirm.
    awaiting: Option<(String, Instant, Vec<Outbound>)>,
}

impl Acks {
    fn written(&mut self, out: Outbound) {
        self.unacked.push(out);
    }

    fn ping_sent(&mut self, uid: String) {
        let covered = std::mem::take(&mut self.unacked);
        self.awaiting = Some((uid, Instant::now(), covered));
    }

    /// A pong arrived; true if it confirmed the ping in flight (whose envelopes are
    /// then settled).
    fn confirm(&mut self, uid: &str) -> bool {
        if !self.awaiting.as_ref().is_some_and(|(u, _, _)| u == uid) {
            return false;
        }
        if let Some((_, _, covered)) = self.awaiting.take() {
            for out in covered {
                out.settle(Ok(()));
            }
        }
        true
    }

    fn waiting_longer_than(&self, limit: Duration) -> bool {
        self.awaiting
            .as_ref()
            .is_some_and(|(_, sent, _)| sent.elapsed() >= limit)
    }

    /// Everything unconfirmed, oldest first.
    fn take_all(&mut self) -> Vec<Outbound> {
        let mut all = self.awaiting.take().map(|(_, _, v)| v).unwrap_or_default();
        all.append(&mut self.unacked);
        all
    }
}

/// Frames a broken link wrote but the relay did not confirm, waiting for a new
/// connection to the same relay (see the module docs).
#[derive(Default)]
struct Parked(Vec<Outbound>);

impl Parked {
    /// Fails what expired while waiting.
    fn expire(&mut self, relay: &str, now: u64) {
        let (expired, live) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|out| out.expired(now));
        self.0 = live;
        for out in expired {
            out.settle(Err(Unconfirmed::MaybeDelivered {
                relay: relay.to_string(),
                why: NotResent::Expired,
            }));
        }
    }

    /// The earliest deadline of a parked frame.
    fn next_deadline(&self) -> Option<u64> {
        self.0.iter().map(|out| out.deadline).min()
    }

    /// What to write first on a new connection: everything if it drops copies, else
    /// nothing (the rest is failed, as the relay may have passed it on already).
    fn release(&mut self, relay: &str, drops_copies: bool) -> Vec<Outbound> {
        let parked = std::mem::take(&mut self.0);
        if drops_copies {
            return parked;
        }
        for out in parked {
            out.settle(Err(Unconfirmed::MaybeDelivered {
                relay: relay.to_string(),
                why: NotResent::RelayKeepsCopies,
            }));
        }
        Vec::new()
    }
}

/// Sleeps until unix second `deadline` has passed; forever for `None`.
async fn sleep_past(deadline: Option<u64>) {
    match deadline {
        Some(deadline) => {
            let left = deadline.saturating_sub(rmb_core::time::now());
            tokio::time::sleep(Duration::from_secs(left.saturating_add(1))).await
        }
        None => std::future::pending().await,
    }
}

/// The uid of a pong frame (decoding only the header); `None` for anything else.
fn pong_uid(frame: &Bytes) -> Option<String> {
    let header = EnvelopeHeader::decode(frame.clone()).ok()?;
    matches!(header.kind, Some(MessageKind::Pong(_))).then(|| header.uid_text())
}

/// Whether an upgrade response says that the relay drops copies.
/// The largest message a relay may write (relays write each message as one frame, so
/// the frame limit is the message limit): the same size the relay accepts from us.
pub(crate) fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(rmb_core::rules::MAX_MESSAGE_SIZE))
        .max_frame_size(Some(rmb_core::rules::MAX_MESSAGE_SIZE))
}

fn drops_copies(headers: &tokio_tungstenite::tungstenite::http::HeaderMap) -> bool {
    headers
        .get(DEDUP_HEADER)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
}

/// Why a connected link ended.
enum Ended {
    Cancelled,
    Broken(String),
}

impl Link {
    async fn run(self) {
        let mut backoff = self.config.reconnect_min;
        let mut parked = Parked::default();
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let started = Instant::now();
            let connecting = self.connect();
            tokio::pin!(connecting);
            let connected = loop {
                tokio::select! {
                    result = &mut connecting => break result,
                    _ = sleep_past(parked.next_deadline()) => {
                        parked.expire(&self.url, rmb_core::time::now());
                    }
                }
            };
            match connected {
                Ok((ws, dedup)) => {
                    tracing::info!(relay = %self.url, drops_copies = dedup, "connected");
                    parked.expire(&self.url, rmb_core::time::now());
                    let first = parked.release(&self.url, dedup);
                    if !first.is_empty() {
                        tracing::info!(
                            relay = %self.url,
                            count = first.len(),
                            "sending again what the relay did not confirm before the link broke"
                        );
                    }
                    self.connected.send_modify(|n| *n += 1);
                    let ended = self.serve(ws, first, &mut parked).await;
                    self.connected.send_modify(|n| *n -= 1);
                    match ended {
                        Ended::Cancelled => return,
                        Ended::Broken(why) => {
                            tracing::warn!(relay = %self.url, "relay link lost: {why}")
                        }
                    }
                    // A link that lived a while starts the backoff over.
                    if started.elapsed() > self.config.reconnect_max {
                        backoff = self.config.reconnect_min;
                    }
                }
                Err(e) => tracing::warn!(relay = %self.url, "cannot connect: {e}"),
            }
            let delay = jitter(backoff);
            backoff = (backoff * 2).min(self.config.reconnect_max);
            let pause = tokio::time::sleep(delay);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    _ = sleep_past(parked.next_deadline()) => {
                        parked.expire(&self.url, rmb_core::time::now());
                    }
                    _ = self.cancel.cancelled() => return,
                }
            }
        }
    }

    /// A new connection, and whether the relay says that it drops copies.
    async fn connect(&self) -> Result<(Ws, bool), String> {
        let token = jwt::create(
            &self.signer,
            self.twin,
            self.sid.as_deref(),
            rmb_core::time::now(),
            self.config.token_lifetime,
        );
        let url = format!("{}/?{token}", self.url);
        let connecting = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true);
        let result = tokio::select! {
            r = tokio::time::timeout(self.config.connect_timeout, connecting) => r,
            _ = self.cancel.cancelled() => return Err("client shut down".into()),
        };
        match result {
            Ok(Ok((ws, response))) => Ok((ws, drops_copies(response.headers()))),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => Err(format!(
                "relay refused the connection: HTTP {}{}",
                response.status(),
                response
                    .body()
                    .as_deref()
                    .map(|b| format!(" ({})", String::from_utf8_lossy(b)))
                    .unwrap_or_default()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Runs a connected link, first writing `first`; when it breaks, what the relay did
    /// not confirm is sorted into the shared queue and `parked`.
    async fn serve(&self, mut ws: Ws, first: Vec<Outbound>, parked: &mut Parked) -> Ended {
        let mut acks = Acks::default();
        let ended = self.serve_inner(&mut ws, first, &mut acks).await;
        if let Ended::Broken(_) = ended {
            let now = rmb_core::time::now();
            let (anywhere, here): (Vec<_>, Vec<_>) =
                acks.take_all().into_iter().partition(|out| out.copy_safe);
            if !here.is_empty() {
                tracing::info!(
                    relay = %self.url,
                    count = here.len(),
                    "envelopes the relay did not confirm wait for it to come back"
                );
            }
            parked.0.extend(here);
            parked.expire(&self.url, now);
            self.requeue(anywhere);
        }
        ended
    }

    /// Puts frames back in the shared queue, for any link.
    fn requeue(&self, frames: Vec<Outbound>) {
        if frames.is_empty() {
            return;
        }
        tracing::debug!(relay = %self.url, count = frames.len(), "re-queueing envelopes");
        let requeue = self.requeue.clone();
        tokio::spawn(async move {
            for out in frames {
                if requeue.send(out).await.is_err() {
                    break;
                }
            }
        });
    }

    async fn serve_inner(&self, ws: &mut Ws, first: Vec<Outbound>, acks: &mut Acks) -> Ended {
        if !first.is_empty() {
            if let Err(e) = self.write(ws, first, acks).await {
                return Ended::Broken(format!("write failed: {e}"));
            }
            if let Err(e) = self.ack_ping(ws, acks).await {
                return Ended::Broken(format!("ping failed: {e}"));
            }
        }
        let mut last_rx = Instant::now();
        let mut ticker = tokio::time::interval(self.config.ping_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    let _ = ws.close(None).await;
                    return Ended::Cancelled;
                }
                msg = ws.next() => {
                    last_rx = Instant::now();
                    match msg {
                        Some(Ok(WsMessage::Binary(frame))) => {
                            if let Some(uid) = pong_uid(&frame) {
                                if acks.confirm(&uid) {
                                    if let Err(e) = self.ack_ping(ws, acks).await {
                                        return Ended::Broken(format!("ping failed: {e}"));
                                    }
                                }
                                continue;
                            }
                            if self.incoming.send(frame).await.is_err() {
                                return Ended::Cancelled;
                            }
                        }
                        Some(Ok(WsMessage::Close(frame))) => {
                            return Ended::Broken(format!(
                                "closed by the relay{}",
                                frame.map(|f| format!(": {}", f.reason)).unwrap_or_default()
                            ));
                        }
                        Some(Ok(WsMessage::Text(_))) => {
                            tracing::debug!(relay = %self.url, "ignoring a text frame");
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Ended::Broken(e.to_string()),
                        None => return Ended::Broken("connection ended".into()),
                    }
                }
                batch = take_batch(&self.queue) => {
                    let Some(batch) = batch else { return Ended::Cancelled };
                    if let Err(e) = self.write(ws, batch, acks).await {
                        return Ended::Broken(format!("write failed: {e}"));
                    }
                    if let Err(e) = self.ack_ping(ws, acks).await {
                        return Ended::Broken(format!("ping failed: {e}"));
                    }
                }
                _ = ticker.tick() => {
                    if last_rx.elapsed() >= self.config.dead_after {
                        return Ended::Broken(format!(
                            "nothing received for {:?}", last_rx.elapsed()
                        ));
                    }
                    if acks.waiting_longer_than(self.config.dead_after) {
                        return Ended::Broken("the relay does not answer pings".into());
                    }
                    let ping = self.ping();
                    let frames = [
                        WsMessage::Ping(Bytes::new()),
                        WsMessage::Binary(ping.encode_to_vec().into()),
                    ];
                    for frame in frames {
                        if let Err(e) = ws.feed(frame).await {
                            return Ended::Broken(format!("ping failed: {e}"));
                        }
                    }
                    if let Err(e) = ws.flush().await {
                        return Ended::Broken(format!("ping failed: {e}"));
                    }
                }
            }
        }
    }

    fn ping(&self) -> rmb_core::Envelope {
        let source = Address {
            twin: self.twin,
            connection: self.sid.clone(),
        };
        outgoing::ping(
            uuid::Uuid::new_v4().to_string(),
            source,
            rmb_core::time::now(),
        )
    }

    /// When envelopes were written and no confirming ping is out, sends one: its pong
    /// proves the relay read everything written before it.
    async fn ack_ping(
        &self,
        ws: &mut Ws,
        acks: &mut Acks,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        if acks.awaiting.is_some() || acks.unacked.is_empty() {
            return Ok(());
        }
        let ping = self.ping();
        acks.ping_sent(ping.uid.clone());
        ws.send(WsMessage::Binary(ping.encode_to_vec().into()))
            .await
    }

    /// Writes a batch: what was handed to the socket joins the unconfirmed in `acks`;
    /// what expired while queued is failed; after a failed write, what was not handed
    /// to the socket yet goes back in the shared queue.
    async fn write(
        &self,
        ws: &mut Ws,
        batch: Vec<Outbound>,
        acks: &mut Acks,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let now = rmb_core::time::now();
        let mut batch = batch.into_iter();
        while let Some(out) = batch.next() {
            if out.expired(now) {
                tracing::debug!("dropping an outgoing envelope that expired while queued");
                out.settle(Err(Unconfirmed::Expired));
                continue;
            }
            let fed = ws.feed(WsMessage::Binary(out.frame.clone())).await;
            acks.written(out);
            if let Err(e) = fed {
                self.requeue(batch.collect());
                return Err(e);
            }
        }
        ws.flush().await
    }
}

/// Up to 64 queued frames: waits for the first, takes what else is ready. `None` when
/// the queue is closed.
async fn take_batch(queue: &Mutex<mpsc::Receiver<Outbound>>) -> Option<Vec<Outbound>> {
    let mut rx = queue.lock().await;
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < 64 {
        match rx.try_recv() {
            Ok(out) => batch.push(out),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// `delay` scaled by a random factor in [0.5, 1.5).
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(n: u8) -> Outbound {
        Outbound::new(Bytes::from(vec![n]), u64::MAX, false)
    }

    fn tracked(n: u8, deadline: u64) -> (Outbound, oneshot::Receiver<Result<(), Unconfirmed>>) {
        let (tx, rx) = oneshot::channel();
        (
            Outbound::new(Bytes::from(vec![n]), deadline, false).confirmed_to(tx),
            rx,
        )
    }

    #[test]
    fn a_pong_confirms_what_was_written_before_its_ping() {
        let mut acks = Acks::default();
        let (first, mut first_rx) = tracked(1, u64::MAX);
        acks.written(first);
        acks.written(out(2));
        acks.ping_sent("p1".into());
        let (third, mut third_rx) = tracked(3, u64::MAX);
        acks.written(third);
        assert!(!acks.confirm("other"));
        assert!(first_rx.try_recv().is_err(), "not confirmed yet");
        assert!(acks.confirm("p1"));
        assert_eq!(first_rx.try_recv(), Ok(Ok(())));
        assert!(third_rx.try_recv().is_err(), "written after the ping");
        // Only the envelope written after the ping is still unconfirmed.
        let left: Vec<u8> = acks.take_all().iter().map(|o| o.frame[0]).collect();
        assert_eq!(left, vec![3]);
        assert!(acks.take_all().is_empty());
    }

    #[test]
    fn parked_frames_go_again_only_to_a_relay_that_drops_copies() {
        let mut parked = Parked::default();
        let (a, _a_rx) = tracked(1, 100);
        parked.0.push(a);
        assert_eq!(parked.next_deadline(), Some(100));
        let again = parked.release("ws://r", true);
        assert_eq!(again.len(), 1);
        assert!(parked.0.is_empty());

        let (b, mut b_rx) = tracked(2, 100);
        parked.0.push(b);
        assert!(parked.release("ws://r", false).is_empty());
        assert_eq!(
            b_rx.try_recv(),
            Ok(Err(Unconfirmed::MaybeDelivered {
                relay: "ws://r".into(),
                why: NotResent::RelayKeepsCopies
            }))
        );
    }

    #[test]
    fn parked_frames_that_expire_are_failed() {
        let mut parked = Parked::default();
        let (old, mut old_rx) = tracked(1, 100);
        let (live, mut live_rx) = tracked(2, 200);
        parked.0.extend([old, live]);
        parked.expire("ws://r", 100);
        assert_eq!(
            old_rx.try_recv(),
            Ok(Err(Unconfirmed::MaybeDelivered {
                relay: "ws://r".into(),
                why: NotResent::Expired
            }))
        );
        assert!(live_rx.try_recv().is_err());
        assert_eq!(parked.next_deadline(), Some(200));
        // Dropped unsettled (shutdown): the sender hears that the client closed.
        drop(parked);
        assert!(live_rx
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed));
    }

    #[test]
    fn the_dedup_header_must_say_1() {
        use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue};
        let mut headers = HeaderMap::new();
        assert!(!drops_copies(&headers));
        headers.insert(DEDUP_HEADER, HeaderValue::from_static("0"));
        assert!(!drops_copies(&headers));
        headers.insert(DEDUP_HEADER, HeaderValue::from_static(" 1"));
        assert!(drops_copies(&headers));
    }

    #[test]
    fn pongs_are_recognised_by_header() {
        let pong = rmb_core::Envelope {
            uid: "u-7".into(),
            message: Some(rmb_core::proto::Message::Pong(rmb_core::proto::Pong {})),
            ..Default::default()
        };
        assert_eq!(
            pong_uid(&pong.encode_to_vec().into()).as_deref(),
            Some("u-7")
        );
        let ping = outgoing::ping("u-8", Address::twin(1), 5);
        assert_eq!(pong_uid(&ping.encode_to_vec().into()), None);
    }

    #[test]
    fn jitter_stays_within_half_either_way() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d < Duration::from_millis(1500));
        }
    }
}
