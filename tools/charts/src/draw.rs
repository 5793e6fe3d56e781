//! The only file that speaks plotters: a latency CDF chart (log time axis)
//! and a horizontal bar chart, both as SVG. Text is written as SVG `<text>`
//! and laid out with plotters' built-in size estimate (no `ttf` or
//! `ab_glyph` feature), so no system font or fontconfig is needed.

use std::path::Path;

use anyhow::anyhow;
use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

const FONT: &str = "sans-serif";

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// One CDF line per series: (label, ascending (ms, fraction) points).
pub fn latency_cdf(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for (_, pts) in series {
        for (x, _) in pts {
            lo = lo.min(*x);
            hi = hi.max(*x);
        }
    }
    anyhow::ensure!(hi > 0.0, "no latency data for {title}");
    // Whole decades around the data, so the log axis reads naturally.
    let lo = 10f64.powf(lo.max(0.001).log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);

    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("fraction of events delivered")
        .x_label_formatter(&|x| format_ms(*x))
        .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn format_ms(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.0} s", x / 1000.0)
    } else if x >= 1.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// Horizontal bars, one per (label, value), with the value written at the
/// end of each bar by `fmt`.
pub fn bars(
    path: &Path,
    title: &str,
    x_desc: &str,
    items: &[(String, f64)],
    fmt: &dyn Fn(f64) -> String,
) -> anyhow::Result<()> {
    anyhow::ensure!(!items.is_empty(), "no data for {title}");
    let max = items
        .iter()
        .map(|i| i.1)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let n = items.len();
    let height = 110 + 36 * n as u32;
    let label_width = items.iter().map(|i| i.0.len()).max().unwrap_or(10) as u32 * 7 + 24;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(16)
        .margin_right(60)
        .x_label_area_size(44)
        .y_label_area_size(label_width.min(420))
        .build_cartesian_2d(0.0..max * 1.12, 0.0..n as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(x_desc)
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    for (i, (label, value)) in items.iter().enumerate() {
        // First item on top.
        let y = (n - 1 - i) as f64;
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.18), (*value, y + 0.82)],
                color.filled(),
            )))
            .map_err(err)?;
        let (bx, by) = chart.backend_coord(&(0.0, y + 0.5));
        root.draw(&Text::new(
            label.clone(),
            (bx - 8, by),
            (FONT, 14)
                .into_font()
                .into_text_style(&root)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(err)?;
        let (vx, vy) = chart.backend_coord(&(*value, y + 0.5));
        root.draw(&Text::new(
            fmt(*value),
            (vx + 6, vy),
            (FONT, 13)
                .into_font()
                .into_text_style(&root)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
