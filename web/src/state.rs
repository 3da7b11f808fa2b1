//! The view state, serialised in the URL hash: `#sample=17&drop=audio&layer=1&rho=0.5&lt=2`.
//! `data=avmnist` shows the AV-MNIST model (real handwritten and spoken digits) instead of the
//! synthetic one.
//! `embed=1` hides the controls for teaching pages; `edges=all` draws every strong
//! redistribution edge instead of each biased token's strongest one; `ranking=random` (or
//! `inverted`, `oracle-noise`, `oracle-conflict`, `oracle-majority`) splits by a reference
//! ranking instead of the learned one (the oracles only on data with ground truth).

use mgr::SplitRanking;

use crate::tour::TOUR;

/// What the page shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewState {
    /// Which shipped model and data (`data=`; synthetic by default).
    pub data: Data,
    /// Index of the test sample (synthetic: any index draws a sample from the seed; AV-MNIST:
    /// one of the samples shipped with the model).
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
    /// Which redistribution edges are drawn.
    pub edges: EdgeView,
    /// Which order the split keeps tokens by (`ranking=`; the learned one by default).
    pub ranking: SplitRanking,
    /// The guided tour's step on view (`tour=N`): its view replaces the other settings.
    pub tour: Option<usize>,
}

/// The page's datasets, each with its shipped model (`data=` in the URL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Data {
    /// Generated shapes with ground-truth noise tokens (vision, audio, text).
    #[default]
    Synthetic,
    /// Real handwritten digits and spoken recordings (vision, audio).
    Avmnist,
}

impl Data {
    /// Both, in the order the page offers them.
    pub const ALL: [Data; 2] = [Data::Synthetic, Data::Avmnist];

    /// Its name in the URL and in `model.json`'s `dataset`.
    pub fn name(self) -> &'static str {
        match self {
            Data::Synthetic => "synthetic",
            Data::Avmnist => "avmnist",
        }
    }

    /// The data of that name.
    pub fn from_name(name: &str) -> Option<Data> {
        Data::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Where its shipped model's `model.json` is, relative to the page.
    pub fn shipped_model(self) -> &'static str {
        match self {
            Data::Synthetic => "model/model.json",
            Data::Avmnist => "model-avmnist/model.json",
        }
    }

    /// The data a hash asks for (before the rest of it can be checked against that model);
    /// an unknown name gives the default, and [`ViewState::parse`] reports it.
    /// A tour step is a synthetic view: its hash decides the data alone.
    pub fn of_hash(hash: &str) -> Data {
        let pairs = || hash.trim_start_matches('#').split('&');
        if pairs().any(|p| p.starts_with("tour=")) {
            return Data::Synthetic;
        }
        pairs()
            .filter_map(|p| p.strip_prefix("data="))
            .next_back()
            .and_then(Data::from_name)
            .unwrap_or_default()
    }
}

/// Which redistribution edges the picture draws (`edges=` in the URL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EdgeView {
    /// Each biased token's strongest edge only: one line per biased token, legible with a
    /// modality dropped (the default).
    #[default]
    Strongest,
    /// Every edge of at least a quarter of the layer's largest weight (`edges=all`).
    All,
}

impl EdgeView {
    /// Its name in the URL and in the page's "edges" control.
    pub fn name(self) -> &'static str {
        match self {
            EdgeView::Strongest => "strongest",
            EdgeView::All => "all",
        }
    }

    /// The view of that name.
    pub fn from_name(name: &str) -> Option<EdgeView> {
        [EdgeView::Strongest, EdgeView::All]
            .into_iter()
            .find(|v| v.name() == name)
    }
}

/// `s` with `&`, `<`, `>` and `"` escaped, for HTML text and attribute values.
pub fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What the loaded model allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Modality names.
    pub modalities: Vec<String>,
    /// Refinement layers the model has.
    pub refine_layers: usize,
    /// Sample indices the model can show: `0..samples` (synthetic: up to [`MAX_SAMPLE`]).
    pub samples: usize,
    /// Whether the data knows each token's truth (synthetic: noise and conflicting tokens), so
    /// the oracle rankings can run.
    pub truth: bool,
}

impl Limits {
    /// How many samples the view can show: `0..sample_count` (at least 1, at most the URL's
    /// bound).
    pub fn sample_count(&self) -> usize {
        self.samples.clamp(1, MAX_SAMPLE + 1)
    }

    /// `names` as the modalities to drop, in the model's order (names it lacks left out); None
    /// when that would drop every modality: at least one must stay.
    pub fn dropped(&self, names: &[String]) -> Option<Vec<String>> {
        let drop: Vec<String> = self
            .modalities
            .iter()
            .filter(|m| names.contains(m))
            .cloned()
            .collect();
        (self.modalities.is_empty() || drop.len() < self.modalities.len()).then_some(drop)
    }
}

/// Largest sample index accepted in the URL.
pub const MAX_SAMPLE: usize = 999_999;

/// Largest model file (`model.json` or `model.bpk`) the page downloads from `?model=`: the
/// shipped model is well under 1 MB, and a larger file could stall a lesson's tab.
pub const MAX_MODEL_BYTES: u64 = 64 * 1024 * 1024;

/// Where a `?model=` URL may point: an http(s) URL, a protocol-relative one (`//host/...`, the
/// page's own scheme) or a path relative to the page. Every other scheme (`javascript:`,
/// `data:`, `file:`, `blob:`, ...) is refused with a message that names it. Returns the URL of
/// the model's `model.json` (a folder gets `/model.json` appended).
pub fn model_json_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("?model= is empty".into());
    }
    if url.chars().any(char::is_control) {
        return Err("?model= holds control characters".into());
    }
    // A scheme is what precedes the first ':' when no '/', '?' or '#' comes before it (RFC 3986).
    let scheme = url
        .find([':', '/', '?', '#'])
        .filter(|&i| url[i..].starts_with(':'))
        .map(|i| &url[..i]);
    if let Some(scheme) = scheme
        && !scheme.eq_ignore_ascii_case("http")
        && !scheme.eq_ignore_ascii_case("https")
    {
        return Err(format!(
            "?model= uses the scheme `{scheme}:`; only http(s) URLs and relative paths are loaded"
        ));
    }
    Ok(if url.ends_with(".json") {
        url.to_string()
    } else {
        format!("{}/model.json", url.trim_end_matches('/'))
    })
}

/// Width and height of the `<iframe>` the page's "copy embed code" gives a teacher.
pub const EMBED_SIZE: (u32, u32) = (400, 600);

/// The `<iframe>` that shows `state` in embed mode (controls hidden): `page` is the page's URL
/// without its hash (origin, path and query, so a `?model=` comes along). Attribute values are
/// escaped, so any URL gives well-formed HTML.
pub fn embed_snippet(page: &str, state: &ViewState) -> String {
    let embedded = ViewState {
        embed: true,
        ..state.clone()
    };
    let src = format!(
        "{}{}",
        page.split('#').next().unwrap_or(page),
        embedded.to_hash()
    );
    format!(
        "<iframe src=\"{}\" width=\"{}\" height=\"{}\" style=\"border:0\" loading=\"lazy\" title=\"MGR: biased tokens and their redistribution (sample {})\"></iframe>",
        escape_html(&src),
        EMBED_SIZE.0,
        EMBED_SIZE.1,
        state.sample
    )
}

/// Refuses a download whose announced size is over [`MAX_MODEL_BYTES`], before its body is read.
pub fn check_model_size(url: &str, bytes: u64) -> Result<(), String> {
    if bytes > MAX_MODEL_BYTES {
        return Err(format!(
            "{url} is {:.1} MB, over the page's limit of {} MB; not downloaded",
            bytes as f64 / (1024.0 * 1024.0),
            MAX_MODEL_BYTES / (1024 * 1024)
        ));
    }
    Ok(())
}

/// `ranking=`: a [`SplitRanking`]'s name; an oracle only where the data has ground truth.
pub fn parse_ranking(value: &str, limits: &Limits) -> Result<SplitRanking, String> {
    let names = SplitRanking::ALL.map(SplitRanking::name).join(", ");
    match value.parse::<SplitRanking>() {
        Ok(r) if r.needs_truth() && !limits.truth => Err(format!(
            "ranking `{value}` needs the data's per-token ground truth, which only the synthetic data has; using the learned ranking"
        )),
        Ok(r) => Ok(r),
        Err(_) => Err(format!(
            "ranking `{value}` is not one of {names}; using the learned ranking"
        )),
    }
}

/// `drop=`: modality names, comma-separated, each one the model has, not all of them; in the
/// model's order.
fn parse_drop(value: &str, limits: &Limits) -> Result<Vec<String>, String> {
    let names: Vec<String> = value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = names.iter().find(|n| !limits.modalities.contains(n)) {
        return Err(format!(
            "drop: unknown modality `{bad}` (this model has {})",
            limits.modalities.join(", ")
        ));
    }
    limits
        .dropped(&names)
        .ok_or_else(|| "drop: at least one modality must stay; showing all".to_string())
}

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
            if let Err(problem) = state.set(key, value, limits) {
                problems.push(problem);
            }
        }
        if let Some(step) = state.tour {
            let (view, step_problems) = ViewState::parse(TOUR[step].view, limits);
            problems.extend(step_problems);
            state = ViewState {
                tour: Some(step),
                embed: state.embed,
                ..view
            };
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

    /// Sets one hash setting; a value out of range leaves the default and says why.
    fn set(&mut self, key: &str, value: &str, limits: &Limits) -> Result<(), String> {
        match key {
            "data" => match Data::from_name(value) {
                Some(data) => self.data = data,
                None => {
                    return Err(format!(
                        "data `{value}` is not `synthetic` or `avmnist`; showing synthetic"
                    ));
                }
            },
            "sample" => match value.parse::<usize>() {
                Ok(v) if v < limits.sample_count() => self.sample = v,
                _ => {
                    return Err(format!(
                        "sample `{value}` is not an index from 0 to {}; showing sample 0",
                        limits.sample_count() - 1
                    ));
                }
            },
            "drop" => self.drop = parse_drop(value, limits)?,
            "layer" => match value.parse::<usize>() {
                Ok(v) => self.layer = v,
                Err(_) => return Err(format!("layer `{value}` is not a number")),
            },
            "rho" => match value.parse::<f64>() {
                Ok(v) if mgr::ModelConfig::rho_is_valid(v) => self.rho = Some(v),
                _ => {
                    return Err(format!(
                        "rho `{value}` is outside (0, 1]; using the model's"
                    ));
                }
            },
            "lt" => match value.parse::<usize>() {
                Ok(v) if (1..=limits.refine_layers).contains(&v) => self.lt = Some(v),
                _ => {
                    return Err(format!(
                        "lt `{value}` is outside 1..={}; using {}",
                        limits.refine_layers, limits.refine_layers
                    ));
                }
            },
            "embed" => self.embed = value == "1" || value == "true",
            "tour" => match value.parse::<usize>() {
                Ok(n) if n < TOUR.len() => self.tour = Some(n),
                _ => {
                    return Err(format!(
                        "tour step `{value}` does not exist (0..={})",
                        TOUR.len() - 1
                    ));
                }
            },
            "edges" => match EdgeView::from_name(value) {
                Some(view) => self.edges = view,
                None => {
                    return Err(format!(
                        "edges `{value}` is not `strongest` or `all`; showing the strongest"
                    ));
                }
            },
            "ranking" => self.ranking = parse_ranking(value, limits)?,
            other => return Err(format!("unknown view setting `{other}`")),
        }
        Ok(())
    }

    /// The hash for this state (defaults omitted; a tour step is its number alone).
    pub fn to_hash(&self) -> String {
        if let Some(step) = self.tour {
            let embed = if self.embed { "&embed=1" } else { "" };
            return format!("#tour={step}{embed}");
        }
        let mut parts = Vec::new();
        if self.data != Data::default() {
            parts.push(format!("data={}", self.data.name()));
        }
        parts.push(format!("sample={}", self.sample));
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
        if self.edges != EdgeView::default() {
            parts.push(format!("edges={}", self.edges.name()));
        }
        if self.ranking != SplitRanking::default() {
            parts.push(format!("ranking={}", self.ranking.name()));
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
            samples: MAX_SAMPLE + 1,
            truth: true,
        }
    }

    #[test]
    fn model_urls_are_http_or_relative() {
        for (url, want) in [
            ("models/avmnist/", "models/avmnist/model.json"),
            ("models/m.json", "models/m.json"),
            ("https://example.org/m", "https://example.org/m/model.json"),
            (
                "HTTP://example.org/m/model.json",
                "HTTP://example.org/m/model.json",
            ),
            ("//cdn.example.org/m", "//cdn.example.org/m/model.json"),
            ("a/b:c", "a/b:c/model.json"),
            ("./m?v=1:2", "./m?v=1:2/model.json"),
        ] {
            assert_eq!(model_json_url(url).as_deref(), Ok(want), "{url}");
        }
        for (url, scheme) in [
            ("javascript:alert(1)", "javascript"),
            ("data:application/json,{}", "data"),
            ("file:///etc/passwd", "file"),
            ("blob:https://x/y", "blob"),
            (" JavaScript:x", "JavaScript"),
        ] {
            let err = model_json_url(url).unwrap_err();
            assert!(err.contains(&format!("`{scheme}:`")), "{url}: {err}");
        }
        assert!(model_json_url("").is_err());
        assert!(model_json_url("java\tscript:x").is_err());
    }

    #[test]
    fn embed_snippet_opens_the_same_view_in_embed_mode() {
        let state = ViewState {
            data: Data::Synthetic,
            sample: 17,
            drop: vec!["audio".into()],
            layer: 1,
            rho: Some(0.3),
            lt: None,
            embed: false,
            edges: EdgeView::All,
            ranking: SplitRanking::Random,
            tour: None,
        };
        let html = embed_snippet("https://t.example/mgr/?model=m/#sample=2", &state);
        assert!(
            html.starts_with("<iframe src=\"") && html.ends_with("></iframe>"),
            "{html}"
        );
        assert!(html.contains("width=\"400\" height=\"600\""), "{html}");
        let src = html.split('"').nth(1).unwrap().replace("&amp;", "&");
        let (page, hash) = src.split_once('#').unwrap();
        assert_eq!(page, "https://t.example/mgr/?model=m/");
        let (back, problems) = ViewState::parse(hash, &limits());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            back,
            ViewState {
                embed: true,
                ..state.clone()
            }
        );
        // A quote in the URL cannot end the attribute early.
        let odd = embed_snippet("https://x/?a=\"><script>", &state);
        assert!(
            !odd.contains("<script>") && odd.matches('"').count() == 12,
            "{odd}"
        );
    }

    #[test]
    fn a_tour_step_is_its_view_and_links_as_its_number() {
        let (state, problems) = ViewState::parse("#tour=1&embed=1", &limits());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(state.drop, vec!["audio".to_string()]);
        assert_eq!((state.sample, state.tour, state.embed), (3, Some(1), true));
        assert_eq!(state.to_hash(), "#tour=1&embed=1");
        // The step's view wins over other settings in the same hash.
        let (state, _) = ViewState::parse("#sample=9&tour=0", &limits());
        assert_eq!((state.sample, state.drop.len()), (3, 0));
        let (state, problems) = ViewState::parse("#tour=99", &limits());
        assert!(state.tour.is_none() && problems[0].contains("tour step `99`"));
    }

    #[test]
    fn model_size_limit_is_64_mb() {
        assert!(check_model_size("m.bpk", MAX_MODEL_BYTES).is_ok());
        let err = check_model_size("m.bpk", MAX_MODEL_BYTES + 1).unwrap_err();
        assert!(err.contains("m.bpk") && err.contains("64 MB"), "{err}");
    }

    proptest::proptest! {
        /// Any hash a link can hold: a state and its messages, never a panic; the state is in
        /// range and its own hash reads back as itself.
        #[test]
        fn any_hash_parses_to_a_state_in_range(hash in ".{0,120}", keys in proptest::collection::vec(
            ("(data|sample|drop|layer|rho|lt|embed|edges|tour|x)", "[-0-9a-z.,%]{0,12}"), 0..6)) {
            let joined: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            for hash in [hash, format!("#{}", joined.join("&"))] {
                let (state, _) = ViewState::parse(&hash, &limits());
                proptest::prop_assert!(state.sample <= MAX_SAMPLE && state.layer < 2);
                proptest::prop_assert!(state.drop.len() < 3);
                proptest::prop_assert!(state.rho.is_none_or(|r| r > 0.0 && r <= 1.0));
                let (again, problems) = ViewState::parse(&state.to_hash(), &limits());
                proptest::prop_assert!(problems.is_empty(), "{problems:?}");
                proptest::prop_assert_eq!(again, state);
            }
        }

        /// Any URL a teacher might paste: refused with a message or turned into a model.json URL.
        #[test]
        fn any_model_url_is_refused_or_points_at_a_model_json(url in ".{0,80}") {
            if let Ok(json) = model_json_url(&url) {
                proptest::prop_assert!(json.ends_with(".json"));
                proptest::prop_assert!(!json.to_ascii_lowercase().starts_with("javascript:"));
            }
        }
    }

    #[test]
    fn hash_round_trips() {
        let s = ViewState {
            data: Data::Avmnist,
            sample: 17,
            drop: vec!["audio".into()],
            layer: 1,
            rho: Some(0.25),
            lt: Some(2),
            embed: true,
            edges: EdgeView::All,
            ranking: SplitRanking::OracleConflict,
            tour: None,
        };
        let (back, problems) = ViewState::parse(&s.to_hash(), &limits());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(back, s);
        for ranking in SplitRanking::ALL {
            let view = ViewState {
                ranking,
                ..ViewState::default()
            };
            let hash = view.to_hash();
            assert_eq!(
                hash.contains("ranking="),
                ranking != SplitRanking::Learned,
                "{hash}"
            );
            assert_eq!(ViewState::parse(&hash, &limits()).0, view);
        }
    }

    /// An oracle needs ground truth: refused on data without it, with a message; an unknown
    /// ranking names the ones there are.
    #[test]
    fn an_oracle_ranking_needs_data_with_ground_truth() {
        let real = Limits {
            truth: false,
            ..limits()
        };
        let (s, problems) = ViewState::parse("#ranking=oracle-noise", &real);
        assert_eq!(s.ranking, SplitRanking::Learned);
        assert!(problems[0].contains("ground truth"), "{problems:?}");
        let (s, problems) = ViewState::parse("#ranking=random", &real);
        assert_eq!((s.ranking, problems.len()), (SplitRanking::Random, 0));
        let (_, problems) = ViewState::parse("#ranking=best", &limits());
        assert!(problems[0].contains("oracle-conflict"), "{problems:?}");
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
    fn avmnist_views_are_checked_against_its_model_and_shipped_samples() {
        let av = Limits {
            modalities: vec!["vision".into(), "audio".into()],
            refine_layers: 2,
            samples: 32,
            truth: false,
        };
        let hash = "#data=avmnist&sample=31&drop=audio&layer=1";
        assert_eq!(Data::of_hash(hash), Data::Avmnist);
        let (s, problems) = ViewState::parse(hash, &av);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((s.data, s.sample, s.drop.len()), (Data::Avmnist, 31, 1));
        assert_eq!(s.to_hash(), hash);
        // Sample 32 is not shipped; text is not one of its modalities.
        let (s, problems) = ViewState::parse("#data=avmnist&sample=32&drop=text", &av);
        assert_eq!(s.sample, 0);
        assert!(problems[0].contains("0 to 31"), "{problems:?}");
        assert!(problems[1].contains("vision, audio"), "{problems:?}");
        // Unknown data: the default, with a message; a tour step is synthetic.
        let (s, problems) = ViewState::parse("#data=cifar", &limits());
        assert_eq!(s.data, Data::Synthetic);
        assert!(problems[0].contains("cifar"), "{problems:?}");
        assert_eq!(Data::of_hash("#data=cifar"), Data::Synthetic);
        assert_eq!(Data::of_hash("#data=avmnist&tour=1"), Data::Synthetic);
    }

    #[test]
    fn layer_is_checked_against_the_chosen_lt() {
        let (s, problems) = ViewState::parse("#lt=1&layer=1", &limits());
        assert_eq!((s.lt, s.layer), (Some(1), 0));
        assert_eq!(problems.len(), 1);
    }
}
