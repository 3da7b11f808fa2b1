//! The `mgr` binary end to end on a tiny synthetic setting: outputs, determinism, resume after
//! a kill, evaluation under another absence setting, trace, export, protocol, bad input.

// End-to-end tests read as one story each: run, then check every output in turn.
#![allow(clippy::too_many_lines)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::TINY;

fn mgr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mgr"))
        .args(args)
        .output()
        .expect("run mgr")
}

fn ok(args: &[&str]) -> String {
    let out = mgr(args);
    assert!(
        out.status.success(),
        "mgr {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn train(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--dataset",
        "synthetic",
        "--method",
        "mgr",
        "--kappa",
        "0.7",
        "--absence-seed",
        "1",
        "--seed",
        "2",
        "--device",
        "flex",
        "--out",
    ];
    args.push(dir.to_str().unwrap());
    args.extend_from_slice(&TINY);
    args.extend_from_slice(extra);
    mgr(&args)
}

/// `mgr train` of the baseline for one epoch at the TINY settings on `device` into `dir`.
fn one_epoch_baseline<'a>(device: &'a str, dir: &'a Path) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--dataset",
        "synthetic",
        "--method",
        "baseline",
        "--epochs",
        "1",
        "--device",
        device,
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(&TINY);
    args
}

fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// metrics.csv without the timing column.
fn curves(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

#[test]
fn train_writes_a_complete_run_deterministically_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let out = train(&a, &["--epochs", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = json(a.join("results.json"));
    for key in [
        "dataset",
        "method",
        "kappa",
        "accuracy",
        "f1",
        "n_test",
        "per_pattern",
    ] {
        assert!(
            results.get(key).is_some(),
            "results.json lacks {key}: {results}"
        );
    }
    assert_eq!(results["n_test"], 48);
    assert_eq!(results["method"], "mgr");
    let per_pattern = results["per_pattern"].as_object().unwrap();
    assert!(
        per_pattern.len() > 1,
        "kappa 0.7 gives several patterns: {per_pattern:?}"
    );
    let counted: u64 = per_pattern.values().map(|m| m["n"].as_u64().unwrap()).sum();
    assert_eq!(counted, 48);
    assert_eq!(curves(&a).len(), 3, "header + 2 epochs");
    let config = json(a.join("config.json"));
    assert_eq!(config["model"]["d_model"], 16);
    for split in ["train", "valid", "test"] {
        let mask = std::fs::read_to_string(a.join(format!("masks/{split}.csv"))).unwrap();
        assert!(mask.starts_with("index,vision,audio,text\n"));
    }
    // Same command, same seeds: the same numbers on the CPU backend.
    assert!(train(&b, &["--epochs", "2"]).status.success());
    assert_eq!(curves(&a), curves(&b));
    assert_eq!(
        json(b.join("results.json"))["accuracy"],
        results["accuracy"]
    );
    // One epoch, then resume to two: the same as two epochs straight (weights and optimizer
    // state both restored).
    assert!(train(&c, &["--epochs", "1"]).status.success());
    let out = train(&c, &["--epochs", "2", "--resume"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(curves(&a), curves(&c));
    // A finished run is not overwritten without --resume.
    let again = train(&a, &["--epochs", "2"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));

    // The saved model under other absence settings, a trace, an export.
    let eval: serde_json::Value =
        serde_json::from_str(&ok(&["eval", "--run", a.to_str().unwrap(), "--kappa", "0"])).unwrap();
    assert_eq!(eval["kappa"], 0.0);
    assert_eq!(
        eval["per_pattern"].as_object().unwrap().len(),
        1,
        "kappa 0: everything complete"
    );
    let eval: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--run",
        a.to_str().unwrap(),
        "--kappa",
        "1",
        "--absence-type",
        "audio",
        "--max-missing",
        "1",
    ]))
    .unwrap();
    assert_eq!(
        eval["per_pattern"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["vision+text"]
    );
    let trace: serde_json::Value = serde_json::from_str(&ok(&[
        "trace",
        "--run",
        a.to_str().unwrap(),
        "--index",
        "5",
        "--drop",
        "audio",
    ]))
    .unwrap();
    assert_eq!(
        trace["trace"]["available"],
        serde_json::json!([true, false, true])
    );
    assert_eq!(trace["trace"]["layers"].as_array().unwrap().len(), 2);
    let web = tmp.path().join("web");
    ok(&[
        "export-web",
        "--run",
        a.to_str().unwrap(),
        "--out",
        web.to_str().unwrap(),
        "--samples",
        "4",
    ]);
    assert!(web.join("model.bpk").is_file() && web.join("model.json").is_file());
    assert_eq!(json(web.join("samples.json")).as_array().unwrap().len(), 4);
    // f16 by default, checked against the f32 model on the 4 samples under the 7 patterns of
    // three modalities; --precision f32 writes the model's own values, in more bytes (this tiny
    // model's file is mostly names and alignment; the shipped ones halve).
    let meta = json(web.join("model.json"));
    assert_eq!(meta["weights"]["precision"], "f16");
    let check = &meta["weights"]["check"];
    assert_eq!(check["views"], 4 * 7);
    assert_eq!(check["same_prediction"], check["views"]);
    let diff = check["max_output_diff"].as_f64().unwrap();
    assert!(diff > 0.0 && diff < 1e-2, "{check}");
    let full = tmp.path().join("web-f32");
    ok(&[
        "export-web",
        "--run",
        a.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
        "--samples",
        "4",
        "--precision",
        "f32",
    ]);
    let meta = json(full.join("model.json"));
    assert_eq!(meta["weights"]["precision"], "f32");
    assert_eq!(meta["weights"]["check"]["max_output_diff"], 0.0);
    let size = |d: &std::path::Path| std::fs::metadata(d.join("model.bpk")).unwrap().len();
    let (half, whole) = (size(&web), size(&full));
    assert!(half < whole, "f16 {half} bytes, f32 {whole}");
}

#[test]
fn a_killed_run_resumes_from_its_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("killed");
    let mut args = vec![
        "train",
        "--dataset",
        "synthetic",
        "--method",
        "mgr",
        "--epochs",
        "200",
        "--device",
        "flex",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(&TINY);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mgr"))
        .args(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = dir.join("checkpoint/state.json");
    let started = std::time::Instant::now();
    while !state.is_file() {
        assert!(
            started.elapsed().as_secs() < 120,
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.join("results.json").exists(),
        "a killed run must not look finished"
    );
    let done = json(state.clone())["epochs_done"].as_u64().unwrap();
    assert!(done >= 1);
    let mut resume = args.clone();
    let at = resume.iter().position(|a| *a == "200").unwrap();
    let target = (done + 1).to_string();
    resume[at] = &target;
    resume.push("--resume");
    let out = mgr(&resume);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(state)["epochs_done"].as_u64().unwrap(), done + 1);
    assert!(dir.join("results.json").is_file());
}

#[test]
fn bad_input_is_a_one_line_error_with_no_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--method", "mgrr"], "mgrr"),
        (&["--kappa", "1.5"], "kappa"),
        (&["--set", "rho=0"], "rho"),
        (&["--set", "rho=1.5"], "rho"),
        (&["--set", "no_such_key=1"], "no_such_key"),
        (&["--dataset", "avmnist"], "data-dir"),
    ];
    for (i, (extra, needle)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("bad{i}"));
        let mut args = vec![
            "train",
            "--epochs",
            "1",
            "--device",
            "flex",
            "--out",
            dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = mgr(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(!err.contains("panicked"), "{extra:?} panicked: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
        assert!(
            err.starts_with("error:") && err.contains(needle),
            "{extra:?}: {err}"
        );
        assert!(!dir.exists(), "{extra:?} left a run folder");
    }
    for cmd in [
        vec!["eval", "--run"],
        vec!["trace", "--index", "0", "--run"],
        vec!["export-web", "--out", "x", "--run"],
    ] {
        let mut args = cmd.clone();
        args.push(tmp.path().to_str().unwrap());
        let out = mgr(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("not a run folder"),
            "{cmd:?}: {err}"
        );
    }
}

#[test]
fn protocol_runs_every_cell_skips_finished_runs_and_tabulates() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("table");
    let first = small_protocol(&out, "flex,flex", &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stderr).contains("4 runs, 0 finished, 4 to do"));
    let table = json(out.join("table.json"));
    assert_eq!(table.as_array().unwrap().len(), 2);
    assert!(table.as_array().unwrap().iter().all(|r| r["runs"] == 2));
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(
        md.contains("| mgr | token | 0.5 | 2 |") && md.contains("accuracy-vs-kappa.svg"),
        "{md}"
    );
    assert!(out.join("plots/accuracy-vs-kappa.svg").is_file());
    for stem in [
        "curves-baseline-kappa0.5",
        "curves-mgr-token-kappa0.5",
        "per-pattern-kappa0.5",
    ] {
        for ext in ["svg", "png"] {
            let file = format!("plots/{stem}.{ext}");
            assert!(
                out.join(&file).is_file() && md.contains(&file),
                "{file}: {md}"
            );
        }
    }
    // The kappa sweep evaluates one trained model per method: at the run's own kappa and
    // absence seed it must reproduce that run's test accuracy exactly.
    let sweep = std::fs::read_to_string(out.join("accuracy-vs-kappa.csv")).unwrap();
    let rows: Vec<Vec<&str>> = sweep
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 2 * 11, "{sweep}");
    for method in ["baseline", "mgr"] {
        let mine: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0] == method).collect();
        assert_eq!(mine.len(), 11, "{sweep}");
        let run = mine[0][1];
        assert!(
            mine.iter().all(|r| r[1] == run),
            "one model per method: {sweep}"
        );
        let at_own_kappa: f64 = mine.iter().find(|r| r[2] == "0.5").unwrap()[3]
            .parse()
            .unwrap();
        let trained = json(PathBuf::from(run).join("results.json"))["accuracy"]
            .as_f64()
            .unwrap();
        assert!(
            (at_own_kappa - trained).abs() < 1e-6,
            "{method}: {at_own_kappa} vs {trained}"
        );
    }
    let second = small_protocol(&out, "flex,flex", &[]);
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("4 runs, 4 finished, 0 to do"));
}

/// `mgr protocol` of the baseline and MGR at kappa 0.5, 2 absence seeds x 1 training seed (4
/// runs), one epoch at the TINY settings, on `devices`, into `out`, with `extra` flags.
fn small_protocol(out: &Path, devices: &str, extra: &[&str]) -> Output {
    small_protocol_spelling(out, "--devices", devices, extra)
}

/// Two processes never train one run: while a job array's worker trains (`--job 0`), a whole
/// protocol on the same `--out` is refused, and so is the same worker started twice (the run's
/// own lock, naming the holder's pid); the worker's kill frees both, and the run then goes on.
#[test]
fn a_busy_protocol_and_its_run_are_refused_until_the_holder_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("busy");
    let protocol = |epochs: &str, extra: &[&str]| -> Vec<String> {
        [
            "protocol",
            "--dataset",
            "synthetic",
            "--methods",
            "baseline",
            "--kappa",
            "0.5",
            "--absence-seeds",
            "1",
            "--seeds",
            "1",
            "--epochs",
            epochs,
            "--devices",
            "flex",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .chain(TINY.iter())
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    let run_mgr = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mgr(&args)
    };
    let mut worker = Command::new(env!("CARGO_BIN_EXE_mgr"))
        .args(protocol("400", &["--job", "0"]))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = out.join("runs/baseline/kappa0.5/a0-s0");
    let started = std::time::Instant::now();
    while !run.join("checkpoint/state.json").is_file() {
        assert!(
            started.elapsed().as_secs() < 120,
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let whole = run_mgr(&protocol("400", &[]));
    let err = String::from_utf8_lossy(&whole.stderr);
    assert!(
        !whole.status.success()
            && err.contains("in use by another mgr process")
            && err.contains(&format!("{}", out.join(".lock").display())),
        "{err}"
    );
    let twice = run_mgr(&protocol("400", &["--job", "0"]));
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(
        !twice.status.success()
            && err.contains("in use by another mgr process")
            && err.contains(&format!("pid {}", worker.id()))
            && err.contains("a0-s0"),
        "{err}"
    );
    worker.kill().unwrap();
    worker.wait().unwrap();
    // The same protocol with fewer epochs: the checkpointed run finishes where it stands.
    let after = run_mgr(&protocol("1", &[]));
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert!(run.join("results.json").is_file() && out.join("table.json").is_file());
}

/// [`small_protocol`] with its devices given as `flag` (`--devices` or its alias `--device`).
fn small_protocol_spelling(out: &Path, flag: &str, devices: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "protocol",
        "--dataset",
        "synthetic",
        "--methods",
        "baseline,mgr",
        "--kappa",
        "0.5",
        "--absence-seeds",
        "2",
        "--seeds",
        "1",
        "--epochs",
        "1",
        flag,
        devices,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(&TINY);
    args.extend_from_slice(extra);
    mgr(&args)
}

/// The ranking report: written by `train` for a synthetic MGR run, recomputed identically by
/// `eval`, which also writes it back into results.json; absent for the baseline.
#[test]
fn ranking_against_the_ground_truth_is_reported_by_train_and_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("mgr");
    let out = train(&run, &["--epochs", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = json(run.join("results.json"));
    let ranking = &results["ranking"];
    assert_eq!(ranking["samples"], 48, "{ranking}");
    let layers = ranking["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{ranking}");
    assert_eq!(ranking["ranking"], "learned", "{ranking}");
    for l in layers {
        let auc = l["auc_pooled"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{l}");
        let within: Vec<&str> = l["by_modality"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["modality"].as_str().unwrap())
            .collect();
        assert_eq!(within, ["vision", "audio", "text"], "{l}");
        let mean = l["auc_modality_mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&mean), "{l}");
        // flip_prob 0.2 over 48 samples: some modality conflicts somewhere.
        let conflict = &l["conflict"];
        assert!(conflict["conflicting_tokens"].as_u64().unwrap() > 0, "{l}");
        assert!(
            (0.0..=1.0).contains(&conflict["auc"].as_f64().unwrap()),
            "{l}"
        );
        let (signal, noise) = (
            l["signal_tokens"].as_u64().unwrap(),
            l["noise_tokens"].as_u64().unwrap(),
        );
        assert!(signal > 0 && noise > 0, "{l}");
    }
    // Layer 0 sees all 40 tokens of each of the 48 samples; layer 1 the 20 kept.
    let n0 =
        layers[0]["signal_tokens"].as_u64().unwrap() + layers[0]["noise_tokens"].as_u64().unwrap();
    let n1 =
        layers[1]["signal_tokens"].as_u64().unwrap() + layers[1]["noise_tokens"].as_u64().unwrap();
    assert_eq!((n0, n1), (48 * 40, 48 * 20));
    let dropped = ranking["dropped"].as_array().unwrap();
    let names: Vec<&str> = dropped
        .iter()
        .map(|d| d["modality"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["vision", "audio", "text"]);
    assert!((dropped[2]["token_share"].as_f64().unwrap() - 0.2).abs() < 1e-12);
    // The grades under the run's own absence (kappa 0.7): placeholders graded apart.
    let under = &ranking["under_absence"];
    assert!(
        under["setting"].as_str().unwrap().contains("kappa 0.7"),
        "{under}"
    );
    let under0 = &under["layers"][0];
    assert!(
        under0["kept_rate_placeholder"].as_f64().is_some(),
        "{under}"
    );
    let n_under =
        under0["signal_tokens"].as_u64().unwrap() + under0["noise_tokens"].as_u64().unwrap();
    assert!(
        n_under < n0,
        "absent modalities' tokens are neither signal nor noise: {under}"
    );

    // eval recomputes the same report and writes it back into results.json.
    let mut stripped = results.clone();
    stripped.as_object_mut().unwrap().remove("ranking");
    std::fs::write(run.join("results.json"), stripped.to_string()).unwrap();
    let printed: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--device",
        "flex",
    ]))
    .unwrap();
    assert_eq!(printed["ranking"], *ranking);
    assert_eq!(json(run.join("results.json"))["ranking"], *ranking);

    let base = tmp.path().join("baseline");
    let out = mgr(&one_epoch_baseline("flex", &base));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(json(base.join("results.json")).get("ranking").is_none());
}

/// `--set ranking=...` trains with each reference ranking on the synthetic data and says so in
/// the config and the report; the oracle's layer-0 split ranks every signal token above every
/// noise token (inside each modality too).
#[test]
fn every_reference_ranking_trains_and_is_graded_on_its_own_order() {
    let tmp = tempfile::tempdir().unwrap();
    for ranking in ["random", "inverted", "oracle-noise", "oracle-conflict"] {
        let run = tmp.path().join(ranking);
        let set = format!("ranking={ranking}");
        let out = train(&run, &["--epochs", "1", "--set", &set]);
        assert!(
            out.status.success(),
            "{ranking}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json(run.join("config.json"))["model"]["ranking"], ranking);
        let report = &json(run.join("results.json"))["ranking"];
        assert_eq!(report["ranking"], ranking, "{report}");
        let layer0 = &report["layers"][0];
        if ranking == "oracle-noise" {
            assert_eq!(layer0["auc_modality_mean"], 1.0, "{layer0}");
            assert_eq!(layer0["auc_pooled"], 1.0, "{layer0}");
        }
        if ranking == "oracle-conflict" {
            assert_eq!(layer0["conflict"]["auc"], 1.0, "{layer0}");
        }
    }
}

/// `mgr eval --ranking` swaps a ranking into a trained model without retraining: the report
/// says which, results.json keeps the run's own; an unknown ranking is refused by name.
#[test]
fn eval_swaps_a_ranking_into_a_trained_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("mgr");
    let out = train(&run, &["--epochs", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = std::fs::read_to_string(run.join("results.json")).unwrap();
    let eval = |ranking: &str| -> serde_json::Value {
        let printed = ok(&["eval", "--run", run.to_str().unwrap(), "--ranking", ranking]);
        serde_json::from_str(&printed).unwrap()
    };
    let random = eval("random");
    assert_eq!(random["split_ranking"], "random");
    assert_eq!(random["ranking"]["ranking"], "random");
    assert_eq!(
        eval("random"),
        random,
        "the random ranking is drawn from the run's seed"
    );
    let oracle = eval("oracle-noise");
    assert_eq!(oracle["ranking"]["layers"][0]["auc_modality_mean"], 1.0);
    assert_eq!(
        std::fs::read_to_string(run.join("results.json")).unwrap(),
        results
    );
    let learned = eval("learned");
    assert_eq!(
        learned["ranking"],
        json(run.join("results.json"))["ranking"]
    );
    let out = mgr(&["eval", "--run", run.to_str().unwrap(), "--ranking", "best"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("oracle-conflict"));
}

/// `mgr protocol --device`, as `mgr train` spells it, is `--devices`.
#[test]
fn protocol_takes_train_s_device_spelling() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p");
    let run = small_protocol_spelling(&out, "--device", "flex", &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.join("table.json").is_file());
}

/// An oracle ranking on data without ground truth is refused before anything is read or
/// trained, naming the ranking and the dataset.
#[test]
fn an_oracle_ranking_on_avmnist_is_refused_naming_the_missing_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let out = mgr(&[
        "train",
        "--dataset",
        "avmnist",
        "--data-dir",
        tmp.path().join("nowhere").to_str().unwrap(),
        "--method",
        "mgr",
        "--set",
        "ranking=oracle-conflict",
        "--out",
        tmp.path().join("run").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("oracle-conflict") && err.contains("ground truth") && err.contains("avmnist"),
        "{err}"
    );
    assert!(!tmp.path().join("run").exists());
    let proto = mgr(&[
        "protocol",
        "--dataset",
        "avmnist",
        "--data-dir",
        "nowhere",
        "--methods",
        "mgr",
        "--set",
        "ranking=oracle-noise",
        "--out",
        tmp.path().join("p").to_str().unwrap(),
    ]);
    assert!(!proto.status.success());
    assert!(String::from_utf8_lossy(&proto.stderr).contains("ground truth"));
}

/// `protocol --sweep`: one cell per value, each in its own folder with that value, and F1
/// against the value as a table and a plot.
#[test]
fn protocol_sweep_trains_one_cell_per_value_and_plots_f1_against_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let mut args = vec![
        "protocol",
        "--dataset",
        "synthetic",
        "--methods",
        "mgr",
        "--absence-seeds",
        "1",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--sweep",
        "rho=0.9,0.3",
        "--devices",
        "flex",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(&TINY);
    let run = mgr(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for rho in ["0.3", "0.9"] {
        let cfg = json(out.join(format!(
            "runs/mgr-token/rho{rho}/kappa0.7/a0-s0/config.json"
        )));
        assert_eq!(
            cfg["model"]["rho"].as_f64().unwrap(),
            rho.parse::<f64>().unwrap()
        );
    }
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let values: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(values, vec!["0.3", "0.9"], "{csv}");
    assert!(csv.starts_with("line,rho,runs,f1_mean"), "{csv}");
    for ext in ["svg", "png"] {
        assert!(out.join(format!("plots/sweep-rho.{ext}")).is_file());
    }
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(
        md.contains("mgr (rho=0.3)") && md.contains("sweep.md"),
        "{md}"
    );
}

#[test]
fn a_diverging_run_stops_with_an_error_and_claims_no_result() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("diverged");
    let out = train(&dir, &["--epochs", "2", "--set", "train.lr=1000"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a run at lr 1000 finished: {err}");
    assert!(
        err.contains("diverged at epoch 1, step") && err.contains("no results.json"),
        "{err}"
    );
    assert!(!dir.join("results.json").exists());
    // It diverged within its first epoch: there is no checkpoint to claim one either.
    assert!(!dir.join("checkpoint").exists() && !dir.join("best.bpk").exists());
    // The same run at the default learning rate passes the check.
    let healthy = tmp.path().join("healthy");
    let out = train(&healthy, &["--epochs", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(healthy.join("results.json").exists());
}

#[test]
fn a_successful_run_prints_no_line_that_says_error_even_without_xdg_runtime_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("auto");
    // `auto` probes wgpu, whose Mesa Vulkan loader complains when XDG_RUNTIME_DIR is unset.
    let out = Command::new(env!("CARGO_BIN_EXE_mgr"))
        .args(one_epoch_baseline("auto", &dir))
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.to_lowercase().contains("error"),
        "a successful run printed an error line: {err}"
    );
}

/// `mgr export --format safetensors`: weights under PyTorch's names and layout with the config in
/// the header and beside it, and the test inputs `mgr trace` sees, with their availability.
#[test]
fn export_writes_safetensors_weights_config_and_the_traced_samples() {
    use safetensors::SafeTensors;
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = train(&run, &["--epochs", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = tmp.path().join("export").join("model.safetensors");
    let run_arg = run.to_str().unwrap();
    ok(&[
        "--quiet",
        "export",
        "--format",
        "safetensors",
        "--run",
        run_arg,
        "--out",
        file.to_str().unwrap(),
        "--samples",
        "3",
    ]);

    let bytes = std::fs::read(&file).unwrap();
    let weights = SafeTensors::deserialize(&bytes).unwrap();
    // nn.Linear's [out, in]: the head maps d_model = 16 to 10 classes.
    assert_eq!(
        weights.tensor("head.linear.weight").unwrap().shape(),
        &[10, 16]
    );
    assert_eq!(weights.tensor("head.norm.weight").unwrap().shape(), &[16]);
    assert_eq!(
        weights
            .tensor("refinement.1.ranking.projector.weight")
            .unwrap()
            .shape(),
        &[1, 16]
    );
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let header: serde_json::Value = serde_json::from_str(
        metadata
            .metadata()
            .as_ref()
            .unwrap()
            .get("mgr_config")
            .unwrap(),
    )
    .unwrap();
    let sidecar = json(tmp.path().join("export").join("model.json"));
    assert_eq!(header, sidecar);
    assert_eq!(sidecar["model"]["d_model"], 16);
    assert_eq!(sidecar["model"], json(run.join("config.json"))["model"]);

    let bytes = std::fs::read(tmp.path().join("export").join("model.samples.safetensors")).unwrap();
    let samples = SafeTensors::deserialize(&bytes).unwrap();
    let modalities = sidecar["model"]["modalities"].as_array().unwrap();
    assert_eq!(modalities.len(), 3);
    for m in modalities {
        let name = m["name"].as_str().unwrap();
        let shape = samples
            .tensor(&format!("input.{name}"))
            .unwrap()
            .shape()
            .to_vec();
        let tokens = m["n_tokens"].as_u64().unwrap() as usize;
        let dim = m["token_dim"].as_u64().unwrap() as usize;
        assert_eq!(shape, vec![3, tokens, dim], "input.{name}");
    }
    let available = samples.tensor("available").unwrap();
    assert_eq!(available.shape(), &[3, 3]);
    let values: Vec<f32> = available
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for i in 0..3 {
        let trace: serde_json::Value =
            serde_json::from_str(&ok(&["trace", "--run", run_arg, "--index", &i.to_string()]))
                .unwrap();
        let traced: Vec<f32> = trace["trace"]["available"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| if a.as_bool().unwrap() { 1.0 } else { 0.0 })
            .collect();
        assert_eq!(values[i * 3..i * 3 + 3], traced[..], "sample {i}");
    }

    // Not a run folder: one error naming it, and nothing written.
    let elsewhere = tmp.path().join("nothing.safetensors");
    let out = mgr(&[
        "export",
        "--run",
        tmp.path().to_str().unwrap(),
        "--out",
        elsewhere.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a run folder"));
    assert!(!elsewhere.exists());
}

/// `protocol --emit-jobs shell`: one command per run; running them and then `--collect` gives
/// the same table as `mgr protocol` training them itself. The Slurm script is an array job over
/// the same commands.
#[test]
fn emitted_jobs_then_collect_give_the_protocols_own_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let (direct, cluster) = (tmp.path().join("direct"), tmp.path().join("cluster"));
    let protocol = |out: &Path, extra: &[&str]| small_protocol(out, "flex", extra);
    let out = protocol(&direct, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = protocol(&cluster, &["--emit-jobs", "shell"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!cluster.join("runs").exists(), "--emit-jobs trains nothing");
    let script = std::fs::read_to_string(cluster.join("jobs.sh")).unwrap();
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines.len(), 4, "{script}");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.ends_with(&format!(" --job {i}")) && !line.contains("emit-jobs"),
            "{line}"
        );
    }
    // Before any job ran, there is nothing to collect.
    assert!(!protocol(&cluster, &["--collect"]).status.success());
    let ran = Command::new("bash")
        .arg(cluster.join("jobs.sh"))
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(
        !cluster.join("table.csv").exists(),
        "a job writes no tables"
    );
    let out = protocol(&cluster, &["--collect"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 of 4 runs finished"));
    for table in ["table.csv", "table.json"] {
        assert_eq!(
            std::fs::read_to_string(cluster.join(table)).unwrap(),
            std::fs::read_to_string(direct.join(table)).unwrap(),
            "{table}"
        );
    }
    assert!(cluster.join("plots/accuracy-vs-kappa.svg").is_file());

    let out = protocol(&cluster, &["--emit-jobs", "slurm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sbatch = std::fs::read_to_string(cluster.join("jobs.sbatch")).unwrap();
    assert!(sbatch.starts_with("#!/bin/bash\n"), "{sbatch}");
    assert!(sbatch.contains("#SBATCH --array=0-3\n"), "{sbatch}");
    assert!(
        sbatch.contains("--job \"$SLURM_ARRAY_TASK_ID\""),
        "{sbatch}"
    );
    let out = protocol(&cluster, &["--job", "4"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("this protocol has 4 runs"));
}

/// `--init-from`: an MGR run starts from a baseline run's tokenizers and encoder (recorded in
/// its config, said on stderr) and trains to a result; a source of another size is refused by
/// the field that differs, before a run folder is written.
#[test]
fn init_from_starts_mgr_from_a_baseline_runs_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    ok(&one_epoch_baseline("flex", &base));
    let tuned = tmp.path().join("tuned");
    let run = train(
        &tuned,
        &["--epochs", "1", "--init-from", base.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("tokenizers and encoder from"), "{stderr}");
    assert_eq!(
        json(tuned.join("config.json"))["init_from"],
        base.to_str().unwrap()
    );
    assert!(
        json(tuned.join("results.json"))["accuracy"]
            .as_f64()
            .is_some()
    );

    let wide = tmp.path().join("wide");
    let run = train(
        &wide,
        &[
            "--epochs",
            "1",
            "--init-from",
            base.to_str().unwrap(),
            "--set",
            "d_model=24",
        ],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("d_model"),
        "{stderr}"
    );
    assert!(
        !wide.exists(),
        "a refused --init-from left {}",
        wide.display()
    );
    let missing = train(
        &tmp.path().join("none"),
        &["--epochs", "1", "--init-from", "/nonexistent/run"],
    );
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/run"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// Every tensor of a run's best weights whose name starts with one of `prefixes`, as its raw
/// bytes, read through `mgr export --format safetensors`.
fn weights(run: &Path, prefixes: &[&str]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let file = run.join("weights.safetensors");
    ok(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
        "--samples",
        "0",
    ]);
    let bytes = std::fs::read(&file).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    tensors
        .tensors()
        .into_iter()
        .filter(|(name, _)| prefixes.iter().any(|p| name.starts_with(p)))
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect()
}

/// `mgr pretrain` of the synthetic backbone for one epoch at the TINY sizes into `dir`.
fn pretrain_tiny(dir: &Path) {
    let mut args = vec![
        "pretrain",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--device",
        "flex",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(&TINY);
    ok(&args);
}

/// The paper's setting: `mgr pretrain` writes a normal run (the baseline at kappa 0 on another
/// seed's samples); `train --backbone it --freeze backbone` leaves every backbone weight bit for
/// bit as pretrained while the rest trains, and records what it trained: MGR more than the
/// baseline, `baseline-wide` within 10% of MGR. `--freeze none` fine-tunes the encoder.
#[test]
fn a_frozen_backbone_stays_bit_for_bit_and_each_method_trains_what_it_adds() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("backbone");
    pretrain_tiny(&base);
    let base_config = json(base.join("config.json"));
    assert_eq!(base_config["model"]["method"], "baseline");
    assert_eq!(base_config["absence"]["kappa"], 0.0);
    assert_eq!(base_config["synthetic"]["seed"], 1000);
    assert!(base.join("results.json").is_file());
    let backbone = [
        "encoder.",
        "tokenizers.0.projection",
        "tokenizers.0.position",
        "tokenizers.1.projection",
        "tokenizers.2.position",
    ];
    let pretrained = weights(&base, &backbone);
    assert!(pretrained.len() > 10, "{:?}", pretrained.keys());
    let trained = |method: &str, freeze: &str| {
        let dir = tmp.path().join(format!("{method}-{freeze}"));
        let mut args = vec![
            "train",
            "--method",
            method,
            "--kappa",
            "0.7",
            "--epochs",
            "2",
            "--device",
            "flex",
            "--backbone",
            base.to_str().unwrap(),
            "--freeze",
            freeze,
            "--out",
            dir.to_str().unwrap(),
        ];
        args.extend_from_slice(&TINY);
        ok(&args);
        dir
    };
    let mut trainable = std::collections::BTreeMap::new();
    for method in ["baseline", "baseline-wide", "mgr"] {
        let dir = trained(method, "backbone");
        assert_eq!(
            weights(&dir, &backbone),
            pretrained,
            "{method}: a frozen weight moved"
        );
        // E_miss came with the backbone's tokenizers and trains in every method.
        assert_ne!(
            weights(&dir, &["tokenizers.1.e_miss"]),
            weights(&base, &["tokenizers.1.e_miss"]),
            "{method}: E_miss trains"
        );
        let results = json(dir.join("results.json"));
        assert_eq!(results["freeze"], "backbone");
        let (t, f) = (
            results["trainable_params"].as_u64().unwrap(),
            results["frozen_params"].as_u64().unwrap(),
        );
        assert!(t > 0 && f > 0, "{results}");
        trainable.insert(method, (t, f));
    }
    let (base_t, base_f) = trainable["baseline"];
    let (mgr_t, mgr_f) = trainable["mgr"];
    let (wide_t, _) = trainable["baseline-wide"];
    assert_eq!(base_f, mgr_f, "the same backbone is frozen");
    assert!(mgr_t > base_t, "MGR trains {mgr_t}, the baseline {base_t}");
    let ratio = wide_t as f64 / mgr_t as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "baseline-wide {wide_t} vs MGR {mgr_t}"
    );
    // Fine-tuned: the encoder moves, nothing is frozen.
    let tuned = trained("baseline", "none");
    assert_ne!(
        weights(&tuned, &["encoder."]),
        weights(&base, &["encoder."])
    );
    assert_eq!(json(tuned.join("results.json"))["frozen_params"], 0);
    // A freeze without a backbone is refused before a run folder exists.
    let lonely = tmp.path().join("lonely");
    let run = train(&lonely, &["--epochs", "1", "--freeze", "backbone"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("--backbone"),
        "{stderr}"
    );
    assert!(!lonely.exists());
}

/// `mgr protocol --backbone B --freeze backbone,none --lrs ...`: each setting is its own cell;
/// each cell's first run is trained once per rate, the rate of the best validation accuracy is
/// kept (and its run reused as the cell's first), and the table pairs each cell with the
/// baseline of the same setting.
#[test]
fn protocol_on_a_backbone_chooses_each_cells_rate_on_validation() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("backbone");
    pretrain_tiny(&base);
    let out = tmp.path().join("table");
    let mut args = vec![
        "protocol",
        "--methods",
        "baseline,mgr",
        "--kappa",
        "0.5",
        "--absence-seeds",
        "1",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--backbone",
        base.to_str().unwrap(),
        "--freeze",
        "backbone,none",
        "--lrs",
        "1e-3,3e-2",
        "--devices",
        "flex,flex",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(&TINY);
    let run = mgr(&args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("8 selection runs, 8 to do"), "{stderr}");
    // 4 cells x 2 runs, the first of each copied from its selection run.
    assert!(stderr.contains("8 runs, 4 finished, 4 to do"), "{stderr}");
    let choices = json(out.join("lr-selection.json"));
    assert_eq!(choices.as_array().unwrap().len(), 4);
    for choice in choices.as_array().unwrap() {
        let tried = choice["tried"].as_array().unwrap();
        let best = tried
            .iter()
            .max_by(|a, b| a[1].as_f64().partial_cmp(&b[1].as_f64()).unwrap())
            .unwrap();
        assert_eq!(
            choice["tried"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t[1] == best[1])
                .unwrap()[0],
            choice["chosen"],
            "{choice}"
        );
        let method = choice["cell"]["method"].as_str().unwrap();
        let setting = choice["cell"]["backbone"].as_str().unwrap();
        for seeds in ["a0-s0", "a0-s1"] {
            let dir = out.join(format!(
                "runs/{method}{}/{setting}/kappa0.5/{seeds}",
                if method == "mgr" { "-token" } else { "" }
            ));
            let config = json(dir.join("config.json"));
            assert_eq!(config["train"]["lr"], choice["chosen"], "{}", dir.display());
            assert_eq!(
                config["freeze"],
                if setting == "frozen" {
                    "backbone"
                } else {
                    "none"
                }
            );
        }
    }
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(md.contains("| mgr [frozen] | token | 0.5 | 2 |"), "{md}");
    assert!(
        md.contains("| baseline [fine-tuned] | - | 0.5 | 2 |"),
        "{md}"
    );
    assert!(md.contains("weighted F1") && md.contains("(2) |"), "{md}");
    assert!(
        std::fs::read_to_string(out.join("lr-selection.md"))
            .unwrap()
            .contains("chosen")
    );
    // Without --backbone, a frozen cell is refused.
    let refused = mgr(&[
        "protocol",
        "--freeze",
        "backbone",
        "--out",
        tmp.path().join("no").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--backbone"));
}

#[test]
fn the_bench_names_its_build_layout_and_shapes_in_its_json() {
    let line = ok(&[
        "bench",
        "--json",
        "--device",
        "flex",
        "--batch",
        "4",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--d",
        "16",
        "--heads",
        "2",
        "--layers",
        "1",
    ]);
    let report: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON object");
    assert_eq!(report["impl"], "mgr-rust");
    assert_eq!(report["batch"], 4);
    assert_eq!(report["steps"], 1);
    // `--rows auto` on flex runs the gathered layout, and the report names the one that ran.
    assert_eq!(report["rows"], "gathered");
    // `--head-layout auto` on flex runs token-major (flex's fused attention reads rows).
    assert_eq!(report["head_layout"], "token-major");
    // The build's GPU features, as this test binary's package was built.
    assert_eq!(report["burn_fusion"], cfg!(feature = "fusion"));
    assert_eq!(report["autotune_cache"], cfg!(feature = "autotune-cache"));
    for speed in ["train_samples_per_s", "infer_samples_per_s"] {
        let samples_per_s = report[speed].as_f64().expect(speed);
        assert!(
            samples_per_s.is_finite() && samples_per_s > 0.0,
            "{speed}: {samples_per_s}"
        );
    }
    // Flex launches no GPU kernels.
    assert_eq!(report["train_launches_per_step"], 0.0);
    // The flags size the model: at d 16 and one layer it is far below the default 64-wide one.
    let params = report["params"].as_u64().expect("params");
    assert!(
        params > 0 && params < 50_000,
        "{params} params at d 16, one layer"
    );
}
