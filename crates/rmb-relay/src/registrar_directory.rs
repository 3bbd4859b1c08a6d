//! The production [`TwinDirectory`]: the registrar, through its caching client.

use std::sync::Arc;

use async_trait::async_trait;
use rmb_registrar_client::{ClientError, RegistrarClient};

use crate::directory::{DirectoryError, TwinDirectory, TwinRecord};

pub struct RegistrarDirectory {
    client: RegistrarClient,
}

impl RegistrarDirectory {
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(RegistrarDirectory {
            client: RegistrarClient::new(base_url)?,
        })
    }

    pub fn from_client(client: RegistrarClient) -> Self {
        RegistrarDirectory { client }
    }
}

#[async_trait]
impl TwinDirectory for RegistrarDirectory {
    fn cached(&self, twin_id: u32) -> Option<Option<Arc<TwinRecord>>> {
        Some(self.client.cached_twin(twin_id)?.map(|t| record(&t)))
    }

    async fn twin(&self, twin_id: u32) -> Result<Option<Arc<TwinRecord>>, DirectoryError> {
        let twin = self
            .client
            .get_twin(twin_id)
            .await
            .map_err(|e| DirectoryError(e.to_string()))?;
        Ok(twin.map(|t| record(&t)))
    }

    async fn fresh_twin(&self, twin_id: u32) -> Result<Option<Arc<TwinRecord>>, DirectoryError> {
        self.client.invalidate(twin_id);
        self.twin(twin_id).await
    }
}

fn record(twin: &rmb_registrar_client::Twin) -> Arc<TwinRecord> {
    Arc::new(TwinRecord {
        public_key: twin.public_key,
        relays: twin.relays.clone(),
    })
}
