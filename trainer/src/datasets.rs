//! Every dataset the trainer knows, by its `--dataset` name: where its files come from, whether
//! it carries the ground truth the ranking is graded against, what the page can show of it.
//! Read by the config's checks (runconfig.rs) and by the loader (dataset.rs).

use anyhow::Result;
use mgr::data::DataSplit;
use std::path::Path;

/// How `mgr export-web` gets the page's samples of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSamples {
    /// Generated from the run's synthetic config (`samples.json`; the page can draw more).
    Generated,
    /// Test samples with their recordings, rebuilt from the raw files (`samples.safetensors`).
    Recordings,
    /// The page cannot show this dataset.
    NotShown,
}

/// The three splits of a dataset from its `--data-dir`.
type Loader = fn(&Path) -> Result<(DataSplit, DataSplit, DataSplit)>;

/// One dataset the trainer knows: a new dataset is one entry of [`DATASETS`] and a reader
/// module beside `avmnist.rs` / `affect.rs`.
#[derive(Debug)]
pub struct Dataset {
    /// Its `--dataset` name.
    pub name: &'static str,
    /// What `--data-dir` must name, as the error for a missing one says it; None: generated,
    /// no files.
    pub data_dir: Option<&'static str>,
    /// Reads the splits (not called for generated datasets).
    pub load: Option<Loader>,
    /// Whether it knows which tokens are noise (the ranking report measures against them).
    pub noise_truth: bool,
    /// What the page can show of it.
    pub page: PageSamples,
}

/// Every dataset, in the help's order.
pub const DATASETS: [Dataset; 5] = [
    Dataset {
        name: "synthetic",
        data_dir: None,
        load: None,
        noise_truth: true,
        page: PageSamples::Generated,
    },
    Dataset {
        name: "avmnist",
        data_dir: Some("(a folder made by `mgr prepare avmnist` or MultiBench's)"),
        load: Some(crate::avmnist::load),
        noise_truth: false,
        page: PageSamples::Recordings,
    },
    Dataset {
        name: "mosi",
        data_dir: Some(AFFECT_FILE),
        load: Some(|file| crate::affect::load(file, "mosi")),
        noise_truth: false,
        page: PageSamples::NotShown,
    },
    Dataset {
        name: "mosei",
        data_dir: Some(AFFECT_FILE),
        load: Some(|file| crate::affect::load(file, "mosei")),
        noise_truth: false,
        page: PageSamples::NotShown,
    },
    Dataset {
        name: "urfunny",
        data_dir: Some(AFFECT_FILE),
        load: Some(|file| crate::affect::load(file, "urfunny")),
        noise_truth: false,
        page: PageSamples::NotShown,
    },
];

const AFFECT_FILE: &str = "FILE.pkl (MultiBench's pickle)";

/// Every dataset's name, in the help's order.
pub fn names() -> impl Iterator<Item = &'static str> {
    DATASETS.iter().map(|d| d.name)
}

/// The dataset called `name`.
pub fn find(name: &str) -> Result<&'static Dataset> {
    DATASETS.iter().find(|d| d.name == name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown dataset `{name}` (expected one of: {})",
            names().collect::<Vec<_>>().join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let names: Vec<&str> = names().collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len());
        for name in names {
            assert_eq!(find(name).unwrap().name, name);
        }
        let err = find("mnist").unwrap_err().to_string();
        assert!(
            err.contains("`mnist`") && err.contains("avmnist, mosi"),
            "{err}"
        );
    }

    #[test]
    fn only_generated_data_knows_its_noise_tokens() {
        for d in &DATASETS {
            assert_eq!(d.noise_truth, d.data_dir.is_none(), "{}", d.name);
            assert_eq!(d.load.is_some(), d.data_dir.is_some(), "{}", d.name);
        }
    }
}
