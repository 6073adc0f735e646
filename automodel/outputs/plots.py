"""The report's figures, drawn with matplotlib's Agg backend into PNG bytes.

Each function takes plain numbers (no run directory) and returns PNG bytes, so
the report can inline them (HTML) or write them next to the Markdown file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np

DPI = 110
SHORT = {"architect": "Architect", "data": "Data", "model": "Model", "train": "Training", None: "-"}
COLORS = {"kept": "#2e7d32", "rejected": "#9e9e9e", "failed": "#c62828", "test": "#1565c0", "best": "#2e7d32"}


@dataclass(frozen=True)
class IterationPoint:
    iteration: int
    target: str | None           # architect | data | model | train
    instruction: str
    status: str
    accepted: bool
    val: float | None
    test: float | None


def _pyplot():
    # Imported here so importing the report costs nothing until it draws; Agg
    # needs no display (servers, CI, the sandbox-free parent).
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def short_label(point: IterationPoint, width: int = 32) -> str:
    text = " ".join((point.instruction or "").split())
    if len(text) > width:
        text = text[: width - 1].rstrip() + "…"
    return f"{point.iteration} {SHORT.get(point.target, point.target or '-')}: {text}"


def accuracy_plot(points: Sequence[IterationPoint]) -> bytes:
    """Validation (and test) accuracy per iteration: kept, rejected and failed marked,
    the best-so-far line, each point labelled with its engineer and instruction."""
    plt = _pyplot()
    n = max(len(points), 1)
    fig, ax = plt.subplots(figsize=(min(max(6.0, 3.0 + 0.55 * n), 16.0), 4.2))
    scored = [p.val for p in points if p.val is not None] + [p.test for p in points if p.test is not None]
    lo = min(scored) if scored else 0.0
    hi = max(scored) if scored else 1.0
    pad = max(0.02, (hi - lo) * 0.15)
    floor = max(0.0, lo - 2 * pad)
    ax.set_ylim(floor, min(1.0, hi + 3 * pad) if hi + 3 * pad > floor else 1.0)
    best, best_x, best_y = None, [], []
    for p in points:
        if p.accepted and p.val is not None:
            best = p.val if best is None else max(best, p.val)
        if best is not None:
            best_x.append(p.iteration)
            best_y.append(best)
    if best_x:
        ax.step(
            best_x, best_y, where="post", color=COLORS["best"], alpha=0.35, linewidth=2, label="best kept (validation)"
        )
    kept = [p for p in points if p.accepted and p.val is not None]
    rejected = [p for p in points if not p.accepted and p.val is not None]
    failed = [p for p in points if p.val is None]
    if kept:
        ax.scatter(
            [p.iteration for p in kept],
            [p.val for p in kept],
            s=70,
            color=COLORS["kept"],
            zorder=3,
            label="validation, kept",
        )
    if rejected:
        ax.scatter(
            [p.iteration for p in rejected],
            [p.val for p in rejected],
            s=70,
            facecolors="white",
            edgecolors=COLORS["rejected"],
            linewidths=2,
            zorder=3,
            label="validation, not kept",
        )
    if failed:
        ax.scatter(
            [p.iteration for p in failed],
            [floor + pad * 0.4] * len(failed),
            marker="x",
            s=70,
            color=COLORS["failed"],
            zorder=3,
            label="failed (no score)",
        )
    tested = [p for p in points if p.test is not None]
    if tested:
        # Shifted right a little so a test marker never hides its validation point.
        ax.scatter(
            [p.iteration + 0.15 for p in tested],
            [p.test for p in tested],
            marker="D",
            s=22,
            color=COLORS["test"],
            zorder=2,
            label="test",
        )
    # Labels go on the x axis, one per iteration, coloured like its point: with
    # 20 iterations, annotations next to the points would overlap each other.
    ax.set_xticks([p.iteration for p in points] or [1])
    ax.set_xticklabels(
        [short_label(p) for p in points] or ["1"], rotation=55, ha="right", rotation_mode="anchor", fontsize=7.5
    )
    for tick, p in zip(ax.get_xticklabels(), points):
        tick.set_color(COLORS["kept"] if p.accepted else COLORS["failed"] if p.val is None else "#555555")
    ax.set_xlabel("iteration, engineer: instruction")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.5, (max((p.iteration for p in points), default=1)) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title("Accuracy per iteration")
    return _png(fig)


def confusion_plot(matrix: np.ndarray, classes: Sequence[str]) -> bytes:
    """Confusion matrix of counts (rows: true class, columns: predicted)."""
    plt = _pyplot()
    k = len(classes)
    side = min(3.0 + 0.55 * k, 16.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 25:
        top = matrix.max() if matrix.size else 0
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(matrix[i, j])),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if matrix[i, j] > top / 2 else "black",
                    )
    ax.set_title("Confusion matrix on the test set (best iteration)")
    return _png(fig)


def per_class_plot(classes: Sequence[str], accuracy: Sequence[float], counts: Sequence[int]) -> bytes:
    plt = _pyplot()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(min(4.0 + 0.5 * k, 16.0), 3.8))
    bars = ax.bar(range(k), accuracy, color=COLORS["test"])
    for bar, acc, n in zip(bars, accuracy, counts):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height() + 0.01,
            f"{acc:.2f}\n(n={n})",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xticks(range(k))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("test accuracy")
    ax.set_title("Per-class accuracy on the test set (best iteration)")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def thumbnails_plot(images: Sequence[np.ndarray], titles: Sequence[str], columns: int = 6) -> bytes:
    """A grid of decoded images (uint8 H, W, C) with a title under each."""
    plt = _pyplot()
    n = len(images)
    cols = max(1, min(columns, n))
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.35 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        img = np.asarray(img)
        if img.ndim == 3 and img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=7)
    fig.suptitle("Misclassified test images (true → predicted, confidence)", fontsize=9)
    return _png(fig)


def time_plot(
    iterations: Sequence[int], training: Sequence[float], harness: Sequence[float], other: Sequence[float]
) -> bytes:
    """Stacked seconds per iteration: training, harness overhead, agents and repairs."""
    plt = _pyplot()
    n = max(len(iterations), 1)
    fig, ax = plt.subplots(figsize=(min(4.0 + 0.45 * n, 16.0), 3.6))
    x = np.arange(len(iterations))
    tr, hs, ot = np.asarray(training), np.asarray(harness), np.asarray(other)
    ax.bar(x, tr, color="#1565c0", label="training")
    ax.bar(x, hs, bottom=tr, color="#90caf9", label="sandbox overhead (start, imports, data, preflight, prediction)")
    ax.bar(x, ot, bottom=tr + hs, color="#ffb74d", label="agents, repairs, scoring")
    ax.set_xticks(x)
    ax.set_xticklabels([str(i) for i in iterations])
    ax.set_xlabel("iteration")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.2), ncol=1)
    ax.set_title("Time per iteration")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def tokens_plot(iterations: Sequence[int], tokens: Sequence[int]) -> bytes:
    plt = _pyplot()
    n = max(len(iterations), 1)
    fig, ax = plt.subplots(figsize=(min(4.0 + 0.45 * n, 16.0), 3.0))
    ax.bar(range(len(iterations)), tokens, color="#6a1b9a")
    ax.set_xticks(range(len(iterations)))
    ax.set_xticklabels([str(i) for i in iterations])
    ax.set_xlabel("iteration")
    ax.set_ylabel("LLM tokens")
    ax.set_title("LLM tokens per iteration")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
