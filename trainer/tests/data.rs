//! Real data: AV-MNIST rebuilt from `../shared/data` (MNIST + Free Spoken Digit Dataset), its
//! loader, MultiBench affect pickles written here with Python, and bad files.

// End-to-end tests read as one story each: run, then check every output in turn.
#![allow(clippy::too_many_lines)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared/data` beside the checkout (or $MGR_SHARED_DATA; or /work/shared/data, where a
/// clone made elsewhere for CI still finds it).
fn shared_data() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("MGR_SHARED_DATA").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")),
        Some(PathBuf::from("/work/shared/data")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("mnist").is_dir() && p.join("fsdd/recordings").is_dir())
}

fn mgr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mgr"))
        .args(args)
        .output()
        .expect("run mgr")
}

fn npy_shape(path: &Path) -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys, numpy as np; a = np.load(sys.argv[1]); print(a.shape, a.dtype, bool(np.isfinite(a).all()))", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `mgr prepare avmnist` from `data`'s MNIST and FSDD folders into `out`, with `extra` flags.
fn prepare_avmnist(data: &Path, out: &Path, extra: &[&str]) {
    let (mnist, fsdd) = (data.join("mnist"), data.join("fsdd"));
    let mut args = vec![
        "prepare",
        "avmnist",
        "--mnist-dir",
        mnist.to_str().unwrap(),
        "--fsdd-dir",
        fsdd.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let run = mgr(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn avmnist_is_rebuilt_from_real_recordings_and_trains_well_above_chance() {
    let Some(data) = shared_data() else {
        panic!(
            "../shared/data is missing: the real-data tests need MNIST and FSDD there (see its README)"
        );
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("avmnist");
    prepare_avmnist(&data, &out, &[]);
    assert_eq!(
        npy_shape(&out.join("image/train_data.npy")),
        "(10000, 784) float32 True"
    );
    assert_eq!(
        npy_shape(&out.join("image/test_data.npy")),
        "(10000, 784) float32 True"
    );
    assert_eq!(
        npy_shape(&out.join("audio/train_data.npy")),
        "(10000, 112, 112) float32 True"
    );
    assert_eq!(
        npy_shape(&out.join("audio/test_data.npy")),
        "(10000, 112, 112) float32 True"
    );
    assert_eq!(
        npy_shape(&out.join("train_labels.npy")),
        "(10000,) int64 True"
    );
    // Image and audio labels agree for every pair; train audio from the training speakers only.
    for (split, speakers) in [
        ("train", &["jackson", "nicolas", "theo"][..]),
        ("test", &["yweweler"][..]),
    ] {
        let labels = Command::new("python3")
            .args([
                "-c",
                "import sys, numpy as np; print(','.join(map(str, np.load(sys.argv[1]))))",
                out.join(format!("{split}_labels.npy")).to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let labels: Vec<String> = String::from_utf8(labels.stdout)
            .unwrap()
            .trim()
            .split(',')
            .map(str::to_string)
            .collect();
        let sources =
            std::fs::read_to_string(out.join(format!("audio/{split}_sources.csv"))).unwrap();
        let rows: Vec<&str> = sources.lines().skip(1).collect();
        assert_eq!(rows.len(), labels.len());
        for (i, (row, label)) in rows.iter().zip(&labels).enumerate() {
            let file = row.split(',').nth(1).unwrap();
            let digit = file.split('_').next().unwrap();
            let speaker = file.split('_').nth(1).unwrap();
            assert_eq!(
                digit, label,
                "{split} sample {i}: image {label} paired with {file}"
            );
            assert!(
                speakers.contains(&speaker),
                "{split} sample {i}: speaker {speaker}"
            );
        }
    }
    // MGR on it, a few epochs at kappa 0.7, beats chance (10%) by a wide margin.
    let runs = tmp.path().join("run");
    let train = mgr(&[
        "train",
        "--dataset",
        "avmnist",
        "--data-dir",
        out.to_str().unwrap(),
        "--method",
        "mgr",
        "--kappa",
        "0.7",
        "--epochs",
        "3",
        "--device",
        "flex",
        "--out",
        runs.to_str().unwrap(),
        "--set",
        "limit=3000",
        "--set",
        "d_model=32",
        "--set",
        "n_heads=2",
        "--quiet",
    ]);
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join("results.json")).unwrap()).unwrap();
    let acc = results["accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.4,
        "AV-MNIST test accuracy {acc} is not far above chance (0.1)"
    );

    // The page's export: the model, and its first test samples with their real recordings (the
    // MNIST and FSDD folders found through the prepared data's recipe.json).
    let web = tmp.path().join("web");
    let export = mgr(&[
        "export-web",
        "--run",
        runs.to_str().unwrap(),
        "--out",
        web.to_str().unwrap(),
        "--samples",
        "5",
    ]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(web.join("model.json")).unwrap()).unwrap();
    assert_eq!(meta["dataset"], "avmnist");
    assert!(meta["credit"].as_str().unwrap().contains("CC BY-SA 4.0"));
    let bytes = std::fs::read(web.join(meta["samples_file"].as_str().unwrap())).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("input.vision").unwrap().shape(), [5, 16, 49]);
    assert_eq!(st.tensor("input.audio").unwrap().shape(), [5, 28, 448]);
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let names: Vec<String> =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["recordings"]).unwrap();
    let sources = std::fs::read_to_string(out.join("audio/test_sources.csv")).unwrap();
    let offsets: Vec<i64> = st
        .tensor("wave_offset")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let wave = st.tensor("wave").unwrap();
    let labels = st.tensor("label").unwrap().data().to_vec();
    for (i, name) in names.iter().enumerate() {
        // Each sample carries the very recording the data paired it with, sample for sample.
        assert_eq!(
            sources.lines().nth(i + 1).unwrap(),
            format!("{},{name}", labels[i])
        );
        let want: Vec<i16> = hound::WavReader::open(data.join("fsdd/recordings").join(name))
            .unwrap()
            .samples::<i16>()
            .map(Result::unwrap)
            .collect();
        let got: Vec<i16> = wave.data()[2 * offsets[i] as usize..2 * offsets[i + 1] as usize]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(got, want, "sample {i}: {name}");
    }
    // The model's inputs are the test split's, to f16 precision.
    let vision: Vec<f32> = st.tensor("input.vision").unwrap().data()[..2 * 784]
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    assert!(
        vision.iter().any(|v| v.abs() > 0.1),
        "vision inputs all near zero"
    );

    // A prepared folder whose recordings are gone: an error naming the file, nothing written.
    let moved = tmp.path().join("web2");
    let fail = mgr(&[
        "export-web",
        "--run",
        runs.to_str().unwrap(),
        "--out",
        moved.to_str().unwrap(),
        "--fsdd-dir",
        tmp.path().join("nowhere").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&fail.stderr);
    assert!(!fail.status.success() && err.contains("nowhere"), "{err}");
    assert!(!moved.exists(), "a failed export left {}", moved.display());
}

/// The labels of an npy file of integers, as text.
fn npy_labels(path: &Path) -> Vec<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, numpy as np; print(','.join(map(str, np.load(sys.argv[1]))))",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .split(',')
        .map(str::to_string)
        .collect()
}

/// `mgr prepare avmnist --pool N`: the pretraining pool is the first N training digits spoken
/// by george and lucas, in `pretrain/` (its last tenth its test split); the downstream training
/// split is the remaining digits in order, spoken by the recipe's speakers, and the test split
/// is unchanged. `mgr pretrain` trains on the pool and nothing else.
#[test]
fn avmnist_pool_shares_no_digit_recording_or_speaker_with_the_downstream_splits() {
    let Some(data) = shared_data() else {
        panic!("../shared/data is missing (see its README)");
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("avmnist");
    prepare_avmnist(&data, &out, &["--pool", "1000"]);
    let pool = out.join("pretrain");
    assert_eq!(
        npy_shape(&out.join("image/train_data.npy")),
        "(9000, 784) float32 True"
    );
    assert_eq!(
        npy_shape(&out.join("audio/test_data.npy")),
        "(10000, 112, 112) float32 True"
    );
    assert_eq!(
        npy_shape(&pool.join("image/train_data.npy")),
        "(900, 784) float32 True"
    );
    assert_eq!(
        npy_shape(&pool.join("audio/test_data.npy")),
        "(100, 112, 112) float32 True"
    );
    // The MNIST training labels in file order: the pool's first, then the downstream ones.
    let mnist = Command::new("python3")
        .args([
            "-c",
            "import gzip, sys; b = gzip.open(sys.argv[1]).read()[8:]; print(','.join(map(str, b)))",
            data.join("mnist/train10k-labels-idx1-ubyte.gz")
                .to_str()
                .unwrap(),
        ])
        .output()
        .unwrap();
    let mnist: Vec<String> = String::from_utf8(mnist.stdout)
        .unwrap()
        .trim()
        .split(',')
        .map(str::to_string)
        .collect();
    let mut pool_labels = npy_labels(&pool.join("train_labels.npy"));
    pool_labels.extend(npy_labels(&pool.join("test_labels.npy")));
    assert_eq!(pool_labels, mnist[..1000]);
    assert_eq!(npy_labels(&out.join("train_labels.npy")), mnist[1000..]);
    let speakers_of = |file: PathBuf| -> std::collections::BTreeSet<String> {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .skip(1)
            .map(|row| {
                row.split(',')
                    .nth(1)
                    .unwrap()
                    .split('_')
                    .nth(1)
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let pooled = speakers_of(pool.join("audio/train_sources.csv"));
    assert_eq!(pooled, ["george", "lucas"].map(String::from).into());
    assert_eq!(speakers_of(pool.join("audio/test_sources.csv")), pooled);
    let downstream = speakers_of(out.join("audio/train_sources.csv"));
    assert!(downstream.is_disjoint(&pooled), "{downstream:?}");
    assert!(speakers_of(out.join("audio/test_sources.csv")).is_disjoint(&pooled));
    // The backbone trains on the pool alone.
    let backbone = tmp.path().join("backbone");
    let pretrain = mgr(&[
        "pretrain",
        "--dataset",
        "avmnist",
        "--data-dir",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--device",
        "flex",
        "--out",
        backbone.to_str().unwrap(),
        "--set",
        "d_model=16",
        "--set",
        "n_heads=2",
        "--quiet",
    ]);
    assert!(
        pretrain.status.success(),
        "{}",
        String::from_utf8_lossy(&pretrain.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backbone.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(
        results["n_test"], 100,
        "tested on the pool's own test tenth"
    );
    assert_eq!(results["method"], "baseline");
    // A folder without a pool is named, with the command that makes one.
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let refused = mgr(&[
        "pretrain",
        "--dataset",
        "avmnist",
        "--data-dir",
        plain.to_str().unwrap(),
        "--out",
        tmp.path().join("none").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("--pool"), "{err}");
}

fn write_npy(path: &Path, expr: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import numpy as np; np.save({:?}, {expr})",
                path.to_str().unwrap()
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn small_avmnist(dir: &Path) {
    write_npy(
        &dir.join("image/train_data.npy"),
        "np.random.rand(40, 784).astype('float32') * 255",
    );
    write_npy(
        &dir.join("image/test_data.npy"),
        "np.random.rand(20, 28, 28).astype('float32') * 255",
    );
    write_npy(
        &dir.join("audio/train_data.npy"),
        "np.random.rand(40, 112, 112)",
    );
    write_npy(
        &dir.join("audio/test_data.npy"),
        "np.random.rand(20, 112, 112)",
    );
    write_npy(&dir.join("train_labels.npy"), "np.arange(40) % 10");
    write_npy(&dir.join("test_labels.npy"), "np.arange(20) % 10");
}

fn train_on(dataset: &str, data: &Path, out: &Path) -> Output {
    mgr(&[
        "train",
        "--dataset",
        dataset,
        "--data-dir",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--device",
        "flex",
        "--out",
        out.to_str().unwrap(),
        "--set",
        "d_model=16",
        "--set",
        "n_heads=2",
        "--quiet",
    ])
}

#[test]
fn multibench_layout_is_read_and_bad_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    small_avmnist(&good);
    let run = train_on("avmnist", &good, &tmp.path().join("r0"));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let cases: [(&str, &str, &str); 4] = [
        (
            "audio/train_data.npy",
            "np.random.rand(40, 112, 100)",
            "audio/train_data.npy",
        ),
        (
            "image/test_data.npy",
            "np.full((20, 784), np.nan, dtype='float32')",
            "NaN",
        ),
        (
            "train_labels.npy",
            "np.arange(39) % 10",
            "image/train_data.npy",
        ),
        ("test_labels.npy", "np.arange(20) + 5", "label"),
    ];
    for (i, (file, expr, needle)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("bad{i}"));
        small_avmnist(&dir);
        write_npy(&dir.join(file), expr);
        let out = train_on("avmnist", &dir, &tmp.path().join(format!("r{}", i + 1)));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: accepted");
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{file}: {err}"
        );
    }
    // A truncated npy file.
    let dir = tmp.path().join("trunc");
    small_avmnist(&dir);
    let f = dir.join("audio/test_data.npy");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let out = train_on("avmnist", &dir, &tmp.path().join("rt"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("audio/test_data.npy"),
        "{err}"
    );
}

fn write_pickle(path: &Path, body: &str) {
    let script = format!(
        "import pickle, numpy as np\nr = np.random.RandomState(0)\ndef split(n, lab):\n    a = r.rand(n, 5, 3)\n    a[0, 0, 0] = -np.inf\n    return {{'vision': r.rand(n, 5, 4).astype('float32'), 'audio': a, 'text': r.rand(n, 5, 6), 'labels': lab(n), 'id': np.arange(n)}}\n{body}\npickle.dump(d, open({:?}, 'wb'))\n",
        path.to_str().unwrap()
    );
    run_python(&script);
}

/// Runs a Python script, failing the test with its stderr if it fails.
fn run_python(script: &str) {
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn multibench_affect_pickles_regression_and_classification() {
    let tmp = tempfile::tempdir().unwrap();
    let mosi = tmp.path().join("mosi.pkl");
    write_pickle(
        &mosi,
        "reg = lambda n: (r.rand(n, 1, 1) * 6 - 3).astype('float32')\nd = {s: split(n, reg) for s, n in [('train', 40), ('valid', 12), ('test', 16)]}",
    );
    let run = train_on("mosi", &mosi, &tmp.path().join("mosi"));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("mosi/results.json")).unwrap(),
    )
    .unwrap();
    assert!(
        results["mae"].is_number() && results["corr"].is_number() && results["n_test"] == 16,
        "{results}"
    );
    let funny = tmp.path().join("urfunny.pkl");
    write_pickle(
        &funny,
        "cls = lambda n: (np.arange(n) % 2).astype('int64')\nd = {s: split(n, cls) for s, n in [('train', 40), ('valid', 12), ('test', 16)]}",
    );
    let run = train_on("urfunny", &funny, &tmp.path().join("funny"));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("funny/results.json")).unwrap(),
    )
    .unwrap();
    assert!(results.get("mae").is_none() && results["f1"].is_number());
    // Wrong layouts are named.
    let bad = tmp.path().join("bad.pkl");
    write_pickle(
        &bad,
        "d = {'train': split(4, lambda n: np.zeros((n, 1, 1)))}",
    );
    let out = train_on("mosi", &bad, &tmp.path().join("bad"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad.pkl") && err.contains("valid"),
        "{err}"
    );
    std::fs::write(tmp.path().join("junk.pkl"), b"not a pickle").unwrap();
    let out = train_on(
        "mosi",
        &tmp.path().join("junk.pkl"),
        &tmp.path().join("junk"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("junk.pkl") && err.contains("pickle"),
        "{err}"
    );
}

#[test]
fn a_pickle_that_calls_a_function_is_refused_and_nothing_in_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("marker");
    let hostile = tmp.path().join("hostile.pkl");
    // A well-formed affect dict whose `train` split, when unpickled without limits, calls
    // os.system and writes the marker file.
    let script = format!(
        "import os, pickle\nclass Hostile:\n    def __reduce__(self):\n        return (os.system, ('touch {}',))\npickle.dump({{'train': Hostile(), 'valid': {{}}, 'test': {{}}}}, open({:?}, 'wb'))\n",
        marker.display(),
        hostile.to_str().unwrap()
    );
    run_python(&script);
    assert!(!marker.exists(), "writing the pickle must not run it");
    let run_dir = tmp.path().join("run");
    let out = train_on("mosi", &hostile, &run_dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a hostile pickle was accepted: {err}"
    );
    assert!(
        err.contains("hostile.pkl") && err.contains("posix.system") && err.contains("refused"),
        "the refusal names the file and the global: {err}"
    );
    assert!(!marker.exists(), "the pickle's command ran");
    assert!(
        !run_dir.join("config.json").exists(),
        "a refused file left a run behind"
    );
}
