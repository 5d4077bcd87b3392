//! What every handler shares.

use std::sync::Arc;

use artifacts_runtime::{Nats, Settings};

use crate::auth::Keys;

#[derive(Clone)]
pub struct AppState {
    pub nats: Nats,
    pub settings: Arc<Settings>,
    pub keys: Arc<Keys>,
}
