//! Loading a run's dataset as train / validation / test splits.

use anyhow::{Result, bail};
use mgr::absence::SplitKind;
use mgr::data::DataSplit;

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
    let splits = match rc.dataset.as_str() {
        "synthetic" => Splits {
            train: rc.synthetic.split(SplitKind::Train),
            valid: rc.synthetic.split(SplitKind::Valid),
            test: rc.synthetic.split(SplitKind::Test),
        },
        "avmnist" => {
            let dir = rc.data_dir.as_deref().ok_or_else(|| anyhow::anyhow!("--dataset avmnist needs --data-dir (a folder made by `mgr prepare avmnist` or MultiBench's)"))?;
            let (train, valid, test) = crate::avmnist::load(dir)?;
            Splits { train, valid, test }
        }
        "mosi" | "mosei" | "urfunny" => {
            let file = rc.data_dir.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "--dataset {} needs --data-dir FILE.pkl (MultiBench's pickle)",
                    rc.dataset
                )
            })?;
            let (train, valid, test) = crate::affect::load(file, &rc.dataset)?;
            Splits { train, valid, test }
        }
        other => bail!("unknown dataset `{other}`"),
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
