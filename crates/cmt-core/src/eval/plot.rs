//! `--plot`: the retention curve (and recall against bank size, where the method
//! retrieves) as a PNG, drawn with `plotters`' bitmap backend.
//!
//! Text needs a font: plotters is built without system-font discovery, so the first of a
//! few common TrueType files found on the machine (DejaVu Sans, Liberation Sans, or the
//! file named by `$CMT_PLOT_FONT`) is registered at run time. Without one the chart is
//! drawn all the same, with axes, ticks and curves but no text.
use super::EvalSummary;
use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_FILES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers a font for plotters once per process; whether one is available.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let env = std::env::var_os("CMT_PLOT_FONT").map(std::path::PathBuf::from);
        let candidates = env.into_iter().chain(FONT_FILES.iter().map(Into::into));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                // plotters keeps the font for the process's lifetime: leaked once.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Points of one curve, (documents streamed, value).
type Points = Vec<(f64, f64)>;

/// A named, coloured curve.
type Series<'a> = (&'a str, RGBColor, Points);

fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: drawing the plot: {e}", path.display()))
}

/// One panel: series of (x, y) points over `x_max`, y in `0..=y_max`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    x_max: f64,
    y_max: f64,
    series: &[Series],
    text: bool,
) -> std::result::Result<(), String> {
    let mut b = ChartBuilder::on(area);
    b.margin(16);
    if text {
        b.caption(title, ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(56);
    } else {
        b.x_label_area_size(4).y_label_area_size(4);
    }
    let mut chart = b
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("documents streamed")
            .y_desc(y_label)
            .x_label_formatter(&|x| format!("{x:.0}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for (name, color, pts) in series {
        let style = color.stroke_width(2);
        let s = chart
            .draw_series(LineSeries::new(pts.iter().copied(), style).point_size(3))
            .map_err(|e| e.to_string())?;
        if text {
            let c = *color;
            s.label(*name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
            });
        }
    }
    if text && series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Draws the retention curve of `summary` (relative F1, or F1 where the first point's F1
/// is 0 and relative values are undefined) and, for methods that retrieve, recall@1 and
/// recall@k against the number of streamed documents, into the PNG `path`. Refused for
/// methods without a retention curve (closed-book, oracle).
pub fn plot_png(summary: &EvalSummary, path: &Path) -> Result<()> {
    let curve = summary
        .retention_curve
        .as_ref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "--plot: method {} streams nothing and has no retention curve",
                summary.method
            ))
        })?;
    let text = font_available();
    let x_max = curve.iter().map(|p| p.docs).max().unwrap_or(1).max(1) as f64 * 1.05;
    let relative: Option<Points> = curve
        .iter()
        .map(|p| p.relative.map(|r| (p.docs as f64, r)))
        .collect();
    let (ret_title, ret_label, ret_pts, ret_max) = match relative {
        Some(pts) => {
            let m = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
            (
                "retention (F1 relative to the first point)",
                "relative F1",
                pts,
                m,
            )
        }
        None => {
            let pts: Points = curve.iter().map(|p| (p.docs as f64, p.f1)).collect();
            let m = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
            (
                "F1 on the retention sample (first F1 is 0)",
                "F1 (%)",
                pts,
                m,
            )
        }
    };
    let title = format!("{}: {ret_title}", summary.method);
    let recall: Option<(Points, Points)> = curve
        .iter()
        .map(|p| {
            Some((
                (p.docs as f64, p.recall_at_1?),
                (p.docs as f64, p.recall_at_k?),
            ))
        })
        .collect::<Option<Vec<_>>>()
        .map(|v| v.into_iter().unzip());
    let width = if recall.is_some() { 1200 } else { 640 };
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let areas = if recall.is_some() {
        root.split_evenly((1, 2))
    } else {
        vec![root.clone()]
    };
    let ret_series = [("retention", BLUE, ret_pts)];
    panel(
        &areas[0],
        &title,
        ret_label,
        x_max,
        ret_max,
        &ret_series,
        text,
    )
    .map_err(|e| draw_err(path, e))?;
    if let Some((r1, rk)) = recall {
        let k = format!("recall@{}", summary.k);
        let series = [("recall@1", RED, r1), (k.as_str(), GREEN, rk)];
        let title = format!("{}: recall of the gold document", summary.method);
        panel(&areas[1], &title, "recall (%)", x_max, 105.0, &series, text)
            .map_err(|e| draw_err(path, e))?;
    }
    root.present().map_err(|e| draw_err(path, e))
}
