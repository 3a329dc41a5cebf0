//! `bench.svg`: throughput per workload and system (left, log scale, bars are
//! medians, whiskers min–max) and our HTTP enqueue latency against the offered
//! rate (right, log scale).

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

pub fn render(results: &Results, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1280, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(680);
    if !results.measurements.is_empty() {
        throughput(results, &left)?;
    }
    if !results.latency.is_empty() {
        latency(results, &right)?;
    }
    root.present()?;
    Ok(())
}

fn throughput(results: &Results, area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> anyhow::Result<()> {
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

fn latency(results: &Results, area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> anyhow::Result<()> {
    let rates = results.rates();
    let max_rate = rates.iter().copied().max().unwrap_or(1) as f64;
    let top = results.latency.iter().map(|l| l.max_ms).fold(1.0, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption("Ours: POST /v1/jobs latency, open loop (median of rounds)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_rate * 1.1, (0.05f64..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered rate, requests/s")
        .y_desc("ms")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;
    let series: [(&str, RGBColor, LatencyField); 3] = [
        ("p50", RGBColor(31, 119, 180), |l| l.p50_ms),
        ("p99", RGBColor(214, 39, 40), |l| l.p99_ms),
        ("max", RGBColor(127, 127, 127), |l| l.max_ms),
    ];
    for (name, line, field) in series {
        let points: Vec<(f64, f64)> = rates
            .iter()
            .filter_map(|&rate| Some((rate as f64, results.latency_stat(rate, field)?.median.max(0.05))))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), line.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], line.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, line.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    Ok(())
}
