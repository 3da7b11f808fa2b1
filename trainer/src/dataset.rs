//! Loading a run's dataset as train / validation / test splits.

use anyhow::{Result, bail};
use mgr::absence::SplitKind;
use mgr::data::DataSplit;
use std::path::Path;

use crate::runconfig::RunConfig;

/// The three splits of a dataset.
pub struct Splits {
    /// Training split.
    pub train: DataSplit,
    /// Validation split (model selection).
    pub valid: DataSplit,
    /// Test split (reported).
    pub test: DataSplit,
}

impl Splits {
    /// The split of `kind`.
    pub fn get(&self, kind: SplitKind) -> &DataSplit {
        match kind {
            SplitKind::Train => &self.train,
            SplitKind::Valid => &self.valid,
            SplitKind::Test => &self.test,
        }
    }
}

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

/// The three splits of a dataset from the run's config and `--data-dir`.
type Loader = fn(&RunConfig, &Path) -> Result<(DataSplit, DataSplit, DataSplit)>;

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
    load: Option<Loader>,
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
        load: Some(|_, dir| crate::avmnist::load(dir)),
        noise_truth: false,
        page: PageSamples::Recordings,
    },
    Dataset {
        name: "mosi",
        data_dir: Some(AFFECT_FILE),
        load: Some(|_, file| crate::affect::load(file, "mosi")),
        noise_truth: false,
        page: PageSamples::NotShown,
    },
    Dataset {
        name: "mosei",
        data_dir: Some(AFFECT_FILE),
        load: Some(|_, file| crate::affect::load(file, "mosei")),
        noise_truth: false,
        page: PageSamples::NotShown,
    },
    Dataset {
        name: "urfunny",
        data_dir: Some(AFFECT_FILE),
        load: Some(|_, file| crate::affect::load(file, "urfunny")),
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

/// Loads (or generates) the dataset a run names, validated.
pub fn load(rc: &RunConfig) -> Result<Splits> {
    let dataset = find(&rc.dataset)?;
    let splits = match (dataset.load, dataset.data_dir) {
        (Some(load), Some(what)) => {
            let dir = rc.data_dir.as_deref().ok_or_else(|| {
                anyhow::anyhow!("--dataset {} needs --data-dir {what}", dataset.name)
            })?;
            let (train, valid, test) = load(rc, dir)?;
            Splits { train, valid, test }
        }
        _ => Splits {
            train: rc.synthetic.split(SplitKind::Train),
            valid: rc.synthetic.split(SplitKind::Valid),
            test: rc.synthetic.split(SplitKind::Test),
        },
    };
    let splits = if rc.limit > 0 {
        let cut = |s: &DataSplit| {
            s.subset(
                &(0..s.len().min(rc.limit)).collect::<Vec<_>>(),
                s.name.clone(),
            )
        };
        Splits {
            train: cut(&splits.train),
            valid: cut(&splits.valid),
            test: cut(&splits.test),
        }
    } else {
        splits
    };
    for kind in SplitKind::ALL {
        let split = splits.get(kind);
        split.validate()?;
        if split.is_empty() {
            bail!("{}: the {} split is empty", split.name, kind.name());
        }
    }
    Ok(splits)
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
    fn a_dataset_read_from_files_without_data_dir_is_an_error_naming_the_flag() {
        for d in DATASETS.iter().filter(|d| d.data_dir.is_some()) {
            let rc = RunConfig {
                dataset: d.name.into(),
                data_dir: None,
                ..RunConfig::default()
            };
            let err = load(&rc).err().expect("no data dir").to_string();
            assert!(err.contains("needs --data-dir"), "{}: {err}", d.name);
        }
    }

    #[test]
    fn only_generated_data_knows_its_noise_tokens() {
        for d in &DATASETS {
            assert_eq!(d.noise_truth, d.data_dir.is_none(), "{}", d.name);
            assert_eq!(d.load.is_some(), d.data_dir.is_some(), "{}", d.name);
        }
    }
}
