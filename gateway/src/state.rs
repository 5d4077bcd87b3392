//! What every handler shares.

use std::sync::Arc;

use artifacts_runtime::{Nats, Settings};

use crate::auth::Keys;
use crate::routes::registry::TokenSigner;
use crate::webhook_body::Budgets;

#[derive(Clone)]
pub struct AppState {
    /// Shared, not cloned: axum clones the state for every extractor that takes it, and a `Nats` holds
    /// every store's stream description.
    pub nats: Arc<Nats>,
    pub settings: Arc<Settings>,
    pub keys: Arc<Keys>,
    /// What webhook deliveries being read hold, in total and per sender (`webhook_body`).
    pub webhook_bodies: Arc<Budgets>,
    /// Signs registry tokens when `registry.token_key_file` is set.
    pub registry_tokens: Option<Arc<TokenSigner>>,
}
