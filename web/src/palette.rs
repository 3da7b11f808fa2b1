//! The colours of the drawing, defined once: the canvas fills and strokes with these, and the
//! page sets them as CSS custom properties ([`CSS_PROPERTIES`]) that the legend and the
//! explanatory text in `index.html` use (`var(--kept)`), so the legend cannot drift from the
//! canvas.

/// A kept (unbiased) token's frame, and the word "kept" in the text.
pub const KEPT: &str = "rgb(0,150,70)";
/// The word "biased" in the text and the legend.
pub const BIASED: &str = "rgb(220,30,30)";
/// A biased token's fill: [`BIASED`], translucent so the data shows through.
pub const BIASED_FILL: &str = "rgba(220,30,30,0.35)";
/// The shade over a token an earlier layer dropped.
pub const PRUNED: &str = "rgba(30,30,30,0.55)";
/// A redistribution edge.
pub const EDGE: &str = "rgb(230,120,0)";

/// The custom properties the page sets on its root element.
pub const CSS_PROPERTIES: [(&str, &str); 5] = [
    ("--kept", KEPT),
    ("--biased", BIASED),
    ("--biased-fill", BIASED_FILL),
    ("--pruned", PRUNED),
    ("--edge", EDGE),
];

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = include_str!("../../index.html");

    #[test]
    fn the_legend_uses_every_colour_of_the_palette_and_no_copy_of_one() {
        for (property, _) in CSS_PROPERTIES {
            assert!(
                PAGE.contains(&format!("var({property})")),
                "index.html never uses {property}"
            );
        }
        // The colours the legend once hard-coded (and had drifted from the canvas's).
        for copy in ["#00964a", "#dc1e1e", "#1e1e1e", "#e67800"] {
            assert!(!PAGE.contains(copy), "index.html hard-codes {copy}");
        }
    }

    #[test]
    fn the_biased_fill_is_the_biased_colour_made_translucent() {
        let rgb = BIASED.trim_start_matches("rgb(").trim_end_matches(')');
        assert!(
            BIASED_FILL.starts_with(&format!("rgba({rgb},")),
            "{BIASED_FILL}"
        );
    }
}
