//! Caps on what one API instance holds for event clients: connections in all
//! (`WS_MAX_CONNECTIONS`), connections per tenant (`WS_MAX_PER_TENANT`) and
//! replays per tenant (`EVENTS_REPLAYS_PER_TENANT`).
//!
//! A ticket is taken before the upgrade, so a refused client gets a status
//! code rather than a socket, and gives its place back when dropped, however
//! the connection ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::ApiError;

/// The caps and what is in use. Cheap to clone.
#[derive(Clone)]
pub struct Limits {
    inner: Arc<Inner>,
}

struct Inner {
    max_connections: usize,
    max_per_tenant: usize,
    replays_per_tenant: usize,
    used: Mutex<Used>,
}

#[derive(Default)]
struct Used {
    connections: usize,
    by_tenant: HashMap<String, TenantUse>,
}

#[derive(Default)]
struct TenantUse {
    connections: usize,
    replays: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connection,
    Replay,
}

/// A place held until dropped.
pub struct Ticket {
    limits: Limits,
    tenant: String,
    kind: Kind,
}

impl Limits {
    pub fn new(max_connections: usize, max_per_tenant: usize, replays_per_tenant: usize) -> Self {
        Self { inner: Arc::new(Inner { max_connections, max_per_tenant, replays_per_tenant, used: Mutex::default() }) }
    }

    /// A place for one more connection of `tenant`.
    pub fn connect(&self, tenant: &str) -> Result<Ticket, ApiError> {
        let mut used = self.used();
        if used.connections >= self.inner.max_connections {
            return Err(ApiError::TooManyConnections {
                message: format!(
                    "this API instance holds its {} event connections (WS_MAX_CONNECTIONS); retry shortly or elsewhere",
                    self.inner.max_connections
                ),
                per_tenant: false,
            });
        }
        let tenant_use = used.by_tenant.entry(tenant.to_owned()).or_default();
        if tenant_use.connections >= self.inner.max_per_tenant {
            return Err(ApiError::TooManyConnections {
                message: format!(
                    "your tenant holds {} event connections on this API instance (WS_MAX_PER_TENANT); close one first",
                    self.inner.max_per_tenant
                ),
                per_tenant: true,
            });
        }
        tenant_use.connections += 1;
        used.connections += 1;
        Ok(self.ticket(tenant, Kind::Connection))
    }

    /// A place for one more replay of `tenant`.
    pub fn replay(&self, tenant: &str) -> Result<Ticket, ApiError> {
        let mut used = self.used();
        let tenant_use = used.by_tenant.entry(tenant.to_owned()).or_default();
        if tenant_use.replays >= self.inner.replays_per_tenant {
            return Err(ApiError::TooManyReplays(self.inner.replays_per_tenant));
        }
        tenant_use.replays += 1;
        Ok(self.ticket(tenant, Kind::Replay))
    }

    fn ticket(&self, tenant: &str, kind: Kind) -> Ticket {
        Ticket { limits: self.clone(), tenant: tenant.to_owned(), kind }
    }

    fn used(&self) -> MutexGuard<'_, Used> {
        self.inner.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut used = self.limits.used();
        if self.kind == Kind::Connection {
            used.connections -= 1;
        }
        if let Some(tenant_use) = used.by_tenant.get_mut(&self.tenant) {
            match self.kind {
                Kind::Connection => tenant_use.connections -= 1,
                Kind::Replay => tenant_use.replays -= 1,
            }
            if tenant_use.connections == 0 && tenant_use.replays == 0 {
                used.by_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_come_back_when_tickets_drop() {
        let limits = Limits::new(3, 2, 1);
        let a1 = limits.connect("a").unwrap();
        let _a2 = limits.connect("a").unwrap();
        assert!(matches!(limits.connect("a"), Err(ApiError::TooManyConnections { per_tenant: true, .. })));
        let _b1 = limits.connect("b").unwrap();
        assert!(matches!(limits.connect("c"), Err(ApiError::TooManyConnections { per_tenant: false, .. })));
        drop(a1);
        let _c1 = limits.connect("c").unwrap();

        let replay = limits.replay("a").unwrap();
        assert!(matches!(limits.replay("a"), Err(ApiError::TooManyReplays(1))));
        let _other = limits.replay("b").unwrap();
        drop(replay);
        let _again = limits.replay("a").unwrap();
    }

    #[test]
    fn a_tenant_with_nothing_open_leaves_no_entry() {
        let limits = Limits::new(10, 10, 10);
        drop((limits.connect("a").unwrap(), limits.replay("a").unwrap()));
        assert!(limits.used().by_tenant.is_empty());
        assert_eq!(limits.used().connections, 0);
    }
}
