//! Human output: aligned tables, key/value blocks, one-line events, and progress bars
//! that draw only when stderr is a terminal (so logs and pipes get the summary alone).

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

/// Columns padded to their widest cell, two spaces apart; numeric columns right-aligned.
pub struct Table {
    headers: Vec<&'static str>,
    numeric: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `headers` ending in `>` are right-aligned (the `>` is not printed).
    pub fn new(headers: &[&'static str]) -> Self {
        let numeric = headers.iter().map(|header| header.ends_with('>')).collect();
        let headers = headers.iter().map(|header| header.trim_end_matches('>')).collect();
        Self { headers, numeric, rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|header| header.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let padded: Vec<String> = cells
                .zip(&widths)
                .zip(&self.numeric)
                .map(
                    |((cell, width), numeric)| {
                        if *numeric { format!("{cell:>width$}") } else { format!("{cell:<width$}") }
                    },
                )
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        let mut out = line(&mut self.headers.iter().copied());
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out
    }
}

/// A JSON value as a cell: strings bare, `null` as `-`, anything else as compact JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// `key  value` lines with the values aligned.
pub fn key_values(pairs: &[(String, String)]) -> String {
    let width = pairs.iter().map(|(key, _)| key.chars().count()).max().unwrap_or(0);
    pairs.iter().map(|(key, value)| format!("{key:<width$}  {value}")).collect::<Vec<_>>().join("\n")
}

/// `time status type queue job_id attempt error` for one event of the stream.
pub fn event_line(event: &Value) -> String {
    let text = |name: &str| event.get(name).map(cell).unwrap_or_else(|| "-".to_owned());
    let mut line = format!(
        "{:<24} {:<9} {:<12} {:<12} {} {}",
        text("at"),
        text("status"),
        text("type"),
        text("queue"),
        text("job_id"),
        text("attempt")
    );
    if let Some(error) = event.get("error").and_then(Value::as_str) {
        line.push(' ');
        line.push_str(error);
    }
    line
}

/// A bar of `total` steps on stderr, drawn only when stderr is a terminal.
pub fn progress(total: u64, unit: &str) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    let template = format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_its_columns_and_right_aligns_numbers() {
        let mut table = Table::new(&["QUEUE", "QUEUED>"]);
        table.row(vec!["email".into(), "7".into()]);
        table.row(vec!["a".into(), "1200".into()]);
        assert_eq!(table.render(), "QUEUE  QUEUED\nemail       7\na        1200");
    }

    #[test]
    fn an_event_line_ends_with_its_error() {
        let event = serde_json::json!({"at":"2026-01-01T00:00:00.000Z","status":"retrying","type":"fail",
            "queue":"default","job_id":"j1","attempt":2,"error":"boom: twice"});
        let line = event_line(&event);
        assert!(line.starts_with("2026-01-01T00:00:00.000Z retrying  fail "), "{line}");
        assert!(line.ends_with(" j1 2 boom: twice"), "{line}");
    }
}
