//! The chart the bench draws of its own results (`compare --chart FILE.svg`):
//! one row per scenario, one bar per server, each the server's figure
//! divided by the baseline's, with a line at 1.0, so that a reader sees at a
//! glance where each server stands. SVG: text stays text, no font needed.

use plotters::prelude::*;

/// What to draw.
pub(crate) struct Ratios {
    /// The first line of the caption.
    pub(crate) title: String,
    /// The servers, one bar colour each.
    pub(crate) series: Vec<String>,
    /// Scenario name and one ratio per series.
    pub(crate) rows: Vec<(String, Vec<f64>)>,
}

/// Bar colours, one per server (colour-blind safe: Okabe–Ito).
const PALETTE: [RGBColor; 6] = [
    RGBColor(0x99, 0x99, 0x99),
    RGBColor(0x00, 0x72, 0xb2),
    RGBColor(0xe6, 0x9f, 0x00),
    RGBColor(0x00, 0x9e, 0x73),
    RGBColor(0xcc, 0x79, 0xa7),
    RGBColor(0xd5, 0x5e, 0x00),
];

/// Writes the chart to `path` as SVG, with the machine, the command and the
/// date below it, and says so.
pub(crate) fn draw(path: &std::path::Path, ratios: &Ratios) -> anyhow::Result<()> {
    let footnote = footnote();
    let rows = ratios.rows.len();
    let series = ratios.series.len().max(1);
    let height = 120 + rows as u32 * (18 * series as u32 + 16) + 20 * footnote.len() as u32;
    let root = SVGBackend::new(path, (860, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (plot, notes) = root.split_vertically(height - 20 * footnote.len() as u32 - 10);
    let widest = ratios
        .rows
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .fold(1.0f64, f64::max);
    let x_end = (widest * 1.15).max(1.3);
    let mut chart = ChartBuilder::on(&plot)
        .caption(&ratios.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(150)
        .build_cartesian_2d(0f64..x_end, (rows as f64 - 0.5)..-0.5f64)
        .map_err(plot_error)?;
    let names: Vec<&str> = ratios.rows.iter().map(|(name, _)| name.as_str()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .y_labels(rows)
        .y_label_formatter(&|y| {
            let index = y.round();
            if (y - index).abs() < 1e-6 && index >= 0.0 {
                names
                    .get(index as usize)
                    .map_or(String::new(), |n| (*n).to_owned())
            } else {
                String::new()
            }
        })
        .x_desc("ratio to the baseline (higher is better)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(plot_error)?;
    let band = 0.8 / series as f64;
    for (s, name) in ratios.series.iter().enumerate() {
        let colour = PALETTE[s % PALETTE.len()];
        let bars = ratios
            .rows
            .iter()
            .enumerate()
            .filter_map(|(r, (_, values))| {
                let value = *values.get(s)?;
                let top = r as f64 - 0.4 + band * s as f64;
                Some((value, top))
            });
        chart
            .draw_series(bars.clone().map(|(value, top)| {
                Rectangle::new([(0.0, top), (value, top + band * 0.9)], colour.filled())
            }))
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        chart
            .draw_series(bars.map(|(value, top)| {
                Text::new(
                    format!("{value:.2}"),
                    (value + x_end * 0.005, top + band * 0.1),
                    ("sans-serif", 11).into_font(),
                )
            }))
            .map_err(plot_error)?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, rows as f64 - 0.5), (1.0, -0.5)],
            BLACK.stroke_width(1),
        )))
        .map_err(plot_error)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(plot_error)?;
    for (i, line) in footnote.iter().enumerate() {
        notes
            .draw(&Text::new(
                line.as_str(),
                (14, 4 + 20 * i as i32),
                ("sans-serif", 12).into_font().color(&BLACK.mix(0.7)),
            ))
            .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    println!("\nchart written to {}", path.display());
    Ok(())
}

/// plotters' errors borrow the backend's error type; this keeps their text.
fn plot_error<E: std::error::Error + Send + Sync>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error}")
}

/// The machine (CPU model and count, from /proc/cpuinfo), the command line
/// and the date, for the foot of a chart.
fn footnote() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    // Not available_parallelism: a pinned bench sees only its own CPU.
    let cpus = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let command: Vec<String> = std::env::args()
        .enumerate()
        .map(|(i, arg)| {
            if i == 0 {
                "switchboard-bench".to_owned()
            } else {
                arg
            }
        })
        .collect();
    vec![
        format!(
            "{cpus} × {model}; {}",
            chrono::Local::now().format("%Y-%m-%d")
        ),
        command.join(" "),
    ]
}
