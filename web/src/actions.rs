//! What each control does to the view: [`apply`] is the one place the page's rules live (the
//! sample range, one modality must stay, the layer on view within L_T, rho in (0, 1], an
//! oracle ranking only on data with ground truth, the tour's steps), pure and tested natively.
//! The DOM layer (`app`) only turns an event into an [`Action`] and goes to the state `apply`
//! returns, or shows its message.

use crate::state::{Data, EdgeView, Limits, ViewState, parse_ranking};
use crate::tour::TOUR;

/// One thing a reader did with a control.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Chose another dataset: its default view (embed mode kept).
    Data(Data),
    /// Typed a sample index.
    Sample(String),
    /// The previous sample (none before 0).
    PreviousSample,
    /// The next sample (none after the last).
    NextSample,
    /// A random sample: `draw` is uniform in [0, 1).
    RandomSample { draw: f64 },
    /// Chose the refinement layer on view (None: not a number, layer 0).
    Layer(Option<usize>),
    /// Chose how many refinement layers run, L_T (None: the model's).
    RefineLayers(Option<usize>),
    /// Moved the rho slider (a value outside (0, 1] means the model's rho).
    Rho(String),
    /// Chose which redistribution edges are drawn (None: the default).
    Edges(Option<EdgeView>),
    /// Chose the ranking the split keeps tokens by (its name, as the control gives it).
    Ranking(String),
    /// Ticked (`keep`) or unticked a modality.
    Keep { modality: String, keep: bool },
    /// Started the guided tour.
    TourStart,
    /// The tour's previous step.
    TourBack,
    /// The tour's next step.
    TourNext,
    /// Left the tour, its view spelled out.
    TourExit,
}

/// The view after `action` on `state`, for a model with `limits`; an error says why the view
/// stays as it is. Every state but a tour step's leaves the tour (`tour: None`), so changing any
/// control spells the view out in the URL.
pub fn apply(state: &ViewState, action: Action, limits: &Limits) -> Result<ViewState, String> {
    let count = limits.sample_count();
    let mut next = ViewState {
        tour: None,
        ..state.clone()
    };
    match action {
        Action::Data(data) => {
            return Ok(ViewState {
                data,
                embed: state.embed,
                ..ViewState::default()
            });
        }
        Action::Sample(typed) => match typed.trim().parse::<usize>() {
            Ok(v) if v < count => next.sample = v,
            _ => {
                return Err(format!(
                    "sample `{typed}` is not an index from 0 to {}",
                    count - 1
                ));
            }
        },
        Action::PreviousSample => next.sample = state.sample.saturating_sub(1),
        Action::NextSample => next.sample = (state.sample + 1).min(count - 1),
        Action::RandomSample { draw } => next.sample = (draw * count as f64) as usize % count,
        Action::Layer(layer) => next.layer = layer.unwrap_or(0),
        Action::RefineLayers(lt) => {
            next.lt = lt;
            if let Some(lt) = lt {
                next.layer = next.layer.min(lt.saturating_sub(1));
            }
        }
        Action::Rho(value) => {
            next.rho = value
                .parse()
                .ok()
                .filter(|r: &f64| mgr::ModelConfig::rho_is_valid(*r));
        }
        Action::Edges(edges) => next.edges = edges.unwrap_or_default(),
        Action::Ranking(name) => next.ranking = parse_ranking(&name, limits)?,
        Action::Keep { modality, keep } => {
            next.drop = keep_or_drop(state, &modality, keep, limits)?
        }
        Action::TourStart => return Ok(tour_step(state, 0)),
        Action::TourBack => return Ok(tour_step(state, state.tour.unwrap_or(1).saturating_sub(1))),
        Action::TourNext => return Ok(tour_step(state, state.tour.map_or(0, |s| s + 1))),
        Action::TourExit => {}
    }
    Ok(next)
}

/// The dropped modalities after `modality` is kept or dropped, in the model's order; refused
/// when it would drop the last one.
fn keep_or_drop(
    state: &ViewState,
    modality: &str,
    keep: bool,
    limits: &Limits,
) -> Result<Vec<String>, String> {
    let mut drop: Vec<String> = state
        .drop
        .iter()
        .filter(|d| *d != modality)
        .cloned()
        .collect();
    if keep {
        return Ok(drop);
    }
    drop.push(modality.to_string());
    limits
        .dropped(&drop)
        .ok_or_else(|| "at least one modality must stay".to_string())
}

/// Tour step `step` (the last one past the end), embed mode kept.
fn tour_step(state: &ViewState, step: usize) -> ViewState {
    ViewState {
        tour: Some(step.min(TOUR.len() - 1)),
        embed: state.embed,
        ..ViewState::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            modalities: vec!["vision".into(), "audio".into(), "text".into()],
            refine_layers: 2,
            samples: 10,
            truth: true,
        }
    }

    fn at(sample: usize) -> ViewState {
        ViewState {
            sample,
            ..ViewState::default()
        }
    }

    #[test]
    fn samples_stay_in_range_and_a_typed_one_out_of_it_is_refused() {
        let l = limits();
        let go = |s: &ViewState, a| apply(s, a, &l);
        assert_eq!(go(&at(0), Action::PreviousSample).unwrap().sample, 0);
        assert_eq!(go(&at(4), Action::PreviousSample).unwrap().sample, 3);
        assert_eq!(go(&at(9), Action::NextSample).unwrap().sample, 9);
        assert_eq!(go(&at(4), Action::NextSample).unwrap().sample, 5);
        assert_eq!(go(&at(0), Action::Sample(" 7 ".into())).unwrap().sample, 7);
        for typed in ["10", "-1", "two", ""] {
            let err = go(&at(3), Action::Sample(typed.into())).unwrap_err();
            assert!(err.contains("from 0 to 9"), "{typed}: {err}");
        }
        for (draw, sample) in [(0.0, 0), (0.55, 5), (0.999, 9)] {
            let s = go(&at(3), Action::RandomSample { draw }).unwrap();
            assert_eq!(s.sample, sample, "draw {draw}");
        }
    }

    #[test]
    fn one_modality_must_stay_and_the_dropped_keep_the_models_order() {
        let l = limits();
        let s = ViewState {
            drop: vec!["text".into()],
            ..ViewState::default()
        };
        let dropped = apply(
            &s,
            Action::Keep {
                modality: "vision".into(),
                keep: false,
            },
            &l,
        )
        .unwrap();
        assert_eq!(dropped.drop, ["vision", "text"]);
        let err = apply(
            &dropped,
            Action::Keep {
                modality: "audio".into(),
                keep: false,
            },
            &l,
        )
        .unwrap_err();
        assert!(err.contains("at least one modality"), "{err}");
        let kept = apply(
            &dropped,
            Action::Keep {
                modality: "text".into(),
                keep: true,
            },
            &l,
        )
        .unwrap();
        assert_eq!(kept.drop, ["vision"]);
    }

    #[test]
    fn the_layer_on_view_stays_within_l_t_and_rho_within_its_range() {
        let l = limits();
        let s = ViewState {
            layer: 1,
            ..ViewState::default()
        };
        let one = apply(&s, Action::RefineLayers(Some(1)), &l).unwrap();
        assert_eq!((one.lt, one.layer), (Some(1), 0));
        let both = apply(&s, Action::RefineLayers(None), &l).unwrap();
        assert_eq!((both.lt, both.layer), (None, 1));
        assert_eq!(apply(&s, Action::Layer(None), &l).unwrap().layer, 0);
        assert_eq!(
            apply(&s, Action::Rho("0.3".into()), &l).unwrap().rho,
            Some(0.3)
        );
        for bad in ["0", "1.5", "x", "NaN"] {
            assert_eq!(
                apply(&s, Action::Rho(bad.into()), &l).unwrap().rho,
                None,
                "{bad}"
            );
        }
        let all = apply(&s, Action::Edges(Some(EdgeView::All)), &l).unwrap();
        assert_eq!(all.edges, EdgeView::All);
        assert_eq!(
            apply(&all, Action::Edges(None), &l).unwrap().edges,
            EdgeView::default()
        );
    }

    #[test]
    fn the_ranking_control_sets_a_ranking_and_refuses_an_oracle_without_truth() {
        let s = ViewState::default();
        let oracle = apply(&s, Action::Ranking("oracle-conflict".into()), &limits()).unwrap();
        assert_eq!(oracle.ranking, mgr::SplitRanking::OracleConflict);
        assert!(oracle.to_hash().contains("ranking=oracle-conflict"));
        let real = Limits {
            truth: false,
            ..limits()
        };
        let err = apply(&s, Action::Ranking("oracle-noise".into()), &real).unwrap_err();
        assert!(err.contains("ground truth"), "{err}");
        let random = apply(&oracle, Action::Ranking("random".into()), &real).unwrap();
        assert_eq!(random.ranking, mgr::SplitRanking::Random);
    }

    #[test]
    fn the_tour_walks_its_steps_and_any_control_leaves_it() {
        let l = limits();
        let embedded = ViewState {
            embed: true,
            sample: 4,
            ..ViewState::default()
        };
        let first = apply(&embedded, Action::TourStart, &l).unwrap();
        assert_eq!((first.tour, first.embed, first.sample), (Some(0), true, 0));
        assert_eq!(apply(&first, Action::TourBack, &l).unwrap().tour, Some(0));
        let mut s = first;
        for step in 1..TOUR.len() {
            s = apply(&s, Action::TourNext, &l).unwrap();
            assert_eq!(s.tour, Some(step));
        }
        assert_eq!(
            apply(&s, Action::TourNext, &l).unwrap().tour,
            Some(TOUR.len() - 1)
        );
        assert_eq!(
            apply(&s, Action::TourBack, &l).unwrap().tour,
            Some(TOUR.len() - 2)
        );
        let on_tour = ViewState {
            tour: Some(2),
            sample: 3,
            ..ViewState::default()
        };
        assert_eq!(apply(&on_tour, Action::TourExit, &l).unwrap().tour, None);
        let moved = apply(&on_tour, Action::NextSample, &l).unwrap();
        assert_eq!((moved.tour, moved.sample), (None, 4));
        let other = apply(&embedded, Action::Data(Data::Avmnist), &l).unwrap();
        assert_eq!(
            (other.data, other.embed, other.sample),
            (Data::Avmnist, true, 0)
        );
    }
}
