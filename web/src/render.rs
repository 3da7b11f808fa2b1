//! Canvas drawing: the sample's modalities as a person sees them (synthetic: image,
//! spectrogram, words; AV-MNIST: the digit and spectrogram the model sees, and the original
//! digit), and on top of them the chosen refinement layer's kept / biased tokens and the
//! redistribution edges.

use mgr::trace::{LayerTrace, SampleTrace, TokenOrigin};
use web_sys::CanvasRenderingContext2d;

use crate::layout::{Rect, heat, layout, titles, token_rect};
use crate::palette;
use crate::sample::Picture;
use crate::state::Data;

use mgr::trace::Edge;

/// Grey pixels (1 = black ink) of a `side` x `side` row-major image filling `panel`.
fn draw_grey(ctx: &CanvasRenderingContext2d, panel: Rect, image: &[f32], side: usize) {
    let cell = panel.w / side as f64;
    for (i, v) in image.iter().enumerate() {
        let g = (255.0 * (1.0 - v.clamp(0.0, 1.0))) as u8;
        ctx.set_fill_style_str(&format!("rgb({g},{g},{g})"));
        ctx.fill_rect(
            panel.x + (i % side) as f64 * cell,
            panel.y + (i / side) as f64 * cell,
            cell + 0.5,
            cell + 0.5,
        );
    }
}

/// Draws everything for `layer` of `trace` (None: no refinement layers), with the
/// redistribution edges `edges` (of `layer`, as [`crate::edges::edges_to_draw`] selects them);
/// `counts` holds each modality's tokens.
#[allow(clippy::too_many_arguments)]
pub fn draw(
    ctx: &CanvasRenderingContext2d,
    width: f64,
    data: Data,
    picture: &Picture,
    counts: &[usize],
    trace: &SampleTrace,
    layer: Option<&LayerTrace>,
    edges: &[Edge],
) {
    let (panels, height) = layout(width);
    ctx.clear_rect(0.0, 0.0, width, height);
    ctx.set_font("14px system-ui, sans-serif");
    ctx.set_text_baseline("alphabetic");
    // Narrow panels (an embedded view) get short titles.
    let compact = panels[0].w < 200.0;
    let titles = titles(data, &trace.modalities, compact);
    if compact {
        ctx.set_font("12px system-ui, sans-serif");
    }
    draw_titles(ctx, &panels, &titles, trace);
    draw_inputs(ctx, &panels, picture, counts, trace);
    draw_placeholders(ctx, &panels, counts, trace, compact);
    if let Some(layer) = layer {
        draw_layer(ctx, &panels, counts, layer, edges);
    }
}

/// Each panel's title, with "dropped" for a dropped modality.
fn draw_titles(
    ctx: &CanvasRenderingContext2d,
    panels: &[Rect; 3],
    titles: &[String; 3],
    trace: &SampleTrace,
) {
    for (m, p) in panels.iter().enumerate() {
        ctx.set_fill_style_str("#222");
        let dropped = trace.available.get(m) == Some(&false);
        let title = if dropped {
            format!("{} - dropped", titles[m])
        } else {
            titles[m].to_string()
        };
        let _ = ctx.fill_text(&title, p.x, p.y - 6.0);
    }
}

/// The modalities as a person sees them (image, spectrogram, words; AV-MNIST's original digit).
/// A dropped modality is not drawn at all: the model never sees it.
fn draw_inputs(
    ctx: &CanvasRenderingContext2d,
    panels: &[Rect; 3],
    picture: &Picture,
    counts: &[usize],
    trace: &SampleTrace,
) {
    let shown = |m: usize| trace.available.get(m) == Some(&true);
    if shown(0) {
        draw_grey(ctx, panels[0], &picture.image, picture.image_side);
    }
    let (cw, ch) = (
        panels[1].w / picture.frames as f64,
        panels[1].h / picture.bins as f64,
    );
    for (i, v) in picture.spectrogram.iter().enumerate().filter(|_| shown(1)) {
        let (t, f) = (i / picture.bins, i % picture.bins);
        ctx.set_fill_style_str(&heat(*v));
        ctx.fill_rect(
            panels[1].x + t as f64 * cw,
            panels[1].y + (picture.bins - 1 - f) as f64 * ch,
            cw + 0.5,
            ch + 0.5,
        );
    }
    if let Some(original) = &picture.original {
        // Not a modality: the digit before MultiBench's PCA, so a person can read it.
        draw_grey(ctx, panels[2], original, 28);
        ctx.set_stroke_style_str("#999");
        ctx.set_line_width(1.0);
        ctx.stroke_rect(panels[2].x, panels[2].y, panels[2].w, panels[2].h);
    } else {
        ctx.set_fill_style_str("#f7f7f2");
        ctx.fill_rect(panels[2].x, panels[2].y, panels[2].w, panels[2].h);
    }
    for (w, word) in picture.words.iter().enumerate().filter(|_| shown(2)) {
        let r = token_rect(
            panels,
            counts,
            TokenOrigin {
                modality: 2,
                position: w,
            },
        );
        ctx.set_fill_style_str("#222");
        ctx.set_font(&format!(
            "{}px system-ui, sans-serif",
            (r.h * 0.55).clamp(10.0, 20.0)
        ));
        let _ = ctx.fill_text(word, r.x + 8.0, r.y + r.h * 0.7);
    }
}

/// A dropped modality's tokens: each the same learned placeholder (E_miss plus its position),
/// drawn as identical hatched tiles, unlike any real data.
fn draw_placeholders(
    ctx: &CanvasRenderingContext2d,
    panels: &[Rect; 3],
    counts: &[usize],
    trace: &SampleTrace,
    compact: bool,
) {
    for (m, p) in panels.iter().enumerate().take(counts.len()) {
        if trace.available[m] {
            continue;
        }
        ctx.set_fill_style_str("#e4e4e4");
        ctx.fill_rect(p.x, p.y, p.w, p.h);
        ctx.set_stroke_style_str("#b8b8b8");
        ctx.set_line_width(1.0);
        for position in 0..counts[m] {
            let r = token_rect(
                panels,
                counts,
                TokenOrigin {
                    modality: m,
                    position,
                },
            );
            ctx.stroke_rect(r.x + 1.0, r.y + 1.0, r.w - 2.0, r.h - 2.0);
            ctx.begin_path();
            let mut offset = 0.0;
            while offset < r.w + r.h {
                let (x0, y0) = (r.x + offset.min(r.w), r.y + (offset - r.w).max(0.0));
                let (x1, y1) = (r.x + (offset - r.h).max(0.0), r.y + offset.min(r.h));
                ctx.move_to(x0, y0);
                ctx.line_to(x1, y1);
                offset += 8.0;
            }
            ctx.stroke();
        }
        ctx.set_fill_style_str("rgba(255,255,255,0.85)");
        ctx.fill_rect(p.x + 4.0, p.y + p.h / 2.0 - 18.0, p.w - 8.0, 26.0);
        ctx.set_fill_style_str("#333");
        ctx.set_font(if compact {
            "11px system-ui, sans-serif"
        } else {
            "14px system-ui, sans-serif"
        });
        let label = if compact {
            "all E_miss"
        } else {
            "missing: every token is E_miss"
        };
        let _ = ctx.fill_text(label, p.x + 10.0, p.y + p.h / 2.0);
    }
}

/// One refinement layer: tokens pruned by earlier layers shaded, this layer's kept (green, the
/// wider the higher xi) and biased (red) tokens, and the redistribution edges.
fn draw_layer(
    ctx: &CanvasRenderingContext2d,
    panels: &[Rect; 3],
    counts: &[usize],
    layer: &LayerTrace,
    edges: &[Edge],
) {
    let present: Vec<TokenOrigin> = layer.tokens.iter().map(|t| t.origin).collect();
    for (m, &n) in counts.iter().enumerate() {
        for pos in 0..n {
            let origin = TokenOrigin {
                modality: m,
                position: pos,
            };
            if !present.contains(&origin) {
                let r = token_rect(panels, counts, origin);
                ctx.set_fill_style_str(palette::PRUNED);
                ctx.fill_rect(r.x, r.y, r.w, r.h);
            }
        }
    }
    let max_weight = layer
        .edges
        .iter()
        .map(|e| e.weight)
        .fold(0.0f32, f32::max)
        .max(1e-6);
    ctx.set_stroke_style_str(palette::EDGE);
    for edge in edges {
        let strength = (edge.weight / max_weight) as f64;
        let (x0, y0) = token_rect(panels, counts, layer.tokens[edge.from].origin).center();
        let (x1, y1) = token_rect(panels, counts, layer.tokens[edge.to].origin).center();
        ctx.set_global_alpha(0.25 + 0.65 * strength);
        ctx.set_line_width(1.0 + 3.0 * strength);
        ctx.begin_path();
        ctx.move_to(x0, y0);
        ctx.quadratic_curve_to((x0 + x1) / 2.0, (y0 + y1) / 2.0 - 30.0, x1, y1);
        ctx.stroke();
    }
    ctx.set_global_alpha(1.0);
    for token in &layer.tokens {
        let r = token_rect(panels, counts, token.origin);
        if token.kept {
            ctx.set_stroke_style_str(palette::KEPT);
            ctx.set_line_width(1.0 + 2.5 * ((token.xi as f64 + 1.0) / 2.0));
            ctx.stroke_rect(r.x + 1.5, r.y + 1.5, r.w - 3.0, r.h - 3.0);
        } else {
            ctx.set_fill_style_str(palette::BIASED_FILL);
            ctx.fill_rect(r.x, r.y, r.w, r.h);
        }
    }
}
