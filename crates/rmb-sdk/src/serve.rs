//! Serving: handlers registered by command name.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::RwLock;
use rmb_core::Address;

use crate::error::HandlerError;
use crate::incoming::{Incoming, Kind};

/// A request as a handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The envelope uid (the reply carries it back).
    pub uid: String,
    /// Who sent it (twin and session).
    pub source: Address,
    /// The command it asks for.
    pub command: String,
    /// The decrypted body.
    pub payload: Vec<u8>,
    /// The schema the sender declared for the body.
    pub schema: Option<String>,
    /// The sender's tags.
    pub tags: Option<String>,
    /// When it was sent (unix seconds).
    pub timestamp: u64,
    /// Seconds of life from `timestamp`: the caller stops waiting after that.
    pub expiration: u64,
}

impl Request {
    /// Converts a verified incoming request; `None` for replies.
    pub fn from_incoming(incoming: Incoming) -> Option<Self> {
        let Kind::Request { command } = incoming.kind else {
            return None;
        };
        Some(Request {
            uid: incoming.uid,
            source: incoming.source,
            command,
            payload: incoming.payload,
            schema: incoming.schema,
            tags: incoming.tags,
            timestamp: incoming.timestamp,
            expiration: incoming.expiration,
        })
    }
}

/// What a handler future resolves to.
pub type HandlerResult = Result<Vec<u8>, HandlerError>;

type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A type-erased handler.
pub(crate) type Handler = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;

/// Handlers by command.
#[derive(Default)]
pub(crate) struct Registry {
    handlers: RwLock<HashMap<String, Handler>>,
}

impl Registry {
    pub(crate) fn insert<F, Fut>(&self, command: impl Into<String>, handler: F)
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        self.handlers.write().insert(command.into(), handler);
    }

    pub(crate) fn remove(&self, command: &str) -> bool {
        self.handlers.write().remove(command).is_some()
    }

    pub(crate) fn get(&self, command: &str) -> Option<Handler> {
        self.handlers.read().get(command).cloned()
    }
}
