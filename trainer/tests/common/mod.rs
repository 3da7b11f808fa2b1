//! What the `mgr` binary's end-to-end tests (cli.rs, soak.rs) share.

/// A tiny synthetic setting: 96 / 48 / 48 samples, d = 16, two heads, one layer, batches of 32
/// (3 steps an epoch): a run in well under a second.
pub const TINY: [&str; 14] = [
    "--set",
    "synthetic.n_train=96",
    "--set",
    "synthetic.n_valid=48",
    "--set",
    "synthetic.n_test=48",
    "--set",
    "d_model=16",
    "--set",
    "n_heads=2",
    "--set",
    "batch_size=32",
    "--set",
    "n_layers=1",
];
