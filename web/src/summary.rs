//! The canvas in words, for screen readers: what the picture shows of one sample and layer.
//! Plain Rust, so it is tested natively.

use mgr::trace::SampleTrace;

/// One paragraph: the sample, which modalities are missing, how many tokens of each modality the
/// layer keeps, how many edges are drawn (`drawn_edges`), and the prediction with its
/// probability (its class named by `class_name`).
pub fn canvas_summary(
    trace: &SampleTrace,
    sample: usize,
    layer: usize,
    drawn_edges: usize,
    class_name: impl Fn(usize) -> String,
) -> String {
    let mut text = format!("Sample {sample}");
    let dropped: Vec<&str> = trace
        .modalities
        .iter()
        .zip(&trace.available)
        .filter(|(_, a)| !**a)
        .map(|(m, _)| m.as_str())
        .collect();
    if dropped.is_empty() {
        text.push_str(", every modality present.");
    } else {
        text.push_str(&format!(
            ", {} missing (drawn as placeholders).",
            dropped.join(" and ")
        ));
    }
    if let Some(l) = trace.layers.get(layer) {
        let per_modality: Vec<String> = trace
            .modalities
            .iter()
            .enumerate()
            .map(|(m, name)| {
                let of = l.tokens.iter().filter(|t| t.origin.modality == m);
                let kept = of.clone().filter(|t| t.kept).count();
                format!("{name} {kept} of {}", of.count())
            })
            .collect();
        let kept = l.tokens.iter().filter(|t| t.kept).count();
        text.push_str(&format!(
            " Refinement layer {} of {} keeps {kept} of {} tokens ({}); {} biased tokens, {} redistribution edges drawn.",
            layer + 1,
            trace.layers.len(),
            l.tokens.len(),
            per_modality.join(", "),
            l.tokens.len() - kept,
            drawn_edges
        ));
    }
    if let Some(class) = trace.predicted_class {
        let name = class_name(class);
        let p = trace.output.get(class).copied().unwrap_or(f32::NAN);
        text.push_str(&format!(" Prediction: {name} (probability {p:.2})."));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::edges_to_draw;
    use crate::engine::tests::shipped;
    use crate::state::EdgeView;

    #[test]
    fn the_summary_counts_what_the_trace_holds() {
        let engine = shipped();
        let sample = engine.sample(3);
        let inference = engine.infer(&sample, &[true, false, true], None, None);
        let trace = &inference.trace;
        let layer = &trace.layers[0];
        let drawn = |view| edges_to_draw(&layer.edges, view).len();
        let text = canvas_summary(trace, 3, 0, drawn(EdgeView::Strongest), |c| {
            engine.class_name(c)
        });
        let kept_audio = layer
            .tokens
            .iter()
            .filter(|t| t.origin.modality == 1 && t.kept)
            .count();
        assert!(text.starts_with("Sample 3, audio missing"), "{text}");
        assert!(
            text.contains(&format!("audio {kept_audio} of 16")),
            "{text}"
        );
        assert!(text.contains("layer 1 of 2"), "{text}");
        let class = trace.predicted_class.unwrap();
        assert!(text.contains(&engine.class_name(class)), "{text}");
        assert!(
            text.contains(&format!(
                "{} redistribution edges drawn",
                drawn(EdgeView::Strongest)
            )),
            "{text}"
        );
        let all = canvas_summary(trace, 3, 0, drawn(EdgeView::All), |c| engine.class_name(c));
        assert_ne!(all, text, "the edge count follows the view");
    }
}
