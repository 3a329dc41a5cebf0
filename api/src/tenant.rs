//! The tenant a request acts for. Every record, index and idempotency key is
//! scoped by it; until authentication lands every request acts for `default`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

pub const DEFAULT_TENANT: &str = "default";

/// Extracts the caller's tenant.
pub struct Tenant(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(DEFAULT_TENANT.to_owned()))
    }
}
