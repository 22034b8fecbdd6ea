//! SVG plots of load results: per run, latency percentiles over time and latency by
//! percentile; for a bench, peak throughput per target and the latency-by-percentile
//! curves side by side.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{LoadReport, TimelinePoint};

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(0, 0, 0),
];

/// "Nines" axis position of a percentile: 90 → 1, 99 → 2, 99.9 → 3 (100 → 5).
fn nines(percentile: f64) -> f64 {
    if percentile >= 100.0 {
        5.0
    } else {
        (-(1.0 - percentile / 100.0).log10()).min(5.0)
    }
}

fn nines_label(x: &f64) -> String {
    match x.round() as i64 {
        0 => "p0".into(),
        1 => "p90".into(),
        2 => "p99".into(),
        3 => "p99.9".into(),
        4 => "p99.99".into(),
        _ => "max".into(),
    }
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0).max(0.001)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Picks one latency of a timeline point.
type Pick = fn(&TimelinePoint) -> u64;

fn draw_percentiles(area: &Area<'_>, title: &str, series: &[(String, &[(f64, u64)])]) -> anyhow::Result<()> {
    let top = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| ms(p.1)))
        .fold(1.0f64, f64::max)
        * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..5f64, (0.01f64..top).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&nines_label)
        .x_desc("percentile")
        .y_desc("latency (ms, log)")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(p, us)| (nines(*p), ms(*us))),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// One run: latency per second (p50, p99, max) and latency by percentile.
pub fn run_plot(report: &LoadReport, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(360);
    let t_end = report.timeline.last().map_or(1.0, |p| p.t_s).max(1.0);
    let y_top = report
        .timeline
        .iter()
        .map(|p| ms(p.max_us))
        .fold(1.0f64, f64::max)
        * 1.5;
    let title = format!(
        "{} — {} — {:.0} msg/s delivered — latency per second",
        report.target, report.mode, report.delivered_rate
    );
    let mut chart = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_end, (0.01f64..y_top).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("latency (ms, log)")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let lines: [(&str, Pick); 3] = [
        ("p50", |p| p.p50_us),
        ("p99", |p| p.p99_us),
        ("max", |p| p.max_us),
    ];
    for (i, (name, pick)) in lines.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                report
                    .timeline
                    .iter()
                    .filter(|p| p.delivered > 0)
                    .map(|p| (p.t_s, ms(pick(p)))),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    draw_percentiles(
        &bottom,
        "latency by percentile (whole run, from intended send time)",
        &[(report.target.clone(), &report.histogram[..])],
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// A bench: peak delivered rate per target (bars) and latency-by-percentile curves.
pub fn compare_plot(
    peaks: &[(String, f64)],
    curves: &[(String, &LoadReport)],
    curve_title: &str,
    path: &Path,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(360);
    let n = peaks.len().max(1) as f64;
    let y_top = peaks.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.2;
    let names: Vec<String> = peaks.iter().map(|p| p.0.clone()).collect();
    let label = move |x: &f64| -> String {
        let i = x.floor();
        if (x - i - 0.5).abs() < 1e-6 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "peak throughput (closed loop), messages delivered per second",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, 0f64..y_top)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(peaks.len() * 2 + 1)
        .x_label_formatter(&label)
        .y_label_formatter(&|y: &f64| format!("{y:.0}"))
        .y_desc("msg/s")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (_, rate)) in peaks.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let x = i as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x + 0.2, 0.0), (x + 0.8, *rate)],
                color.filled(),
            )))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{rate:.0}"),
                (x + 0.35, rate + y_top * 0.02),
                ("sans-serif", 14),
            )))
            .map_err(|e| anyhow!("{e}"))?;
    }
    let series: Vec<(String, &[(f64, u64)])> = curves
        .iter()
        .map(|(n, r)| (n.clone(), &r.histogram[..]))
        .collect();
    draw_percentiles(&bottom, curve_title, &series)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
