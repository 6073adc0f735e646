"""benchmarks/: the reproduce.py table and resume logic, the CPU suite, the naive pipeline.

The end-to-end tests drive the real CLI (fit, resume, show, run) on tiny local
data with tiny budgets; they are marked slow but run in CI.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(REPO))  # benchmarks/ is a folder of scripts, imported here as a namespace package

from scores import accuracy, run_accuracy, split_labels  # noqa: E402

from benchmarks import common, cpu_suite, reproduce  # noqa: E402


def _trial(
    run_dir: Path, iters: list[dict], best: dict | None, tokens: int = 0, error: str | None = None
) -> common.TrialRun:
    return common.TrialRun(run_dir, {"iterations": iters, "best": best, "tokens": tokens}, error, 0.0)


def _it(i: int, test: float | None, seconds: float = 10.0, status: str = "ok", tokens: int = 0) -> dict:
    return {
        "iteration": i,
        "status": status,
        "target": None,
        "accepted": True,
        "val_accuracy": test,
        "test_accuracy": test,
        "seconds": seconds,
        "tokens": tokens,
    }


# ------------------------------------------------------------ table builder


def test_table_puts_mean_and_std_over_trials_beside_the_paper_figures(tmp_path):
    from automodel.datasets.registry import load_registry

    reg = load_registry()
    cfg = reproduce.Config(trials=3, iters=2, zero_shot=True, sequential=True)
    ds = reproduce.DatasetResult(label="svhn", path=tmp_path, entry=reg.get("svhn"))
    ds.single = [
        _trial(
            tmp_path / "a",
            [_it(1, 0.50, tokens=100), _it(2, 0.80, tokens=50)],
            {"iteration": 2, "test_accuracy": 0.80},
            tokens=150,
        ),
        _trial(tmp_path / "b", [_it(1, 0.70), _it(2, 0.90)], {"iteration": 2, "test_accuracy": 0.90}),
        _trial(
            tmp_path / "c",
            [_it(1, None, status="failed")],
            None,
            error="stopped after 1 of 2 iterations; rerun to resume",
        ),
    ]
    ds.sequential = [_trial(tmp_path / "s", [_it(1, 0.6), _it(2, 0.6)], {"iteration": 1, "test_accuracy": 0.6})]
    ds.zero_shot = [
        reproduce.ZeroShot(0.40, 30.0, 1000, 0.01, None),
        reproduce.ZeroShot(0.60, 30.0, 1000, 0.01, None),
        reproduce.ZeroShot(None, 5.0, 0, None, "zero-shot pipeline failed"),
    ]
    missing = reproduce.DatasetResult(label="cassava", path=None, entry=reg.get("cassava"), error="is on Kaggle")
    table = reproduce.build_table([ds, missing], cfg).splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:7] == [
        "Dataset",
        "Zero-shot (ours)",
        "Zero-shot (paper)",
        "First iteration (ours)",
        "First iteration (paper)",
        "Final, 2 it. (ours)",
        "Final (paper)",
    ]
    row = dict(zip(header, [c.strip() for c in table[2].strip("|").split("|")]))
    assert row["Zero-shot (ours)"] == "50.0 ± 14.1 (n=2/3)"
    assert row["First iteration (ours)"] == "60.0 ± 14.1 (n=2/3)"
    assert row["Final, 2 it. (ours)"] == "85.0 ± 7.1 (n=2/3)"  # the unfinished trial is not averaged in
    assert row["Final, sequential init (ours)"] == "60.0 ± 0.0 (n=1/3)"
    assert row["Final (paper)"] == "n/a" and row["Zero-shot (paper)"] == "n/a"
    assert row["Trials"] == "2/3"
    assert row["Compute time"] == "2 min 15 s"  # 10 s x 7 iterations (failed ones count) + 65 s of zero-shot
    assert row["Tokens"] == "2,150"
    assert "unavailable" in table[3]
    report = reproduce.build_report([ds, missing], cfg, reg, common.machine_details())
    assert "not found offline" in report and "stopped after 1 of 2" in report and "## Machine" in report


def test_zero_shot_json_is_read_from_the_top_level_or_result():
    z = reproduce.parse_zero_shot(
        {"status": "ok", "test_accuracy": 0.7, "seconds": 12, "tokens": 900, "cost_usd": 0.002}
    )
    assert (z.test_accuracy, z.seconds, z.tokens, z.error) == (0.7, 12.0, 900, None)
    z = reproduce.parse_zero_shot({"result": {"status": "failed", "error": "SyntaxError"}, "tokens": 10})
    assert z.test_accuracy is None and "failed" in z.error and z.tokens == 10


def test_mean_std_and_cells():
    assert common.mean_std([0.5, None, 0.7]) == (pytest.approx(0.6), pytest.approx(0.1414, abs=1e-4), 2)
    assert common.pct_cell([None, None]) == "-"
    assert common.duration(3725) == "1 h 02 min"


def test_machine_details_name_the_machine_and_commit():
    details = common.machine_details()
    for key in ("platform", "cpu", "cores", "ram_gb", "python", "torch", "git_commit"):
        assert details[key], key
    text = common.machine_markdown(details)
    assert details["git_commit"] in text and details["cpu"] in text


def test_cpu_suite_defaults_are_estimated_under_an_hour():
    st = cpu_suite.Settings()
    assert st.datasets == ("fashion-mnist", "mnist", "cifar10-subset", "hymenoptera") and st.seeds == (0, 1, 2)
    assert st.estimate_seconds() < 3600 * 0.75  # the docstring's arithmetic, with headroom under the hour
    quick = cpu_suite.parse_args(["--quick", "--work", "/tmp/x"])[0]
    assert quick.iters == 2 and quick.per_class_for("mnist") == 10
    assert cpu_suite.parse_args(["--per-class", "0"])[0].per_class_for("mnist") is None


# ------------------------------------------------------------ end to end


def _script(script: str, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_naive_pipeline_runs_and_is_scored(cli, tmp_path):
    data = tmp_path / "digits"
    assert cli("datasets", "fetch", "digits", data, "--per-class", "8").returncode == 0
    proc = cli(
        "run",
        data,
        "--pipeline",
        BENCH / "naive_pipeline",
        "--json",
        "--time-limit",
        "5",
        "--seed",
        "0",
        "--out",
        tmp_path / "out",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "ok"
    truth = accuracy(tmp_path / "out" / "iter" / "probs_test.npy", split_labels(data, "test"))
    assert result["test_accuracy"] == pytest.approx(truth, abs=1e-6)
    assert result["timings"]["training"] > 0


@pytest.mark.slow
def test_reproduce_runs_resumes_and_reads_back_finished_trials(tmp_path):
    # One trial keeps this affordable on 2 cores; the table's statistics over trials are checked above.
    common_args = [
        "digits",
        "--agent",
        "expert",
        "--trials",
        "1",
        "--time-per-iter",
        "5",
        "--per-class",
        "10",
        "--runs-dir",
        tmp_path / "runs",
        "--data-dir",
        tmp_path / "data",
        "--out",
        tmp_path / "out.md",
    ]
    log_file = tmp_path / "runs" / "reproduce.log"

    def launched() -> tuple[int, int, int]:
        log = log_file.read_text()
        return log.count("$ automodel fit "), log.count("$ automodel resume "), log.count("$ automodel run ")

    first = _script("reproduce.py", *common_args, "--iters", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert launched() == (1, 0, 1)  # the trial, and the expert's zero-shot stand-in (the naive pipeline)
    # More iterations than the finished run has: it is continued with `automodel resume`, the zero-shot result
    # is reused.
    second = _script("reproduce.py", *common_args, "--iters", "2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert launched() == (1, 1, 1)
    # Everything finished: a rerun only reads the runs back.
    third = _script("reproduce.py", *common_args, "--iters", "2")
    assert third.returncode == 0 and launched() == (1, 1, 1)

    data = json.loads((tmp_path / "out.json").read_text())
    (digits,) = data["datasets"]
    (trial,) = digits["single"]
    assert trial["iterations"] == 2 and trial["error"] is None
    run = Path(trial["run_dir"])
    best_iteration = int((run / "best" / "ITERATION").read_text())
    assert trial["final_test"] == pytest.approx(run_accuracy(run, best_iteration, "test"), abs=1e-4)
    # The expert's zero-shot stand-in is `automodel run` of the naive pipeline on the same data and split.
    assert digits["zero_shot"][0]["error"] is None
    (dataset,) = [p for p in (tmp_path / "data").iterdir() if p.is_dir()]
    (zero_iter,) = (tmp_path / "runs").glob("digits/*/zero_shot/trial_0/iter")
    truth = accuracy(zero_iter / "probs_test.npy", split_labels(dataset, "test"))
    assert digits["zero_shot"][0]["test_accuracy"] == pytest.approx(truth, abs=1e-4)
    table = (tmp_path / "out.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| digits |"))
    assert f"{100 * trial['final_test']:.1f} ± 0.0" in row and "| 1/1 |" in row
    assert "Final, 2 it. (ours)" in table and "naive_pipeline" in table


@pytest.mark.slow
def test_cpu_suite_quick_end_to_end(tmp_path, shared_dir):
    out = tmp_path / "cpu.md"
    proc = _script("cpu_suite.py", "--quick", "--work", tmp_path / "work", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "| mnist (10/class) |" in text and "## Machine" in text and "commit" in text
    data = json.loads(out.with_suffix(".json").read_text())
    (mnist,) = data["datasets"]
    assert mnist["naive"][0]["error"] is None and mnist["naive"][0]["test_accuracy"] is not None
    assert len(mnist["fits"][0]["iterations"]) == 2
    split = mnist["time_split"]
    assert split["training"] > 0 and split["overhead"] > 0


@pytest.mark.slow
def test_reproduce_with_an_llm_against_the_replay_server(tmp_path):
    yaml = importlib.import_module("yaml")
    replay = importlib.import_module("automodel.testing.replay_server")
    scripts = REPO / "tests" / "llm_scripts"
    script = yaml.safe_load((scripts / "demo.yaml").read_text())
    for steps in script["roles"].values():
        steps[:] = [s for s in steps if "status" not in s]  # no rate-limit pauses here: they are tested elsewhere
        for s in steps:
            if "reply_file" in s:
                s["reply_file"] = str(scripts / s["reply_file"])
    script["roles"]["zero_shot"] = [{"reply_file": str(scripts / "good_pipeline.md")}]
    with replay.ReplayServer(script) as server:
        proc = subprocess.run(
            [
                sys.executable,
                str(BENCH / "reproduce.py"),
                "digits",
                "--agent",
                "llm",
                "--model",
                "gpt-4o-mini",
                "--base-url",
                server.base_url,
                "--trials",
                "1",
                "--iters",
                "2",
                "--time-per-iter",
                "5",
                "--per-class",
                "10",
                "--runs-dir",
                tmp_path / "runs",
                "--data-dir",
                tmp_path / "data",
                "--out",
                tmp_path / "out.md",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=REPO,
            env={k: v for k, v in __import__("os").environ.items() if not k.startswith("OPENAI_")},
        )
        roles = [r["role"] for r in server.requests]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "zero_shot" in roles and "architect" in roles and "analyst" in roles
    data = json.loads((tmp_path / "out.json").read_text())
    (digits,) = data["datasets"]
    (trial,) = digits["single"]
    (zero,) = digits["zero_shot"]
    assert trial["iterations"] == 2 and trial["error"] is None and trial["tokens"] > 0
    assert zero["error"] is None and zero["tokens"] > 0
    (zero_run,) = (tmp_path / "runs").glob("digits/*/zero_shot/trial_0")
    assert zero["test_accuracy"] == pytest.approx(run_accuracy(zero_run, 1, "test"), abs=1e-4)
    assert (tmp_path / "runs" / "digits" / "llm-gpt-4o-mini-t5" / "single" / "trial_0" / "run.json").is_file()
    row = next(line for line in (tmp_path / "out.md").read_text().splitlines() if line.startswith("| digits |"))
    tokens = int(row.rstrip(" |").rsplit("|", 1)[-1].strip().replace(",", ""))
    assert tokens == trial["tokens"] + zero["tokens"]


def test_llm_vs_expert_runs_both_brains_and_reports_each_iterations_compute_and_tokens(tmp_path, materialize):
    """Driven by a real model's replies (tests/llm_scripts/real/, recorded through the bridge): its pipeline and
    its first change (the greedy protocol reads the first item of its round's list), each trained for real."""
    replay = importlib.import_module("automodel.testing.replay_server")
    data = materialize("fashion-mnist", "imagefolder", 10)
    out = tmp_path / "vs"
    with replay.ReplayServer(REPO / "tests" / "llm_scripts" / "real" / "script.yaml") as server:
        proc = subprocess.run(
            [sys.executable, str(BENCH / "llm_vs_expert.py"), "--datasets", str(data), "--search", "greedy",
             "--iters", "2", "--time-per-iter", "5", "--base-url", server.base_url,
             "--model", "gpt-4o-mini", "--work", str(tmp_path / "work"), "--out", str(out)],
            capture_output=True, text=True, timeout=900,
        )
        asked = [r for r in server.requests if "ROLE: analyst" in r["messages"][0]["content"]]
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads(out.with_suffix(".json").read_text())
    (pair,) = saved["pairs"]
    assert pair["search"] == "greedy" and pair["order"] == ["expert", "llm"]
    for brain in ("expert", "llm"):
        run = pair[brain]
        assert [r["iteration"] for r in run["iterations"]] == [1, 2], brain
        assert run["final_test"] is not None and run["failed"] == 0
        assert all(r["steps"] and r["images_per_second"] for r in run["iterations"])
    # The real model's pipeline and edit both trained; tokens are counted per iteration.
    assert len(asked) == 1
    llm = pair["llm"]["iterations"]
    assert llm[1]["target"] == "train" and llm[1]["instruction"].startswith("Stop the EMA")
    assert pair["expert"]["tokens"] == 0 and llm[0]["tokens"] > 0 and llm[1]["tokens"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| LLM - expert |" in table and "Stop the EMA" in table
    # --report-only rebuilds the same table from the .json.
    out.with_suffix(".md").unlink()
    subprocess.run([sys.executable, str(BENCH / "llm_vs_expert.py"), "--report-only", "--out", str(out)],
                   check=True, capture_output=True)
    assert out.with_suffix(".md").read_text() == table


def test_parallel_report_gives_k2_over_k1_pair_by_pair():
    from benchmarks import parallel

    row = {"dataset": "fashion-mnist", "pair": 0,
           "k1": {"runs_per_hour": 60.0, "test_accuracy": 0.80, "run_images_per_s": 900.0, "exploration_runs": 5,
                  "wall_s": 300.0, "run_cpu_utilisation": 0.95, "run_steal_share": 0.0},
           "k2": {"runs_per_hour": 96.0, "test_accuracy": 0.84, "run_images_per_s": 500.0, "exploration_runs": 8,
                  "wall_s": 301.0, "run_cpu_utilisation": 0.9, "run_steal_share": 0.001}}
    details = {**common.machine_details(), "commit": "abc"}
    line = next(x for x in parallel.report({"budget": 300.0, "rows": [row]}, details).splitlines()
                if x.startswith("| fashion-mnist"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:8] == ["60", "96", "1.60", "0.8000", "0.8400", "1.050"]
    assert cells[12] == "5 / 8"
    # With a Ray arm: what Ray adds per run is its overhead less the local pool's.
    row["k2"]["overhead_s"] = 9.5
    row["k2_ray"] = {**row["k2"], "overhead_s": 12.0, "runs_per_hour": 90.0}
    text = parallel.report({"budget": 300.0, "rows": [row]}, details)
    ray_line = text.split("Ray adds s")[1].splitlines()[2]
    assert [c.strip() for c in ray_line.strip("|").split("|")][2:7] == ["9.5", "12.0", "+2.5", "96", "90"]
