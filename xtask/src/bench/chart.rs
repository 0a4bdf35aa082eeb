//! The results as a PNG: four panels (throughput, p99 latency, peak RSS,
//! CPU per 1000 requests), one bar per target, each target in its own
//! colour in the order of the Markdown table, which carries the numbers.
//! Drawn without text so that no font library is needed.

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

pub fn draw(path: &Path, report: &Value) -> Result<()> {
    let targets: Vec<&Value> = report["targets"].as_array().map(|targets| targets.iter().collect()).unwrap_or_default();
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| anyhow!("drawing the chart: {error}"))?;
    let panels = root.split_evenly((2, 2));
    for (panel, key) in panels.iter().zip(["throughput_rps", "p99_ms", "peak_rss_mib", "cpu_seconds_per_1000"]) {
        let values: Vec<f64> = targets.iter().map(|target| target[key].as_f64().unwrap_or(0.0)).collect();
        let top = values.iter().copied().fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE) * 1.1;
        let area = panel.margin(30, 30, 30, 30);
        let (width, height) = area.dim_in_pixel();
        let slot = width as f64 / values.len().max(1) as f64;
        for (index, value) in values.iter().enumerate() {
            let bar_height = (value / top * f64::from(height)).round() as i32;
            let left = (index as f64 * slot + slot * 0.15) as i32;
            let right = ((index + 1) as f64 * slot - slot * 0.15) as i32;
            let colour = COLOURS[index % COLOURS.len()];
            area.draw(&Rectangle::new([(left, height as i32 - bar_height), (right, height as i32)], colour.filled()))
                .map_err(|error| anyhow!("drawing the chart: {error}"))?;
        }
        // A frame and a baseline, so empty panels still read as panels.
        area.draw(&Rectangle::new([(0, 0), (width as i32 - 1, height as i32 - 1)], BLACK.stroke_width(1)))
            .map_err(|error| anyhow!("drawing the chart: {error}"))?;
    }
    root.present().map_err(|error| anyhow!("writing {}: {error}", path.display()))?;
    Ok(())
}
