//! Commands on single records and listings: `get`, `list`, `enqueue TYPE`, `cancel`, `retry`.

use serde_json::{Map, Value, json};

use super::client::Client;
use super::failure::Failure;
use super::print::{Table, cell, key_values};
use super::{EnqueueArgs, IdArgs, ListArgs};

/// Record fields in the order a person reads them; any others follow, sorted.
const FIELD_ORDER: &[&str] = &[
    "id",
    "type",
    "queue",
    "status",
    "attempts",
    "tenant",
    "created_at",
    "scheduled_at",
    "started_at",
    "finished_at",
    "timeout_ms",
    "cancel_requested",
    "last_error",
    "payload",
    "result",
];

/// `jobs get ID`: the record (with `--json`, as the API sent it), then its history.
pub async fn get(client: &Client, args: &IdArgs) -> Result<(), Failure> {
    let answer = client.get(&["v1", "jobs", &args.id], &[]).await?;
    if client.json {
        println!("{}", answer.body.trim_end());
        return Ok(());
    }
    let record = answer.json()?;
    let history = client.get(&["v1", "jobs", &args.id, "events"], &[]).await?.json()?;
    println!("{}", describe(&record, &history));
    Ok(())
}

fn describe(record: &Value, history: &Value) -> String {
    let empty = Map::new();
    let fields = record.as_object().unwrap_or(&empty);
    let mut pairs = Vec::new();
    let others = fields.keys().filter(|key| !FIELD_ORDER.contains(&key.as_str()) && *key != "max_attempts");
    for key in FIELD_ORDER.iter().copied().chain(others.map(String::as_str)) {
        let Some(value) = fields.get(key) else { continue };
        let shown = match key {
            "attempts" => format!("{} of {}", cell(value), fields.get("max_attempts").map(cell).unwrap_or_default()),
            _ => cell(value),
        };
        pairs.push((key.to_owned(), shown));
    }
    let mut out = key_values(&pairs);
    out.push_str("\nhistory");
    let mut table = Table::new(&["  AT", "STATUS", "ATTEMPT>", "ERROR"]);
    for event in history.get("events").and_then(Value::as_array).into_iter().flatten() {
        let text = |name: &str| event.get(name).map(cell).unwrap_or_else(|| "-".to_owned());
        let error = event.get("error").and_then(Value::as_str).unwrap_or_default().to_owned();
        table.row(vec![format!("  {}", text("at")), text("status"), text("attempt"), error]);
    }
    out.push('\n');
    out.push_str(&table.render());
    if let Some(dropped) = history.get("dropped").and_then(Value::as_u64).filter(|dropped| *dropped > 0) {
        out.push_str(&format!("\n  ({dropped} older transitions no longer kept)"));
    }
    out
}

/// `jobs list`: one page, or every page with `--all`.
pub async fn list(client: &Client, args: &ListArgs) -> Result<(), Failure> {
    let mut query = Vec::new();
    let filters = [("status", &args.status), ("queue", &args.queue), ("type", &args.job_type)];
    for (name, value) in filters {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let mut cursor = args.cursor.clone();
    let mut table = Table::new(&["ID", "TYPE", "QUEUE", "STATUS", "ATTEMPTS>", "CREATED"]);
    loop {
        let mut page_query = query.clone();
        if let Some(cursor) = &cursor {
            page_query.push(("cursor", cursor.clone()));
        }
        let answer = client.get(&["v1", "jobs"], &page_query).await?;
        if client.json && !args.all {
            println!("{}", answer.body.trim_end());
            return Ok(());
        }
        let page = answer.json()?;
        for record in page.get("jobs").and_then(Value::as_array).into_iter().flatten() {
            if client.json {
                println!("{record}");
            } else {
                table.row(row(record));
            }
        }
        cursor = page.get("next_cursor").and_then(Value::as_str).map(str::to_owned);
        match &cursor {
            Some(_) if args.all => continue,
            Some(next) if !client.json => {
                eprintln!("more: jobs list --cursor {next}  (or --all)");
                break;
            }
            _ => break,
        }
    }
    if !client.json {
        println!("{}", table.render());
    }
    Ok(())
}

fn row(record: &Value) -> Vec<String> {
    let text = |name: &str| record.get(name).map(cell).unwrap_or_else(|| "-".to_owned());
    let attempts = format!("{}/{}", text("attempts"), text("max_attempts"));
    vec![text("id"), text("type"), text("queue"), text("status"), attempts, text("created_at")]
}

/// `jobs enqueue TYPE`: prints the new id (with `--json`, the record).
pub async fn enqueue(client: &Client, args: &EnqueueArgs) -> Result<(), Failure> {
    let mut request = Map::new();
    let job_type = args.job_type.clone().ok_or_else(|| Failure::Usage("give a job TYPE or --ndjson FILE".into()))?;
    request.insert("type".into(), Value::String(job_type));
    if let Some(payload) = &args.payload {
        request.insert("payload".into(), payload_value(payload)?);
    }
    if let Some(queue) = &args.queue {
        request.insert("queue".into(), Value::String(queue.clone()));
    }
    if let Some(delay_ms) = args.delay_ms {
        request.insert("delay_ms".into(), json!(delay_ms));
    }
    if let Some(max_attempts) = args.max_attempts {
        request.insert("max_attempts".into(), json!(max_attempts));
    }
    let body = Value::Object(request).to_string();
    let answer = client.post(&["v1", "jobs"], &[], Some(body), args.idempotency_key.as_deref()).await?;
    if client.json {
        println!("{}", answer.body.trim_end());
    } else {
        println!("{}", cell(answer.json()?.get("id").unwrap_or(&Value::Null)));
    }
    Ok(())
}

/// `--payload '{"…"}'` or `--payload @file.json`.
fn payload_value(argument: &str) -> Result<Value, Failure> {
    let (text, source) = match argument.strip_prefix('@') {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|err| Failure::Other(format!("cannot read {path}: {err}")))?;
            (text, path.to_owned())
        }
        None => (argument.to_owned(), "--payload".to_owned()),
    };
    serde_json::from_str(&text).map_err(|err| Failure::BadInput(format!("{source} is not JSON: {err}")))
}

#[derive(Debug, Clone, Copy)]
pub enum Change {
    Cancel,
    Retry,
}

/// `jobs cancel ID` and `jobs retry ID`.
pub async fn change(client: &Client, args: &IdArgs, change: Change) -> Result<(), Failure> {
    let verb = match change {
        Change::Cancel => "cancel",
        Change::Retry => "retry",
    };
    let answer = client.post(&["v1", "jobs", &args.id, verb], &[], None, None).await?;
    if client.json {
        println!("{}", answer.body.trim_end());
        return Ok(());
    }
    let record = answer.json()?;
    let status = record.get("status").map(cell).unwrap_or_default();
    match (change, answer.status) {
        // 202: the job is running; its handler sees the flag at the worker's next heartbeat.
        (Change::Cancel, 202) => println!("{}: cancel requested (still {status})", args.id),
        _ => println!("{}: {status}", args.id),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_top_down_with_its_history() {
        let record = json!({"id":"j1","type":"noop","queue":"default","status":"succeeded","attempts":1,
            "max_attempts":5,"created_at":"t0","result":null,"extra":true});
        let history = json!({"job_id":"j1","events":[{"status":"queued","attempt":0,"at":"t0"},
            {"status":"failed","attempt":1,"at":"t1","error":"boom"}],"dropped":0});
        let text = describe(&record, &history);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "id          j1");
        assert!(lines.contains(&"attempts    1 of 5"), "{text}");
        assert!(lines.contains(&"extra       true"), "{text}");
        assert!(text.contains("\nhistory\n  AT  STATUS  ATTEMPT  ERROR\n  t0  queued        0"), "{text}");
        assert!(text.ends_with("  t1  failed        1  boom"), "{text}");
    }

    #[test]
    fn a_payload_that_is_not_json_is_bad_input() {
        assert_eq!(payload_value("{nope").unwrap_err().exit_code(), 65);
        assert_eq!(payload_value(r#"{"ms":1}"#).unwrap(), json!({"ms":1}));
    }
}
