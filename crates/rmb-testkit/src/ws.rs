//! A raw WebSocket twin: hand-made envelopes and bytes to a relay, exactly as given.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rmb_core::prost::Message as _;
use rmb_core::proto::Message;
use rmb_core::Envelope;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest [`RawConn`] waits for the relay before failing the test.
pub const RAW_WAIT: Duration = Duration::from_secs(15);

/// A WebSocket connection to a relay, authenticated by whatever token it was given.
pub struct RawConn {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a relay answered a connection attempt that it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub body: String,
}

impl RawConn {
    /// Connects to `relay` with `query` (the JWT) as the whole query string.
    pub async fn connect(relay: SocketAddr, query: &str) -> Result<Self, tungstenite::Error> {
        let url = format!("ws://{relay}/?{query}");
        // Frames as large as the largest message: relays write a message as one frame.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(rmb_core::rules::MAX_MESSAGE_SIZE))
            .max_frame_size(Some(rmb_core::rules::MAX_MESSAGE_SIZE));
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(config), false).await?;
        Ok(RawConn { ws })
    }

    /// Connects and expects a refusal before the upgrade; panics if accepted or if the
    /// attempt fails some other way.
    pub async fn refused(relay: SocketAddr, query: &str) -> Refusal {
        match Self::connect(relay, query).await {
            Err(tungstenite::Error::Http(response)) => Refusal {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            },
            Err(e) => panic!("expected an HTTP refusal, got {e}"),
            Ok(_) => panic!("the connection was accepted"),
        }
    }

    pub async fn send(&mut self, env: &Envelope) {
        self.send_bytes(env.encode_to_vec()).await.unwrap();
    }

    /// Sends one binary frame; fails if the relay already closed the connection.
    pub async fn send_bytes(&mut self, data: Vec<u8>) -> Result<(), tungstenite::Error> {
        self.ws.send(WsMessage::Binary(data.into())).await
    }

    /// The next envelope that is not a pong; fails the test after [`RAW_WAIT`].
    pub async fn recv(&mut self) -> Envelope {
        loop {
            let msg = tokio::time::timeout(RAW_WAIT, self.ws.next())
                .await
                .expect("timed out waiting for an envelope")
                .expect("connection ended")
                .expect("websocket error");
            if let WsMessage::Binary(data) = msg {
                let env = Envelope::decode(&data[..]).expect("the relay sent a valid envelope");
                if !matches!(env.message, Some(Message::Pong(_))) {
                    return env;
                }
            }
        }
    }

    /// Waits for the relay to end the connection: its close frame, or `None` if the
    /// connection just ended (reset or closed without a frame).
    pub async fn recv_close(&mut self) -> Option<CloseFrame> {
        loop {
            let msg = tokio::time::timeout(RAW_WAIT, self.ws.next())
                .await
                .expect("timed out waiting for the relay to close the connection");
            match msg {
                Some(Ok(WsMessage::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}
