//! Heat maps of per-(edge, op) values (relevances, perturbation scores, ...) as self-contained
//! SVG.
//!
//! [`heatmap_svg`] draws one row per edge (e.g. `in0 -> n0`) and one column per operation.
//! Every cell is coloured by its value and shows it as text (3 significant digits); the kept
//! (edge, op) pairs are framed with a thick dark border (lined in white inside, to show on dark
//! cells too). Under the title come the caption
//! (what the values are) and, under the grid, a colour legend with the ends of the scale and
//! the data's minimum and maximum.
//!
//! Colours:
//! * All values `>= 0`: the perceptual sequential scale viridis (dark purple = 0, yellow =
//!   the maximum), of `value / max` with the maximum over all values ([`HeatScale::Global`])
//!   or over the row ([`HeatScale::PerRow`], whose maxima are printed right of the rows).
//! * Some value `< 0` (e.g. loss changes of a perturbation, which can fall): a diverging
//!   blue-white-red scale (ColorBrewer RdBu) symmetric about 0, of `value / max |value|`
//!   (global or per row); blue is negative, white 0, red positive.
//! * NaN cells are grey and read `nan`; infinite values read `inf`/`-inf`, take the end
//!   colour and are left out of the maxima. A maximum of 0 colours every cell as 0.
//!
//! Column headers are written horizontally when they fit (the cells are widened up to a
//! limit), otherwise rotated by 45 degrees; their extents are computed from the monospace
//! advance, so they never overlap. All text is escaped with [`crate::draw::xml_escape`] (the crate's SVG helpers are in `svg.rs`).
//!
//! ```
//! use bayesnas_search::heatmap::{heatmap_svg, HeatScale};
//!
//! let rows = vec!["in0 -> n0".to_string(), "in1 -> n0".to_string()];
//! let cols = vec!["sep_conv_3x3".to_string(), "skip_connect".to_string()];
//! let values = vec![vec![0.93, 0.12], vec![0.41, f64::NAN]];
//! let kept = vec![vec![true, false], vec![false, false]];
//! let svg = heatmap_svg("normal cell", &rows, &cols, &values, &kept, "relevance", HeatScale::Global)?;
//! assert!(svg.contains(">0.930<") && svg.contains(">nan<"));
//! # Ok::<(), String>(())
//! ```

use std::fmt::Write as _;

use crate::svg::{background_and_title, svg_open, xml_escape, MARGIN, MONO_CHAR_W, TITLE_CHAR_W};

/// How values are mapped to colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeatScale {
    /// Relative to the largest (absolute) finite value of the whole map: rows compare.
    #[default]
    Global,
    /// Relative to the largest (absolute) finite value of each row: shows the ranking within
    /// every edge even when edges differ in scale. The row maxima are printed beside the rows.
    PerRow,
}

const FONT: f64 = 12.0;
/// Monospace advance at 12 px (headers, row labels and values are monospace so that their
/// widths are known).
const CHAR_W: f64 = MONO_CHAR_W;
/// Sans-serif caption at 12 px, generous.
const CAPTION_CHAR_W: f64 = 7.0;
const CELL_H: f64 = 26.0;
const MIN_CELL_W: f64 = 46.0;
const CELL_PAD: f64 = 12.0;
/// Horizontal headers may widen the cells until the grid is this wide; beyond, they rotate.
const MAX_GRID_W: f64 = 760.0;
/// Text extent above and below the baseline at 12 px.
const ASCENT: f64 = 10.0;
const DESCENT: f64 = 3.5;
const HEADER_GAP: f64 = 6.0;
const LEGEND_BAR_W: f64 = 220.0;
const LEGEND_BAR_H: f64 = 14.0;
const NAN_FILL: &str = "#c8c8c8";
const NAN_TEXT: &str = "#555555";
const KEPT_STROKE: &str = "#111111";

const VIRIDIS: [(f64, [u8; 3]); 9] = [
    (0.0, [68, 1, 84]),
    (0.125, [71, 44, 122]),
    (0.25, [59, 82, 139]),
    (0.375, [44, 114, 142]),
    (0.5, [33, 145, 140]),
    (0.625, [40, 174, 128]),
    (0.75, [94, 201, 98]),
    (0.875, [173, 220, 48]),
    (1.0, [253, 231, 37]),
];

/// ColorBrewer RdBu (11 classes), from -1 (blue) to +1 (red).
const RDBU: [(f64, [u8; 3]); 11] = [
    (-1.0, [5, 48, 97]),
    (-0.8, [33, 102, 172]),
    (-0.6, [67, 147, 195]),
    (-0.4, [146, 197, 222]),
    (-0.2, [209, 229, 240]),
    (0.0, [247, 247, 247]),
    (0.2, [253, 219, 199]),
    (0.4, [244, 165, 130]),
    (0.6, [214, 96, 77]),
    (0.8, [178, 24, 43]),
    (1.0, [103, 0, 31]),
];

fn interpolate(stops: &[(f64, [u8; 3])], t: f64) -> [u8; 3] {
    let t = t.clamp(stops[0].0, stops[stops.len() - 1].0);
    for w in stops.windows(2) {
        let ((t0, c0), (t1, c1)) = (w[0], w[1]);
        if t <= t1 {
            let f = if t1 > t0 { (t - t0) / (t1 - t0) } else { 0.0 };
            return std::array::from_fn(|k| {
                (c0[k] as f64 + (c1[k] as f64 - c0[k] as f64) * f).round() as u8
            });
        }
    }
    stops[stops.len() - 1].1
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Black or white, whichever reads better on `c` (relative luminance).
fn text_on(c: [u8; 3]) -> &'static str {
    let lin = |v: u8| {
        let v = v as f64 / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let l = 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
    if l > 0.2 {
        "#000000"
    } else {
        "#ffffff"
    }
}

/// `v` with 3 significant digits: fixed notation for magnitudes in `[1e-3, 1e5)`, else
/// scientific (`1.23e-5`); `nan`, `inf`, `-inf`; zero is `0`.
pub fn format_sig3(v: f64) -> String {
    if v.is_nan() {
        return "nan".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let e = v.abs().log10().floor() as i32;
    if !(-3..5).contains(&e) {
        return format!("{v:.2e}");
    }
    let dec = (2 - e).max(0) as usize;
    let s = format!("{v:.dec$}");
    // Rounding up to the next power of ten (9.996 -> 10.00) needs one decimal less.
    let rounded: f64 = s.parse().unwrap_or(v);
    if rounded.abs() >= 10f64.powi(e + 1) && dec > 0 {
        let dec = dec - 1;
        return format!("{v:.dec$}");
    }
    s
}

fn text_w(s: &str) -> f64 {
    s.chars().count() as f64 * CHAR_W
}

/// A column header: text of `len` px written from `(x, y)` (on the baseline) in direction
/// `angle` degrees (0 = rightwards, -45 = up and right).
#[derive(Clone, Debug, PartialEq)]
struct HeaderBox {
    x: f64,
    y: f64,
    angle: f64,
    len: f64,
}

impl HeaderBox {
    /// The corners of the text's box (baseline direction times the text's ascent/descent).
    #[cfg(test)]
    fn corners(&self) -> [(f64, f64); 4] {
        let (s, c) = self.angle.to_radians().sin_cos();
        let (dx, dy) = (c, s); // along the baseline
        let (nx, ny) = (s, -c); // "up" from the baseline (SVG y grows downwards)
        let p = |a: f64, b: f64| (self.x + dx * a + nx * b, self.y + dy * a + ny * b);
        [
            p(0.0, -DESCENT),
            p(self.len, -DESCENT),
            p(self.len, ASCENT),
            p(0.0, ASCENT),
        ]
    }
}

/// Axis-aligned rectangle `(x0, y0, x1, y1)`.
type Rect = (f64, f64, f64, f64);

/// The geometry of a heat map.
#[derive(Clone, Debug)]
struct HeatLayout {
    width: f64,
    height: f64,
    /// Left edge of the grid and top of its first row.
    grid_x: f64,
    grid_y: f64,
    cell_w: f64,
    headers: Vec<HeaderBox>,
    row_label_right: f64,
    /// x of the per-row maxima (PerRow only).
    row_max_x: f64,
    legend_y: f64,
}

impl HeatLayout {
    fn cell(&self, r: usize, c: usize) -> Rect {
        let x0 = self.grid_x + c as f64 * self.cell_w;
        let y0 = self.grid_y + r as f64 * CELL_H;
        (x0, y0, x0 + self.cell_w, y0 + CELL_H)
    }
}

/// The colour scale chosen for the data.
struct Scale {
    diverging: bool,
    mode: HeatScale,
    /// Normaliser per row (largest finite value, or largest magnitude when diverging).
    row_max: Vec<f64>,
    global_max: f64,
    data_min: Option<f64>,
    data_max: Option<f64>,
}

impl Scale {
    fn new(values: &[Vec<f64>], mode: HeatScale) -> Scale {
        let finite = || values.iter().flatten().copied().filter(|v| v.is_finite());
        let diverging = finite().any(|v| v < 0.0);
        let norm = |it: &mut dyn Iterator<Item = f64>| {
            it.filter(|v| v.is_finite())
                .map(|v| if diverging { v.abs() } else { v })
                .fold(0.0, f64::max)
        };
        let row_max = values
            .iter()
            .map(|r| norm(&mut r.iter().copied()))
            .collect();
        Scale {
            diverging,
            mode,
            row_max,
            global_max: norm(&mut finite()),
            data_min: finite().reduce(f64::min),
            data_max: finite().reduce(f64::max),
        }
    }

    /// Fill and text colours of value `v` in row `r`.
    fn colours(&self, r: usize, v: f64) -> (String, &'static str) {
        if v.is_nan() {
            return (NAN_FILL.to_string(), NAN_TEXT);
        }
        let m = match self.mode {
            HeatScale::Global => self.global_max,
            HeatScale::PerRow => self.row_max[r],
        };
        let t = if v.is_infinite() {
            v.signum()
        } else if m > 0.0 {
            v / m
        } else {
            0.0
        };
        let c = if self.diverging {
            interpolate(&RDBU, t.clamp(-1.0, 1.0))
        } else {
            interpolate(&VIRIDIS, t.clamp(0.0, 1.0))
        };
        (hex(c), text_on(c))
    }

    fn stops(&self) -> &'static [(f64, [u8; 3])] {
        if self.diverging {
            &RDBU
        } else {
            &VIRIDIS
        }
    }

    /// Labels at the legend bar's left end, middle (diverging only) and right end.
    fn end_labels(&self) -> (String, Option<String>, String) {
        let max = format_sig3;
        match (self.diverging, self.mode) {
            (false, HeatScale::Global) => {
                ("0".into(), None, format!("max {}", max(self.global_max)))
            }
            (false, HeatScale::PerRow) => ("0".into(), None, "row max".into()),
            (true, HeatScale::Global) => (
                format!("-{}", max(self.global_max)),
                Some("0".into()),
                format!("+{}", max(self.global_max)),
            ),
            (true, HeatScale::PerRow) => (
                "-row max |v|".into(),
                Some("0".into()),
                "+row max |v|".into(),
            ),
        }
    }

    fn note(&self) -> String {
        let range = match (self.data_min, self.data_max) {
            (Some(a), Some(b)) => format!("data min {}, max {}", format_sig3(a), format_sig3(b)),
            _ => "no finite values".to_string(),
        };
        let how = match (self.diverging, self.mode) {
            (false, HeatScale::Global) => "colour: value / max (viridis)",
            (false, HeatScale::PerRow) => "colour: value / row max (viridis)",
            (true, HeatScale::Global) => "colour: value / max |value|, blue < 0 < red",
            (true, HeatScale::PerRow) => "colour: value / row max |value|, blue < 0 < red",
        };
        format!("{how}; {range}; nan: grey; framed: kept")
    }
}

fn check_shape(
    row_labels: &[String],
    col_labels: &[String],
    values: &[Vec<f64>],
    kept: &[Vec<bool>],
) -> Result<(), String> {
    if values.len() != row_labels.len() {
        return Err(format!(
            "heat map: {} rows of values for {} row labels",
            values.len(),
            row_labels.len()
        ));
    }
    for (r, row) in values.iter().enumerate() {
        if row.len() != col_labels.len() {
            return Err(format!(
                "heat map: row {r} ({:?}) has {} values for {} column labels",
                row_labels[r],
                row.len(),
                col_labels.len()
            ));
        }
    }
    if !kept.is_empty() {
        if kept.len() != values.len() {
            return Err(format!(
                "heat map: {} rows of kept flags for {} rows of values (pass an empty slice \
                 to mark nothing)",
                kept.len(),
                values.len()
            ));
        }
        for (r, row) in kept.iter().enumerate() {
            if row.len() != col_labels.len() {
                return Err(format!(
                    "heat map: row {r} ({:?}) has {} kept flags for {} column labels",
                    row_labels[r],
                    row.len(),
                    col_labels.len()
                ));
            }
        }
    }
    Ok(())
}

/// x of the legend's samples (kept, nan), right of the bar and its right label.
fn legend_samples_x(l0: &str, l1: &str) -> f64 {
    MARGIN + text_w(l0) / 2.0 + LEGEND_BAR_W + text_w(l1) / 2.0 + 24.0
}

fn layout(
    title: &str,
    row_labels: &[String],
    col_labels: &[String],
    values: &[Vec<f64>],
    value_caption: &str,
    scale: &Scale,
) -> HeatLayout {
    let n_cols = col_labels.len();
    let widest_value = values
        .iter()
        .flatten()
        .map(|&v| text_w(&format_sig3(v)))
        .fold(0.0, f64::max);
    let widest_header = col_labels.iter().map(|c| text_w(c)).fold(0.0, f64::max);
    let mut cell_w = (widest_value + CELL_PAD).max(MIN_CELL_W);
    // Horizontal headers when they fit, or fit after widening the cells within MAX_GRID_W.
    let horizontal =
        widest_header + 8.0 <= cell_w || n_cols as f64 * (widest_header + 8.0) <= MAX_GRID_W;
    if horizontal {
        cell_w = cell_w.max(widest_header + 8.0);
    }
    let (sin45, cos45) = (
        std::f64::consts::FRAC_1_SQRT_2,
        std::f64::consts::FRAC_1_SQRT_2,
    );
    let header_h = if horizontal {
        ASCENT + DESCENT + HEADER_GAP
    } else {
        widest_header * sin45 + (ASCENT + DESCENT) * cos45 + HEADER_GAP
    };
    let row_label_w = row_labels.iter().map(|l| text_w(l)).fold(0.0, f64::max);
    let title_bottom = MARGIN + 22.0;
    let caption_bottom = title_bottom + if value_caption.is_empty() { 0.0 } else { 18.0 };
    let grid_x = MARGIN + row_label_w + 8.0;
    let grid_y = caption_bottom + 10.0 + header_h;
    let headers: Vec<HeaderBox> = col_labels
        .iter()
        .enumerate()
        .map(|(c, label)| {
            let cx = grid_x + (c as f64 + 0.5) * cell_w;
            let len = text_w(label);
            if horizontal {
                HeaderBox {
                    x: cx - len / 2.0,
                    y: grid_y - HEADER_GAP - DESCENT,
                    angle: 0.0,
                    len,
                }
            } else {
                // Start just above the column's centre, shifted so that the box's lower
                // corner clears the grid.
                HeaderBox {
                    x: cx - DESCENT * sin45,
                    y: grid_y - HEADER_GAP,
                    angle: -45.0,
                    len,
                }
            }
        })
        .collect();
    let grid_x1 = grid_x + n_cols as f64 * cell_w;
    let row_max_x = grid_x1 + 8.0;
    let row_max_w = if scale.mode == HeatScale::PerRow {
        let label = if scale.diverging { "max |v| " } else { "max " };
        8.0 + scale
            .row_max
            .iter()
            .map(|&m| text_w(label) + text_w(&format_sig3(m)))
            .fold(0.0, f64::max)
    } else {
        0.0
    };
    let header_right = headers
        .iter()
        .map(|h| h.x + h.len * if horizontal { 1.0 } else { cos45 } + ASCENT)
        .fold(0.0, f64::max);
    let legend_y = grid_y + values.len() as f64 * CELL_H + 18.0;
    let (l0, _, l1) = scale.end_labels();
    let legend_right = legend_samples_x(&l0, &l1) + 116.0 + 14.0 * CAPTION_CHAR_W;
    let note_w = scale.note().chars().count() as f64 * CAPTION_CHAR_W;
    let width = [
        grid_x1 + row_max_w + MARGIN,
        header_right + MARGIN,
        MARGIN + title.chars().count() as f64 * TITLE_CHAR_W + MARGIN,
        MARGIN + value_caption.chars().count() as f64 * CAPTION_CHAR_W + MARGIN,
        legend_right + MARGIN,
        MARGIN + note_w + MARGIN,
    ]
    .into_iter()
    .fold(0.0, f64::max);
    // Legend: bar, end labels under it, the note line.
    let height = legend_y + LEGEND_BAR_H + 18.0 + 20.0 + MARGIN;
    HeatLayout {
        width,
        height,
        grid_x,
        grid_y,
        cell_w,
        headers,
        row_label_right: grid_x - 8.0,
        row_max_x,
        legend_y,
    }
}

/// A heat map of `values[row][col]` as a self-contained SVG (see the module documentation).
///
/// `row_labels` name the rows (edges, e.g. `"in0 -> n0"`), `col_labels` the columns
/// (operations); `values` must have one row per row label and one value per column label.
/// `kept` flags the cells to frame: the same shape as `values`, or empty to frame nothing.
/// `value_caption` (what the values are, e.g. `"relevance gamma_tilde / max"`) is written
/// under the title; `scale` picks global or per-row normalisation of the colours.
///
/// Errors (as text, naming the row) when the shapes do not match.
pub fn heatmap_svg(
    title: &str,
    row_labels: &[String],
    col_labels: &[String],
    values: &[Vec<f64>],
    kept: &[Vec<bool>],
    value_caption: &str,
    scale: HeatScale,
) -> Result<String, String> {
    check_shape(row_labels, col_labels, values, kept)?;
    let sc = Scale::new(values, scale);
    let lay = layout(title, row_labels, col_labels, values, value_caption, &sc);
    let (w, h) = (lay.width, lay.height);
    let mut s = svg_open(w, h, title);
    s.push_str(
        "  <defs>\n    <linearGradient id=\"legend\" x1=\"0\" y1=\"0\" x2=\"1\" y2=\"0\">\n",
    );
    let stops = sc.stops();
    let (t0, t1) = (stops[0].0, stops[stops.len() - 1].0);
    for &(t, c) in stops {
        let _ = writeln!(
            s,
            "      <stop offset=\"{:.3}\" stop-color=\"{}\"/>",
            (t - t0) / (t1 - t0),
            hex(c)
        );
    }
    s.push_str("    </linearGradient>\n  </defs>\n");
    background_and_title(&mut s, w, h, MARGIN, title);
    if !value_caption.is_empty() {
        let _ = writeln!(
            s,
            "  <text x=\"{MARGIN}\" y=\"{:.1}\" font-family=\"sans-serif\" font-size=\"{FONT}\" \
             fill=\"#444444\">{}</text>",
            MARGIN + 36.0,
            xml_escape(value_caption)
        );
    }
    for (hb, label) in lay.headers.iter().zip(col_labels) {
        let rotate = if hb.angle != 0.0 {
            format!(
                " transform=\"rotate({} {:.1} {:.1})\"",
                hb.angle, hb.x, hb.y
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  <text class=\"header\" x=\"{:.1}\" y=\"{:.1}\"{rotate} font-family=\"monospace\" \
             font-size=\"{FONT}\">{}</text>",
            hb.x,
            hb.y,
            xml_escape(label)
        );
    }
    for (r, label) in row_labels.iter().enumerate() {
        let (_, y0, _, y1) = lay.cell(r, 0);
        let _ = writeln!(
            s,
            "  <text class=\"row\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" \
             font-family=\"monospace\" font-size=\"{FONT}\">{}</text>",
            lay.row_label_right,
            (y0 + y1) / 2.0 + 4.0,
            xml_escape(label)
        );
    }
    for (r, row) in values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let (x0, y0, x1, y1) = lay.cell(r, c);
            let (fill, ink) = sc.colours(r, v);
            let _ = writeln!(
                s,
                "  <g class=\"cell\"><rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" \
                 height=\"{CELL_H}\" fill=\"{fill}\" stroke=\"#ffffff\" stroke-width=\"1\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-family=\"monospace\" \
                 font-size=\"{FONT}\" fill=\"{ink}\">{}</text></g>",
                x1 - x0,
                (x0 + x1) / 2.0,
                (y0 + y1) / 2.0 + 4.0,
                xml_escape(&format_sig3(v))
            );
        }
    }
    // Frames on top of all cells, so that neighbours do not cover them.
    for (r, row) in kept.iter().enumerate() {
        for (c, _) in row.iter().enumerate().filter(|(_, &k)| k) {
            let (x0, y0, x1, y1) = lay.cell(r, c);
            // Dark frame with a thin white inner line: visible on dark and light cells.
            let _ = writeln!(
                s,
                "  <rect class=\"kept\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                 fill=\"none\" stroke=\"{KEPT_STROKE}\" stroke-width=\"3\"/>\
                 <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" \
                 stroke=\"#ffffff\" stroke-width=\"1\"/>",
                x0 + 1.5,
                y0 + 1.5,
                x1 - x0 - 3.0,
                y1 - y0 - 3.0,
                x0 + 3.5,
                y0 + 3.5,
                x1 - x0 - 7.0,
                y1 - y0 - 7.0
            );
        }
    }
    if scale == HeatScale::PerRow {
        let label = if sc.diverging { "max |v| " } else { "max " };
        for (r, &m) in sc.row_max.iter().enumerate() {
            let (_, y0, _, y1) = lay.cell(r, 0);
            let _ = writeln!(
                s,
                "  <text class=\"rowmax\" x=\"{:.1}\" y=\"{:.1}\" font-family=\"monospace\" \
                 font-size=\"{FONT}\" fill=\"#444444\">{label}{}</text>",
                lay.row_max_x,
                (y0 + y1) / 2.0 + 4.0,
                xml_escape(&format_sig3(m))
            );
        }
    }
    if values.is_empty() || col_labels.is_empty() {
        let _ = writeln!(
            s,
            "  <text x=\"{:.1}\" y=\"{:.1}\" font-family=\"sans-serif\" font-size=\"{FONT}\" \
             fill=\"#444444\">(no values)</text>",
            lay.grid_x,
            lay.grid_y + 2.0
        );
    }
    // Legend: gradient bar with its end labels, a kept sample, the note.
    let (l0, lm, l1) = sc.end_labels();
    let bx = MARGIN + text_w(&l0) / 2.0;
    let by = lay.legend_y;
    let _ = writeln!(
        s,
        "  <g class=\"legend\"><rect x=\"{bx:.1}\" y=\"{by:.1}\" width=\"{LEGEND_BAR_W}\" \
         height=\"{LEGEND_BAR_H}\" fill=\"url(#legend)\" stroke=\"#333333\" stroke-width=\"0.8\"/>"
    );
    let ly = by + LEGEND_BAR_H + 14.0;
    let mut label_at = |x: f64, t: &str| {
        let _ = writeln!(
            s,
            "    <text x=\"{x:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\" font-family=\"monospace\" \
             font-size=\"{FONT}\">{}</text>",
            xml_escape(t)
        );
    };
    label_at(bx, &l0);
    if let Some(m) = &lm {
        label_at(bx + LEGEND_BAR_W / 2.0, m);
    }
    label_at(bx + LEGEND_BAR_W, &l1);
    let kx = legend_samples_x(&l0, &l1);
    let _ = writeln!(
        s,
        "    <rect x=\"{kx:.1}\" y=\"{:.1}\" width=\"28\" height=\"18\" fill=\"#ffffff\" \
         stroke=\"{KEPT_STROKE}\" stroke-width=\"3\"/>\n    <text x=\"{:.1}\" y=\"{:.1}\" \
         font-family=\"sans-serif\" font-size=\"{FONT}\">kept</text>\n    <rect x=\"{:.1}\" \
         y=\"{:.1}\" width=\"28\" height=\"18\" fill=\"{NAN_FILL}\"/>\n    <text x=\"{:.1}\" \
         y=\"{:.1}\" font-family=\"sans-serif\" font-size=\"{FONT}\">no value (nan)</text>",
        by - 2.0,
        kx + 36.0,
        by + 11.0,
        kx + 80.0,
        by - 2.0,
        kx + 116.0,
        by + 11.0,
    );
    let _ = writeln!(
        s,
        "    <text x=\"{MARGIN}\" y=\"{:.1}\" font-family=\"sans-serif\" font-size=\"{FONT}\" \
         fill=\"#444444\">{}</text>\n  </g>",
        ly + 20.0,
        xml_escape(&sc.note())
    );
    s.push_str("</svg>\n");
    Ok(s)
}

#[cfg(test)]
mod tests;
