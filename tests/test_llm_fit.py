"""`automodel fit --agent llm` and `automodel zero-shot` end to end against the replay server.

The CLI runs in a real subprocess with the real openai client; the scripted
"LLM" (tests/llm_scripts/faults.yaml) commits every fault the LLM path must
survive: a rate limit, a cut-off reply, broken JSON, a syntax error, a server
error, a hung connection, a module that breaks its contract. The run must
survive them all without losing an iteration.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scores import run_accuracy

from automodel.testing.replay_server import ReplayServer

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).parent / "llm_scripts"
REPO = Path(__file__).resolve().parents[1]


def cli(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["AUTOMODEL_LLM_TIMEOUT"] = "2"  # the scripted hang lasts 30 s: the client must time out and retry
    return subprocess.run([sys.executable, "-m", "automodel.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def digits(materialize):
    return materialize("mnist", "imagefolder", 20)


@pytest.fixture(scope="module")
def faulty_run(digits, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    with ReplayServer(SCRIPTS / "faults.yaml") as server:
        # The script follows the published loop's order of requests, one edit per iteration.
        proc = cli("fit", digits, "--agent", "llm", "--base-url", server.base_url, "--iters", 4, "--time-per-iter", 5,
                   "--search", "greedy", "--workspace", ws, "--name", "llm")
        requests, unused = server.requests, server.unused_steps()
    assert proc.returncode == 0, proc.stderr[-4000:]
    return ws / "llm", proc, requests, unused


def test_every_fault_is_survived_without_losing_the_run(faulty_run):
    run, proc, requests, unused = faulty_run
    assert unused == [], "every scripted step, faults included, was served"
    finals = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    finals = [r for r in finals if r["final"]]
    assert [r["iteration"] for r in finals] == [1, 2, 3, 4]
    assert [r["status"] for r in finals] == ["ok"] * 4, [r["error"] for r in finals]
    assert [r["target"] for r in finals] == ["architect", "model", "data", "model"]
    assert [r["repairs"] for r in finals] == [0, 1, 0, 1], (
        "the syntax error and the contract break were each repaired once"
    )
    assert all(r["brain"] == "llm:gpt-4o-mini" and r["tokens"] > 0 for r in finals)
    assert "brain: LLM llm:gpt-4o-mini" in proc.stderr
    # each failed attempt keeps its own record and files next to the repaired run
    journal = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    failed = [r for r in journal if not r["final"]]
    assert [(r["iteration"], r["attempt_dir"]) for r in failed] == [(2, "attempt_1"), (4, "attempt_1")]
    for r in failed:
        kept = run / f"iter_{r['iteration']:03d}" / r["attempt_dir"]
        assert (kept / "model.py").exists() and (kept / "metrics.json").exists()
        assert json.loads((kept / "metrics.json").read_text())["status"] != "ok"


def test_faults_were_handled_as_designed(faulty_run):
    _, _, requests, _ = faulty_run
    actions = [(r["role"], r["action"].split(": ")[-1]) for r in requests]
    # 429 with Retry-After 0.5: the next request waited at least that long
    assert actions[0] == ("architect", "status 429") and requests[1]["time"] - requests[0]["time"] >= 0.5
    # the cut-off reply was re-requested once, with the partial reply and a note
    assert actions[1] == ("architect", "truncated reply")
    assert requests[2]["messages"][-2]["role"] == "assistant" and "cut off" in requests[2]["messages"][-1]["content"]
    # the hung request was abandoned after the 2 s timeout and retried
    hang = next(i for i, a in enumerate(actions) if a[1].startswith("hang"))
    assert (
        requests[hang + 1]["role"] == "data_engineer" and 2 <= requests[hang + 1]["time"] - requests[hang]["time"] < 20
    )
    # broken Analyst JSON was retried with the parse error
    analyst = [r for r in requests if r["role"] == "analyst"]
    assert "could not be used" in analyst[1]["messages"][-1]["content"]
    # the repair prompts carried the harness's diagnosis
    engineer = [r["messages"][1]["content"] for r in requests if r["role"] == "model_engineer"]
    assert any("does not parse" in text and "The failure to repair" in text for text in engineer)
    assert any("(2, 1000)" in text and "The failure to repair" in text for text in engineer)


def test_prompts_and_replies_are_saved_with_each_iteration(faulty_run):
    run, _, requests, _ = faulty_run
    first = sorted(p.name for p in (run / "iter_001" / "llm").iterdir())
    # two calls: the cut-off reply (after a retried 429, counted in its attempts) and the re-request
    assert sum(name.endswith("architect.prompt.md") for name in first) == 2, first
    calls = [json.loads(line) for line in (run / "iter_001" / "llm" / "calls.jsonl").read_text().splitlines()]
    architect = [c for c in calls if c["role"] == "architect"]
    assert [c["finish_reason"] for c in architect] == ["length", "stop"] and architect[0]["attempts"] == 2
    replies = sorted((run / "iter_002" / "llm").glob("*analyst.reply.md"))
    assert replies[0].read_text().startswith("I would widen the model")
    # the Analyst's prompt is bounded: far below what the whole run would take
    assert max(sum(len(m["content"]) for m in r["messages"]) for r in requests if r["role"] == "analyst") < 30000


def test_show_reports_tokens_and_cost(faulty_run):
    run, _, _, _ = faulty_run
    shown = json.loads(cli("show", run, "--json").stdout)
    assert shown["tokens"] > 0 and shown["cost_usd"] is not None and shown["cost_usd"] > 0


def test_zero_shot_baseline_is_run_once_and_recorded(digits, tmp_path):
    with ReplayServer([{"role": "zero_shot", "reply_file": str(SCRIPTS / "good_pipeline.md")}]) as server:
        proc = cli(
            "zero-shot",
            digits,
            "--base-url",
            server.base_url,
            "--time-limit",
            5,
            "--workspace",
            tmp_path,
            "--name",
            "zs",
            "--json",
        )
        prompt = server.requests[0]["messages"][1]["content"]
        assert len(server.requests) == 1
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "ok" and out["tokens"] > 0
    assert out["val_accuracy"] == pytest.approx(run_accuracy(Path(out["run"]), 1, "val"), abs=1e-4)
    assert "with 10 classes of 28x28 grayscale images" in prompt and "ConvNeXt" not in prompt
    run = Path(out["run"])
    record = json.loads((run / "journal.jsonl").read_text().splitlines()[-1])
    assert record["brain"] == "zero-shot:llm:gpt-4o-mini" and record["accepted"]
    assert (run / "best" / "model.pt").exists() and (run / "iter_001" / "llm" / "calls.jsonl").exists()
    assert json.loads((run / "run.json").read_text())["mode"] == "zero-shot"


def test_zero_shot_with_an_unusable_reply_is_recorded_as_its_result(digits, tmp_path):
    with ReplayServer([{"reply": "I cannot write code for that."}]) as server:
        proc = cli(
            "zero-shot",
            digits,
            "--base-url",
            server.base_url,
            "--time-limit",
            5,
            "--workspace",
            tmp_path,
            "--name",
            "zs",
            "--json",
        )
        assert len(server.requests) == 1, "the baseline gets one request, no re-request"
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "brain_error" and "data.py, model.py, train.py" in out["error"]["message"]
