//! Redis schema migrations: the numbered Lua files in `migrations/`, applied in
//! order, each exactly once, and recorded with a checksum.
//!
//! A process applies them at start-up (and `api migrate` / `worker migrate` on
//! demand) under a lock, so concurrent starts apply each once. A migration and
//! its record are written by one script, so a crash cannot separate them. A
//! process refuses to start against a schema newer than it knows.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::error::{StoreError, StoreResult};
use crate::keys::Keys;

/// One migration: its file name and source.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub source: &'static str,
}

/// Every migration this binary carries, oldest first. Never edit one: add a new file.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "0001_init", source: include_str!("../../migrations/0001_init.lua") },
    Migration {
        version: 2,
        name: "0002_tenant_counts",
        source: include_str!("../../migrations/0002_tenant_counts.lua"),
    },
    Migration {
        version: 3,
        name: "0003_short_event_lines",
        source: include_str!("../../migrations/0003_short_event_lines.lua"),
    },
    Migration {
        version: 4,
        name: "0004_fencing_tokens",
        source: include_str!("../../migrations/0004_fencing_tokens.lua"),
    },
    Migration { version: 5, name: "0005_fair_queues", source: include_str!("../../migrations/0005_fair_queues.lua") },
];

/// The schema version this binary expects.
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

fn checksum(source: &str) -> String {
    hex::encode(Sha256::digest(source.as_bytes()))
}

/// Wraps a migration so that it runs and records itself in one script.
/// ARGV: tag, migrations hash, name, checksum, version key, version.
fn recording_script(source: &str) -> redis::Script {
    redis::Script::new(&format!(
        "local function migrate(ARGV)\n{source}\nend\n\
         migrate({{ARGV[1]}})\n\
         redis.call('HSET', ARGV[2], ARGV[3], ARGV[4])\n\
         redis.call('SET', ARGV[5], ARGV[6])\n\
         return 1"
    ))
}

/// The schema version recorded in Redis (0 when none).
pub async fn current(conn: &mut ConnectionManager, keys: &Keys) -> StoreResult<u32> {
    let version: Option<u32> = conn.get(keys.schema_version()).await?;
    Ok(version.unwrap_or(0))
}

/// Fails unless the schema is exactly at [`latest`].
pub async fn check(conn: &mut ConnectionManager, keys: &Keys) -> StoreResult<()> {
    let found = current(conn, keys).await?;
    match found.cmp(&latest()) {
        std::cmp::Ordering::Greater => Err(StoreError::SchemaTooNew { found, known: latest() }),
        std::cmp::Ordering::Less => Err(StoreError::SchemaBehind { found, needed: latest() }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Applies every pending migration under the lock. Returns the names applied.
pub async fn run(conn: &mut ConnectionManager, keys: &Keys) -> StoreResult<Vec<&'static str>> {
    let token = uuid::Uuid::now_v7().to_string();
    let lock_ttl = Duration::from_secs(30);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let acquired: Option<String> = redis::cmd("SET")
            .arg(keys.migrations_lock())
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(lock_ttl.as_millis() as u64)
            .query_async(conn)
            .await?;
        if acquired.is_some() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(StoreError::Corrupt("the migrations lock has been held for over a minute".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = apply_pending(conn, keys).await;
    let _: StoreResult<i64> = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
    .key(keys.migrations_lock())
    .arg(&token)
    .invoke_async(conn)
    .await
    .map_err(StoreError::from);
    result
}

async fn apply_pending(conn: &mut ConnectionManager, keys: &Keys) -> StoreResult<Vec<&'static str>> {
    let found = current(conn, keys).await?;
    if found > latest() {
        return Err(StoreError::SchemaTooNew { found, known: latest() });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let sum = checksum(migration.source);
        let recorded: Option<String> = conn.hget(keys.migrations(), migration.name).await?;
        match recorded {
            Some(previous) if previous != sum => {
                return Err(StoreError::MigrationEdited { name: migration.name.into() });
            }
            Some(_) => continue,
            None => {}
        }
        let _: i64 = recording_script(migration.source)
            .key(keys.migrations())
            .arg(keys.tag())
            .arg(keys.migrations())
            .arg(migration.name)
            .arg(&sum)
            .arg(keys.schema_version())
            .arg(migration.version)
            .invoke_async(conn)
            .await?;
        tracing::info!(migration = migration.name, "applied migration");
        applied.push(migration.name);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1);
            assert!(migration.name.starts_with(&format!("{:04}_", migration.version)));
        }
    }
}
