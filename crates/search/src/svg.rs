//! What the SVG pictures of this crate share ([`crate::draw`]'s cell drawings and
//! [`crate::heatmap`]'s heat maps): the opening element, the white background with the bold
//! title, text escaping (also of the DOT labels), and the outer margin and text metrics their layouts size text with.

use std::fmt::Write as _;

/// Outer margin of a picture.
pub(crate) const MARGIN: f64 = 20.0;
/// Advance of the bold sans-serif title at 16 px, generous.
pub(crate) const TITLE_CHAR_W: f64 = 9.5;
/// Monospace advance at 12 px, slightly generous.
pub(crate) const MONO_CHAR_W: f64 = 7.3;

/// The opening `<svg>` element of a `w` x `h` picture and its `<title>`.
pub(crate) fn svg_open(w: f64, h: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
         viewBox=\"0 0 {w:.1} {h:.1}\">"
    );
    let _ = writeln!(s, "  <title>{}</title>", xml_escape(title));
    s
}

/// The white background of a `w` x `h` picture and its bold title at `margin`.
pub(crate) fn background_and_title(s: &mut String, w: f64, h: f64, margin: f64, title: &str) {
    let _ = writeln!(
        s,
        "  <rect x=\"0\" y=\"0\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"#ffffff\"/>"
    );
    let _ = writeln!(
        s,
        "  <text x=\"{margin}\" y=\"{:.1}\" font-family=\"sans-serif\" font-size=\"16\" \
         font-weight=\"bold\">{}</text>",
        margin + 16.0,
        xml_escape(title)
    );
}

/// Escapes text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    escape_chars(s, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\'' => Some("&apos;"),
        c if (c as u32) < 0x20 && c != '\n' && c != '\t' => Some(" "),
        _ => None,
    })
}

/// `s` with every character that `replace` maps to a replacement replaced by it (the
/// escaping of the SVG text and of the DOT labels).
pub(crate) fn escape_chars(s: &str, replace: impl Fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match replace(c) {
            Some(r) => out.push_str(r),
            None => out.push(c),
        }
    }
    out
}
