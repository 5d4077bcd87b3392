//! What can go wrong with the state, by type: callers branch on the kind, never on a message, and turn
//! it into an HTTP or NATS answer only at the edge (`From<StoreError> for RequestError`).

use artifacts_schemas::RequestError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// JetStream did not answer, or answered that it cannot serve now: transient, retried by whoever can
    /// wait (a worker), a 503 for whoever cannot (a client). Never counts as a build attempt.
    #[error("JetStream is unavailable: {0}")]
    Unavailable(String),
    /// The write contradicts what is stored (a moved tag, a repository another component holds, a
    /// compare-and-set that kept losing).
    #[error("{0}")]
    Conflict(String),
    /// Nothing is stored under that name.
    #[error("{0}")]
    NotFound(String),
    /// What is stored cannot be read: a fault of the store, never of the request.
    #[error("{0}")]
    Corrupt(String),
    /// The request names something in a form the store cannot take (a cursor not from an earlier answer).
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub fn unavailable(err: impl std::fmt::Display) -> Self {
        Self::Unavailable(err.to_string())
    }

    pub fn corrupt(key: &str, err: impl std::fmt::Display) -> Self {
        Self::Corrupt(format!("stored record {key} is unreadable: {err}"))
    }

    /// Whether waiting and trying again may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<StoreError> for RequestError {
    fn from(err: StoreError) -> Self {
        use artifacts_schemas::Failure;
        let failure = match &err {
            StoreError::Unavailable(_) => Failure::Unavailable,
            StoreError::Conflict(_) => Failure::Conflict,
            StoreError::NotFound(_) => Failure::NotFound,
            StoreError::Corrupt(_) => Failure::Internal,
            StoreError::Invalid(_) => Failure::Invalid,
        };
        RequestError::new(failure, err.to_string())
    }
}
