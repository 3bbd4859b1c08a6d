//! A stranger's relay, played by the test: the client under test connects to it like
//! to any relay, and the test decides every frame it is sent (forged, shifted, from
//! twins that do not exist, in floods) and sees every frame it writes. The relay
//! answers envelope pings with pongs, so the client's links stay healthy; nothing else
//! is checked or routed.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rmb_core::prost::Message as _;
use rmb_core::proto::{Message, Pong};
use rmb_core::Envelope;
use tokio::sync::{mpsc, Mutex};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::WAIT;

pub(crate) struct HostileRelay {
    addr: SocketAddr,
    to_client: mpsc::Sender<Vec<u8>>,
    from_client: mpsc::Receiver<Envelope>,
}

impl HostileRelay {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (to_client, outgoing) = mpsc::channel::<Vec<u8>>(16);
        let outgoing = Arc::new(Mutex::new(outgoing));
        let (seen, from_client) = mpsc::channel(100_000);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (outgoing, seen) = (outgoing.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let (mut tx, mut rx) = ws.split();
                    let mut outgoing = outgoing.lock().await;
                    loop {
                        tokio::select! {
                            frame = outgoing.recv() => {
                                let Some(frame) = frame else { return };
                                if tx.send(WsMessage::Binary(frame.into())).await.is_err() {
                                    return;
                                }
                            }
                            msg = rx.next() => {
                                let Some(Ok(msg)) = msg else { return };
                                let WsMessage::Binary(data) = msg else { continue };
                                let Ok(env) = Envelope::decode(&data[..]) else { continue };
                                if matches!(env.message, Some(Message::Ping(_))) {
                                    let pong = Envelope {
                                        uid: env.uid,
                                        message: Some(Message::Pong(Pong {})),
                                        ..Default::default()
                                    };
                                    let pong = WsMessage::Binary(pong.encode_to_vec().into());
                                    if tx.send(pong).await.is_err() {
                                        return;
                                    }
                                } else if seen.send(env).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        HostileRelay {
            addr,
            to_client,
            from_client,
        }
    }

    /// `ws://<addr>`, for the client's relay list.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Sends `frame` to the connected client (waits while the client does not read).
    pub(crate) async fn inject(&self, frame: Vec<u8>) {
        self.to_client.send(frame).await.unwrap();
    }

    /// Sends an envelope to the connected client.
    pub(crate) async fn inject_envelope(&self, env: &Envelope) {
        self.inject(env.encode_to_vec()).await;
    }

    /// The next envelope the client wrote (pings are answered, not returned).
    pub(crate) async fn recv(&mut self) -> Envelope {
        tokio::time::timeout(WAIT, self.from_client.recv())
            .await
            .expect("timed out waiting for the client to write")
            .expect("the relay stopped")
    }

    /// The next envelope the client wrote with `uid`, skipping others.
    pub(crate) async fn recv_uid(&mut self, uid: &str) -> Envelope {
        loop {
            let env = self.recv().await;
            if env.uid == uid {
                return env;
            }
        }
    }
}
