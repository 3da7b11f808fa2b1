//! Loading a run's dataset as train / validation / test splits.

use anyhow::{Result, bail};
use mgr::absence::SplitKind;
use mgr::data::DataSplit;

use crate::datasets::find;
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

/// Loads (or generates) the dataset a run names, validated.
pub fn load(rc: &RunConfig) -> Result<Splits> {
    let dataset = find(&rc.dataset)?;
    let splits = match (dataset.load, dataset.data_dir) {
        (Some(load), Some(what)) => {
            let dir = rc.data_dir.as_deref().ok_or_else(|| {
                anyhow::anyhow!("--dataset {} needs --data-dir {what}", dataset.name)
            })?;
            let (train, valid, test) = load(dir)?;
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
    fn a_dataset_read_from_files_without_data_dir_is_an_error_naming_the_flag() {
        for d in crate::datasets::DATASETS
            .iter()
            .filter(|d| d.data_dir.is_some())
        {
            let rc = RunConfig {
                dataset: d.name.into(),
                data_dir: None,
                ..RunConfig::default()
            };
            let err = load(&rc).err().expect("no data dir").to_string();
            assert!(err.contains("needs --data-dir"), "{}: {err}", d.name);
        }
    }
}
