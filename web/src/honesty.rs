//! What the ranking does with missing data, in numbers next to the picture: per refinement
//! layer, the share of kept slots the missing modalities' placeholder tokens (`E_miss`, Eq. 1)
//! take against their share of the layer's tokens (what a ranking blind to absence keeps), the
//! test-set figure `mgr eval` measured (`results.ranking.dropped` in model.json), and a plain
//! sentence where a layer does not tell noise from signal better than chance: its ranking AUC
//! against the ground-truth noise tokens below 0.5, or the placeholders taking at least their
//! share. Plain Rust, tested natively.

use mgr::ranking_quality::RankingReport;
use mgr::trace::SampleTrace;
use serde::Serialize;

use crate::state::escape_html;

/// The sentence the page shows for a layer that ranks no better than chance.
pub const BELOW_CHANCE: &str = "this layer does not tell noise from signal better than chance";

/// One missing modality's placeholders in one layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlaceholderShare {
    /// The missing modality.
    pub modality: String,
    /// Its placeholder tokens the layer keeps.
    pub kept: usize,
    /// Every kept slot of the layer.
    pub kept_slots: usize,
    /// Its placeholder tokens over all of the layer's tokens, N_i / N.
    pub token_share: f64,
    /// Over the test set with this modality dropped from every sample (at the model's own rho
    /// and L_T), the share of this layer's kept slots its placeholders took; None when the
    /// model's export has no such figure or the view changes rho or L_T.
    pub test_share: Option<f64>,
}

impl PlaceholderShare {
    /// Share of the kept slots the placeholders take.
    pub fn kept_share(&self) -> f64 {
        if self.kept_slots == 0 {
            0.0
        } else {
            self.kept as f64 / self.kept_slots as f64
        }
    }

    /// The placeholders take at least the share a ranking blind to absence would give them.
    pub fn at_least_their_share(&self) -> bool {
        self.kept > 0 && self.kept_share() >= self.token_share
    }
}

/// One refinement layer's reading.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerHonesty {
    /// Refinement layer, 0-based.
    pub layer: usize,
    /// One entry per missing modality (none when every modality is present).
    pub placeholders: Vec<PlaceholderShare>,
    /// The layer's ranking AUC against the ground-truth noise tokens (synthetic data only).
    pub auc: Option<f64>,
    /// The AUC is below 0.5 or some placeholders take at least their share.
    pub below_chance: bool,
}

/// Reads each layer of `trace`: `aucs` (per layer, the page's AUC over its sample set; None for
/// real data) and `test` (the export's test-set ranking report, where it applies to this view).
pub fn read_layers(
    trace: &SampleTrace,
    aucs: Option<&[Option<f64>]>,
    test: Option<&RankingReport>,
) -> Vec<LayerHonesty> {
    trace
        .layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let kept_slots = layer.tokens.iter().filter(|t| t.kept).count();
            let placeholders: Vec<PlaceholderShare> = trace
                .available
                .iter()
                .enumerate()
                .filter(|(_, available)| !**available)
                .map(|(m, _)| {
                    let of = layer.tokens.iter().filter(|t| t.origin.modality == m);
                    let name = trace.modalities[m].clone();
                    let test_share = test
                        .and_then(|r| r.dropped.iter().find(|d| d.modality == name))
                        .and_then(|d| d.kept_share.get(l).copied());
                    PlaceholderShare {
                        kept: of.clone().filter(|t| t.kept).count(),
                        kept_slots,
                        token_share: of.count() as f64 / layer.tokens.len().max(1) as f64,
                        modality: name,
                        test_share,
                    }
                })
                .collect();
            let auc = aucs.and_then(|a| a.get(l).copied().flatten());
            let below_chance = auc.is_some_and(|a| a < 0.5)
                || placeholders
                    .iter()
                    .any(PlaceholderShare::at_least_their_share);
            LayerHonesty {
                layer: l,
                placeholders,
                auc,
                below_chance,
            }
        })
        .collect()
}

fn percent(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

/// The readings as the page's HTML: a line per layer with its placeholders' shares (when a
/// modality is missing), and [`BELOW_CHANCE`] with its reason where it holds. `shown`: the layer
/// the picture draws. Empty when there is nothing to say.
pub fn honesty_html(layers: &[LayerHonesty], shown: usize) -> String {
    let mut lines = Vec::new();
    for reading in layers {
        let l = reading.layer;
        let mut parts: Vec<String> = reading
            .placeholders
            .iter()
            .map(|p| {
                let test = p.test_share.map_or(String::new(), |t| {
                    format!(
                        "; over the test set with {} dropped, {}",
                        escape_html(&p.modality),
                        percent(t)
                    )
                });
                format!(
                    "the {} placeholders take <b>{} of {} kept slots ({})</b> against {} of the tokens{test}",
                    escape_html(&p.modality),
                    p.kept,
                    p.kept_slots,
                    percent(p.kept_share()),
                    percent(p.token_share)
                )
            })
            .collect();
        if reading.below_chance {
            let mut why = Vec::new();
            if let Some(a) = reading.auc.filter(|a| *a < 0.5) {
                why.push(format!("its ranking AUC is {a:.2}, below 0.5"));
            }
            for p in reading
                .placeholders
                .iter()
                .filter(|p| p.at_least_their_share())
            {
                why.push(format!(
                    "it keeps the {} placeholders, which carry no information, at least as often as real tokens",
                    escape_html(&p.modality)
                ));
            }
            parts.push(format!(
                "<span class=\"below-chance\">{}{BELOW_CHANCE}</span> ({})",
                if parts.is_empty() { "" } else { "so " },
                why.join("; ")
            ));
        }
        if parts.is_empty() {
            continue;
        }
        let class = if l == shown { " class=\"shown\"" } else { "" };
        lines.push(format!(
            "<li id=\"honesty-{l}\"{class} data-below-chance=\"{}\">Layer {l}: {}.</li>",
            reading.below_chance,
            parts.join("; ")
        ));
    }
    if lines.is_empty() {
        return String::new();
    }
    // The embedded view (a 400 x 600 frame) shows only this: one short line per layer that
    // ranks no better than chance.
    let compact: Vec<String> = layers
        .iter()
        .filter(|r| r.below_chance)
        .enumerate()
        .map(|(i, r)| format!("{} {}", if i == 0 { "Layer" } else { "layer" }, r.layer))
        .collect();
    let compact = if compact.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"compact\">{}: {BELOW_CHANCE}.</p>",
            compact.join(" and ")
        )
    };
    format!(
        "<div class=\"full\"><p>What the ranking does here (a ranking blind to missing data keeps placeholders at their share of the tokens):</p><ul>{}</ul></div>{compact}",
        lines.join("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgr::ranking_quality::DroppedModality;
    use mgr::trace::{LayerTrace, TokenOrigin, TokenTrace};

    /// A trace of two modalities (a: 3 tokens, b: 2) with `kept[l]` the kept flags of layer l
    /// (tokens a0 a1 a2 b0 b1), b missing.
    fn trace(kept: &[[bool; 5]]) -> SampleTrace {
        let layers = kept
            .iter()
            .enumerate()
            .map(|(l, flags)| LayerTrace {
                layer: l,
                tokens: flags
                    .iter()
                    .enumerate()
                    .map(|(i, &kept)| TokenTrace {
                        origin: TokenOrigin {
                            modality: usize::from(i >= 3),
                            position: if i >= 3 { i - 3 } else { i },
                        },
                        xi_f: 0.0,
                        xi_e: 0.0,
                        xi: 0.0,
                        order: None,
                        rank: i,
                        kept,
                    })
                    .collect(),
                edges: vec![],
            })
            .collect();
        SampleTrace {
            modalities: vec!["a".into(), "b".into()],
            available: vec![true, false],
            output: vec![0.5, 0.5],
            predicted_class: Some(0),
            layers,
        }
    }

    #[test]
    fn placeholders_at_their_share_or_an_auc_below_half_read_as_chance() {
        // Layer 0 keeps a0 a1 b0: b's placeholders take 1 of 3 kept slots (33%) against 2 of 5
        // tokens (40%). Layer 1 keeps a0 b0 b1: 2 of 3 (67%) against 40%.
        let t = trace(&[
            [true, true, false, true, false],
            [true, false, false, true, true],
        ]);
        let test = RankingReport {
            samples: 10,
            ranking: "learned".into(),
            layers: vec![],
            under_absence: None,
            dropped: vec![DroppedModality {
                modality: "b".into(),
                token_share: 0.4,
                kept_share: vec![0.25, 0.5],
                mean_xi_placeholder_present: vec![],
            }],
            drivers: vec![],
        };
        let layers = read_layers(&t, Some(&[Some(0.7), Some(0.6)]), Some(&test));
        let p0 = &layers[0].placeholders[0];
        assert_eq!((p0.kept, p0.kept_slots), (1, 3));
        assert!((p0.token_share - 0.4).abs() < 1e-12);
        assert_eq!(p0.test_share, Some(0.25));
        assert!(!layers[0].below_chance);
        assert_eq!(layers[1].placeholders[0].kept, 2);
        assert!(layers[1].below_chance);
        let html = honesty_html(&layers, 1);
        assert!(
            html.contains("1 of 3 kept slots (33%)</b> against 40%"),
            "{html}"
        );
        assert!(html.contains("2 of 3 kept slots (67%)"), "{html}");
        assert!(html.contains("test set with b dropped, 25%"), "{html}");
        // Once in the full reading, once in the embedded view's line.
        assert_eq!(html.matches(BELOW_CHANCE).count(), 2, "{html}");
        assert!(
            html.contains(&format!(
                "<p class=\"compact\">Layer 1: {BELOW_CHANCE}.</p>"
            )),
            "{html}"
        );
        assert!(html.contains("id=\"honesty-1\" class=\"shown\" data-below-chance=\"true\""));
        // An AUC below 0.5 alone is enough, with every modality present too.
        let mut complete = trace(&[[true, true, false, true, false]]);
        complete.available = vec![true, true];
        let layers = read_layers(&complete, Some(&[Some(0.44)]), None);
        assert!(layers[0].placeholders.is_empty() && layers[0].below_chance);
        let html = honesty_html(&layers, 0);
        assert!(html.contains("AUC is 0.44, below 0.5") && html.contains(BELOW_CHANCE));
        assert!(
            !honesty_html(&read_layers(&t, Some(&[Some(0.7), Some(0.6)]), None), 0)
                .contains("class=\"compact\">Layer 0")
        );
        // At 0.5 and above, nothing missing: nothing to say.
        let layers = read_layers(&complete, Some(&[Some(0.5)]), None);
        assert!(!layers[0].below_chance);
        assert_eq!(honesty_html(&layers, 0), "");
        // Real data (no AUC) with nothing missing: nothing either.
        assert_eq!(honesty_html(&read_layers(&complete, None, None), 0), "");
    }
}
