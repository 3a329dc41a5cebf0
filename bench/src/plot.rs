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

/// One x position of a latency chart: x, then p50, p99 and max in ms.
type LatencyPoint = (f64, [f64; 3]);

/// Our HTTP enqueue latency against the offered rate.
fn http_latency(results: &Results, area: &Area<'_>) -> anyhow::Result<()> {
    let points = results
        .rates()
        .into_iter()
        .filter_map(|rate| {
            let stat = |f: LatencyField| results.latency_stat(rate, f).map(|s| s.median);
            Some((f64::from(rate), [stat(|l| l.p50_ms)?, stat(|l| l.p99_ms)?, stat(|l| l.max_ms)?]))
        })
        .collect();
    latency_chart(area, "Ours: POST /v1/jobs latency, open loop (median of rounds)", "offered rate, requests/s", points)
}

/// Workload 4: scheduled send to the `succeeded` event on a WebSocket.
fn e2e_latency(results: &Results, area: &Area<'_>) -> anyhow::Result<()> {
    let points = results
        .e2e_rates()
        .into_iter()
        .filter_map(|rate| {
            let stat = |f: fn(&crate::measure::E2eRun) -> f64| results.e2e_stat(rate, f).map(|s| s.median);
            Some((f64::from(rate), [stat(|l| l.p50_ms)?, stat(|l| l.p99_ms)?, stat(|l| l.max_ms)?]))
        })
        .collect();
    latency_chart(
        area,
        "Ours: POST → succeeded event on a WebSocket (median of rounds)",
        "offered rate, jobs/s",
        points,
    )
}

/// Workload 6: delivery latency against the number of subscribers, with deliveries/s in the caption.
fn fanout_latency(results: &Results, area: &Area<'_>) -> anyhow::Result<()> {
    let counts = results.fanout_counts();
    let points = counts
        .iter()
        .filter_map(|&n| {
            let stat = |f: fn(&crate::measure::FanoutRun) -> f64| results.fanout_stat(n, f).map(|s| s.median);
            Some((n as f64, [stat(|l| l.p50_ms)?, stat(|l| l.p99_ms)?, stat(|l| l.max_ms)?]))
        })
        .collect();
    let rates: Vec<String> = counts
        .iter()
        .filter_map(|&n| {
            let delivered = results.fanout_stat(n, |f| f.delivered_per_sec)?.median;
            Some(format!("{n}: {}/s", crate::report::thousands(delivered)))
        })
        .collect();
    let caption = format!("Ours: fan-out delivery latency (delivered {})", rates.join(", "));
    latency_chart(area, &caption, "subscribers", points)
}

fn latency_chart(area: &Area<'_>, caption: &str, x_desc: &str, points: Vec<LatencyPoint>) -> anyhow::Result<()> {
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let top = points.iter().map(|p| p.1[2]).fold(1.0, f64::max) * 2.0;
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
    let series: [(&str, RGBColor); 3] =
        [("p50", RGBColor(31, 119, 180)), ("p99", RGBColor(214, 39, 40)), ("max", RGBColor(127, 127, 127))];
    for (i, (name, line)) in series.into_iter().enumerate() {
        let line_points: Vec<(f64, f64)> = points.iter().map(|(x, ys)| (*x, ys[i].max(0.05))).collect();
        chart
            .draw_series(LineSeries::new(line_points.clone(), line.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], line.stroke_width(2)));
        chart.draw_series(line_points.into_iter().map(|p| Circle::new(p, 4, line.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    Ok(())
}
