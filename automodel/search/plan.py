"""How the budget search spends a run's time: the plan, decided once from the budget.

The budget is split in two. The end is reserved for the final model: the
chosen pipeline retrained on train+val, for much longer than any exploration
run. Exploration comes first: rounds of K candidates at a low fidelity (a
short training time, rung 0), and when the budget is large enough the best of
them are promoted to a longer run (rung 1) before the final choice. Each
number is explained in `reasons`, which run.json and the report keep.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from automodel.search.loop import FitConfig

# Per-iteration seconds spent outside training (sandbox start, preflight,
# prediction); used only to decide whether another iteration fits the budget.
OVERHEAD_GUESS = 15.0
MIN_TRAIN_SECONDS = 5.0
# Below this, a run says little about how the pipeline does when trained longer.
MIN_FIDELITY = 20.0
ETA = 3                 # a promoted run trains ETA times longer than a rung-0 run
RUNG0_SHARE = 0.6       # of exploration, when a promotion rung fits
DEFAULT_CANDIDATES = 3  # per round, when the executor runs one candidate at a time


@dataclass(frozen=True)
class SearchPlan:
    total: float                 # wall seconds for the whole loop
    final: float                 # training seconds of the final refit (0: no final phase)
    rungs: tuple[float, ...]     # training seconds at each rung, lowest first
    candidates: int              # K: candidates the brain proposes per round
    promote: int                 # rung-0 pipelines promoted to rung 1 (0: a single rung)
    explore_until: float         # elapsed seconds after which no exploration run starts
    rung0_until: float           # elapsed seconds after which no rung-0 run starts
    reasons: tuple[str, ...]
    # Exploration ends after a round that kept none of its candidates, and the final refit gets the time
    # left (only with --time-budget: with --iters x --time-per-iter the final keeps to its planned time).
    stop_when_stale: bool = False
    # --iters 1 with a test split: nothing to choose between, so the one run trains on train+val and is the
    # final model (a "refit" of the Architect's pipeline; the test split measures it).
    one_shot: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rungs"], data["reasons"] = list(self.rungs), list(self.reasons)
        return data


def make_plan(
    iters: int, time_per_iter: float, time_budget: float | None, final_share: float, candidates: int | None,
    parallel: int = 1, has_test: bool = False,
) -> SearchPlan:
    """The plan for a run given its budget options (see `automodel fit --help`); `has_test`: the dataset has a
    test split, which alone can measure a model trained on every labelled image."""
    if iters == 1 and has_test:
        seconds = float(time_per_iter if time_budget is None else max(MIN_TRAIN_SECONDS, time_budget - OVERHEAD_GUESS))
        return SearchPlan(
            total=round(seconds + OVERHEAD_GUESS, 1), final=0.0, rungs=(round(seconds, 1),), candidates=1, promote=0,
            explore_until=round(seconds + OVERHEAD_GUESS, 1), rung0_until=0.0, one_shot=True,
            reasons=(f"one run: --iters 1 leaves nothing to choose between, so no image is held out for choosing: "
                     f"the Architect's pipeline trains once on train+val for {seconds:.0f} s and is the final model, "
                     "measured on the test split (--search greedy keeps the validation split held out)",))
    reasons = []
    if time_budget is not None:
        total = float(time_budget)
        reasons.append(f"budget: --time-budget {total:.0f} s of wall time")
    else:
        total = iters * (time_per_iter + OVERHEAD_GUESS)
        reasons.append(f"budget: {iters} iterations x ({time_per_iter:.0f} s training + ~{OVERHEAD_GUESS:.0f} s "
                       f"overhead) = {total:.0f} s, as the greedy search would take")
    final_wall = total * final_share
    final = final_wall - OVERHEAD_GUESS
    if final < MIN_TRAIN_SECONDS or iters < 2:
        final, final_wall = 0.0, 0.0
        reasons.append("final refit: none (the budget or --iters leaves no room for one)")
    else:
        reasons.append(f"final refit: {final_share:.0%} of the budget, {final:.0f} s of training on train+val, "
                       "because one long run on all labelled images is worth more than several short ones")
    explore = total - final_wall
    k = candidates or (parallel if parallel > 1 else DEFAULT_CANDIDATES)
    reasons.append(f"{k} candidates per round" + (
        f", {parallel} at once, each in a 1/{parallel} share of the machine (--parallel {parallel})" if parallel > 1
        else "" if candidates else " (default: one runs at a time here)"))

    runs = max(1, min(1 + 2 * k, iters - (1 if final else 0)))
    waves = 1 + math.ceil((runs - 1) / parallel)  # runs that end one after another (K at once with --parallel)

    def rung0_seconds(share: float) -> float:
        # Aim for two rounds after the first pipeline (fewer when --iters allows fewer runs), never above
        # --time-per-iter nor below MIN_FIDELITY (unless --time-per-iter itself is lower).
        aim = share * explore / waves - OVERHEAD_GUESS
        return max(MIN_TRAIN_SECONDS, min(time_per_iter, max(min(MIN_FIDELITY, time_per_iter), aim)))

    t0 = rung0_seconds(RUNG0_SHARE)
    t1 = ETA * t0
    promote = min(k, parallel * math.floor((1 - RUNG0_SHARE) * explore / (t1 + OVERHEAD_GUESS)))
    if promote >= 2:
        rungs, rung0_until = (t0, t1), RUNG0_SHARE * explore
        reasons.append(f"rung 0: {t0:.0f} s per candidate; rung 1: the best {promote} promoted to {t1:.0f} s "
                       f"(x{ETA}), compared only with each other")
    else:
        promote = 0
        t0 = rung0_seconds(1.0)
        rungs, rung0_until = (t0,), explore
        reasons.append(f"rung 0: {t0:.0f} s per candidate; no promotion rung (two runs of {ETA}x that length "
                       f"do not fit in the {explore:.0f} s of exploration)")
    stop_when_stale = time_budget is not None and final > 0
    if stop_when_stale:
        reasons.append("exploration ends early after a round that keeps none of its candidates, and the final "
                       "refit gets the time left: when edits at a low fidelity stop paying, a longer final run "
                       "still does")
    return SearchPlan(total=round(total, 1), final=round(final, 1), rungs=tuple(round(t, 1) for t in rungs),
                      candidates=k, promote=promote, explore_until=round(explore, 1),
                      rung0_until=round(rung0_until, 1), reasons=tuple(reasons), stop_when_stale=stop_when_stale)


def config_plan(cfg: "FitConfig", has_test: bool) -> SearchPlan:
    """The plan of a run's options: the one the budget search follows and the Architect's brief describes."""
    return make_plan(cfg.iters, cfg.time_per_iter, cfg.time_budget, cfg.final_share, cfg.candidates, cfg.parallel,
                     has_test=has_test)


@dataclass(frozen=True)
class Placement:
    """Where one run sits in the budget search's tree (recorded in its journal record)."""

    kind: str                    # candidate | promotion | refit
    rung: int | None             # candidates compare only with runs of the same rung
    fidelity: float              # training seconds it is given
    round: int | None = None     # exploration round of a candidate
