"""A finished run for a person: report.html, report.md, MODEL_CARD.md, TensorBoard
logs and (for a dataset with unlabelled test images) submission.csv.

    paths = write_outputs(run_path)      # called at the end of every `fit`

Everything is computed here, in the trusted parent, from the run directory and
the dataset: the test labels come from the dataset through the split in
run.json (the run directory never holds them), the predictions are the best
iteration's probs_*.npy read with the same checks as during scoring.
report.html is self-contained (plots inlined as base64 PNG); report.md links
the same plots in report_files/.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automodel.core import MODULES, JournalRecord
from automodel.errors import AutomodelError, RunError
from automodel.files import atomic_write_text
from automodel.outputs import plots, tb
from automodel.outputs.bestmodel import HeldOut, bundle_images, read_json_or, run_info
from automodel.outputs.render import environment
from automodel.sandbox import scoring
from automodel.search.loop import final_view, run_usage
from automodel.search.tree import final_line, tree_lines
from automodel.search.workspace import BEST, RunDir, compute_figures, iter_name

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
FILES_DIR = "report_files"
SUBMISSION = "submission.csv"
MAX_MISCLASSIFIED = 12
log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """The best iteration's predictions on the test set, scored here."""

    classes: list[str]
    labels: np.ndarray               # int64 (N,)
    probs: np.ndarray                # float (N, K)
    relpaths: list[str]

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean())

    def confusion(self) -> np.ndarray:
        k = len(self.classes)
        matrix = np.zeros((k, k), dtype=np.int64)
        np.add.at(matrix, (self.labels, self.predicted), 1)
        return matrix

    def per_class(self) -> list[dict[str, Any]]:
        matrix = self.confusion()
        rows = []
        for i, name in enumerate(self.classes):
            n = int(matrix[i].sum())
            off = matrix[i].copy()
            off[i] = 0
            worst = int(off.argmax()) if off.any() else None
            rows.append({"class": name, "n": n, "correct": int(matrix[i, i]),
                         "accuracy": float(matrix[i, i] / n) if n else None,
                         "confused_with": self.classes[worst] if worst is not None else None,
                         "confused_count": int(off[worst]) if worst is not None else 0})
        return rows

    def misclassified(self, limit: int = MAX_MISCLASSIFIED) -> list[int]:
        """Indices of wrong predictions, the most confident mistakes first."""
        wrong = np.flatnonzero(self.predicted != self.labels)
        conf = self.probs[wrong, self.predicted[wrong]]
        return [int(i) for i in wrong[np.argsort(-conf, kind="stable")][:limit]]


@dataclass
class ReportData:
    run: Path
    info: dict[str, Any]                       # run.json
    records: list[JournalRecord]               # final journal records
    best: JournalRecord | None
    points: list[plots.IterationPoint]
    timings: list[dict[str, Any]]              # per iteration: training, harness, other seconds
    summary: dict[str, Any]                    # best/summary.json
    best_metrics: dict[str, Any]               # best/metrics.json
    data_info: dict[str, Any]                  # data/info.json
    evaluation: Evaluation | None = None
    held: HeldOut | None = None
    notes: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None        # the budget search's final model (show --json "final")
    tree: list[str] = field(default_factory=list)  # the budget search's tree of candidates, as text

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def profile(self) -> dict[str, Any]:
        return (self.info.get("dataset") or {}).get("profile") or {}

    @property
    def tokens(self) -> int:
        return run_usage(self.records)[0]

    @property
    def cost(self) -> float | None:
        """None when no call was priced, or when one call's price is unknown (as in `show`)."""
        return run_usage(self.records)[1]

    @property
    def failed_share(self) -> float | None:
        return sum(not r.ok for r in self.records) / len(self.records) if self.records else None


def collect(run_path: Path) -> ReportData:
    """Everything the report and the model card show, computed from the run directory."""
    run = RunDir.open(Path(run_path).resolve())
    records = run.iterations()
    if not records:
        raise RunError(f"{run.path} has no finished iteration yet, so there is nothing to report. Run "
                       f"`automodel resume {run.path}` to train at least one iteration, then try again.")
    best = run.best_record()
    data = ReportData(
        run=run.path, info=run.info, records=records, best=best,
        points=[plots.IterationPoint(r.iteration, r.target, r.instruction or "", r.status or "?", r.accepted,
                                     r.val_accuracy, r.test_accuracy) for r in records],
        timings=[_timing(run.path, r) for r in records],
        summary=read_json_or(run.path / BEST / "summary.json", {}) if best else {},
        best_metrics=read_json_or(run.path / BEST / "metrics.json", {}) if best else {},
        data_info={},
        final=final_view(run.path),
    )
    data.tree = tree_lines([{**r.to_json(), "contended": bool(r.contended)} for r in records], data.final)
    try:
        data.held = HeldOut.load(run.path)
    except AutomodelError as err:
        data.notes.append(f"The dataset could not be reopened, so test-set details are missing: {err}")
    try:
        data.data_info = run_info(run.path)  # data/info.json, else rebuilt from the dataset
    except AutomodelError:
        pass
    if best is not None and data.held is not None:
        data.evaluation = _evaluate(data, best)
    return data


def _timing(run_path: Path, record: JournalRecord) -> dict[str, Any]:
    metrics = read_json_or(run_path / iter_name(record.iteration) / "metrics.json", {})
    t = metrics.get("timings") or {}
    compute = compute_figures(metrics)
    training = float(t.get("training") or 0.0)
    total = float(t.get("total") or 0.0)
    harness = max(0.0, total - training)
    other = max(0.0, float(record.seconds or 0.0) - total)
    return {"iteration": record.iteration, "training": round(training, 2), "harness": round(harness, 2),
            "other": round(other, 2), "total": round(float(record.seconds or total), 2),
            "sandbox": (metrics.get("sandbox") or {}).get("kind"),
            **{k: compute.get(k) for k in ("epochs", "images_per_second", "cpu_utilisation", "steal_share")}}


def model_probs(data: ReportData, name: str, count: int, classes: int) -> np.ndarray:
    """The run's model's probabilities on one prediction set: the final model's (an ensemble's averaged
    with its weights) when the budget search made one, else the best iteration's. ScoringError if unusable."""
    if data.final is not None:
        parts = list(zip(data.final["refits"] or data.final["members"], data.final["weights"]))
    else:
        parts = [(data.best.iteration, 1)]
    total = sum(scoring.load_probs(data.run / iter_name(n) / f"probs_{name}.npy", count, classes) * w
                for n, w in parts)
    return total / sum(w for _, w in parts)


def _evaluate(data: ReportData, best: JournalRecord) -> Evaluation | None:
    held = data.held
    labels = held.labels("test")
    if not len(labels):
        data.notes.append("This dataset has no labelled test images, so there is no confusion matrix.")
        return None
    classes = list(held.dataset.classes)
    try:
        probs = model_probs(data, "test", len(labels), len(classes))
    except scoring.ScoringError as err:
        data.notes.append(f"The {'final model' if data.final else 'best iteration'}'s test predictions cannot be "
                          f"used: {err}")
        return None
    ev = Evaluation(classes, labels, probs, held.relpaths("test"))
    recorded = data.final["test_accuracy"] if data.final else best.test_accuracy
    if recorded is not None and abs(ev.accuracy - recorded) > 1e-4:
        data.notes.append(
            f"The test accuracy recomputed here ({ev.accuracy:.4f}) differs from the journal's ({recorded:.4f}); "
            f"the dataset or the prediction files changed after the run."
        )
    return ev


# ----------------------------------------------------------------- figures


def figures(data: ReportData) -> dict[str, bytes]:
    """name -> PNG bytes, in the order they appear in the report."""
    figs = {"accuracy": plots.accuracy_plot(data.points)}
    ev = data.evaluation
    if ev is not None:
        figs["confusion"] = plots.confusion_plot(ev.confusion(), ev.classes)
        rows = ev.per_class()
        figs["per_class"] = plots.per_class_plot(
            ev.classes, [r["accuracy"] or 0.0 for r in rows], [r["n"] for r in rows]
        )
        wrong = ev.misclassified()
        images = _test_images(data, wrong)
        if wrong and images is not None:
            titles = [
                f"{ev.classes[ev.labels[i]]} → {ev.classes[ev.predicted[i]]}\n({ev.probs[i, ev.predicted[i]]:.2f})"
                for i in wrong
            ]
            figs["misclassified"] = plots.thumbnails_plot(images, titles)
    t = data.timings
    figs["time"] = plots.time_plot(
        [r["iteration"] for r in t], [r["training"] for r in t], [r["harness"] for r in t], [r["other"] for r in t]
    )
    if data.tokens:
        figs["tokens"] = plots.tokens_plot([r.iteration for r in data.records], [r.tokens for r in data.records])
    return figs


def _test_images(data: ReportData, indices: list[int]) -> list[np.ndarray] | None:
    """Decoded test images as the model saw them: the run's bundle, else the decode cache."""
    if not indices:
        return []
    arr = bundle_images(data.run, "test")
    if arr is not None and len(arr) == len(data.evaluation.labels):
        return [np.asarray(arr[i]) for i in indices]
    try:
        decoded = data.held.dataset.decode().array
    except AutomodelError as err:
        data.notes.append(f"Misclassified images cannot be shown: {err}")
        return None
    test = data.held.indices("test")
    return [np.asarray(decoded[test[i]]) for i in indices]


# ----------------------------------------------------------------- rendering


def context(data: ReportData) -> dict[str, Any]:
    """The variables both report templates (and the model card) are rendered with."""
    info = data.info
    ds = info.get("dataset") or {}
    ev = data.evaluation
    return {
        "name": data.name,
        "run": str(data.run),
        "created": info.get("created", ""),
        "dataset": {
            "path": ds.get("path", ""),
            "layout": ds.get("layout", ""),
            "classes": ds.get("classes") or [],
            "description": (ds.get("description") or "").strip(),
        },
        "profile": data.profile,
        "config": info.get("config") or {},
        "brain": info.get("brain") or {},
        "versions": info.get("versions") or {},
        "data_info": data.data_info,
        "records": [r.to_json() for r in data.records],
        "best": data.best.to_json() if data.best else None,
        "best_metrics": data.best_metrics,
        "summary": _summary_rows(data.summary),
        "timings": data.timings,
        "tokens": data.tokens,
        "cost": data.cost,
        "failed_share": data.failed_share,
        "evaluation": None
        if ev is None
        else {
            "accuracy": ev.accuracy,
            "n": int(len(ev.labels)),
            "per_class": ev.per_class(),
            "misclassified": int((ev.predicted != ev.labels).sum()),
        },
        "notes": data.notes,
        "engineer": plots.SHORT,
        "final": data.final,
        "final_text": final_line(data.final) if data.final else None,
        "tree": data.tree,
        "search_plan": info.get("search_plan"),
    }


def _summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per module of the best pipeline: what it is and its hyperparameters with units."""
    out = []
    for module in MODULES:
        part = summary.get(module) or {}
        units = part.get("units") or {}
        hparams = [{"name": k, "value": v, "unit": units.get(k, "")} for k, v in (part.get("hparams") or {}).items()]
        out.append(
            {
                "module": module,
                "about": part.get("about") or "",
                "hparams": hparams,
                "defines": part.get("defines") or [],
            }
        )
    return out


def write_outputs(run_path: Path) -> list[Path]:
    """Write report.html, report.md (+ report_files/), MODEL_CARD.md, tb/ and, when the
    dataset has unlabelled test images, submission.csv; return the paths written."""
    from automodel.outputs.model_card import write_model_card

    data = collect(Path(run_path))
    run = data.run
    figs = figures(data)
    ctx = context(data)
    env = environment()

    files = run / FILES_DIR
    files.mkdir(exist_ok=True)
    for stale in files.glob("*.png"):
        if stale.stem not in figs:
            stale.unlink()
    for name, png in figs.items():
        (files / f"{name}.png").write_bytes(png)
    inline = {name: "data:image/png;base64," + base64.b64encode(png).decode("ascii") for name, png in figs.items()}
    linked = {name: f"{FILES_DIR}/{name}.png" for name in figs}

    submission = write_submission(data)  # before rendering: it may add a note
    written = []
    html = env.get_template("report.html.j2").render(**ctx, images=inline)
    atomic_write_text(run / REPORT_HTML, html)
    written.append(run / REPORT_HTML)
    md = env.get_template("report.md.j2").render(**ctx, images=linked)
    atomic_write_text(run / REPORT_MD, md)
    written.append(run / REPORT_MD)
    written.append(write_model_card(data, ctx))
    if submission is not None:
        written.append(submission)
    try:
        tb.log_all(run)
        written.append(run / tb.TB_DIR)
    except Exception as err:  # noqa: BLE001 - TensorBoard is optional; the report is already written
        log.warning("could not write the TensorBoard logs of %s (%s: %s)", run, type(err).__name__, err)
    return written


def write_submission(data: ReportData) -> Path | None:
    """submission.csv (filename,label) for the dataset's unlabelled test images, from the best iteration."""
    if data.best is None or data.held is None or not data.held.indices("predict"):
        return None
    relpaths = data.held.relpaths("predict")
    classes = list(data.held.dataset.classes)
    try:
        probs = model_probs(data, "predict", len(relpaths), len(classes))
    except scoring.ScoringError as err:
        data.notes.append(
            f"No submission.csv: the best iteration's predictions for the unlabelled images cannot be used ({err})."
        )
        return None
    names = _strip_common_folder(relpaths)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["filename", "label"])
    for name, k in zip(names, probs.argmax(axis=1)):
        writer.writerow([name, classes[int(k)]])
    out = data.run / SUBMISSION
    atomic_write_text(out, buf.getvalue())
    return out


def _strip_common_folder(relpaths: list[str]) -> list[str]:
    """'test/0001.png' -> '0001.png' when every unlabelled image is in the same top folder."""
    heads = {p.split("/", 1)[0] for p in relpaths}
    if len(heads) == 1 and all("/" in p for p in relpaths):
        return [p.split("/", 1)[1] for p in relpaths]
    return list(relpaths)
