//! The baseline: the least a WebSocket relay can do. Clients connect with `?s<i>` or
//! `?r<i>`; every binary frame from `s<i>` is written to `r<i>` as is. No auth, no
//! decoding, no routing table beyond one map lookup, same runtime and WebSocket stack
//! (axum) as the relay.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

type Peers = Arc<DashMap<String, mpsc::Sender<bytes::Bytes>>>;

pub(crate) async fn serve(listen: &str) -> anyhow::Result<()> {
    let peers: Peers = Arc::default();
    let app = Router::new().route("/", get(upgrade)).with_state(peers);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("ready {}", listener.local_addr()?);
    // Same socket options as the relay.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

async fn upgrade(
    State(peers): State<Peers>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let name = q.unwrap_or_default();
    ws.on_upgrade(move |socket| session(socket, name, peers))
}

async fn session(socket: WebSocket, name: String, peers: Peers) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(1024);
    peers.insert(name.clone(), tx);
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::Binary(first)).await.is_err() {
                return;
            }
            while let Ok(next) = rx.try_recv() {
                if sink.feed(Message::Binary(next)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let target = name.replacen('s', "r", 1);
    while let Some(Ok(msg)) = stream.next().await {
        if let Message::Binary(data) = msg {
            let tx = peers.get(&target).map(|t| t.clone());
            if let Some(tx) = tx {
                let _ = tx.send(data).await;
            }
        }
    }
    peers.remove(&name);
    writer.abort();
}
