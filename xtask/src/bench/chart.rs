//! The results as a PNG: one row per scenario that ran (REST passthrough,
//! the `Dashboard` operation, the large answer, the fan-out, so that their
//! scales do not share an axis),
//! four panels each, led by the headline, CPU µs per request, then
//! throughput, p99 latency and peak RSS; one bar per target, each target in
//! its own colour in the order of the Markdown table. Titles, names and
//! values are written with DejaVu Sans (Debian's fonts-dejavu-core) when it
//! is installed; without it the bars are drawn alone and the table carries
//! the numbers.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use serde_json::Value;

/// Colours of the targets, in table order.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Where Debian puts the font used for labels.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the label font; false when it is not installed.
fn load_font() -> bool {
    let Ok(bytes) = std::fs::read(FONT) else { return false };
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
}

pub fn draw(path: &Path, report: &Value) -> Result<()> {
    let labelled = load_font();
    let targets: Vec<(usize, &Value)> =
        report["targets"].as_array().map(|targets| targets.iter().enumerate().collect()).unwrap_or_default();
    let metrics = [
        ("cpu_us_per_request", "CPU µs / request (lower is better)"),
        ("throughput_rps", "req/s"),
        ("p99_ms", "p99 latency (ms)"),
        ("peak_rss_mib", "peak RSS (MiB)"),
    ];
    let all_kinds = [
        ("rest", "REST", " REST"),
        ("dashboard", "Dashboard", " Dashboard"),
        ("large", "Large answer", " Large"),
        ("fanout", "Fan-out", " Fan-out"),
    ];
    // A row per scenario that ran (`--scenarios`); all rows when none did.
    let ran: Vec<_> =
        all_kinds.iter().filter(|(kind, ..)| targets.iter().any(|(_, target)| target["kind"] == *kind)).collect();
    let kinds = if ran.is_empty() { all_kinds.iter().collect() } else { ran };
    let root = BitMapBackend::new(path, (1600, 400 * kinds.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| anyhow!("drawing the chart: {error}"))?;
    let panels = root.split_evenly((kinds.len(), metrics.len()));
    let cells = kinds.iter().flat_map(|kind| metrics.iter().map(move |metric| (kind, metric)));
    for (panel, (&&(kind, kind_title, suffix), &(key, title))) in panels.iter().zip(cells) {
        // Colours follow the table, so a target keeps its colour across rows.
        let targets: Vec<(usize, &Value)> =
            targets.iter().filter(|(_, target)| target["kind"] == kind).copied().collect();
        let title = format!("{kind_title}: {title}");
        let values: Vec<f64> = targets.iter().map(|(_, target)| target[key].as_f64().unwrap_or(0.0)).collect();
        let top = values.iter().copied().fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE) * 1.1;
        let area = panel.margin(30, 30, 20, 20);
        let (width, height) = area.dim_in_pixel();
        let slot = width as f64 / values.len().max(1) as f64;
        for (index, value) in values.iter().enumerate() {
            let bar_height = (value / top * f64::from(height)).round() as i32;
            let left = (index as f64 * slot + slot * 0.15) as i32;
            let right = ((index + 1) as f64 * slot - slot * 0.15) as i32;
            let colour = COLOURS[targets[index].0 % COLOURS.len()];
            area.draw(&Rectangle::new([(left, height as i32 - bar_height), (right, height as i32)], colour.filled()))
                .map_err(|error| anyhow!("drawing the chart: {error}"))?;
            if labelled {
                let name = targets[index].1["target"].as_str().unwrap_or("");
                let name = name.strip_suffix(suffix).unwrap_or(name);
                let value_text = if *value >= 100.0 { format!("{value:.0}") } else { format!("{value:.1}") };
                let font = ("sans-serif", 13).into_font();
                area.draw(&Text::new(value_text, (left, (height as i32 - bar_height - 16).max(2)), font.clone()))
                    .map_err(|error| anyhow!("drawing the chart: {error}"))?;
                area.draw(&Text::new(name.to_owned(), (left, height as i32 + 6), font))
                    .map_err(|error| anyhow!("drawing the chart: {error}"))?;
            }
        }
        if labelled {
            // Above the frame, in the margin, clear of the tallest bar's value.
            panel
                .draw(&Text::new(title, (20, 8), ("sans-serif", 15).into_font()))
                .map_err(|error| anyhow!("drawing the chart: {error}"))?;
        }
        // A frame and a baseline, so empty panels still read as panels.
        area.draw(&Rectangle::new([(0, 0), (width as i32 - 1, height as i32 - 1)], BLACK.stroke_width(1)))
            .map_err(|error| anyhow!("drawing the chart: {error}"))?;
    }
    root.present().map_err(|error| anyhow!("writing {}: {error}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_becomes_a_png() {
        let report = serde_json::json!({"targets": [
            {"target": "portico REST", "kind": "rest", "cpu_us_per_request": 29.0, "throughput_rps": 34000.0, "p99_ms": 2.5, "peak_rss_mib": 27.5},
            {"target": "NGINX REST", "kind": "rest", "cpu_us_per_request": 14.0, "throughput_rps": 70000.0, "p99_ms": 1.5, "peak_rss_mib": 13.1},
        ]});
        let dir = std::env::temp_dir().join(format!("portico-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("chart.png");
        draw(&path, &report).expect("the chart draws");
        let bytes = std::fs::read(&path).expect("the PNG exists");
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 1000, "{} bytes", bytes.len());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
