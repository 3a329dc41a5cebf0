//! Paging through a tenant's index, newest first, with filters.

use redis::AsyncCommands;

use super::{JobPage, JobStore, ListFilter, Payloads};
use crate::error::StoreResult;

/// Most index entries a listing examines per request, so a filter that matches
/// little cannot make one request scan everything.
const LIST_SCAN_BUDGET: usize = 2_000;

impl JobStore {
    /// A page of `tenant`'s jobs, newest first. The cursor is opaque to clients.
    pub async fn list(
        &self,
        tenant: &str,
        filter: &ListFilter,
        limit: usize,
        cursor: Option<&str>,
        payloads: Payloads,
    ) -> StoreResult<JobPage> {
        let index = self.keys.tenant_jobs(tenant);
        let mut conn = self.conn.clone();
        let mut position = cursor.and_then(Cursor::parse);
        let mut jobs = Vec::new();
        let mut examined = 0;
        let page = 200;
        loop {
            let max = position.as_ref().map_or("+inf".to_owned(), |c| c.score.to_string());
            let entries: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(&max)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(page)
                .query_async(&mut conn)
                .await?;
            let fresh: Vec<(String, f64)> = entries
                .into_iter()
                .filter(|(id, score)| position.as_ref().is_none_or(|c| c.is_after(id, *score)))
                .collect();
            if fresh.is_empty() {
                return Ok(JobPage { jobs, next_cursor: None });
            }
            let ids: Vec<String> = fresh.iter().map(|(id, _)| id.clone()).collect();
            let records = self.records(&ids, payloads).await?;
            let mut gone = Vec::new();
            for ((id, score), found) in fresh.iter().zip(records) {
                examined += 1;
                position = Some(Cursor { score: *score, id: id.clone() });
                match found {
                    None => gone.push(id.clone()),
                    Some((record, _)) if filter.matches(&record) => jobs.push(record),
                    Some(_) => {}
                }
                if jobs.len() == limit {
                    break;
                }
            }
            if !gone.is_empty() {
                let _: () = conn.zrem(&index, gone).await?;
            }
            if jobs.len() == limit || examined >= LIST_SCAN_BUDGET {
                return Ok(JobPage { jobs, next_cursor: position.map(|c| c.encode()) });
            }
        }
    }
}

/// Position in a tenant's index: the last entry returned. Entries are ordered by
/// score, then id, both descending (as ZREVRANGEBYSCORE returns them).
#[derive(Debug, Clone, PartialEq)]
struct Cursor {
    score: f64,
    id: String,
}

/// Whether `text` is a cursor a listing could have returned.
pub fn valid_cursor(text: &str) -> bool {
    Cursor::parse(text).is_some()
}

impl Cursor {
    fn parse(text: &str) -> Option<Self> {
        let (score, id) = text.split_once('.')?;
        let score: f64 = score.parse().ok()?;
        score.is_finite().then(|| Self { score, id: id.to_owned() })
    }

    fn encode(&self) -> String {
        format!("{}.{}", self.score as i64, self.id)
    }

    fn is_after(&self, id: &str, score: f64) -> bool {
        score < self.score || (score == self.score && id < self.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_orders_by_score_then_id_descending() {
        let c = Cursor { score: 10.0, id: "m".into() };
        assert!(c.is_after("z", 9.0));
        assert!(c.is_after("a", 10.0));
        assert!(!c.is_after("m", 10.0));
        assert!(!c.is_after("z", 10.0));
        assert_eq!(Cursor::parse(&c.encode()), Some(c));
    }
}
