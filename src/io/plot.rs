//! PNG figures: heat maps with a colour bar ([`heat_map_png`]), labelled curves on linear or
//! logarithmic axes ([`line_plot_png`]), point clouds ([`scatter_png`]) and a two-column grid of
//! such panels ([`panels_png`]).
//!
//! Text is drawn with a TrueType font loaded once per process, registered with plotters under
//! the family name `"sans-serif"`. The font is the first that exists of: the file named by the
//! environment variable `CGFLOW_FONT`, DejaVu Sans in the usual system locations
//! (`/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf`, `/usr/share/fonts/dejavu/DejaVuSans.ttf`,
//! `/usr/share/fonts/TTF/DejaVuSans.ttf`), and the copy shipped with matplotlib in the crate's
//! `.venv`. Without any of them every function here returns an [`Error::InvalidInput`] that
//! names the paths tried.
//!
//! Bad input (mismatched lengths, empty data, nothing finite to draw, degenerate ranges) is an
//! [`Error::InvalidInput`] reported before any file is created; failures while drawing or
//! writing the image are an [`Error::Io`] naming the output file.

use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{KeyPointHint, KeyPointWeight, NoDefaultFormatting, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::{register_font, FontStyle};

use crate::error::{Error, Result};

/// The font family every text element is drawn with.
const FONT_FAMILY: &str = "sans-serif";
/// Environment variable naming a `.ttf` file to use instead of the default fonts.
const FONT_ENV: &str = "CGFLOW_FONT";
/// System locations of DejaVu Sans, tried in order after `CGFLOW_FONT`.
const SYSTEM_FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Size of single-chart figures (heat map, line plot, scatter plot), in pixels.
const FIGURE_SIZE: (u32, u32) = (800, 600);
/// Size of one panel of [`panels_png`], in pixels.
const PANEL_SIZE: (u32, u32) = (600, 480);
/// Width of the colour-bar strip to the right of a heat map, labels included, in pixels.
const COLORBAR_STRIP: u32 = 125;
/// Colour of heat-map cells whose value is NaN or infinite.
const MISSING_COLOR: RGBColor = RGBColor(128, 128, 128);
/// Series with fewer points than this get a marker at each point.
const MARKER_LIMIT: usize = 30;
/// Distinct series colours (matplotlib's "tab10" cycle), reused cyclically.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Stops of the diverging scale, from most negative (blue) through zero (white) to most
/// positive (red), evenly spaced.
const DIVERGING_STOPS: [(f64, f64, f64); 7] = [
    (33.0, 102.0, 172.0),
    (103.0, 169.0, 207.0),
    (209.0, 229.0, 240.0),
    (255.0, 255.0, 255.0),
    (253.0, 219.0, 199.0),
    (239.0, 138.0, 98.0),
    (178.0, 24.0, 43.0),
];

/// A scalar field on a regular 2-D grid, drawn by [`heat_map_png`] or [`render_heat_map_rgb`].
///
/// Cell `(ix, iy)` covers the `ix`-th of `nx` equal slices of `x_range` and the `iy`-th of `ny`
/// equal slices of `y_range`; its value is `values[ix * ny + iy]`. NaN or infinite values are
/// drawn in grey and take no part in the colour scale.
#[derive(Debug, Clone, Copy)]
pub struct HeatMap<'a> {
    /// `nx * ny` values, x-major: the value of cell `(ix, iy)` is at `ix * ny + iy`.
    pub values: &'a [f64],
    /// Number of cells along x.
    pub nx: usize,
    /// Number of cells along y.
    pub ny: usize,
    /// The x extent of the grid `(low, high)`, e.g. `(-180.0, 180.0)` degrees.
    pub x_range: (f64, f64),
    /// The y extent of the grid `(low, high)`.
    pub y_range: (f64, f64),
    /// Label of the x axis.
    pub x_label: &'a str,
    /// Label of the y axis.
    pub y_label: &'a str,
    /// Title above the figure (nothing is drawn when empty).
    pub title: &'a str,
    /// Label of the colour bar, e.g. `"F / kT"`.
    pub colorbar_label: &'a str,
    /// Upper end of the colour scale: larger values get the top colour. With `diverging`, the
    /// scale is clipped to `[-clip_max, clip_max]`. Must be finite when given.
    pub clip_max: Option<f64>,
    /// Use a blue-white-red scale symmetric around zero (for difference maps) instead of
    /// viridis over `[min, max]`.
    pub diverging: bool,
}

/// One labelled set of points: a curve for [`line_plot_png`], a point cloud for
/// [`scatter_png`].
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Legend entry; an empty label gets no legend entry.
    pub label: &'a str,
    /// x coordinates, as many as `y`.
    pub x: &'a [f64],
    /// y coordinates, as many as `x`.
    pub y: &'a [f64],
}

/// The band of one curve of [`line_plot_bands_png`]: a lower and an upper bound at each x (e.g.
/// the range of independent realisations), drawn as a translucent area in the curve's colour.
#[derive(Debug, Clone, Copy)]
pub struct Band<'a> {
    /// Index of the curve (in `series`) whose colour the band takes.
    pub series: usize,
    /// x coordinates, as many as `lower` and `upper`.
    pub x: &'a [f64],
    /// Lower bound at each x.
    pub lower: &'a [f64],
    /// Upper bound at each x.
    pub upper: &'a [f64],
}

/// One panel of [`panels_png`].
#[derive(Debug, Clone, Copy)]
pub enum Panel<'a> {
    /// Point clouds, as drawn by [`scatter_png`].
    Scatter {
        /// Panel title (nothing is drawn when empty).
        title: &'a str,
        /// Label of the x axis.
        x_label: &'a str,
        /// Label of the y axis.
        y_label: &'a str,
        /// One point cloud per group, each in its own colour.
        groups: &'a [Series<'a>],
        /// Fixed x extent; `None` fits the data.
        x_range: Option<(f64, f64)>,
        /// Fixed y extent; `None` fits the data.
        y_range: Option<(f64, f64)>,
    },
    /// Labelled curves, as drawn by [`line_plot_png`].
    Lines {
        /// Panel title (nothing is drawn when empty).
        title: &'a str,
        /// Label of the x axis.
        x_label: &'a str,
        /// Label of the y axis.
        y_label: &'a str,
        /// One curve per series, each in its own colour.
        series: &'a [Series<'a>],
        /// Logarithmic x axis (points with x <= 0 are skipped).
        log_x: bool,
        /// Logarithmic y axis (points with y <= 0 are skipped).
        log_y: bool,
    },
}

/// Draws `map` as a coloured grid with axes, ticks and a labelled colour bar, and writes it to
/// `path` as an 800x600 PNG.
///
/// Non-diverging maps use viridis from the smallest finite value to the largest (or to
/// `clip_max` when that is smaller); diverging maps use a blue-white-red scale over
/// `[-m, m]`, where `m` is the largest finite magnitude (or `clip_max` when that is smaller).
/// Shape mismatches, an all-NaN map, empty or non-finite ranges, a non-finite `clip_max` or
/// one not above the smallest value, or a path not ending in `.png` → [`Error::InvalidInput`];
/// a missing output directory, drawing or writing failures → [`Error::Io`] naming `path`.
pub fn heat_map_png(path: &Path, map: &HeatMap) -> Result<()> {
    ensure_font()?;
    let prepared = PreparedHeatMap::new(map)?;
    check_output_path(path)?;
    let root = BitMapBackend::new(path, FIGURE_SIZE).into_drawing_area();
    draw_heat_map(&root, map, &prepared).map_err(|m| file_error(path, m))?;
    root.present().map_err(|e| file_error(path, e.to_string()))
}

/// Draws `map` exactly as [`heat_map_png`] does, into a `width` x `height` image, and returns
/// its pixels: `width * height * 3` bytes, RGB, row by row from the top.
///
/// Sizes below 300x200 or above 10000x10000 are an [`Error::InvalidInput`], as is any input
/// [`heat_map_png`] rejects.
pub fn render_heat_map_rgb(map: &HeatMap, width: u32, height: u32) -> Result<Vec<u8>> {
    render_heat_map_with_area(map, width, height).map(|(pixels, _)| pixels)
}

/// Draws several labelled curves with a legend and writes them to `path` as an 800x600 PNG.
///
/// `log_x` / `log_y` make the axes logarithmic; points with a non-positive coordinate on a log
/// axis are skipped, as are NaN and infinite coordinates (the curve is broken there). Each
/// series gets its own colour, and series with fewer than 30 points a marker at each point.
/// No series, a series with no points or with `x` and `y` of different lengths, or nothing
/// left to draw after skipping → [`Error::InvalidInput`]; drawing or writing failures →
/// [`Error::Io`] naming `path`.
pub fn line_plot_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
    log_y: bool,
) -> Result<()> {
    line_plot_bands_png(path, title, x_label, y_label, series, &[], log_x, log_y)
}

/// [`line_plot_png`] with bands: each [`Band`] is drawn under the curves as a translucent area
/// in its curve's colour, and the axes fit the bands too. Points of a band that are not drawable
/// on the axes (non-finite, or not positive on a log axis) split it. A band naming a curve that
/// does not exist, or with bounds of another length than its x → [`Error::InvalidInput`].
#[allow(clippy::too_many_arguments)]
pub fn line_plot_bands_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    bands: &[Band],
    log_x: bool,
    log_y: bool,
) -> Result<()> {
    ensure_font()?;
    let prepared = PreparedLines::new(series, log_x, log_y)?.with_bands(bands, series.len())?;
    check_output_path(path)?;
    let root = BitMapBackend::new(path, FIGURE_SIZE).into_drawing_area();
    let labels = AxisLabels { title, x: x_label, y: y_label };
    draw_figure(&root, |area| draw_lines(area, &labels, &prepared, 1.0)).map_err(|m| file_error(path, m))?;
    root.present().map_err(|e| file_error(path, e.to_string()))
}

/// Draws point clouds (small translucent dots, one colour per group, with a legend) and writes
/// them to `path` as an 800x600 PNG.
///
/// `x_range` / `y_range` fix the axes (points outside are not drawn); `None` fits the data.
/// NaN and infinite points are skipped. No groups, a group with no points or with `x` and `y`
/// of different lengths, no finite point at all, or a non-finite or empty range →
/// [`Error::InvalidInput`]; drawing or writing failures → [`Error::Io`] naming `path`.
pub fn scatter_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    groups: &[Series],
    x_range: Option<(f64, f64)>,
    y_range: Option<(f64, f64)>,
) -> Result<()> {
    ensure_font()?;
    let prepared = PreparedScatter::new(groups, x_range, y_range)?;
    check_output_path(path)?;
    let root = BitMapBackend::new(path, FIGURE_SIZE).into_drawing_area();
    let labels = AxisLabels { title, x: x_label, y: y_label };
    draw_figure(&root, |area| draw_scatter(area, &labels, &prepared, 1.0)).map_err(|m| file_error(path, m))?;
    root.present().map_err(|e| file_error(path, e.to_string()))
}

/// Draws `panels` in a grid of two columns (row by row) under a common `title` and writes the
/// figure to `path` as a PNG 1200 pixels wide and 480 pixels high per row (plus 50 for the
/// title when there is one).
///
/// Each panel follows the rules of [`scatter_png`] or [`line_plot_png`]; the first invalid
/// panel is reported as an [`Error::InvalidInput`] naming its position. No panels →
/// [`Error::InvalidInput`]; drawing or writing failures → [`Error::Io`] naming `path`.
pub fn panels_png(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    ensure_font()?;
    if panels.is_empty() {
        return Err(Error::invalid("panel figure: no panels given"));
    }
    let prepared = panels
        .iter()
        .enumerate()
        .map(|(i, panel)| {
            let result = match *panel {
                Panel::Scatter { groups, x_range, y_range, .. } => {
                    PreparedScatter::new(groups, x_range, y_range).map(PreparedPanel::Scatter)
                }
                Panel::Lines { series, log_x, log_y, .. } => {
                    PreparedLines::new(series, log_x, log_y).map(PreparedPanel::Lines)
                }
            };
            result.map_err(|e| match e {
                Error::InvalidInput(m) => Error::invalid(format!("panel {} of {}: {m}", i + 1, panels.len())),
                other => other,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    check_output_path(path)?;
    let rows = panels.len().div_ceil(2);
    let title_height = if title.is_empty() { 0 } else { 50 };
    let height = u32::try_from(rows)
        .ok()
        .and_then(|r| r.checked_mul(PANEL_SIZE.1))
        .and_then(|h| h.checked_add(title_height))
        .filter(|&h| h <= 20_000)
        .ok_or_else(|| Error::invalid(format!("panel figure: too many panels ({})", panels.len())))?;
    let root = BitMapBackend::new(path, (2 * PANEL_SIZE.0, height)).into_drawing_area();
    draw_panels(&root, title, panels, &prepared).map_err(|m| file_error(path, m))?;
    root.present().map_err(|e| file_error(path, e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Font

/// The font registered for this process, or why none could be (computed once).
static FONT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

/// Registers the plot font with plotters on first use; afterwards only reports the outcome.
fn ensure_font() -> Result<()> {
    match FONT.get_or_init(load_font) {
        Ok(_) => Ok(()),
        Err(message) => Err(Error::invalid(message.clone())),
    }
}

/// The candidate font files, in order of preference.
fn font_candidates() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os(FONT_ENV).filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(path));
    }
    candidates.extend(SYSTEM_FONTS.iter().map(PathBuf::from));
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv").join("lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default();
    pythons.sort();
    let tail = ["site-packages", "matplotlib", "mpl-data", "fonts", "ttf", "DejaVuSans.ttf"];
    if pythons.is_empty() {
        candidates.push(tail.iter().fold(lib.join("python3*"), |p, part| p.join(part)));
    }
    candidates.extend(pythons.into_iter().map(|dir| tail.iter().fold(dir, |p, part| p.join(part))));
    candidates
}

/// Reads and registers the first usable candidate font; the error lists every path tried.
fn load_font() -> std::result::Result<PathBuf, String> {
    let env_set = matches!(std::env::var_os(FONT_ENV), Some(p) if !p.is_empty());
    register_first_font(font_candidates(), env_set)
}

/// Registers the first of `candidates` that can be read and parsed as a font; otherwise says
/// what was wrong with each (and, when `env_set` is false, that `CGFLOW_FONT` is not set).
fn register_first_font(candidates: Vec<PathBuf>, env_set: bool) -> std::result::Result<PathBuf, String> {
    let mut tried = Vec::new();
    if !env_set {
        tried.push(format!("${FONT_ENV} (not set)"));
    }
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => {
                // plotters keeps a reference to the font for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                match register_font(FONT_FAMILY, FontStyle::Normal, bytes) {
                    Ok(()) => return Ok(path),
                    Err(_) => tried.push(format!("{} (not a usable TrueType/OpenType font)", path.display())),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => tried.push(format!("{} (not found)", path.display())),
            Err(e) => tried.push(format!("{} ({e})", path.display())),
        }
    }
    Err(format!(
        "no font for plot text; tried {}. Set {FONT_ENV} to the path of a .ttf file such as DejaVuSans.ttf",
        tried.join(", ")
    ))
}

// ---------------------------------------------------------------------------------------------
// Errors and output

/// Outcome of a drawing step; the message is turned into an [`Error`] by the caller.
type Drawn<T> = std::result::Result<T, String>;

/// Converts a plotters error into a [`Drawn`] message.
fn drawn<T, E: Display>(result: std::result::Result<T, E>) -> Drawn<T> {
    result.map_err(|e| e.to_string())
}

/// The [`Error::Io`] for a failure while drawing or writing `path`.
fn file_error(path: &Path, message: String) -> Error {
    Error::io(path, std::io::Error::other(format!("drawing plot failed: {message}")))
}

/// Checks that `path` names a `.png` file in an existing directory.
fn check_output_path(path: &Path) -> Result<()> {
    let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(Error::invalid(format!("{}: plot files must end in .png", path.display())));
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("directory {} does not exist", dir.display())),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Axes and ticks

/// One axis: its extent and ticks in axis space (log10 of the data for log axes).
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    /// Labelled ticks, in axis space.
    major: Vec<f64>,
    /// Unlabelled grid lines, in axis space.
    minor: Vec<f64>,
    /// Spacing of the major ticks (linear axes), for label precision.
    step: f64,
    /// Text put before every tick label (a space keeps labels right of an axis clear of the
    /// tick marks).
    prefix: &'static str,
}

impl Axis {
    /// An axis over `[0, 1]` without ticks.
    fn bare(log: bool) -> Self {
        Axis { lo: 0.0, hi: 1.0, log, major: vec![], minor: vec![], step: 1.0, prefix: "" }
    }

    /// A linear axis over `[lo, hi]` (`lo < hi`, both finite).
    fn linear(lo: f64, hi: f64, target_ticks: usize) -> Self {
        let span = hi - lo;
        let step = if (span - 360.0).abs() < 1e-9 { 60.0 } else { nice_step(span / target_ticks as f64) };
        if !(step.is_finite() && step > 0.0) {
            // A span too wide (or too narrow) for f64 arithmetic: no ticks rather than nonsense.
            return Axis { lo, hi, log: false, major: vec![], minor: vec![], step: 1.0, prefix: "" };
        }
        let first = (lo / step - 1e-9).ceil();
        let mut major = Vec::new();
        for i in 0..100 {
            let v = (first + i as f64) * step;
            if v > hi + step * 1e-9 {
                break;
            }
            major.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        }
        let minor_step = step / if nice_mantissa(step) == 2.0 { 4.0 } else { 5.0 };
        let first_minor = (lo / minor_step - 1e-9).ceil();
        let mut minor = Vec::new();
        for i in 0..1000 {
            let v = (first_minor + i as f64) * minor_step;
            if v > hi + minor_step * 1e-9 {
                break;
            }
            minor.push(v);
        }
        Axis { lo, hi, log: false, major, minor, step, prefix: "" }
    }

    /// A logarithmic axis over `[10^lo, 10^hi]` (`lo < hi` are decimal exponents).
    fn logarithmic(lo: f64, hi: f64) -> Self {
        let eps = 1e-9;
        let inside = |v: f64| v >= lo - eps && v <= hi + eps;
        let k_lo = (lo - eps).floor() as i64;
        let k_hi = (hi + eps).ceil() as i64;
        let decades: Vec<i64> = (k_lo..=k_hi).filter(|&k| inside(k as f64)).collect();
        let with_mantissas = |mantissas: &[f64]| -> Vec<f64> {
            (k_lo..=k_hi)
                .flat_map(|k| mantissas.iter().map(move |m| m.log10() + k as f64))
                .filter(|&v| inside(v))
                .collect()
        };
        let all: Vec<f64> = with_mantissas(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        let (major, minor) = if decades.len() >= 2 {
            let stride = decades.len().div_ceil(8) as i64;
            let major: Vec<f64> = decades.iter().filter(|&&k| k.rem_euclid(stride) == 0).map(|&k| k as f64).collect();
            let minor = if decades.len() <= 8 { all } else { decades.iter().map(|&k| k as f64).collect() };
            (major, minor)
        } else {
            let coarse = with_mantissas(&[1.0, 2.0, 5.0]);
            if coarse.len() >= 3 {
                (coarse, all)
            } else {
                (all.clone(), all)
            }
        };
        Axis { lo, hi, log: true, major, minor, step: 1.0, prefix: "" }
    }

    /// An axis fitted to data spanning `[min, max]` in axis space, with 5 % padding.
    fn fitted(min: f64, max: f64, log: bool) -> Self {
        let (lo, hi) = if max > min {
            let pad = 0.05 * (max - min);
            (min - pad, max + pad)
        } else if log {
            (min - 0.5, max + 0.5)
        } else {
            let pad = if min != 0.0 { 0.1 * min.abs() } else { 1.0 };
            (min - pad, max + pad)
        };
        let (lo, hi) = if lo.is_finite() && hi.is_finite() && lo < hi { (lo, hi) } else { (min, max) };
        if log {
            Axis::logarithmic(lo, hi)
        } else {
            Axis::linear(lo, hi, 8)
        }
    }

    /// The data value `v` in axis space, or `None` when it cannot be drawn on this axis.
    fn to_axis(&self, v: f64) -> Option<f64> {
        if !v.is_finite() {
            None
        } else if self.log {
            (v > 0.0).then(|| v.log10())
        } else {
            Some(v)
        }
    }

    /// Text of the tick at `v` (axis space).
    fn label(&self, v: f64) -> String {
        let text = if self.log {
            // One style for the whole axis: plain numbers only when every tick reads well so.
            log_tick_label(v, self.major.iter().all(|&m| plain_log_tick(m)))
        } else {
            linear_tick_label(v, self.step, self.lo.abs().max(self.hi.abs()))
        };
        format!("{}{text}", self.prefix)
    }
}

/// The axis as a plotters coordinate: linear in axis space, with our own ticks.
impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        // Halves keep the differences finite even for ranges near f64::MAX.
        let fraction = (0.5 * value - 0.5 * self.lo) / (0.5 * self.hi - 0.5 * self.lo);
        let pixels = f64::from(limit.1 - limit.0);
        // `as` saturates (NaN becomes 0), so no value can make this panic.
        limit.0 + (pixels * fraction + 1e-3 * pixels.signum()).floor() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        match hint.weight() {
            KeyPointWeight::Bold => self.major.clone(),
            KeyPointWeight::Any => self.minor.clone(),
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// Tick labels for [`Axis`].
impl ValueFormatter<f64> for Axis {
    fn format_ext(&self, value: &f64) -> String {
        self.label(*value)
    }
}

/// The mantissa (1, 2, 5 or 10) of a step chosen by [`nice_step`].
fn nice_mantissa(step: f64) -> f64 {
    (step / 10f64.powf(step.log10().floor())).round()
}

/// A round tick spacing (1, 2 or 5 times a power of ten) close to `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let mantissa = raw / magnitude;
    let nice = if mantissa < 1.5 {
        1.0
    } else if mantissa < 3.0 {
        2.0
    } else if mantissa < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Label of a linear-axis tick at `v`, with as many decimals as the spacing `step` needs, or in
/// scientific notation when the axis values (up to `extent` in size) are very large or small.
fn linear_tick_label(v: f64, step: f64, extent: f64) -> String {
    let v = if v.abs() < step * 1e-6 { 0.0 } else { v };
    let step_exp = step.log10().floor() as i32;
    if !(1e-3..1e5).contains(&extent) {
        if v == 0.0 {
            return "0".to_string();
        }
        let exp = v.abs().log10().floor() as i32;
        let digits = (exp - step_exp).clamp(0, 6) as usize;
        format!("{v:.digits$e}")
    } else {
        let decimals = (-step_exp).clamp(0, 10) as usize;
        format!("{v:.decimals$}")
    }
}

/// Whether the log-axis tick at `10^v` reads well as a plain number (0.001 to 90000).
fn plain_log_tick(v: f64) -> bool {
    (-3.0..5.0).contains(&(v + 1e-9).floor())
}

/// Label of a log-axis tick at `10^v`: a plain number when `plain`, otherwise a power of ten
/// with a superscript exponent (times a mantissa for ticks between decades).
fn log_tick_label(v: f64, plain: bool) -> String {
    let exp = (v + 1e-9).floor();
    let mantissa = 10f64.powf(v - exp).round() as i64;
    let exp = exp as i32;
    if plain {
        let decimals = (-exp).max(0) as usize;
        format!("{:.decimals$}", mantissa as f64 * 10f64.powi(exp))
    } else if mantissa == 1 {
        format!("10{}", superscript(exp))
    } else {
        format!("{mantissa}×10{}", superscript(exp))
    }
}

/// `n` written in Unicode superscript characters.
fn superscript(n: i32) -> String {
    n.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect()
}

/// Checks a user-given range: finite with `lo < hi`.
fn check_range(what: &str, (lo, hi): (f64, f64)) -> Result<()> {
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(Error::invalid(format!("{what} ({lo}, {hi}) must be finite with low < high")));
    }
    Ok(())
}

/// Smallest and largest of `values`, `None` when empty.
fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Checks the shared rules for a set of series: at least one, each non-empty with `x` and `y`
/// of the same length. `kind` names the thing ("series", "group") in messages.
fn check_series(series: &[Series], kind: &str) -> Result<()> {
    if series.is_empty() {
        return Err(Error::invalid(format!("no {kind} given")));
    }
    for (i, s) in series.iter().enumerate() {
        if s.x.len() != s.y.len() {
            return Err(Error::invalid(format!(
                "{kind} {} ('{}'): x has {} values but y has {}",
                i + 1,
                s.label,
                s.x.len(),
                s.y.len()
            )));
        }
        if s.x.is_empty() {
            return Err(Error::invalid(format!("{kind} {} ('{}') has no points", i + 1, s.label)));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Prepared data (validated, in axis space)

/// Title and axis labels of one chart.
struct AxisLabels<'a> {
    title: &'a str,
    x: &'a str,
    y: &'a str,
}

/// A validated line plot: unbroken runs of points in axis space, per series.
struct PreparedLines {
    series: Vec<Curve>,
    /// (curve index, closed outline in axis space) per unbroken piece of a band.
    bands: Vec<(usize, Vec<(f64, f64)>)>,
    x: Axis,
    y: Axis,
}

impl PreparedLines {
    fn new(series: &[Series], log_x: bool, log_y: bool) -> Result<Self> {
        check_series(series, "series")?;
        let x0 = Axis::bare(log_x);
        let y0 = Axis::bare(log_y);
        let mut prepared = Vec::with_capacity(series.len());
        for s in series {
            let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
            let mut current = Vec::new();
            for (&x, &y) in s.x.iter().zip(s.y) {
                match (x0.to_axis(x), y0.to_axis(y)) {
                    (Some(x), Some(y)) => current.push((x, y)),
                    _ if !current.is_empty() => runs.push(std::mem::take(&mut current)),
                    _ => {}
                }
            }
            if !current.is_empty() {
                runs.push(current);
            }
            prepared.push(Curve { label: s.label.to_string(), runs, markers: s.x.len() < MARKER_LIMIT });
        }
        let points = || prepared.iter().flat_map(|curve| curve.runs.iter().flatten());
        let (Some((x_min, x_max)), Some((y_min, y_max))) =
            (min_max(points().map(|p| p.0)), min_max(points().map(|p| p.1)))
        else {
            let why = match (log_x, log_y) {
                (false, false) => "no point has finite coordinates",
                (true, false) => "no point has a finite y and a finite, positive x for the log x axis",
                (false, true) => "no point has a finite x and a finite, positive y for the log y axis",
                (true, true) => "no point has finite, positive coordinates for the log axes",
            };
            return Err(Error::invalid(format!("line plot: {why}")));
        };
        Ok(PreparedLines {
            series: prepared,
            bands: Vec::new(),
            x: Axis::fitted(x_min, x_max, log_x),
            y: Axis::fitted(y_min, y_max, log_y),
        })
    }

    /// Adds the bands and widens the axes to them.
    fn with_bands(mut self, bands: &[Band], curves: usize) -> Result<Self> {
        let (log_x, log_y) = (self.x.log, self.y.log);
        let (x0, y0) = (Axis::bare(log_x), Axis::bare(log_y));
        for (i, band) in bands.iter().enumerate() {
            if band.series >= curves {
                return Err(Error::invalid(format!(
                    "band {i}: curve {} does not exist ({curves} curves)",
                    band.series
                )));
            }
            if band.lower.len() != band.x.len() || band.upper.len() != band.x.len() {
                return Err(Error::invalid(format!(
                    "band {i}: {} x values but {} lower and {} upper bounds",
                    band.x.len(),
                    band.lower.len(),
                    band.upper.len()
                )));
            }
            let mut piece: Vec<BandPoint> = Vec::new();
            let close = |piece: &mut Vec<BandPoint>, out: &mut Vec<(usize, Vec<(f64, f64)>)>| {
                if piece.len() > 1 {
                    let outline = piece.iter().map(|p| p.0).chain(piece.iter().rev().map(|p| p.1)).collect();
                    out.push((band.series, outline));
                }
                piece.clear();
            };
            for ((&x, &lo), &hi) in band.x.iter().zip(band.lower).zip(band.upper) {
                match (x0.to_axis(x), y0.to_axis(lo), y0.to_axis(hi)) {
                    (Some(x), Some(lo), Some(hi)) => piece.push(((x, lo), (x, hi))),
                    _ => close(&mut piece, &mut self.bands),
                }
            }
            close(&mut piece, &mut self.bands);
        }
        let points =
            || self.series.iter().flat_map(|c| c.runs.iter().flatten()).chain(self.bands.iter().flat_map(|b| &b.1));
        if let (Some((x_min, x_max)), Some((y_min, y_max))) =
            (min_max(points().map(|p| p.0)), min_max(points().map(|p| p.1)))
        {
            self.x = Axis::fitted(x_min, x_max, log_x);
            self.y = Axis::fitted(y_min, y_max, log_y);
        }
        Ok(self)
    }
}

/// A band's (lower, upper) points at one x, in axis space.
type BandPoint = ((f64, f64), (f64, f64));

/// One validated curve of a line plot.
struct Curve {
    label: String,
    /// Unbroken runs of drawable points, in axis space.
    runs: Vec<Vec<(f64, f64)>>,
    /// Whether to mark each point.
    markers: bool,
}

/// A validated scatter plot: finite points inside the axes, per group.
struct PreparedScatter {
    groups: Vec<(String, Vec<(f64, f64)>)>,
    x: Axis,
    y: Axis,
}

impl PreparedScatter {
    fn new(groups: &[Series], x_range: Option<(f64, f64)>, y_range: Option<(f64, f64)>) -> Result<Self> {
        check_series(groups, "group")?;
        if let Some(range) = x_range {
            check_range("scatter plot: x range", range)?;
        }
        if let Some(range) = y_range {
            check_range("scatter plot: y range", range)?;
        }
        let finite = |s: &Series| -> Vec<(f64, f64)> {
            s.x.iter().zip(s.y).filter(|(x, y)| x.is_finite() && y.is_finite()).map(|(&x, &y)| (x, y)).collect()
        };
        let mut prepared: Vec<(String, Vec<(f64, f64)>)> =
            groups.iter().map(|s| (s.label.to_string(), finite(s))).collect();
        let points = || prepared.iter().flat_map(|(_, p)| p.iter());
        let (Some(x_fit), Some(y_fit)) = (min_max(points().map(|p| p.0)), min_max(points().map(|p| p.1))) else {
            return Err(Error::invalid("scatter plot: no point has finite coordinates"));
        };
        let x = match x_range {
            Some((lo, hi)) => Axis::linear(lo, hi, 8),
            None => Axis::fitted(x_fit.0, x_fit.1, false),
        };
        let y = match y_range {
            Some((lo, hi)) => Axis::linear(lo, hi, 8),
            None => Axis::fitted(y_fit.0, y_fit.1, false),
        };
        for (_, points) in &mut prepared {
            points.retain(|&(px, py)| px >= x.lo && px <= x.hi && py >= y.lo && py <= y.hi);
        }
        Ok(PreparedScatter { groups: prepared, x, y })
    }
}

/// A validated panel.
enum PreparedPanel {
    Scatter(PreparedScatter),
    Lines(PreparedLines),
}

/// A validated heat map: its colour scale and axes.
struct PreparedHeatMap {
    /// Lower end of the colour scale.
    vmin: f64,
    /// Upper end of the colour scale.
    vmax: f64,
    diverging: bool,
    x: Axis,
    y: Axis,
    bar: Axis,
}

impl PreparedHeatMap {
    fn new(map: &HeatMap) -> Result<Self> {
        if map.nx == 0 || map.ny == 0 {
            return Err(Error::invalid(format!("heat map: empty grid ({} x {} cells)", map.nx, map.ny)));
        }
        let cells = map.nx.checked_mul(map.ny);
        if cells != Some(map.values.len()) {
            return Err(Error::invalid(format!(
                "heat map: {} values for a grid of {} x {} cells",
                map.values.len(),
                map.nx,
                map.ny
            )));
        }
        check_range("heat map: x range", map.x_range)?;
        check_range("heat map: y range", map.y_range)?;
        if let Some(clip) = map.clip_max {
            if !clip.is_finite() {
                return Err(Error::invalid(format!("heat map: clip_max must be finite, got {clip}")));
            }
        }
        let finite = || map.values.iter().copied().filter(|v| v.is_finite());
        let Some((min, max)) = min_max(finite()) else {
            return Err(Error::invalid("heat map: no finite values (all are NaN or infinite)"));
        };
        let (vmin, vmax) = if map.diverging {
            let mut m = min.abs().max(max.abs());
            if let Some(clip) = map.clip_max {
                if clip <= 0.0 {
                    return Err(Error::invalid(format!("heat map: diverging clip_max must be positive, got {clip}")));
                }
                m = m.min(clip);
            }
            if m == 0.0 {
                m = 1.0;
            }
            (-m, m)
        } else {
            let mut hi = max;
            if let Some(clip) = map.clip_max {
                if clip <= min {
                    return Err(Error::invalid(format!(
                        "heat map: clip_max {clip} is not above the smallest value {min}"
                    )));
                }
                hi = hi.min(clip);
            }
            if hi == min {
                let pad = if min != 0.0 { 0.1 * min.abs() } else { 1.0 };
                (min - pad, hi + pad)
            } else {
                (min, hi)
            }
        };
        Ok(PreparedHeatMap {
            vmin,
            vmax,
            diverging: map.diverging,
            x: Axis::linear(map.x_range.0, map.x_range.1, 7),
            y: Axis::linear(map.y_range.0, map.y_range.1, 7),
            bar: Axis { prefix: " ", ..Axis::linear(vmin, vmax, 6) },
        })
    }

    /// The colour of a cell holding `v`.
    fn color(&self, v: f64) -> RGBColor {
        if !v.is_finite() {
            return MISSING_COLOR;
        }
        // Halves keep the differences finite even for values near f64::MAX.
        let t = (0.5 * v - 0.5 * self.vmin) / (0.5 * self.vmax - 0.5 * self.vmin);
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        if self.diverging {
            diverging_color(t)
        } else {
            ViridisRGB::get_color(t)
        }
    }
}

/// The blue-white-red scale at `t` in `[0, 1]` (white at 0.5).
fn diverging_color(t: f64) -> RGBColor {
    let scaled = t.clamp(0.0, 1.0) * (DIVERGING_STOPS.len() - 1) as f64;
    let i = (scaled.floor() as usize).min(DIVERGING_STOPS.len() - 2);
    let f = scaled - i as f64;
    let (a, b) = (DIVERGING_STOPS[i], DIVERGING_STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round().clamp(0.0, 255.0) as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

// ---------------------------------------------------------------------------------------------
// Drawing

/// The pixel columns and rows of a chart's plotting area.
type PixelArea = (Range<i32>, Range<i32>);
/// A drawing area of the bitmap backend.
type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;
/// The chart type used for every plot: linear coordinates (log10 data on log axes) with our
/// own ticks.
type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<Axis, Axis>>;

/// Fills `root` white and draws one chart on it.
fn draw_figure(root: &Area, draw: impl FnOnce(&Area) -> Drawn<()>) -> Drawn<()> {
    drawn(root.fill(&WHITE))?;
    draw(root)
}

/// Builds a chart with title and label areas on `area`, fonts scaled by `scale`.
fn build_chart<'a, 'b>(area: &'a Area<'b>, title: &str, x: &Axis, y: &Axis, scale: f64) -> Drawn<Chart<'a, 'b>> {
    let px = |v: f64| (v * scale).round() as u32;
    let mut builder = ChartBuilder::on(area);
    builder.margin(px(15.0)).margin_right(px(25.0)).x_label_area_size(px(60.0)).y_label_area_size(px(80.0));
    if !title.is_empty() {
        builder.caption(title, (FONT_FAMILY, px(24.0)));
    }
    drawn(builder.build_cartesian_2d(x.clone(), y.clone()))
}

/// Draws the mesh, ticks and axis labels of `chart`.
fn draw_mesh(chart: &mut Chart, labels: &AxisLabels, scale: f64, grid: bool) -> Drawn<()> {
    let px = |v: f64| (v * scale).round() as u32;
    let mut mesh = chart.configure_mesh();
    mesh.label_style((FONT_FAMILY, px(16.0)))
        .axis_desc_style((FONT_FAMILY, px(19.0)))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(205, 205, 205))
        .axis_style(BLACK);
    if !grid {
        mesh.disable_mesh();
    }
    if !labels.x.is_empty() {
        mesh.x_desc(labels.x);
    }
    if !labels.y.is_empty() {
        mesh.y_desc(labels.y);
    }
    drawn(mesh.draw())
}

/// Draws a frame around the plotting area of `chart`.
fn draw_frame(chart: &mut Chart, x: &Axis, y: &Axis) -> Drawn<()> {
    drawn(chart.plotting_area().draw(&Rectangle::new([(x.lo, y.lo), (x.hi, y.hi)], BLACK.stroke_width(1))))
}

/// Draws the legend of `chart` when some series has a label.
fn draw_legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, any_label: bool, scale: f64) -> Drawn<()> {
    if !any_label {
        return Ok(());
    }
    let px = |v: f64| (v * scale).round() as u32;
    drawn(
        chart
            .configure_series_labels()
            .label_font((FONT_FAMILY, px(16.0)))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .position(SeriesLabelPosition::UpperRight)
            .draw(),
    )
}

/// Draws a line chart on `area`.
fn draw_lines(area: &Area, labels: &AxisLabels, data: &PreparedLines, scale: f64) -> Drawn<()> {
    let mut chart = build_chart(area, labels.title, &data.x, &data.y, scale)?;
    draw_mesh(&mut chart, labels, scale, true)?;
    let width = ((2.0 * scale).round() as u32).max(1);
    let radius = ((3.5 * scale).round() as i32).max(2);
    for (i, outline) in &data.bands {
        let color = PALETTE[i % PALETTE.len()];
        drawn(chart.draw_series(std::iter::once(Polygon::new(outline.clone(), color.mix(0.2).filled()))))?;
    }
    for (i, Curve { label, runs, markers }) in data.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let style = color.stroke_width(width);
        let mut labelled = label.is_empty();
        for run in runs {
            let anno = drawn(chart.draw_series(LineSeries::new(run.iter().copied(), style)))?;
            if !labelled {
                labelled = true;
                anno.label(label.as_str());
                if *markers {
                    anno.legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(-2, 0), (22, 0)], style)
                            + Circle::new((10, 0), radius, color.filled())
                    });
                } else {
                    anno.legend(move |(x, y)| PathElement::new(vec![(x - 2, y), (x + 22, y)], style));
                }
            }
            if *markers {
                drawn(chart.draw_series(run.iter().map(|&p| Circle::new(p, radius, color.filled()))))?;
            }
        }
    }
    draw_frame(&mut chart, &data.x, &data.y)?;
    draw_legend(&mut chart, data.series.iter().any(|curve| !curve.label.is_empty() && !curve.runs.is_empty()), scale)
}

/// Draws a scatter chart on `area`.
fn draw_scatter(area: &Area, labels: &AxisLabels, data: &PreparedScatter, scale: f64) -> Drawn<()> {
    let mut chart = build_chart(area, labels.title, &data.x, &data.y, scale)?;
    draw_mesh(&mut chart, labels, scale, true)?;
    let radius = ((2.0 * scale).round() as i32).max(1);
    let legend_radius = ((5.0 * scale).round() as i32).max(2);
    let alpha = if data.groups.iter().map(|(_, p)| p.len()).sum::<usize>() > 2000 { 0.3 } else { 0.5 };
    for (i, (label, points)) in data.groups.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let style = color.mix(alpha).filled();
        let anno = drawn(chart.draw_series(points.iter().map(|&p| Circle::new(p, radius, style))))?;
        if !label.is_empty() {
            anno.label(label.as_str()).legend(move |(x, y)| Circle::new((x + 10, y), legend_radius, color.filled()));
        }
    }
    draw_frame(&mut chart, &data.x, &data.y)?;
    draw_legend(&mut chart, data.groups.iter().any(|(label, _)| !label.is_empty()), scale)
}

/// Draws the panels of [`panels_png`] on `root`.
fn draw_panels(root: &Area, title: &str, panels: &[Panel], prepared: &[PreparedPanel]) -> Drawn<()> {
    drawn(root.fill(&WHITE))?;
    let body =
        if title.is_empty() { root.clone() } else { drawn(root.margin(6, 0, 0, 0).titled(title, (FONT_FAMILY, 30)))? };
    let rows = panels.len().div_ceil(2);
    let areas = body.split_evenly((rows, 2));
    let scale = 0.9;
    for ((panel, data), area) in panels.iter().zip(prepared).zip(&areas) {
        match (panel, data) {
            (Panel::Scatter { title, x_label, y_label, .. }, PreparedPanel::Scatter(data)) => {
                draw_scatter(area, &AxisLabels { title, x: x_label, y: y_label }, data, scale)?
            }
            (Panel::Lines { title, x_label, y_label, .. }, PreparedPanel::Lines(data)) => {
                draw_lines(area, &AxisLabels { title, x: x_label, y: y_label }, data, scale)?
            }
            _ => return Err("internal error: panel and prepared data disagree".to_string()),
        }
    }
    Ok(())
}

/// Draws a heat map with its colour bar on `root`; returns the pixel extent of the map's
/// plotting area.
fn draw_heat_map(root: &Area, map: &HeatMap, data: &PreparedHeatMap) -> Drawn<PixelArea> {
    drawn(root.fill(&WHITE))?;
    let body = if map.title.is_empty() {
        root.clone()
    } else {
        drawn(root.margin(6, 0, 0, 0).titled(map.title, (FONT_FAMILY, 24)))?
    };
    let (width, _) = body.dim_in_pixel();
    let (main, bar) = body.split_horizontally(width.saturating_sub(COLORBAR_STRIP));
    let (top, bottom, x_area) = (if map.title.is_empty() { 20 } else { 10 }, 10, 60);

    let mut chart = drawn(
        ChartBuilder::on(&main)
            .margin_top(top)
            .margin_bottom(bottom)
            .margin_left(15)
            .margin_right(10)
            .x_label_area_size(x_area)
            .y_label_area_size(80)
            .build_cartesian_2d(data.x.clone(), data.y.clone()),
    )?;
    let labels = AxisLabels { title: "", x: map.x_label, y: map.y_label };
    draw_mesh(&mut chart, &labels, 1.0, false)?;
    let x_edge = |ix: usize| lerp(map.x_range, ix as f64 / map.nx as f64);
    let y_edge = |iy: usize| lerp(map.y_range, iy as f64 / map.ny as f64);
    drawn(chart.draw_series(map.values.iter().enumerate().map(|(i, &v)| {
        let (ix, iy) = (i / map.ny, i % map.ny);
        Rectangle::new([(x_edge(ix), y_edge(iy)), (x_edge(ix + 1), y_edge(iy + 1))], data.color(v).filled())
    })))?;
    draw_frame(&mut chart, &data.x, &data.y)?;
    let plot_area = chart.plotting_area().get_pixel_range();

    let mut bar_chart = drawn(
        ChartBuilder::on(&bar)
            .margin_top(top)
            .margin_bottom(bottom)
            .margin_left(10)
            .margin_right(5)
            .x_label_area_size(x_area)
            .right_y_label_area_size(75)
            .build_cartesian_2d(Axis::bare(false), data.bar.clone()),
    )?;
    let mut mesh = bar_chart.configure_mesh();
    mesh.disable_mesh()
        .disable_x_axis()
        .label_style((FONT_FAMILY, 16))
        .axis_desc_style((FONT_FAMILY, 19))
        .axis_style(BLACK);
    if !map.colorbar_label.is_empty() {
        mesh.y_desc(map.colorbar_label);
    }
    drawn(mesh.draw())?;
    let steps = 256;
    let (lo, hi) = (data.vmin, data.vmax);
    drawn(bar_chart.draw_series((0..steps).map(|i| {
        let a = lerp((lo, hi), i as f64 / steps as f64);
        let b = lerp((lo, hi), (i + 1) as f64 / steps as f64);
        Rectangle::new([(0.0, a), (1.0, b)], data.color(lerp((a, b), 0.5)).filled())
    })))?;
    drawn(bar_chart.plotting_area().draw(&Rectangle::new([(0.0, lo), (1.0, hi)], BLACK.stroke_width(1))))?;
    Ok(plot_area)
}

/// The point a fraction `f` of the way from `a` to `b`, without overflow for finite ends.
fn lerp((a, b): (f64, f64), f: f64) -> f64 {
    a * (1.0 - f) + b * f
}

/// [`render_heat_map_rgb`], also returning the pixel extent of the map's plotting area.
fn render_heat_map_with_area(map: &HeatMap, width: u32, height: u32) -> Result<(Vec<u8>, PixelArea)> {
    ensure_font()?;
    if !(300..=10_000).contains(&width) || !(200..=10_000).contains(&height) {
        return Err(Error::invalid(format!(
            "heat map image of {width} x {height} pixels: need 300..=10000 wide and 200..=10000 high"
        )));
    }
    let prepared = PreparedHeatMap::new(map)?;
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    let area = {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        let area = draw_heat_map(&root, map, &prepared)
            .and_then(|area| drawn(root.present()).map(|()| area))
            .map_err(|m| Error::invalid(format!("drawing heat map into memory failed: {m}")))?;
        area
    };
    Ok((pixels, area))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

    /// Checks the file is a PNG of the given size with more than a blank page in it.
    fn assert_png(path: &Path, width: u32, height: u32) {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(bytes.len() > 33, "{}: only {} bytes", path.display(), bytes.len());
        assert_eq!(bytes[..8], PNG_SIGNATURE, "{}: not a PNG", path.display());
        assert_eq!(&bytes[12..16], b"IHDR");
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (width, height), "{}", path.display());
        // A blank white image compresses to well under 10 kB; a drawn figure does not.
        assert!(bytes.len() > 10_000, "{}: suspiciously small ({} bytes)", path.display(), bytes.len());
    }

    #[test]
    fn bands_widen_the_axes_and_bad_bands_are_refused() {
        let x = [1.0, 10.0, 100.0];
        let y = [1.0, 0.5, 0.2];
        let (lower, upper) = ([0.8, 0.4, 0.01], [1.2, 0.6, 0.3]);
        let series = [Series { label: "curve", x: &x, y: &y }];
        let band = Band { series: 0, x: &x, lower: &lower, upper: &upper };
        let lines = PreparedLines::new(&series, true, true).unwrap();
        let alone = lines.y.lo;
        let banded = PreparedLines::new(&series, true, true).unwrap().with_bands(&[band], 1).unwrap();
        // The band reaches 0.01, two decades below the curve's lowest point.
        assert!(banded.y.lo < alone && banded.y.lo <= -2.0, "{} vs {alone}", banded.y.lo);
        assert_eq!(banded.bands.len(), 1);
        assert_eq!(banded.bands[0].1.len(), 6);
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("band.png");
        line_plot_bands_png(&png, "t", "x", "y", &series, &[band], true, true).unwrap();
        assert_png(&png, FIGURE_SIZE.0, FIGURE_SIZE.1);
        let wrong_curve = Band { series: 1, ..band };
        let short = Band { lower: &lower[..2], ..band };
        for bad in [wrong_curve, short] {
            let err = line_plot_bands_png(&png, "t", "x", "y", &series, &[bad], true, true).unwrap_err();
            assert!(err.to_string().contains("band 0"), "{err}");
        }
    }

    /// A 36 x 24 map increasing along x, with one NaN cell at (3, 5).
    fn ramp(values: &mut Vec<f64>) -> HeatMap<'_> {
        let (nx, ny) = (36, 24);
        values.clear();
        for ix in 0..nx {
            for iy in 0..ny {
                values.push(if (ix, iy) == (3, 5) { f64::NAN } else { ix as f64 + 0.1 * iy as f64 });
            }
        }
        HeatMap {
            values,
            nx,
            ny,
            x_range: (-180.0, 180.0),
            y_range: (-180.0, 180.0),
            x_label: "φ / degree",
            y_label: "ψ / degree",
            title: "PMF",
            colorbar_label: "F / kT",
            clip_max: Some(30.0),
            diverging: false,
        }
    }

    fn pixel(pixels: &[u8], width: u32, (x, y): (i32, i32)) -> [u8; 3] {
        let i = (y as usize * width as usize + x as usize) * 3;
        [pixels[i], pixels[i + 1], pixels[i + 2]]
    }

    /// The pixel at the centre of cell (ix, iy) of `map` drawn in `area`.
    fn cell_centre(map: &HeatMap, area: &PixelArea, ix: usize, iy: usize) -> (i32, i32) {
        let (xs, ys) = area;
        let fx = (ix as f64 + 0.5) / map.nx as f64;
        let fy = (iy as f64 + 0.5) / map.ny as f64;
        let x = xs.start as f64 + fx * (xs.end - xs.start) as f64;
        let y = ys.end as f64 - fy * (ys.end - ys.start) as f64;
        (x.round() as i32, y.round() as i32)
    }

    #[test]
    fn font_is_found() {
        ensure_font().expect("a font must be available to plot (install DejaVu Sans or set CGFLOW_FONT)");
        assert!(FONT.get().unwrap().is_ok());
    }

    #[test]
    fn missing_fonts_are_reported_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.ttf");
        let garbage = dir.path().join("garbage.ttf");
        std::fs::write(&garbage, b"not a font").unwrap();
        let message = register_first_font(vec![missing.clone(), garbage.clone()], false).unwrap_err();
        assert!(message.contains("CGFLOW_FONT (not set)"), "{message}");
        assert!(message.contains(&format!("{} (not found)", missing.display())), "{message}");
        assert!(message.contains(&format!("{} (not a usable", garbage.display())), "{message}");
        let message = register_first_font(vec![], true).unwrap_err();
        assert!(!message.contains("not set") && message.contains("Set CGFLOW_FONT"), "{message}");
        let candidates = font_candidates();
        for system in SYSTEM_FONTS {
            assert!(candidates.contains(&PathBuf::from(system)), "{system} missing from {candidates:?}");
        }
        assert!(candidates.last().unwrap().ends_with("matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf"));
    }

    #[test]
    fn heat_map_png_writes_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let mut values = Vec::new();
        let map = ramp(&mut values);
        let path = dir.path().join("pmf.png");
        heat_map_png(&path, &map).unwrap();
        assert_png(&path, FIGURE_SIZE.0, FIGURE_SIZE.1);

        let diff: Vec<f64> = map.values.iter().map(|v| v - 18.0).collect();
        let path = dir.path().join("diff.png");
        heat_map_png(&path, &HeatMap { values: &diff, diverging: true, clip_max: None, ..map }).unwrap();
        assert_png(&path, FIGURE_SIZE.0, FIGURE_SIZE.1);
    }

    #[test]
    fn rendered_heat_map_has_a_colour_gradient_and_a_grey_nan_cell() {
        let mut values = Vec::new();
        let map = ramp(&mut values);
        let (width, height) = (640, 480);
        let (pixels, area) = render_heat_map_with_area(&map, width, height).unwrap();
        assert_eq!(pixels.len(), (width * height * 3) as usize);
        assert!(area.0.start > 0 && area.0.end < width as i32 && area.1.start > 0 && area.1.end < height as i32);

        let left = pixel(&pixels, width, cell_centre(&map, &area, 0, 0));
        let right = pixel(&pixels, width, cell_centre(&map, &area, 35, 12));
        let to_array = |c: RGBColor| [c.0, c.1, c.2];
        assert_eq!(left, to_array(ViridisRGB::get_color(0.0)), "left edge is the bottom of viridis");
        assert_eq!(right, to_array(ViridisRGB::get_color(1.0)), "clipped right edge is the top of viridis");
        assert_ne!(left, right);
        let prepared = PreparedHeatMap::new(&map).unwrap();
        for (ix, iy) in [(1, 1), (10, 20), (20, 3), (29, 23)] {
            let expected = to_array(prepared.color(map.values[ix * map.ny + iy]));
            assert_eq!(pixel(&pixels, width, cell_centre(&map, &area, ix, iy)), expected, "cell ({ix}, {iy})");
        }
        let nan = pixel(&pixels, width, cell_centre(&map, &area, 3, 5));
        assert_eq!(nan, to_array(MISSING_COLOR), "the NaN cell is grey");
        let public = render_heat_map_rgb(&map, width, height).unwrap();
        assert_eq!(public, pixels);

        // Diverging: negative on the left is blue, positive on the right red.
        let diff: Vec<f64> = map.values.iter().map(|v| v - 18.0).collect();
        let diverging = HeatMap { values: &diff, diverging: true, clip_max: None, ..map };
        let (pixels, area) = render_heat_map_with_area(&diverging, width, height).unwrap();
        let [r, _, b] = pixel(&pixels, width, cell_centre(&diverging, &area, 0, 12));
        assert!(b > r, "negative values are blue");
        let [r, _, b] = pixel(&pixels, width, cell_centre(&diverging, &area, 35, 12));
        assert!(r > b, "positive values are red");
    }

    #[test]
    fn heat_map_rejects_bad_input() {
        let mut values = Vec::new();
        let map = ramp(&mut values);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let short = &map.values[1..];
        let nans = vec![f64::NAN; map.values.len()];
        let cases = [
            HeatMap { values: short, ..map },
            HeatMap { nx: 0, ny: 0, values: &[], ..map },
            HeatMap { values: &nans, ..map },
            HeatMap { x_range: (1.0, 1.0), ..map },
            HeatMap { y_range: (f64::NAN, 1.0), ..map },
            HeatMap { clip_max: Some(f64::NAN), ..map },
            HeatMap { clip_max: Some(-1.0), ..map },
        ];
        for case in &cases {
            let err = heat_map_png(&path, case).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{err}");
            assert!(render_heat_map_rgb(case, 640, 480).is_err());
        }
        assert!(!path.exists(), "nothing is written for bad input");
        assert!(render_heat_map_rgb(&map, 10, 10).is_err());
        let err = heat_map_png(&dir.path().join("pmf.jpg"), &map).unwrap_err();
        assert!(err.to_string().contains(".png"), "{err}");
        let err = heat_map_png(&dir.path().join("missing").join("pmf.png"), &map).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }

    #[test]
    fn line_plot_png_writes_linear_and_log_plots() {
        let dir = tempfile::tempdir().unwrap();
        let x: Vec<f64> = (1..=12).map(|i| 10f64.powf(i as f64 * 0.5)).collect();
        let a: Vec<f64> = x.iter().map(|x| 5.0 / x.sqrt()).collect();
        let b: Vec<f64> = x.iter().map(|x| 2.0 / x.powf(0.3)).collect();
        let long_x: Vec<f64> = (0..200).map(|i| i as f64 * 0.1).collect();
        let long_y: Vec<f64> = long_x.iter().map(|x| x.sin()).collect();
        let series = [Series { label: "flow", x: &x, y: &a }, Series { label: "CG active learning", x: &x, y: &b }];
        let path = dir.path().join("kld.png");
        line_plot_png(&path, "KLD", "energy evaluations", "KLD", &series, true, true).unwrap();
        assert_png(&path, FIGURE_SIZE.0, FIGURE_SIZE.1);

        let path = dir.path().join("lin.png");
        let series = [Series { label: "sin", x: &long_x, y: &long_y }, Series { label: "", x: &x, y: &a }];
        line_plot_png(&path, "", "x", "y", &series, false, false).unwrap();
        assert_png(&path, FIGURE_SIZE.0, FIGURE_SIZE.1);

        // Non-positive values on a log axis are skipped, not an error.
        let y = [0.0, -1.0, 0.5, 0.25];
        let path = dir.path().join("skip.png");
        line_plot_png(&path, "t", "x", "y", &[Series { label: "s", x: &[1.0, 2.0, 3.0, 4.0], y: &y }], false, true)
            .unwrap();
        assert_png(&path, FIGURE_SIZE.0, FIGURE_SIZE.1);
    }

    #[test]
    fn line_plot_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let check = |series: &[Series], log_x: bool, log_y: bool, needle: &str| {
            let err = line_plot_png(&path, "t", "x", "y", series, log_x, log_y).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{err}");
            assert!(err.to_string().contains(needle), "{err} should mention {needle}");
        };
        check(&[], false, false, "no series");
        check(&[Series { label: "a", x: &[1.0, 2.0], y: &[1.0] }], false, false, "'a'");
        check(&[Series { label: "e", x: &[], y: &[] }], false, false, "no points");
        check(&[Series { label: "n", x: &[1.0, 2.0], y: &[0.0, -3.0] }], false, true, "log y");
        check(&[Series { label: "n", x: &[-1.0, 0.0], y: &[1.0, 3.0] }], true, false, "log x");
        check(&[Series { label: "n", x: &[f64::NAN], y: &[1.0] }], false, false, "finite");
        assert!(!path.exists());
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extreme.png");
        let huge = [-1e308, 1e308, f64::MAX];
        let tiny = [5e-324, 5e-324, 5e-324];
        let same = [2.0, 2.0, 2.0];
        for (x, y) in [(&huge, &same), (&same, &huge), (&tiny, &tiny), (&same, &same)] {
            let series = [Series { label: "s", x, y }];
            line_plot_png(&path, "t", "x", "y", &series, false, false).unwrap();
            scatter_png(&path, "t", "x", "y", &series, None, None).unwrap();
        }
        line_plot_png(&path, "t", "x", "y", &[Series { label: "s", x: &tiny, y: &huge }], true, true).unwrap();
        let values = [f64::MAX, -f64::MAX, 0.0, f64::INFINITY];
        let map = HeatMap {
            values: &values,
            nx: 2,
            ny: 2,
            x_range: (0.0, 1.0),
            y_range: (-1e300, 1e300),
            x_label: "",
            y_label: "",
            title: "",
            colorbar_label: "",
            clip_max: None,
            diverging: false,
        };
        heat_map_png(&path, &map).unwrap();
        heat_map_png(&path, &HeatMap { diverging: true, ..map }).unwrap();
    }

    #[test]
    fn scatter_png_writes_many_points() {
        let dir = tempfile::tempdir().unwrap();
        let n = 5000;
        let x: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1000) as f64 / 100.0 - 5.0).collect();
        let y: Vec<f64> = (0..n).map(|i| ((i * 104_729) % 997) as f64 / 99.7 - 5.0).collect();
        let y2: Vec<f64> = x.iter().zip(&y).map(|(x, y)| 0.5 * x + 0.2 * y + 1.0).collect();
        let groups = [Series { label: "MD", x: &x, y: &y }, Series { label: "flow", x: &x, y: &y2 }];
        let path = dir.path().join("scatter.png");
        scatter_png(&path, "samples", "x1", "x2", &groups, None, None).unwrap();
        assert_png(&path, FIGURE_SIZE.0, FIGURE_SIZE.1);
        let path = dir.path().join("scatter_ranged.png");
        scatter_png(&path, "samples", "x1", "x2", &groups, Some((-2.0, 2.0)), Some((-3.0, 3.0))).unwrap();
        assert_png(&path, FIGURE_SIZE.0, FIGURE_SIZE.1);
    }

    #[test]
    fn scatter_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let ok = Series { label: "a", x: &[1.0, 2.0], y: &[1.0, 2.0] };
        type Case<'a> = (&'a [Series<'a>], Option<(f64, f64)>);
        let cases: [Case; 5] = [
            (&[], None),
            (&[Series { label: "b", x: &[1.0], y: &[] }], None),
            (&[Series { label: "c", x: &[], y: &[] }], None),
            (&[Series { label: "d", x: &[f64::INFINITY], y: &[1.0] }], None),
            (&[ok], Some((2.0, 1.0))),
        ];
        for (groups, range) in cases {
            let err = scatter_png(&path, "t", "x", "y", groups, range, None).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        }
        assert!(!path.exists());
    }

    #[test]
    fn panels_png_draws_a_grid() {
        let dir = tempfile::tempdir().unwrap();
        let n = 1000;
        let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin() * 2.0).collect();
        let y: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos() * 1.5).collect();
        let groups = [Series { label: "samples", x: &x, y: &y }];
        let steps: Vec<f64> = (1..50).map(f64::from).collect();
        let loss: Vec<f64> = steps.iter().map(|s| 1.0 / s).collect();
        let series = [Series { label: "loss", x: &steps, y: &loss }];
        let scatter = |title| Panel::Scatter {
            title,
            x_label: "x1",
            y_label: "x2",
            groups: &groups,
            x_range: Some((-3.0, 3.0)),
            y_range: None,
        };
        let panels = [
            scatter("x (training)"),
            scatter("z = f(x)"),
            scatter("z ~ N(0, 1)"),
            Panel::Lines {
                title: "loss",
                x_label: "step",
                y_label: "loss",
                series: &series,
                log_x: false,
                log_y: true,
            },
            scatter("fifth"),
        ];
        let path = dir.path().join("panels.png");
        panels_png(&path, "Boltzmann generator", &panels).unwrap();
        assert_png(&path, 2 * PANEL_SIZE.0, 3 * PANEL_SIZE.1 + 50);

        let err = panels_png(&path.with_file_name("none.png"), "t", &[]).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        let bad = [
            scatter("ok"),
            Panel::Lines { title: "", x_label: "", y_label: "", series: &[], log_x: false, log_y: false },
        ];
        let err = panels_png(&path.with_file_name("bad.png"), "t", &bad).unwrap_err();
        assert!(err.to_string().contains("panel 2 of 2"), "{err}");
    }

    #[test]
    fn tick_labels_are_readable() {
        let degrees = Axis::linear(-180.0, 180.0, 7);
        assert_eq!(degrees.major, vec![-180.0, -120.0, -60.0, 0.0, 60.0, 120.0, 180.0]);
        assert_eq!(degrees.label(-60.0), "-60");
        let small = Axis::linear(0.0, 1.0, 8);
        assert_eq!(small.label(0.2), "0.2");
        assert_eq!(small.label(0.0), "0.0");
        assert_eq!(log_tick_label(0.0, true), "1");
        assert_eq!(log_tick_label(-2.0, true), "0.01");
        assert_eq!(log_tick_label(3.0, true), "1000");
        assert_eq!(log_tick_label(3.0, false), "10³");
        assert_eq!(log_tick_label(6.0, false), "10⁶");
        assert_eq!(log_tick_label(-5.0, false), "10⁻⁵");
        assert_eq!(log_tick_label(2f64.log10() + 7.0, false), "2×10⁷");
        assert_eq!(log_tick_label(5f64.log10() - 1.0, true), "0.5");
        let decades = Axis::logarithmic(2.9, 8.6);
        let labels: Vec<String> = decades.major.iter().map(|&v| decades.label(v)).collect();
        assert_eq!(labels, ["10³", "10⁴", "10⁵", "10⁶", "10⁷", "10⁸"]);
        let plain = Axis::logarithmic(-2.1, 2.1);
        assert_eq!(plain.label(-2.0), "0.01");
        let linear = Axis::linear(0.0, 1e6, 5);
        assert_eq!(linear.label(4e5), "4e5");
        assert_eq!(linear.label(0.0), "0");
        // A log axis spanning less than a decade still gets several ticks.
        let narrow = Axis::logarithmic(0.3f64.log10(), 0.9f64.log10());
        assert!(narrow.major.len() >= 3, "{:?}", narrow.major);
        let wide = Axis::logarithmic(-1.0, 20.0);
        assert!(wide.major.len() <= 11 && wide.major.len() >= 3, "{:?}", wide.major);
    }
}
