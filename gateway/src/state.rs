//! What every handler shares.

use std::sync::Arc;

use artifacts_runtime::{Nats, Settings};

use crate::auth::Keys;
use crate::metrics::Metrics;
use crate::routes::registry::TokenSigner;

#[derive(Clone)]
pub struct AppState {
    pub nats: Nats,
    pub settings: Arc<Settings>,
    pub keys: Arc<Keys>,
    pub metrics: Arc<Metrics>,
    /// Signs registry tokens when `registry.token_key_file` is set.
    pub registry_tokens: Option<Arc<TokenSigner>>,
}
