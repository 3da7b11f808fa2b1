//! The page's HTML that is not the canvas, built from typed values as strings: the ranking's AUC,
//! the prediction, the token table, the controls that depend on the model (one checkbox per
//! modality, the layer choices). Plain Rust, tested natively; `app` only puts them in place.

use mgr::ranking_quality::{LayerDrivers, LayerRanking};
use mgr::trace::{Edge, LayerTrace, SampleTrace, TokenTrace};
use mgr::truth::{SampleTruth, TokenKind};

use crate::edges::edges_to_draw;
use crate::engine::{AUC_SAMPLES, Engine, Inference, Settings};
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
    /// Per refinement layer, the split's AUC against the ground-truth noise over the test
    /// samples, pooled over the modalities (None for data without ground truth).
    pub aucs: Option<Vec<Option<f64>>>,
    /// Per refinement layer, every grade of the split over the test samples: the noise AUC
    /// inside each modality, the conflict AUC, the kept rates (None for data without ground
    /// truth).
    pub grades: Option<Vec<LayerRanking>>,
    /// Per refinement layer, what the learned xi follows over the same samples.
    pub drivers: Option<Vec<LayerDrivers>>,
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
        let (grades, drivers) = engine.ranking_grades(Settings::of(state)).unzip();
        let aucs: Option<Vec<Option<f64>>> =
            grades.as_ref().map(|g| g.iter().map(|l| l.auc).collect());
        let truth = sample.truth();
        let layer = trace.layers.get(state.layer);
        let ranking_auc_html = format!(
            "{}{}{}",
            ranking_auc_html(grades.as_deref(), state.layer, layer, truth.as_ref()),
            drivers
                .as_deref()
                .and_then(|d| d.get(state.layer))
                .map(drivers_html)
                .unwrap_or_default(),
            layer
                .zip(truth.as_ref())
                .map(|(l, t)| conflict_html(&trace, l, t, engine))
                .unwrap_or_default()
        );
        // The test-set figures were measured at the model's own rho, every layer and the
        // learned ranking.
        let test_ranking = engine.meta.test_ranking().filter(|_| {
            state.rho.is_none() && state.lt.is_none() && state.ranking == Default::default()
        });
        let honesty = honesty::read_layers(&trace, aucs.as_deref(), test_ranking.as_ref());
        let honesty_html = honesty::honesty_html(&honesty, state.layer);
        let drawn_edges = layer
            .map(|l| edges_to_draw(&l.edges, state.edges))
            .unwrap_or_default();
        let prediction_html = prediction_html(engine, sample, state.sample, &trace, &complete);
        let tokens_html = layer
            .map(|layer| token_table_html(&trace.modalities, layer, truth.as_ref()))
            .unwrap_or_default();
        let tokens_csv = layer
            .map(|layer| {
                token_table_csv(&trace.modalities, &trace.available, layer, truth.as_ref())
            })
            .unwrap_or_default();
        let recording = match sample {
            PageSample::Avmnist(s) => Some(s.recording.clone()),
            PageSample::Synthetic(_) => None,
        };
        PageView {
            aucs,
            grades,
            drivers,
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
            "ranking": state.ranking.name(),
            "ranking_auc": self.aucs,
            "ranking_grades": self.grades,
            "ranking_drivers": self.drivers,
            "honesty": self.honesty,
            "drawn_edges": self.drawn_edges.len(),
        })
        .to_string()
    }
}

fn auc_text(a: &Option<f64>) -> String {
    a.map_or("n/a".to_string(), |v| format!("{v:.2}"))
}

/// The split's grades against the ground truth: per layer over the drawn sample set
/// (`grades`, the shown `layer_index` marked), the noise AUC inside each modality (their mean
/// first), the conflict AUC and the pooled AUC; and the noise AUC of this sample's `layer`
/// (`truth`: the sample's ground truth). A sentence saying why there is none for real data
/// (`grades` None).
pub fn ranking_auc_html(
    grades: Option<&[LayerRanking]>,
    layer_index: usize,
    layer: Option<&LayerTrace>,
    truth: Option<&SampleTruth>,
) -> String {
    let Some(grades) = grades else {
        return "Real data has no ground-truth noise or conflicting tokens, so the ranking is graded on the synthetic model only (choose it above).".to_string();
    };
    let per_layer: Vec<String> = grades
        .iter()
        .map(|g| {
            let l = g.layer;
            let shown = if l == layer_index {
                " class=\"shown\""
            } else {
                ""
            };
            let within: Vec<String> = g
                .by_modality
                .iter()
                .map(|m| format!("{} {}", escape_html(&m.modality), auc_text(&m.auc)))
                .collect();
            format!(
                "<li{shown} id=\"grade-{l}\">layer {l}: noise AUC within each modality <b class=\"within\">{}</b> ({}), conflict AUC <b class=\"conflict\">{}</b>, pooled <span class=\"pooled\">{}</span></li>",
                auc_text(&g.auc_modality_mean),
                within.join(", "),
                auc_text(&g.conflict.auc),
                auc_text(&g.auc)
            )
        })
        .collect();
    let sample_auc = layer.zip(truth).and_then(|(layer, truth)| {
        let (scores, signal): (Vec<f32>, Vec<bool>) = layer
            .tokens
            .iter()
            .map(|t| {
                let noise = truth.noise[t.origin.modality][t.origin.position];
                (t.split_score(), !noise)
            })
            .unzip();
        mgr::ranking_quality::auc(&scores, &signal)
    });
    format!(
        "<p>The split's grades against the ground truth (test samples 0-{}, all modalities present; 0.5 = chance, 1 = every good token above every bad one). Noise: signal against pure-noise tokens inside each modality (the pooled figure mostly grades which modality the ranking prefers). Conflict: tokens of a modality that shows the label against those of one that shows another digit, in the same sample.</p><ul class=\"grades\">{}</ul><p>This sample, this layer, noise AUC: <b id=\"sample-auc\">{}</b>.</p>",
        AUC_SAMPLES - 1,
        per_layer.join(""),
        auc_text(&sample_auc)
    )
}

/// What the learned score xi keeps in the layer on view, in plain words, from its drivers over
/// the graded samples: which modality it favours and how much of its spread that explains, and
/// how closely it follows the attention a token receives, its position and its class evidence
/// (the head's margin for the label on the token alone).
pub fn drivers_html(d: &LayerDrivers) -> String {
    let favoured = d
        .mean_xi_by_modality
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(m, _)| escape_html(m))
        .unwrap_or_default();
    let means: Vec<String> = d
        .mean_xi_by_modality
        .iter()
        .map(|(m, v)| format!("{} {v:+.2}", escape_html(m)))
        .collect();
    let r = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:+.2}"));
    let share = d
        .modality_share_of_variance
        .map_or("n/a".to_string(), |v| format!("{:.0}%", 100.0 * v));
    format!(
        "<p id=\"drivers\">What the learned ranking keeps in layer {}: it favours {favoured} tokens (mean &xi; {}), and the modality explains {share} of its spread; inside a sample it follows the token's class evidence (the head's margin for the label on that token alone) with r = <b class=\"margin\">{}</b>, the attention the token receives with r = {}, its position with r = {}.</p>",
        d.layer,
        means.join(", "),
        r(d.corr_xi_label_margin_within_sample),
        r(d.corr_xi_attention),
        r(d.corr_xi_position),
    )
}

/// The sample's conflict in words, for the layer on view: which modality shows another digit
/// than the label and how many of its tokens the split keeps ("audio shows 3, vision and text
/// show 7: the ranking keeps 6 of audio's 16 tokens"), or that every present modality agrees.
pub fn conflict_html(
    trace: &SampleTrace,
    layer: &LayerTrace,
    truth: &SampleTruth,
    engine: &Engine,
) -> String {
    let present: Vec<usize> = (0..trace.modalities.len())
        .filter(|&m| trace.available[m])
        .collect();
    let name = |m: usize| escape_html(&trace.modalities[m]);
    let (conflicting, agreeing): (Vec<usize>, Vec<usize>) =
        present.iter().partition(|&&m| truth.conflicting(m));
    let label = engine.class_name(truth.label);
    if conflicting.is_empty() {
        return format!(
            "<p id=\"conflict-line\">Every modality present shows {}, the label: no conflicting tokens in this sample.</p>",
            escape_html(&label)
        );
    }
    let kept_of = |m: usize| {
        let of: Vec<&TokenTrace> = layer
            .tokens
            .iter()
            .filter(|t| t.origin.modality == m)
            .collect();
        (of.iter().filter(|t| t.kept).count(), of.len())
    };
    let shows: Vec<String> = conflicting
        .iter()
        .map(|&m| {
            let shown = escape_html(&engine.class_name(truth.shown[m]));
            format!("{} shows {shown}", name(m))
        })
        .collect();
    let agree = match agreeing.as_slice() {
        [] => String::new(),
        [one] => format!(", {} shows {}", name(*one), escape_html(&label)),
        many => {
            let names: Vec<String> = many.iter().map(|&m| name(m)).collect();
            format!(", {} show {}", names.join(" and "), escape_html(&label))
        }
    };
    let kept: Vec<String> = conflicting
        .iter()
        .map(|&m| {
            let (k, n) = kept_of(m);
            format!("{k} of {}'s {n} tokens", name(m))
        })
        .collect();
    let kept_agreeing: (usize, usize) = agreeing
        .iter()
        .map(|&m| kept_of(m))
        .fold((0, 0), |(a, b), (k, n)| (a + k, b + n));
    let beside = if kept_agreeing.1 > 0 {
        format!(
            " (and {} of the {} tokens of the modalities that agree)",
            kept_agreeing.0, kept_agreeing.1
        )
    } else {
        String::new()
    };
    format!(
        "<p id=\"conflict-line\">{}{agree}: in layer {} the ranking keeps {}{beside}.</p>",
        shows.join(", "),
        layer.layer,
        kept.join(" and ")
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
/// split, and (synthetic data, `truth`) what the token is: pure noise, or a signal token of a
/// modality that shows another digit than the label (conflicting).
pub fn token_table_html(
    modalities: &[String],
    layer: &LayerTrace,
    truth: Option<&SampleTruth>,
) -> String {
    let rows: String = by_rank(layer)
        .into_iter()
        .map(|t| {
            let truth = match content_kind(truth, t) {
                Some(TokenKind::Noise) => "noise".to_string(),
                Some(TokenKind::Conflicting) => {
                    let shown = truth.map_or(0, |tr| tr.shown[t.origin.modality]);
                    format!("conflicting (shows {shown})")
                }
                Some(_) => String::new(),
                None => "n/a".to_string(),
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
/// `conflicting` for a signal token of a modality that shows another digit, or `n/a` for real
/// data) and whether the token is a missing modality's placeholder.
pub fn token_table_csv(
    modalities: &[String],
    available: &[bool],
    layer: &LayerTrace,
    truth: Option<&SampleTruth>,
) -> String {
    let mut csv =
        String::from("layer,rank,modality,position,xi_f,xi_e,xi,split,truth,placeholder\n");
    for t in by_rank(layer) {
        let (m, p) = (t.origin.modality, t.origin.position);
        let truth = match content_kind(truth, t) {
            Some(TokenKind::Noise) => "noise",
            Some(TokenKind::Conflicting) => "conflicting",
            Some(_) => "signal",
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

/// What the token's content is by the ground truth (noise, conflicting or agreeing signal),
/// whether or not its modality is present (the placeholder column says that); None for data
/// without that truth.
fn content_kind(truth: Option<&SampleTruth>, t: &TokenTrace) -> Option<TokenKind> {
    let truth = truth?;
    let all = vec![true; truth.noise.len()];
    Some(truth.kind(&all, t.origin.modality, t.origin.position))
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

/// The `<option>`s of the layer shown, for `lt` layers run: numbered from 0, as the URL, the
/// grades and the lines under the legend number them.
pub fn shown_layer_options_html(lt: usize) -> String {
    (0..lt)
        .map(|l| format!("<option value=\"{l}\">layer {l}</option>"))
        .collect()
}

/// The `<option>`s of the split's ranking: the learned one, the references, and the oracles
/// where the data has the ground truth they read (`truth`).
pub fn ranking_options_html(truth: bool) -> String {
    mgr::SplitRanking::ALL
        .into_iter()
        .filter(|r| truth || !r.needs_truth())
        .map(|r| {
            let words = match r {
                mgr::SplitRanking::Learned => "learned (the paper's xi)",
                mgr::SplitRanking::Random => "random",
                mgr::SplitRanking::Inverted => "inverted (lowest xi kept)",
                mgr::SplitRanking::OracleNoise => "oracle: noise tokens last",
                mgr::SplitRanking::OracleConflict => "oracle: conflicting modality last",
                mgr::SplitRanking::OracleMajority => "oracle: outvoted modality last (no label)",
            };
            format!("<option value=\"{}\">{words}</option>", r.name())
        })
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
            order: None,
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

    /// Modality 0 (one token) shows the label 1; modality 1 (two tokens) shows `shown_1`.
    fn truth(noise: Vec<Vec<bool>>, shown_1: usize) -> SampleTruth {
        SampleTruth {
            label: 1,
            shown: vec![1, shown_1],
            noise,
        }
    }

    fn grade(layer: usize, within: [f64; 2], conflict: Option<f64>) -> LayerRanking {
        let by_modality = ["vision", "audio"]
            .iter()
            .zip(within)
            .map(|(m, auc)| mgr::ranking_quality::ModalityGrade {
                modality: m.to_string(),
                auc: Some(auc),
                signal_tokens: 1,
                noise_tokens: 1,
            })
            .collect();
        LayerRanking {
            layer,
            auc: Some(0.75),
            auc_f: None,
            auc_e: None,
            by_modality,
            auc_modality_mean: Some((within[0] + within[1]) / 2.0),
            conflict: mgr::ranking_quality::ConflictGrade {
                auc: conflict,
                ..Default::default()
            },
            kept_rate_signal: 0.5,
            kept_rate_noise: 0.5,
            kept_rate_placeholder: None,
            signal_tokens: 2,
            noise_tokens: 2,
        }
    }

    #[test]
    fn the_grades_and_the_sample_auc_rank_signal_against_ground_truth_noise() {
        // Token (1, 1) is noise and ranked between the two signal tokens: AUC 1/2.
        let t = truth(vec![vec![false], vec![false, true]], 1);
        let grades = [grade(0, [0.5, 0.7], Some(0.25)), grade(1, [0.4, 0.6], None)];
        let html = ranking_auc_html(Some(&grades), 1, Some(&layer()), Some(&t));
        assert!(html.contains("<b class=\"within\">0.60</b> (vision 0.50, audio 0.70), conflict AUC <b class=\"conflict\">0.25</b>, pooled <span class=\"pooled\">0.75</span>"), "{html}");
        assert!(html.contains("<li class=\"shown\" id=\"grade-1\">layer 1: noise AUC within each modality <b class=\"within\">0.50</b>"), "{html}");
        assert!(
            html.contains("conflict AUC <b class=\"conflict\">n/a</b>"),
            "{html}"
        );
        assert!(html.contains("<b id=\"sample-auc\">0.50</b>"), "{html}");
        // Noise ranked last: AUC 1.
        let t = truth(vec![vec![false], vec![true, false]], 1);
        let html = ranking_auc_html(Some(&[]), 0, Some(&layer()), Some(&t));
        assert!(html.contains("<b id=\"sample-auc\">1.00</b>"), "{html}");
        assert!(ranking_auc_html(None, 0, Some(&layer()), None).starts_with("Real data"));
    }

    /// Under a reference ranking the sample's AUC grades the split's own order.
    #[test]
    fn the_sample_auc_grades_the_order_the_split_used() {
        let t = truth(vec![vec![false], vec![false, true]], 1);
        let mut reversed = layer();
        for token in &mut reversed.tokens {
            let noise_token = TokenOrigin {
                modality: 1,
                position: 1,
            };
            token.order = Some(if token.origin == noise_token {
                1.0
            } else {
                0.0
            });
        }
        let html = ranking_auc_html(Some(&[]), 0, Some(&reversed), Some(&t));
        assert!(html.contains("<b id=\"sample-auc\">0.00</b>"), "{html}");
    }

    #[test]
    fn the_conflict_line_names_the_modality_that_shows_another_digit() {
        let engine = crate::engine::tests::shipped();
        let trace = SampleTrace {
            modalities: vec!["vision".into(), "audio".into()],
            available: vec![true, true],
            output: vec![1.0],
            predicted_class: Some(1),
            layers: vec![layer()],
        };
        // audio shows four (its token 0 biased, token 1 kept); vision shows one, the label.
        let t = truth(vec![vec![false], vec![false, true]], 4);
        let html = conflict_html(&trace, &trace.layers[0], &t, &engine);
        assert!(html.contains("audio shows four, vision shows one: in layer 0 the ranking keeps 1 of audio's 2 tokens (and 1 of the 1 tokens of the modalities that agree)."), "{html}");
        let t = truth(vec![vec![false], vec![false, true]], 1);
        let html = conflict_html(&trace, &trace.layers[0], &t, &engine);
        assert!(html.contains("Every modality present shows one"), "{html}");
    }

    #[test]
    fn the_drivers_in_plain_words_name_the_favoured_modality_and_the_correlations() {
        let d = LayerDrivers {
            layer: 1,
            mean_xi_by_modality: vec![("vision".into(), -0.13), ("text".into(), 0.69)],
            corr_xi_attention: Some(0.22),
            corr_xi_position: None,
            modality_share_of_variance: Some(0.208),
            corr_xi_label_margin: Some(0.3),
            corr_xi_label_margin_within_sample: Some(0.41),
        };
        let html = drivers_html(&d);
        assert!(html.contains("in layer 1: it favours text tokens (mean &xi; vision -0.13, text +0.69), and the modality explains 21% of its spread"), "{html}");
        assert!(html.contains("r = <b class=\"margin\">+0.41</b>, the attention the token receives with r = +0.22, its position with r = n/a"), "{html}");
    }

    #[test]
    fn the_ranking_control_offers_the_oracles_only_with_ground_truth() {
        assert_eq!(ranking_options_html(true).matches("<option").count(), 6);
        let real = ranking_options_html(false);
        assert_eq!(real.matches("<option").count(), 3);
        assert!(
            !real.contains("oracle") && real.contains("value=\"random\""),
            "{real}"
        );
    }

    #[test]
    fn the_token_table_lists_tokens_by_rank_with_their_truth() {
        let modalities = vec!["vision".to_string(), "a<b".to_string()];
        let t = truth(vec![vec![false], vec![false, true]], 1);
        let html = token_table_html(&modalities, &layer(), Some(&t));
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
        // Modality 1 showing 4 instead of the label: its signal token is conflicting.
        let t = truth(vec![vec![false], vec![false, true]], 4);
        let html = token_table_html(&modalities, &layer(), Some(&t));
        assert!(
            html.contains("<td>biased</td><td>conflicting (shows 4)</td>"),
            "{html}"
        );
        assert!(html.contains("<td>kept</td><td>noise</td>"), "{html}");
    }

    #[test]
    fn the_csv_has_a_row_per_token_by_rank_with_scores_split_and_truth() {
        let modalities = vec!["vision".to_string(), "a,\"b\"".to_string()];
        let t = truth(vec![vec![false], vec![false, true]], 1);
        let csv = token_table_csv(&modalities, &[true, false], &layer(), Some(&t));
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
        let t = truth(vec![vec![false], vec![false, true]], 7);
        let conflicting = token_table_csv(&modalities, &[true, true], &layer(), Some(&t));
        assert!(
            conflicting
                .lines()
                .nth(3)
                .unwrap()
                .contains(",biased,conflicting,"),
            "{conflicting}"
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
        assert!(shown_layer_options_html(2).ends_with("<option value=\"1\">layer 1</option>"));
        assert_eq!(shown_layer_options_html(0), "");
    }
}
