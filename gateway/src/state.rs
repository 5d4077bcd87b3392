//! What every handler shares.

use std::sync::Arc;

use tokio::sync::Semaphore;

use artifacts_runtime::{Nats, Settings};

use crate::auth::Keys;
use crate::routes::registry::TokenSigner;

#[derive(Clone)]
pub struct AppState {
    /// Shared, not cloned: axum clones the state for every extractor that takes it, and a `Nats` holds
    /// every store's stream description.
    pub nats: Arc<Nats>,
    pub settings: Arc<Settings>,
    pub keys: Arc<Keys>,
    /// KiB of webhook bodies that may be held at once (`routes::hooks`).
    pub webhook_bodies: Arc<Semaphore>,
    /// Signs registry tokens when `registry.token_key_file` is set.
    pub registry_tokens: Option<Arc<TokenSigner>>,
}
