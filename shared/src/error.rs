//! Errors of the model crate: each says what is wrong and where.

use thiserror::Error;

/// An input the model crate refuses, with what and where.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum MgrError {
    /// A configuration field holds a value outside its domain.
    #[error("invalid config field `{field}`: {reason}")]
    InvalidConfig { field: String, reason: String },
    /// Data handed to the crate has the wrong shape or content.
    #[error("invalid data in {what}: {reason}")]
    InvalidData { what: String, reason: String },
    /// An absence setting that cannot be satisfied.
    #[error("invalid absence setting: {0}")]
    InvalidAbsence(String),
    /// Training left its range: a step's loss is not finite or far above the run's reference.
    #[error("training diverged at epoch {epoch}, step {step}: the loss {loss:.6e} {reason}")]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
        reason: String,
    },
    /// A name (method, insertion type, modality) that is not known.
    #[error("unknown {kind} `{name}` (expected one of: {expected})")]
    UnknownName {
        kind: String,
        name: String,
        expected: String,
    },
}

impl MgrError {
    pub(crate) fn config(field: &str, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn data(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidData {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
