//! The view state, serialised in the URL hash: `#sample=17&drop=audio&layer=1&rho=0.5&lt=2`.
//! `embed=1` hides the controls for teaching pages.

/// What the page shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewState {
    /// Index of the synthetic test sample (any index draws a sample from the seed).
    pub sample: usize,
    /// Dropped modalities, by name.
    pub drop: Vec<String>,
    /// Refinement layer drawn, 0-based.
    pub layer: usize,
    /// Kept fraction rho (None: the model's).
    pub rho: Option<f64>,
    /// Refinement layers run, L_T (None: the model's).
    pub lt: Option<usize>,
    /// Embed mode: controls hidden.
    pub embed: bool,
}

/// What the loaded model allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Modality names.
    pub modalities: Vec<String>,
    /// Refinement layers the model has.
    pub refine_layers: usize,
}

/// Largest sample index accepted in the URL.
pub const MAX_SAMPLE: usize = 999_999;

impl ViewState {
    /// Parses a hash (with or without the leading '#'). Values out of range are replaced by
    /// defaults and reported, one message each, so the page can say what it ignored.
    pub fn parse(hash: &str, limits: &Limits) -> (ViewState, Vec<String>) {
        let mut state = ViewState::default();
        let mut problems = Vec::new();
        for pair in hash
            .trim_start_matches('#')
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sample" => match value.parse::<usize>() {
                    Ok(v) if v <= MAX_SAMPLE => state.sample = v,
                    _ => problems.push(format!(
                        "sample `{value}` is not an index from 0 to {MAX_SAMPLE}; showing sample 0"
                    )),
                },
                "drop" => {
                    let names: Vec<String> = value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect();
                    if let Some(bad) = names.iter().find(|n| !limits.modalities.contains(n)) {
                        problems.push(format!(
                            "drop: unknown modality `{bad}` (this model has {})",
                            limits.modalities.join(", ")
                        ));
                    } else if limits.modalities.iter().all(|m| names.contains(m)) {
                        problems
                            .push("drop: at least one modality must stay; showing all".to_string());
                    } else {
                        state.drop = limits
                            .modalities
                            .iter()
                            .filter(|m| names.contains(m))
                            .cloned()
                            .collect();
                    }
                }
                "layer" => match value.parse::<usize>() {
                    Ok(v) => state.layer = v,
                    Err(_) => problems.push(format!("layer `{value}` is not a number")),
                },
                "rho" => match value.parse::<f64>() {
                    Ok(v) if v > 0.0 && v <= 1.0 => state.rho = Some(v),
                    _ => problems.push(format!(
                        "rho `{value}` is outside (0, 1]; using the model's"
                    )),
                },
                "lt" => match value.parse::<usize>() {
                    Ok(v) if (1..=limits.refine_layers).contains(&v) => state.lt = Some(v),
                    _ => problems.push(format!(
                        "lt `{value}` is outside 1..={}; using {}",
                        limits.refine_layers, limits.refine_layers
                    )),
                },
                "embed" => state.embed = value == "1" || value == "true",
                other => problems.push(format!("unknown view setting `{other}`")),
            }
        }
        let layers = state.lt.unwrap_or(limits.refine_layers);
        if layers > 0 && state.layer >= layers {
            problems.push(format!(
                "layer {} does not exist (0..{}); showing layer 0",
                state.layer,
                layers - 1
            ));
            state.layer = 0;
        }
        (state, problems)
    }

    /// The hash for this state (defaults omitted).
    pub fn to_hash(&self) -> String {
        let mut parts = vec![format!("sample={}", self.sample)];
        if !self.drop.is_empty() {
            parts.push(format!("drop={}", self.drop.join(",")));
        }
        parts.push(format!("layer={}", self.layer));
        if let Some(rho) = self.rho {
            parts.push(format!("rho={rho}"));
        }
        if let Some(lt) = self.lt {
            parts.push(format!("lt={lt}"));
        }
        if self.embed {
            parts.push("embed=1".into());
        }
        format!("#{}", parts.join("&"))
    }

    /// Availability flags for the model's modalities.
    pub fn available(&self, limits: &Limits) -> Vec<bool> {
        limits
            .modalities
            .iter()
            .map(|m| !self.drop.contains(m))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            modalities: vec!["vision".into(), "audio".into(), "text".into()],
            refine_layers: 2,
        }
    }

    #[test]
    fn hash_round_trips() {
        let s = ViewState {
            sample: 17,
            drop: vec!["audio".into()],
            layer: 1,
            rho: Some(0.25),
            lt: Some(2),
            embed: true,
        };
        let (back, problems) = ViewState::parse(&s.to_hash(), &limits());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(back, s);
    }

    #[test]
    fn out_of_range_values_fall_back_with_a_message() {
        let (s, problems) = ViewState::parse(
            "#sample=-3&drop=vision,audio,text&layer=9&rho=2&lt=7&zoom=3",
            &limits(),
        );
        assert_eq!(s, ViewState::default());
        assert_eq!(problems.len(), 6, "{problems:?}");
        let (s, problems) = ViewState::parse("drop=smell", &limits());
        assert!(s.drop.is_empty() && problems[0].contains("smell"));
    }

    #[test]
    fn layer_is_checked_against_the_chosen_lt() {
        let (s, problems) = ViewState::parse("#lt=1&layer=1", &limits());
        assert_eq!((s.lt, s.layer), (Some(1), 0));
        assert_eq!(problems.len(), 1);
    }
}
