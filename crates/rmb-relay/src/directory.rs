//! Who a twin is, as far as the relay cares: its signing key and its relays. The relay
//! asks through this trait so routing can be unit-tested and so the registrar client
//! (with its cache) is plugged in at one place.

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;

/// The registrar's record of a twin, reduced to what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinRecord {
    pub public_key: [u8; 32],
    pub relays: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("registrar unavailable: {0}")]
pub struct DirectoryError(pub String);

#[async_trait]
pub trait TwinDirectory: Send + Sync + 'static {
    /// `Ok(None)` when the twin is not registered.
    async fn twin(&self, twin_id: u32) -> Result<Option<Arc<TwinRecord>>, DirectoryError>;

    /// The twin as the registrar has it now, not from a cache (which it refreshes).
    /// What [`twin`](Self::twin) would answer, if it can answer at once (the record, or
    /// the twin's absence, is cached); `None`: only a lookup that waits can tell.
    fn cached(&self, twin_id: u32) -> Option<Option<Arc<TwinRecord>>>;

    async fn fresh_twin(&self, twin_id: u32) -> Result<Option<Arc<TwinRecord>>, DirectoryError> {
        self.twin(twin_id).await
    }
}

/// A fixed in-process directory: for embedding a relay in a program that already knows
/// its twins, and for unit tests of routing.
#[derive(Default)]
pub struct StaticDirectory {
    twins: DashMap<u32, Arc<TwinRecord>>,
}

impl StaticDirectory {
    pub fn insert(&self, twin_id: u32, record: TwinRecord) {
        self.twins.insert(twin_id, Arc::new(record));
    }
}

#[async_trait]
impl TwinDirectory for StaticDirectory {
    fn cached(&self, twin_id: u32) -> Option<Option<Arc<TwinRecord>>> {
        Some(self.twins.get(&twin_id).map(|r| r.clone()))
    }

    async fn twin(&self, twin_id: u32) -> Result<Option<Arc<TwinRecord>>, DirectoryError> {
        Ok(self.twins.get(&twin_id).map(|r| r.clone()))
    }
}
