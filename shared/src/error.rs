//! Errors of the storage layer.

/// What went wrong talking to Redis, split the way callers must react to it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused the call before running it: it cannot be reached, is
    /// loading, read-only or out of memory. Nothing was written. Transient: the
    /// API answers 503, the worker backs off and tries again.
    #[error("redis unavailable: {0}")]
    Unavailable(redis::RedisError),
    /// The call was sent but its reply never came (a timeout, a connection lost
    /// after sending): it may have run, or may still run. Transient, like
    /// `Unavailable`, but a write must not be reported as not done.
    #[error("redis reply lost: {0}")]
    OutcomeUnknown(redis::RedisError),
    /// The write is in Redis's memory, but not on as many replicas (or not on the
    /// local disk) as the enqueue must wait for, within its timeout.
    #[error("stored, but confirmed on {replicas} of {wanted} replicas{aof} within the wait")]
    NotDurable { replicas: u32, wanted: u32, aof: &'static str },
    /// This Redis cannot do what the configuration asks of it.
    #[error("{0}")]
    Unsupported(String),
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
    /// Redis is away or refusing work for now, whether or not the call ran.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::OutcomeUnknown(_))
    }

    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Self::OutcomeUnknown(_))
    }
}

impl From<redis::RedisError> for StoreError {
    /// Sorts an error by what it says about the call: refused before it ran (a
    /// refused connection is one the call never went out on; a server refusal
    /// comes before a script's first write), or sent with its fate unknown. When
    /// in doubt, unknown: a write is never reported undone when it may be done.
    fn from(err: redis::RedisError) -> Self {
        let refused = err.is_connection_refusal()
            || err.code() == Some("OOM")
            || matches!(
                err.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            );
        let lost = err.is_io_error() || err.is_timeout() || err.is_connection_dropped() || err.is_unrecoverable_error();
        if refused {
            Self::Unavailable(err)
        } else if lost {
            Self::OutcomeUnknown(err)
        } else {
            Self::Redis(err)
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
