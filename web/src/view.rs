//! The page's HTML that is not the canvas, built from typed values as strings: the ranking's AUC,
//! the prediction, the token table, the controls that depend on the model (one checkbox per
//! modality, the layer choices). Plain Rust, tested natively; `app` only puts them in place.

use mgr::trace::{Edge, LayerTrace, SampleTrace, TokenTrace};

use crate::edges::edges_to_draw;
use crate::engine::{AUC_SAMPLES, Engine, Inference};
use crate::honesty::{self, LayerHonesty};
use crate::sample::PageSample;
use crate::state::{ViewState, escape_html};

/// Everything the page shows for one view besides the canvas's pixels and the controls, from
/// the engine and one inference: the view model `app` paints, one field per place on the page.
pub struct PageView {
    /// The trace under the view's mask.
    pub trace: SampleTrace,
    /// The trace with every modality present.
    pub complete: SampleTrace,
    /// Per refinement layer, the ranking's AUC against the ground-truth noise over the test
    /// samples (None for data without ground truth).
    pub aucs: Option<Vec<Option<f64>>>,
    /// What each layer's ranking does with missing data, in numbers.
    pub honesty: Vec<LayerHonesty>,
    /// `#ranking-auc`.
    pub ranking_auc_html: String,
    /// `#ranking-honesty`.
    pub honesty_html: String,
    /// `#prediction`.
    pub prediction_html: String,
    /// `#tokens`: the shown layer's token table.
    pub tokens_html: String,
    /// The same table as CSV, for "copy as CSV".
    pub tokens_csv: String,
    /// The data's credit line (AV-MNIST).
    pub credit: Option<String>,
    /// The redistribution edges the canvas draws.
    pub drawn_edges: Vec<Edge>,
    /// The recording of an AV-MNIST sample.
    pub recording: Option<String>,
    /// The sample's label.
    pub label: usize,
}

impl PageView {
    /// The view of `state` with `sample` and its `inference` on `engine`.
    pub fn of(
        engine: &Engine,
        state: &ViewState,
        sample: &PageSample,
        inference: Inference,
    ) -> Self {
        let Inference { trace, complete } = inference;
        let aucs = engine.ranking_auc(state.rho, state.lt);
        let noise = sample.noise_tokens();
        let layer = trace.layers.get(state.layer);
        let ranking_auc_html = ranking_auc_html(aucs.as_deref(), state.layer, layer, noise);
        // The test-set figures were measured at the model's own rho and every layer.
        let test_ranking = engine
            .meta
            .test_ranking()
            .filter(|_| state.rho.is_none() && state.lt.is_none());
        let honesty = honesty::read_layers(&trace, aucs.as_deref(), test_ranking.as_ref());
        let honesty_html = honesty::honesty_html(&honesty, state.layer);
        let drawn_edges = layer
            .map(|l| edges_to_draw(&l.edges, state.edges))
            .unwrap_or_default();
        let prediction_html = prediction_html(engine, sample, state.sample, &trace, &complete);
        let tokens_html = layer
            .map(|layer| token_table_html(&trace.modalities, layer, noise))
            .unwrap_or_default();
        let tokens_csv = layer
            .map(|layer| token_table_csv(&trace.modalities, &trace.available, layer, noise))
            .unwrap_or_default();
        let recording = match sample {
            PageSample::Avmnist(s) => Some(s.recording.clone()),
            PageSample::Synthetic(_) => None,
        };
        PageView {
            aucs,
            honesty,
            ranking_auc_html,
            honesty_html,
            prediction_html,
            tokens_html,
            tokens_csv,
            credit: engine.meta.credit.clone(),
            drawn_edges,
            recording,
            label: sample.label(),
            trace,
            complete,
        }
    }

    /// What the browser test reads from the page (`#mgr-trace`): the view, the traces and
    /// what was drawn, with the inference time `ms`.
    pub fn test_json(&self, state: &ViewState, ms: f64) -> String {
        serde_json::json!({
            "state": state.to_hash(),
            "data": state.data.name(),
            "sample": state.sample,
            "label": self.label,
            "recording": self.recording,
            "trace": self.trace,
            "complete": self.complete,
            "ms": ms,
            "ranking_auc": self.aucs,
            "honesty": self.honesty,
            "drawn_edges": self.drawn_edges.len(),
        })
        .to_string()
    }
}

fn auc_text(a: &Option<f64>) -> String {
    a.map_or("n/a".to_string(), |v| format!("{v:.2}"))
}

/// The ranking's AUC against the ground-truth noise tokens: per layer over the drawn sample set
/// (`aucs`, the shown `layer_index` marked) and for this sample's `layer` (`noise`: the sample's
/// ground truth); a sentence saying why there is none for real data (`aucs` None).
pub fn ranking_auc_html(
    aucs: Option<&[Option<f64>]>,
    layer_index: usize,
    layer: Option<&LayerTrace>,
    noise: Option<&[Vec<bool>]>,
) -> String {
    let Some(aucs) = aucs else {
        return "Real data has no ground-truth noise tokens, so the ranking's AUC is measured on the synthetic model only (choose it above).".to_string();
    };
    let per_layer: Vec<String> = aucs
        .iter()
        .enumerate()
        .map(|(l, a)| {
            let shown = if l == layer_index {
                " class=\"shown\""
            } else {
                ""
            };
            format!("<span{shown}>layer {l}: <b>{}</b></span>", auc_text(a))
        })
        .collect();
    let sample_auc = layer.zip(noise).and_then(|(layer, noise)| {
        let (scores, signal): (Vec<f32>, Vec<bool>) = layer
            .tokens
            .iter()
            .map(|t| (t.xi, !noise[t.origin.modality][t.origin.position]))
            .unzip();
        mgr::ranking_quality::auc(&scores, &signal)
    });
    format!(
        "Ranking AUC against the ground-truth noise tokens (test samples 0-{}, all modalities present; 0.5 = chance, 1 = every signal token above every noise token): {}. This sample, this layer: <b id=\"sample-auc\">{}</b>.",
        AUC_SAMPLES - 1,
        per_layer.join(", "),
        auc_text(&sample_auc)
    )
}

/// What the sample is, and the class probabilities with the drops (`trace`) and with every
/// modality present (`complete`).
pub fn prediction_html(
    engine: &Engine,
    sample: &PageSample,
    index: usize,
    trace: &SampleTrace,
    complete: &SampleTrace,
) -> String {
    let name = |t: &SampleTrace| {
        t.predicted_class
            .map(|c| engine.class_name(c))
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "<p>{}</p>\
         <div class=\"probs\"><div><h3>with the drops: <span id=\"pred-masked\">{}</span></h3>{}</div>\
         <div><h3>all present: <span id=\"pred-complete\">{}</span></h3>{}</div></div>",
        describe(engine, sample, index),
        escape_html(&name(trace)),
        probability_rows(engine, trace),
        escape_html(&name(complete)),
        probability_rows(engine, complete)
    )
}

/// The tokens of one refinement layer in rank order: modality and position, xi_f, xi_e, xi, the
/// split, and (synthetic data, `noise`) whether the token is ground-truth noise.
pub fn token_table_html(
    modalities: &[String],
    layer: &LayerTrace,
    noise: Option<&[Vec<bool>]>,
) -> String {
    let rows: String = by_rank(layer)
        .into_iter()
        .map(|t| {
            let truth = match is_noise(noise, t) {
                Some(true) => "noise",
                Some(false) => "",
                None => "n/a",
            };
            format!(
                "<tr class=\"{}\"><td>{}</td><td>{} {}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>",
                if t.kept { "kept" } else { "biased" },
                t.rank,
                escape_html(&modalities[t.origin.modality]),
                t.origin.position,
                t.xi_f,
                t.xi_e,
                t.xi,
                if t.kept { "kept" } else { "biased" },
                truth
            )
        })
        .collect();
    format!(
        "<table><thead><tr><th>rank</th><th>token</th><th>&xi;<sub>f</sub></th><th>&xi;<sub>e</sub></th><th>&xi;</th><th>split</th><th>truth</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

/// The token table as CSV for a worksheet, one row per token in rank order: rank, modality,
/// position, the three scores (Eq. 9), the split (Eq. 10), the ground truth (`signal`, `noise`,
/// or `n/a` for real data) and whether the token is a missing modality's placeholder.
pub fn token_table_csv(
    modalities: &[String],
    available: &[bool],
    layer: &LayerTrace,
    noise: Option<&[Vec<bool>]>,
) -> String {
    let mut csv =
        String::from("layer,rank,modality,position,xi_f,xi_e,xi,split,truth,placeholder\n");
    for t in by_rank(layer) {
        let (m, p) = (t.origin.modality, t.origin.position);
        let truth = match is_noise(noise, t) {
            Some(true) => "noise",
            Some(false) => "signal",
            None => "n/a",
        };
        csv.push_str(&format!(
            "{},{},{},{p},{},{},{},{},{truth},{}\n",
            layer.layer,
            t.rank,
            csv_field(&modalities[m]),
            t.xi_f,
            t.xi_e,
            t.xi,
            if t.kept { "kept" } else { "biased" },
            if available[m] { "no" } else { "yes" }
        ));
    }
    csv
}

/// The layer's tokens in rank order (Eq. 10's ranking, 0 first).
fn by_rank(layer: &LayerTrace) -> Vec<&TokenTrace> {
    let mut tokens: Vec<_> = layer.tokens.iter().collect();
    tokens.sort_by_key(|t| t.rank);
    tokens
}

/// Whether the token is ground-truth noise; None for data without that truth.
fn is_noise(noise: Option<&[Vec<bool>]>, t: &TokenTrace) -> Option<bool> {
    noise.map(|n| n[t.origin.modality][t.origin.position])
}

/// One CSV field: quoted (inner quotes doubled) when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One bar per class: its name, a bar as wide as its probability, the probability.
fn probability_rows(engine: &Engine, trace: &SampleTrace) -> String {
    let pred = trace.predicted_class.unwrap_or(0);
    trace
        .output
        .iter()
        .enumerate()
        .map(|(c, &p)| {
            let class = if c == pred { " class=\"pred\"" } else { "" };
            format!(
                "<div{class}><span class=\"cls\">{}</span><span class=\"bar\" style=\"width:{:.1}%\"></span><span class=\"p\">{:.3}</span></div>",
                escape_html(&engine.class_name(c)),
                100.0 * p,
                p
            )
        })
        .collect()
}

/// The sentence above the probability charts: what the sample is.
fn describe(engine: &Engine, sample: &PageSample, index: usize) -> String {
    match sample {
        PageSample::Synthetic(s) => format!(
            "Sample {index} is a <b>{}</b> (shows: image {}, melody {}, text \"{}\").",
            engine.class_name(s.label),
            engine.class_name(s.shown[0]),
            engine.class_name(s.shown[1]),
            escape_html(&s.sentence())
        ),
        PageSample::Avmnist(s) => format!(
            "Sample {index} is a <b>{}</b>: a handwritten {} from MNIST's test set, paired with \
             {} saying it (recording <code>{}</code>, a speaker the model never heard in training).",
            s.label,
            s.label,
            escape_html(s.speaker()),
            escape_html(&s.recording)
        ),
    }
}

/// One checkbox per modality of the model (`keep-NAME`, checked), under the fieldset's legend.
pub fn modality_checkboxes_html(modalities: &[String]) -> String {
    let boxes: String = modalities
        .iter()
        .map(|m| {
            let m = escape_html(m);
            format!("<label><input type=\"checkbox\" id=\"keep-{m}\" checked> {m}</label>")
        })
        .collect();
    format!("<legend>modalities</legend>{boxes}")
}

/// The `<option>`s of the number of refinement layers run (1 to `max`).
pub fn refine_layer_options_html(max: usize) -> String {
    (1..=max)
        .map(|l| format!("<option value=\"{l}\">{l}</option>"))
        .collect()
}

/// The `<option>`s of the layer shown (value 0-based, label 1-based), for `lt` layers run.
pub fn shown_layer_options_html(lt: usize) -> String {
    (0..lt)
        .map(|l| format!("<option value=\"{l}\">layer {}</option>", l + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgr::trace::TokenOrigin;

    fn token(modality: usize, position: usize, xi: f32, rank: usize, kept: bool) -> TokenTrace {
        TokenTrace {
            origin: TokenOrigin { modality, position },
            xi_f: xi,
            xi_e: 0.0,
            xi,
            rank,
            kept,
        }
    }

    fn layer() -> LayerTrace {
        LayerTrace {
            layer: 0,
            tokens: vec![
                token(0, 0, 0.9, 0, true),
                token(1, 0, -0.5, 2, false),
                token(1, 1, 0.1, 1, true),
            ],
            edges: Vec::new(),
        }
    }

    #[test]
    fn the_sample_auc_ranks_signal_against_ground_truth_noise() {
        // Token (1, 1) is noise and ranked between the two signal tokens: AUC 1/2.
        let noise = vec![vec![false], vec![false, true]];
        let html = ranking_auc_html(Some(&[Some(0.75), None]), 1, Some(&layer()), Some(&noise));
        assert!(html.contains("layer 0: <b>0.75</b>"), "{html}");
        assert!(
            html.contains("<span class=\"shown\">layer 1: <b>n/a</b></span>"),
            "{html}"
        );
        assert!(html.contains("<b id=\"sample-auc\">0.50</b>"), "{html}");
        // Noise ranked last: AUC 1.
        let noise = vec![vec![false], vec![true, false]];
        let html = ranking_auc_html(Some(&[]), 0, Some(&layer()), Some(&noise));
        assert!(html.contains("<b id=\"sample-auc\">1.00</b>"), "{html}");
        assert!(ranking_auc_html(None, 0, Some(&layer()), None).starts_with("Real data"));
    }

    #[test]
    fn the_token_table_lists_tokens_by_rank_with_their_truth() {
        let modalities = vec!["vision".to_string(), "a<b".to_string()];
        let noise = vec![vec![false], vec![false, true]];
        let html = token_table_html(&modalities, &layer(), Some(&noise));
        let ranks: Vec<usize> = html
            .split("<tr class=")
            .skip(1)
            .map(|row| {
                row.split("<td>")
                    .nth(1)
                    .unwrap()
                    .split('<')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(ranks, vec![0, 1, 2]);
        assert!(html.contains("<td>a&lt;b 1</td><td>0.100</td><td>0.000</td><td>0.100</td><td>kept</td><td>noise</td>"), "{html}");
        assert!(html.contains("<tr class=\"biased\"><td>2</td>"), "{html}");
        let no_truth = token_table_html(&modalities, &layer(), None);
        assert_eq!(no_truth.matches("<td>n/a</td>").count(), 3);
    }

    #[test]
    fn the_csv_has_a_row_per_token_by_rank_with_scores_split_and_truth() {
        let modalities = vec!["vision".to_string(), "a,\"b\"".to_string()];
        let noise = vec![vec![false], vec![false, true]];
        let csv = token_table_csv(&modalities, &[true, false], &layer(), Some(&noise));
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "layer,rank,modality,position,xi_f,xi_e,xi,split,truth,placeholder"
        );
        assert_eq!(lines.len(), 4, "{csv}");
        assert_eq!(lines[1], "0,0,vision,0,0.9,0,0.9,kept,signal,no");
        assert_eq!(lines[2], "0,1,\"a,\"\"b\"\"\",1,0.1,0,0.1,kept,noise,yes");
        assert_eq!(
            lines[3],
            "0,2,\"a,\"\"b\"\"\",0,-0.5,0,-0.5,biased,signal,yes"
        );
        let real = token_table_csv(&modalities, &[true, true], &layer(), None);
        assert!(
            real.lines().skip(1).all(|l| l.ends_with(",n/a,no")),
            "{real}"
        );
    }

    #[test]
    fn controls_follow_the_model() {
        let html = modality_checkboxes_html(&["vision".into(), "a<b".into()]);
        assert_eq!(html.matches("type=\"checkbox\"").count(), 2);
        assert!(html.contains("id=\"keep-vision\""), "{html}");
        assert!(
            html.contains("keep-a&lt;b") && !html.contains("a<b"),
            "{html}"
        );
        assert_eq!(refine_layer_options_html(3).matches("<option").count(), 3);
        assert!(refine_layer_options_html(3).ends_with("<option value=\"3\">3</option>"));
        assert!(shown_layer_options_html(2).ends_with("<option value=\"1\">layer 2</option>"));
        assert_eq!(shown_layer_options_html(0), "");
    }
}
