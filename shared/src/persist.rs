//! Model weights in Burn's burnpack format, to and from bytes (no file system here: the trainer
//! writes the bytes to files, the browser fetches them).

use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Bytes, Device};

use crate::config::ModelConfig;
use crate::error::MgrError;
use crate::model::Model;

/// The model's parameters as burnpack bytes.
pub fn to_burnpack(model: &Model) -> Result<Vec<u8>, MgrError> {
    let mut store = BurnpackStore::from_bytes(None);
    model
        .valid()
        .save_into(&mut store)
        .map_err(|e| MgrError::data("model weights", format!("cannot serialise: {e}")))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| MgrError::data("model weights", format!("cannot serialise: {e}")))?;
    Ok(bytes.to_vec())
}

/// A model of `config` on `device` with the parameters in `bytes` (burnpack). Every parameter
/// must be present with its shape; `what` names the source in errors.
pub fn from_burnpack(
    config: &ModelConfig,
    bytes: Vec<u8>,
    device: &Device,
    what: &str,
) -> Result<Model, MgrError> {
    let mut model = config.init(device)?;
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)));
    let result = model
        .load_from(&mut store)
        .map_err(|e| MgrError::data(what, format!("not weights of this model: {e}")))?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(MgrError::data(
            what,
            format!("weights of another model: {result}"),
        ));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModalitySpec;

    fn cfg() -> ModelConfig {
        ModelConfig::new(
            vec![
                ModalitySpec::new("a".into(), 3, 2),
                ModalitySpec::new("b".into(), 2, 4),
            ],
            3,
        )
        .with_d_model(8)
        .with_n_heads(2)
    }

    #[test]
    fn round_trip_keeps_every_parameter_and_bad_bytes_are_errors() {
        let device = Device::flex();
        let model = cfg().init(&device).unwrap();
        let bytes = to_burnpack(&model).unwrap();
        let back = from_burnpack(&cfg(), bytes.clone(), &device, "m.bpk").unwrap();
        let a = model.head.linear.weight.val().into_data();
        back.head
            .linear
            .weight
            .val()
            .into_data()
            .assert_eq(&a, true);
        assert!(
            from_burnpack(&cfg(), bytes[..bytes.len() / 2].to_vec(), &device, "m.bpk").is_err()
        );
        assert!(from_burnpack(&cfg(), b"not a model".to_vec(), &device, "m.bpk").is_err());
        let other = cfg().with_d_model(16);
        let err = from_burnpack(&other, bytes, &device, "m.bpk")
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.bpk"), "{err}");
    }
}
