//! What every handler shares.

use std::sync::Arc;

use artifacts_runtime::{Nats, Settings};

use crate::auth::Keys;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub nats: Nats,
    pub settings: Arc<Settings>,
    pub keys: Arc<Keys>,
    pub metrics: Arc<Metrics>,
}
