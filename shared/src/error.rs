//! Errors of the storage layer.

/// What went wrong talking to Redis, split the way callers must react to it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached, is loading, is out of memory, or did not answer in
    /// time. Transient: the API answers 503, the worker backs off and tries again.
    #[error("redis unavailable: {0}")]
    Unavailable(redis::RedisError),
    /// Redis answered with an error the system did not expect (a script error, a wrong type).
    #[error("redis error: {0}")]
    Redis(redis::RedisError),
    /// Redis answered, but with data this version cannot read.
    #[error("unexpected data in redis: {0}")]
    Corrupt(String),
    /// The Redis schema is newer than this binary knows: upgrade the binary.
    #[error("the redis schema is at version {found}, newer than the {known} this binary knows; upgrade it")]
    SchemaTooNew { found: u32, known: u32 },
    /// The Redis schema has not been migrated to the version this binary needs.
    #[error("the redis schema is at version {found}, this binary needs {needed}; run `migrate`")]
    SchemaBehind { found: u32, needed: u32 },
    /// An applied migration differs from the one this binary carries.
    #[error("migration {name} was applied with a different checksum; migrations must never be edited")]
    MigrationEdited { name: String },
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(err: redis::RedisError) -> Self {
        let transient = err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error()
            || err.code() == Some("OOM")
            || matches!(
                err.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            );
        if transient { Self::Unavailable(err) } else { Self::Redis(err) }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
