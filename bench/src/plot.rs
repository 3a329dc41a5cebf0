//! `bench.svg`: throughput per workload and system (top left, log scale, bars
//! are medians, whiskers min–max) and our HTTP enqueue latency against the
//! offered rate (top right, log scale); below them, when measured, our end-to-end
//! latency against the job rate and the fan-out's delivery latency against the
//! number of subscribers.

use std::path::Path;

use plotters::prelude::*;

use crate::measure::Workload;
use crate::report::Results;

const WORKLOADS: [Workload; 3] = [Workload::EnqueueHttp, Workload::EnqueueLibrary, Workload::Process];

/// Which figure of a latency run a line shows.
type LatencyField = fn(&crate::measure::LatencyRun) -> f64;

fn color(system: &str) -> RGBColor {
    match system {
        "ours" => RGBColor(31, 119, 180),
        "bullmq" => RGBColor(255, 127, 14),
        "celery" => RGBColor(44, 160, 44),
        _ => RGBColor(127, 127, 127),
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

pub fn render(results: &Results, path: &Path) -> anyhow::Result<()> {
    let websocket = !results.e2e.is_empty() || !results.fanout.is_empty();
    let root = SVGBackend::new(path, (1280, if websocket { 1080 } else { 540 })).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(540);
    let (left, right) = top.split_horizontally(680);
    if !results.measurements.is_empty() {
        throughput(results, &left)?;
    }
    if !results.latency.is_empty() {
        http_latency(results, &right)?;
    }
    if websocket {
        let (left, right) = bottom.split_horizontally(640);
        if !results.e2e.is_empty() {
            e2e_latency(results, &left)?;
        }
        if !results.fanout.is_empty() {
            fanout_latency(results, &right)?;
        }
    }
    root.present()?;
    Ok(())
}

fn throughput(results: &Results, area: &Area<'_>) -> anyhow::Result<()> {
    let systems = results.systems();
    let top = results.measurements.iter().map(|m| m.jobs_per_sec).fold(1.0, f64::max) * 3.0;
    let bottom = 100.0;
    let jobs = results.setup.params.jobs;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("Throughput, {jobs} no-op jobs (median, min–max)"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..WORKLOADS.len() as f64, (bottom..top).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(WORKLOADS.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let slot = (x - 0.5).round();
            if (x - 0.5 - slot).abs() < 1e-6 && slot >= 0.0 {
                WORKLOADS.get(slot as usize).map_or_else(String::new, |w| w.title().to_owned())
            } else {
                String::new()
            }
        })
        .y_desc("jobs/s")
        .y_label_formatter(&|v| crate::report::thousands(*v))
        .draw()?;
    let width = 0.8 / systems.len().max(1) as f64;
    for (i, system) in systems.iter().enumerate() {
        let fill = color(system);
        let mut bars = Vec::new();
        let mut whiskers = Vec::new();
        for (g, workload) in WORKLOADS.iter().enumerate() {
            let Some(stat) = results.stat(system, *workload, |m| m.jobs_per_sec) else { continue };
            let x0 = g as f64 + 0.1 + i as f64 * width;
            bars.push(Rectangle::new([(x0, bottom), (x0 + width * 0.9, stat.median)], fill.filled()));
            let xc = x0 + width * 0.45;
            whiskers.push(PathElement::new(vec![(xc, stat.min.max(bottom)), (xc, stat.max)], BLACK.stroke_width(2)));
        }
        chart
            .draw_series(bars)?
            .label(system.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], fill.filled()));
        chart.draw_series(whiskers)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    Ok(())
}

/// One line of a latency chart: name, colour, points (x, ms).
type Line = (String, RGBColor, Vec<(f64, f64)>);

const P50: RGBColor = RGBColor(31, 119, 180);
const P99: RGBColor = RGBColor(214, 39, 40);
const MAX: RGBColor = RGBColor(127, 127, 127);

/// p50, p99 and max lines over `xs`, from a summary per x.
fn percentile_lines(xs: &[f64], stat: impl Fn(f64, usize) -> Option<f64>) -> Vec<Line> {
    [("p50", P50), ("p99", P99), ("max", MAX)]
        .into_iter()
        .enumerate()
        .map(|(i, (name, color))| (name.to_owned(), color, xs.iter().filter_map(|&x| Some((x, stat(x, i)?))).collect()))
        .collect()
}

/// Our HTTP enqueue latency against the offered rate.
fn http_latency(results: &Results, area: &Area<'_>) -> anyhow::Result<()> {
    let rates: Vec<f64> = results.rates().into_iter().map(f64::from).collect();
    let fields: [LatencyField; 3] = [|l| l.p50_ms, |l| l.p99_ms, |l| l.max_ms];
    let lines = percentile_lines(&rates, |rate, i| Some(results.latency_stat(rate as u32, fields[i])?.median));
    latency_chart(area, "Ours: POST /v1/jobs latency, open loop (median of rounds)", "offered rate, requests/s", lines)
}

/// Workload 4: scheduled send to the `succeeded` event on a WebSocket.
fn e2e_latency(results: &Results, area: &Area<'_>) -> anyhow::Result<()> {
    let rates: Vec<f64> = results.e2e_rates().into_iter().map(f64::from).collect();
    let fields: [fn(&crate::measure::E2eRun) -> f64; 3] = [|l| l.p50_ms, |l| l.p99_ms, |l| l.max_ms];
    let lines = percentile_lines(&rates, |rate, i| Some(results.e2e_stat(rate as u32, fields[i])?.median));
    latency_chart(area, "Ours: POST → succeeded event on a WebSocket (median of rounds)", "offered rate, jobs/s", lines)
}

/// Workload 6: delivery latency (p50 thin, p99 thick) against the number of
/// subscribers, one colour per offered load.
fn fanout_latency(results: &Results, area: &Area<'_>) -> anyhow::Result<()> {
    let cases = results.fanout_cases();
    let mut offered: Vec<f64> = cases.iter().map(|c| c.1).collect();
    offered.sort_by(f64::total_cmp);
    offered.dedup();
    let palette = [P50, P99, RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
    let mut lines = Vec::new();
    for (i, &load) in offered.iter().enumerate() {
        let color = palette[i % palette.len()];
        for (what, field) in [("p50", (|f| f.p50_ms) as fn(&crate::measure::FanoutRun) -> f64), ("p99", |f| f.p99_ms)] {
            let points = cases
                .iter()
                .filter(|c| c.1 == load)
                .filter_map(|&(n, _)| Some((n as f64, results.fanout_stat(n, load, field)?.median)))
                .collect();
            lines.push((format!("{what}, {}/s offered", crate::report::thousands(load)), color, points));
        }
    }
    latency_chart(area, "Ours: fan-out delivery latency (median of rounds)", "subscribers", lines)
}

fn latency_chart(area: &Area<'_>, caption: &str, x_desc: &str, lines: Vec<Line>) -> anyhow::Result<()> {
    let points = || lines.iter().flat_map(|l| l.2.iter());
    let max_x = points().map(|p| p.0).fold(1.0, f64::max);
    let top = points().map(|p| p.1).fold(1.0, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x * 1.1, (0.05f64..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("ms")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;
    for (name, color, line) in lines {
        let line: Vec<(f64, f64)> = line.into_iter().map(|(x, y)| (x, y.max(0.05))).collect();
        // p50 lines are thin, so each load's p50/p99 pair reads as one colour.
        let width = if name.starts_with("p50") && name.contains(',') { 1 } else { 2 };
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(width)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(width)));
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    Ok(())
}
