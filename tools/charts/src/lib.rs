//! `qrlogin-charts`: SVG charts of the transport and peer comparison, drawn
//! from a results.json (an array of rows, tools/bench/peers/README.md).
//!
//! - [`results`]: the rows, their labels and latency CDFs.
//! - [`draw`]: the only file that speaks plotters (CDF and bar charts).
//!
//! [`render`] writes every chart the rows have data for and returns the
//! files it wrote.

pub mod draw;
pub mod results;

use std::path::{Path, PathBuf};

use results::Row;

/// A bar chart drawn from one figure of each row: file, title, axis text,
/// the figure, and how its value is written.
struct BarChart {
    file: &'static str,
    title: &'static str,
    x_desc: &'static str,
    value: fn(&Row) -> Option<f64>,
    fmt: fn(f64) -> String,
}

/// Writes the charts into `out_dir`:
/// - `latency-cdf-<rate>.svg`: one per rate, a line per system/transport;
/// - `bytes-per-login.svg`, `memory-per-waiting.svg`, `requests-per-login.svg`;
/// - `long-poll-round-robin.svg`: sessions that got their event, for rows
///   that report delivered/expected without a rate (the balancer test).
///
/// A chart whose figure no row has is skipped.
pub fn render(rows: &[Row], out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir)?;
    let mut written = Vec::new();

    for (rate, group) in results::by_rate(rows) {
        let series: Vec<(String, Vec<(f64, f64)>)> = group
            .iter()
            .map(|r| (r.label(), r.cdf()))
            .filter(|(_, cdf)| !cdf.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let waiting = group
            .iter()
            .filter_map(|r| r.waiting)
            .fold(0.0f64, f64::max);
        let title = format!("Event latency at {rate} events/s, {waiting:.0} waiting");
        let path = out_dir.join(format!("latency-cdf-{rate}.svg"));
        draw::latency_cdf(&path, &title, &series)?;
        written.push(path);
    }

    let bar_charts = [
        BarChart {
            file: "bytes-per-login.svg",
            title: "Bytes on the wire per login",
            x_desc: "bytes (peers: connection setup both ways and one event)",
            value: Row::bytes_for_login,
            fmt: |v| format!("{v:.0} B"),
        },
        BarChart {
            file: "memory-per-waiting.svg",
            title: "Server memory per waiting browser",
            x_desc: "KiB of RSS per idle connection",
            value: |r| r.memory_per_conn_kib,
            fmt: |v| format!("{v:.1} KiB"),
        },
        BarChart {
            file: "requests-per-login.svg",
            title: "HTTP requests per login",
            x_desc: "requests (peers: per wait)",
            value: Row::requests,
            fmt: |v| format!("{v:.1}"),
        },
    ];
    for chart in bar_charts {
        let items = results::one_per_label(rows, chart.value);
        if items.is_empty() {
            continue;
        }
        let path = out_dir.join(chart.file);
        draw::bars(&path, chart.title, chart.x_desc, &items, &chart.fmt)?;
        written.push(path);
    }

    let round_robin: Vec<Row> = rows
        .iter()
        .filter(|r| r.rate.is_none() && r.transport == "long-poll")
        .cloned()
        .collect();
    let items = results::one_per_label(&round_robin, |r| {
        let (d, e) = (r.delivered?, r.expected?);
        (e > 0.0).then(|| 100.0 * d / e)
    });
    if !items.is_empty() {
        let path = out_dir.join("long-poll-round-robin.svg");
        draw::bars(
            &path,
            "Long polling behind round-robin without affinity",
            "% of sessions that received their event",
            &items,
            &|v| format!("{v:.0}%"),
        )?;
        written.push(path);
    }
    Ok(written)
}
