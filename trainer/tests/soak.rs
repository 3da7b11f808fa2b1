//! A protocol killed anywhere finishes with the same table: `mgr protocol` (and a job array's
//! worker) killed with SIGKILL at moments spread over its whole length, each inside a different
//! phase (`MGR_KILL_AT`, fsutil.rs's kill points: a step of an epoch, a file written but not yet
//! renamed, just after a rename), rerun after each kill, and the final tables equal, field by
//! field, to an uninterrupted run's. After every kill no JSON or CSV file is half written.

// One story per test: the uninterrupted run, then each kill and what it left.
#![allow(clippy::too_many_lines)]

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::TINY;

/// Prints past the test harness's capture (it takes only `print!` and `eprint!`), so that
/// `cargo test` shows the kill points and how many were survived.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// 2 methods x 2 absence seeds x 2 seeds = 8 runs of 3 epochs of 3 steps (96 samples,
/// batch 32) on flex.
fn protocol_args(out: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "protocol",
        "--dataset",
        "synthetic",
        "--methods",
        "baseline,mgr",
        "--kappa",
        "0.7",
        "--absence-seeds",
        "2",
        "--seeds",
        "2",
        "--epochs",
        "3",
        "--devices",
        "flex",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(TINY.iter().map(|s| s.to_string()));
    args.push("--out".into());
    args.push(out.display().to_string());
    args
}

fn mgr(args: &[String], kill_at: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mgr"));
    command.args(args);
    match kill_at {
        Some(spec) => command.env("MGR_KILL_AT", spec),
        None => command.env_remove("MGR_KILL_AT"),
    };
    command.output().expect("run mgr")
}

fn must_succeed(args: &[String], what: &str) -> Output {
    let out = mgr(args, None);
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `args` to be killed at `spec`; fails the test if it was not killed there.
fn killed_at(args: &[String], spec: &str) {
    let out = mgr(args, Some(spec));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "kill point {spec} was not reached (status {:?}): {stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("kill point {spec}: SIGKILL")),
        "killed elsewhere than {spec}: {stderr}"
    );
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    found.sort();
    found
}

/// No JSON or CSV under `dir` is half written: each JSON parses, each CSV ends its last line
/// and has its header's number of fields on every line (a killed writer's hidden temp files
/// aside). Returns how many were checked.
fn assert_whole(dir: &Path, after: &str) -> usize {
    let mut checked = 0;
    for rel in files(dir) {
        let path = dir.join(&rel);
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') && name.contains(".tmp-") {
            // A killed writer's temp file: not a file anything reads (swept by the next run).
            continue;
        }
        let text = match extension {
            "json" | "csv" => std::fs::read_to_string(&path).unwrap(),
            _ => continue,
        };
        if extension == "json" {
            assert!(
                serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                "after {after}: {} is not whole JSON",
                rel.display()
            );
        } else {
            assert!(
                text.ends_with('\n'),
                "after {after}: {} ends mid-line",
                rel.display()
            );
            let mut lines = text.lines();
            let fields = lines.next().unwrap_or("").split(',').count();
            for line in lines {
                assert_eq!(
                    line.split(',').count(),
                    fields,
                    "after {after}: {} has a short line: {line}",
                    rel.display()
                );
            }
        }
        checked += 1;
    }
    checked
}

/// What must equal between two protocol folders: the tables (their run folders named
/// relative to `out`), and every run's results and metrics (timings aside).
fn outcome(out: &Path) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    for name in [
        "table.json",
        "table.csv",
        "table.md",
        "accuracy-vs-kappa.csv",
    ] {
        let text = std::fs::read_to_string(out.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", out.join(name).display()));
        // The tables name runs by their folders: the same under either --out.
        parts.push((
            name.to_string(),
            text.replace(&out.display().to_string(), "<out>"),
        ));
    }
    for rel in files(out) {
        let path = out.join(&rel);
        let name = rel.display().to_string();
        if name.ends_with("results.json") {
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("train_seconds");
            parts.push((name, v.to_string()));
        } else if name.ends_with("metrics.csv") {
            let text = std::fs::read_to_string(&path).unwrap();
            let rows: Vec<&str> = text
                .lines()
                .map(|l| l.rsplit_once(',').unwrap().0)
                .collect();
            parts.push((name, rows.join("\n")));
        }
    }
    parts
}

fn assert_same_outcome(reference: &Path, soaked: &Path) {
    let (want, got) = (outcome(reference), outcome(soaked));
    let names = |parts: &[(String, String)]| -> BTreeSet<String> {
        parts.iter().map(|(n, _)| n.clone()).collect()
    };
    assert_eq!(names(&want), names(&got), "the same files");
    for ((name, a), (_, b)) in want.iter().zip(&got) {
        assert_eq!(a, b, "{name} differs after the kills");
    }
}

/// The kill points of the whole protocol, in the order its reruns reach them. Each rerun starts
/// from what the kill before left (finished runs skipped, a checkpointed run resumed, a
/// created one started afresh) and counts its events from 1, so `#n` is the n-th time in that
/// rerun. Every one is inside a different phase or moment.
const PROTOCOL_KILLS: [&str; 24] = [
    // Run 1 (baseline a0 s0): its config's temp file written, not renamed: a folder with only
    // a temp file.
    "write:config.json#1",
    // Config renamed, no mask yet: created.
    "renamed:config.json#1",
    // A mask written: created, with masks.
    "renamed:train.csv#1",
    // Inside the first epoch (its second step).
    "step#2",
    // The first epoch's best weights written, not its checkpoint.
    "renamed:best.bpk#1",
    // The checkpoint's weights and optimizer written, its state file not yet renamed.
    "write:state.json#1",
    // The first checkpoint, just written.
    "renamed:state.json#1",
    // Resumed after epoch 1: inside epoch 2.
    "step#2",
    // Resumed after epoch 1 again: epoch 3's metrics row written, not its checkpoint.
    "renamed:metrics.csv#2",
    // Resumed after epoch 2: the last epoch checkpointed, no results (between a run's last
    // epoch and its results).
    "renamed:state.json#1",
    // Results written, not renamed.
    "write:results.json#1",
    // Results renamed: run 1 finished, before the protocol logged it.
    "renamed:results.json#1",
    // Run 2: inside its last epoch.
    "step#7",
    // Run 2 resumed after epoch 2: finished.
    "renamed:results.json#1",
    // Run 3: two epochs checkpointed.
    "renamed:state.json#2",
    // Runs 3 and 4 finished (run 4 from scratch).
    "renamed:results.json#2",
    // Run 5 (mgr a0 s0): its first step.
    "step#1",
    // Run 5 created again (after a kill in its first epoch: started afresh).
    "renamed:config.json#1",
    // Runs 5, 6, 7 finished.
    "renamed:results.json#3",
    // Run 8: two epochs checkpointed.
    "renamed:state.json#2",
    // Every run finished; the tables: the kappa sweep's CSV written, not renamed.
    "write:accuracy-vs-kappa.csv#1",
    // table.csv renamed, table.md not written.
    "renamed:table.csv#1",
    // table.md renamed, table.json not.
    "renamed:table.md#1",
    // table.json written, not renamed.
    "write:table.json#1",
];

/// The protocol killed at 24 moments over its whole length, rerun each time: the same tables
/// and runs as without a kill, and no half-written JSON or CSV after any kill.
#[test]
fn a_protocol_killed_anywhere_finishes_with_the_same_table() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    must_succeed(&protocol_args(&reference), "the uninterrupted protocol");

    let soaked = tmp.path().join("soaked");
    let args = protocol_args(&soaked);
    let mut checked = 0;
    for spec in PROTOCOL_KILLS {
        killed_at(&args, spec);
        checked += assert_whole(&soaked, spec);
    }
    let last = must_succeed(&args, "the rerun after the last kill");
    let log = String::from_utf8_lossy(&last.stderr);
    assert!(
        log.contains("8 runs, 8 finished, 0 to do"),
        "the last rerun only writes the tables: {log}"
    );
    assert_whole(&soaked, "the last rerun");
    assert_same_outcome(&reference, &soaked);
    let temps: Vec<_> = files(&soaked)
        .into_iter()
        .filter(|p| p.display().to_string().contains(".tmp-"))
        .collect();
    assert!(
        temps.is_empty(),
        "killed writers' temp files are swept: {temps:?}"
    );
    say!(
        "soak: the protocol killed with SIGKILL at {} points and rerun each time ({}): the \
         table and every run equal to the uninterrupted protocol's; {checked} JSON/CSV files \
         whole after the kills",
        PROTOCOL_KILLS.len(),
        PROTOCOL_KILLS.join(", ")
    );
}

/// A job array's worker (`--job N`) killed at five moments of its run and rerun, the other
/// jobs run once each, then `--collect`: the same tables as the whole protocol uninterrupted.
#[test]
fn a_job_array_worker_killed_anywhere_collects_the_same_table() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    must_succeed(&protocol_args(&reference), "the uninterrupted protocol");

    let array = tmp.path().join("array");
    let with = |extra: &[&str]| -> Vec<String> {
        let mut args = protocol_args(&array);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let worker = with(&["--job", "5"]);
    let kills = [
        "renamed:config.json#1",
        "step#3",
        "renamed:state.json#1",
        "step#5",
        "write:results.json#1",
    ];
    for spec in kills {
        killed_at(&worker, spec);
        assert_whole(&array, spec);
    }
    must_succeed(&worker, "the worker's rerun");
    let again = must_succeed(&worker, "the finished worker's rerun");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("1 runs, 1 finished, 0 to do"),
        "a finished job is not redone"
    );
    for n in (0..8).filter(|&n| n != 5) {
        let n = n.to_string();
        must_succeed(&with(&["--job", &n]), "a job");
    }
    must_succeed(&with(&["--collect"]), "--collect");
    assert_same_outcome(&reference, &array);
    say!(
        "soak: a job array's worker (--job 5) killed at {} points and rerun ({}); --collect: \
         the table equal to the uninterrupted protocol's",
        kills.len(),
        kills.join(", ")
    );
}
