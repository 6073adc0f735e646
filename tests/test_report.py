"""report.html / report.md / MODEL_CARD.md / submission.csv of real runs.

The report of the shared run is written by `automodel fit` itself (session.finish);
the numbers in it are checked against the journal and against scores computed
here from the prediction files and the dataset's labels.
"""

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from needs import missing
from PIL import Image

from automodel.core import JournalRecord
from automodel.intake import Split, load_dataset
from automodel.outputs import report
from automodel.search.workspace import RunDir, read_final

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "automodel.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_report_numbers_match_the_journal_and_the_labels(finished_run):
    run = RunDir(finished_run)
    info = run.info
    # The run's model is its final refit (the budget search): the report evaluates that one.
    final = read_final(finished_run)
    assert final["kind"] == "refit"
    model = next(r for r in run.iterations() if r.iteration == final["members"][0]["refit"]).to_json()
    assert model["kind"] == "refit" and model["val_accuracy"] is None
    # Independent scoring: the dataset's test labels against the final model's predictions.
    ds = load_dataset(info["dataset"]["path"])
    split = Split.from_json(info["split"], ds)
    labels = np.array([ds.items[i].label for i in split.test])
    probs = np.load(finished_run / f"iter_{model['iteration']:03d}" / "probs_test.npy")
    accuracy = float((probs.argmax(1) == labels).mean())
    assert accuracy == pytest.approx(model["test_accuracy"], abs=1e-4) == final["test_accuracy"]

    data = report.collect(finished_run)
    ev = data.evaluation
    assert ev.accuracy == pytest.approx(accuracy, abs=1e-12)
    matrix = ev.confusion()
    assert matrix.sum() == len(labels) and np.trace(matrix) == int((probs.argmax(1) == labels).sum())
    assert [r["n"] for r in ev.per_class()] == np.bincount(labels, minlength=len(ds.classes)).tolist()
    assert data.notes == []

    md = (finished_run / "report.md").read_text()
    assert f"The final model: {len(labels)} test images, accuracy {100 * accuracy:.2f}%" in md
    assert f"**Final model: iteration {final['members'][0]['iteration']} retrained on train+val, test accuracy " \
           f"{final['test_accuracy']:.4f}" in md
    assert "## Search tree" in md and re.search(rf"- {model['iteration']} \[refit, [^\n]*\(final model\)", md)
    for r in (record.to_json() for record in run.iterations()):
        val = "-" if r["val_accuracy"] is None else f"{r['val_accuracy']:.4f}"
        assert re.search(
            rf"^\| {r['iteration']} \| .* \| {r['status']} \| {'yes' if r['accepted'] else 'no'} \| "
            rf"{val} \| {r['test_accuracy']:.4f} \|",
            md,
            re.M,
        ), f"row of iteration {r['iteration']}"
    for r in run.iterations():  # the time table gives what each training consumed, from metrics.json
        c = json.loads((finished_run / f"iter_{r.iteration:03d}" / "metrics.json").read_text()).get("compute") or {}
        if r.ok:
            row = (rf"^\| {r.iteration} \| .* \| {c['epochs']:.1f} \| {c['images_per_second']:.0f} \| "
                   rf"{100 * c['cpu_utilisation']:.0f}% \| ([0-9]+%|-) \|$")
            assert re.search(row, md, re.M), f"time row {r.iteration}"
    for name in ("accuracy", "confusion", "per_class", "time"):
        assert f"](report_files/{name}.png)" in md
        with Image.open(finished_run / "report_files" / f"{name}.png") as img:
            assert img.width > 200 and img.height > 200
    assert "{{" not in md and "{%" not in md

    card = (finished_run / "MODEL_CARD.md").read_text()
    assert f"| test (never seen by the agents) | {100 * final['test_accuracy']:.2f}% |" in card
    assert "retrained on train+val" in card
    assert "Wilson score interval" in card and "## Limits" in card
    assert not (finished_run / "submission.csv").exists(), "the dataset has no unlabelled images"


def test_report_html_is_self_contained(finished_run):
    html = (finished_run / "report.html").read_text()
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(srcs) >= 4
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = base64.b64decode(src.split(",", 1)[1])
        with Image.open(io.BytesIO(png)) as img:
            img.verify()
    assert not re.search(r'(src|href)="(https?:|file:|/)', html), "report.html must not load anything from outside"


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        missing("chromium", "chromium is not installed (apt-get install -y chromium)")
    return exe


def run_chromium(exe, *args):
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
        )


def test_report_renders_in_headless_chromium(finished_run, chromium, tmp_path):
    # Every plot decodes in a real browser: naturalWidth > 0 for each <img>.
    page = tmp_path / "check.html"
    probe = (
        '<script>window.addEventListener("load", function () {'
        'var out = []; document.querySelectorAll("img").forEach(function (i) {'
        "out.push({id: i.id, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}); });"
        'var pre = document.createElement("pre"); pre.id = "automodel-check";'
        "pre.textContent = JSON.stringify(out); document.body.appendChild(pre); });</script>"
    )
    page.write_text((finished_run / "report.html").read_text().replace("</body>", probe + "</body>"))
    proc = run_chromium(chromium, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    found = re.search(r'<pre id="automodel-check">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"chromium did not render the page: {proc.stderr[-2000:]}"
    images = json.loads(found.group(1).replace("&quot;", '"'))
    ids = {i["id"] for i in images}
    assert {"plot-accuracy", "plot-confusion", "plot-per-class", "plot-time"} <= ids
    assert all(i["complete"] and i["w"] > 100 and i["h"] > 100 for i in images), images

    # And the page as a person sees it: a screenshot with plots on it, not a blank page.
    shot = tmp_path / "report.png"
    proc = run_chromium(
        chromium, "--window-size=1280,2400", f"--screenshot={shot}", (finished_run / "report.html").as_uri()
    )
    assert shot.is_file(), proc.stderr[-2000:]
    if os.environ.get("AUTOMODEL_REPORT_SCREENSHOT"):  # keep a copy to look at
        shutil.copyfile(shot, os.environ["AUTOMODEL_REPORT_SCREENSHOT"])
    with Image.open(shot) as img:
        rgb = np.asarray(img.convert("RGB")).astype(int)
    assert rgb.shape[:2] == (2400, 1280)
    not_white = (rgb.min(axis=2) < 235).mean()
    saturated = ((rgb.max(axis=2) - rgb.min(axis=2)) > 60).mean()  # coloured plot marks, bars, the confusion matrix
    assert not_white > 0.05, f"screenshot is nearly blank ({not_white:.3f} non-white)"
    assert saturated > 0.01, f"no coloured plot content in the screenshot ({saturated:.4f})"


def test_report_shows_failures_and_llm_usage(finished_run, tmp_path):
    """A run with a failed iteration and LLM tokens (as an LLM run records them) still reports."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    RunDir(run).append(JournalRecord.from_json(
        {
            "iteration": 3,
            "final": True,
            "attempt": 3,
            "parent": 1,
            "target": "model",
            "instruction": "use a wider network",
            "reason": "underfitting",
            "status": "failed",
            "accepted": False,
            "val_accuracy": None,
            "test_accuracy": None,
            "train_accuracy": None,
            "seconds": 4.0,
            "repairs": 2,
            "tokens": 1500,
            "cost_usd": 0.0021,
            "error": {"phase": "train", "module": "model", "type": "RuntimeError", "message": "shape mismatch"},
        }
    ))
    paths = report.write_outputs(run)
    assert [p.name for p in paths] == ["report.html", "report.md", "MODEL_CARD.md", "tb"]
    md = (run / "report.md").read_text()
    assert "## LLM usage" in md and "| all | 1500 | 0.0021 |" in md
    assert re.search(
        r"^\| 3 \| Model \| use a wider network \(RuntimeError: shape mismatch\) \| failed \| no \| - \| - \|", md, re.M
    )
    assert (run / "report_files" / "tokens.png").is_file()
    assert "1500" in (run / "report.html").read_text()


def test_report_command_errors_name_the_fix(tmp_path):
    proc = cli("report", tmp_path)
    assert proc.returncode == 5 and "run.json" in proc.stderr and "Traceback" not in proc.stderr
    RunDir.create(tmp_path / "ws", "empty", {"dataset": {}})
    proc = cli("report", tmp_path / "ws" / "empty")
    assert proc.returncode == 5 and "no finished iteration" in proc.stderr and "automodel resume" in proc.stderr


@pytest.fixture(scope="module")
def kaggle_style(materialize, tmp_path_factory):
    """train/<class>/ plus loose, unlabelled images in test/ (a Kaggle competition's layout)."""
    root = tmp_path_factory.mktemp("kaggle")
    shutil.copytree(materialize("fashion-mnist", "imagefolder", 8, split="train") / "train", root / "train")
    labelled = materialize("fashion-mnist", "imagefolder", 2, split="test") / "test"
    (root / "test").mkdir()
    for k, path in enumerate(sorted(labelled.rglob("*.png"))):
        shutil.copyfile(path, root / "test" / f"img_{k:03d}.png")
    return root


def test_submission_csv_for_unlabelled_test_images(kaggle_style, tmp_path):
    proc = cli(
        "fit",
        kaggle_style,
        "--agent",
        "expert",
        "--iters",
        1,
        "--time-per-iter",
        5,
        "--workspace",
        tmp_path,
        "--name",
        "k",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "k"
    assert f"wrote {run / 'submission.csv'}" in proc.stderr.replace("automodel: ", "")
    rows = list(csv.reader((run / "submission.csv").open()))
    assert rows[0] == ["filename", "label"]
    names = sorted(p.name for p in (kaggle_style / "test").iterdir())
    assert [r[0] for r in rows[1:]] == names
    classes = json.loads((run / "run.json").read_text())["dataset"]["classes"]
    probs = np.load(run / "iter_001" / "probs_predict.npy")
    assert [r[1] for r in rows[1:]] == [classes[k] for k in probs.argmax(1)]
