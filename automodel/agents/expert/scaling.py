"""The expert resizes the chosen pipeline for the final refit.

Exploration runs are short, so the Architect sized the network for a short
budget. The final refit trains several times longer on train+val, and a
network that still sees the data 25-30 times in that time learns more than
the small one trained for hundreds of epochs, as a practitioner who picks the
width from the measured speed would do. Only WIDTH of the built-in small CNNs
changes, by the same rule the Architect used (recipes.pick_width).
"""

from __future__ import annotations

import dataclasses

from automodel.agents.expert.recipes import CPU_WIDTHS, ModelRecipe, pick_width
from automodel.agents.expert.task import TaskFacts
from automodel.agents.final_size import final_epochs
from automodel.core import Pipeline
from automodel.hparams import HParamError, read_hparams, set_hparams

SMALL_CNNS = ("convnet", "resnet")


def scale_for(pipeline: Pipeline, facts: TaskFacts, seconds: float, num_train: int) -> tuple[Pipeline, str] | None:
    """The pipeline with a wider WIDTH when the final budget affords one, and a note; None to keep it."""
    model_hp, data_hp, train_hp = (read_hparams(pipeline.module(m)) for m in ("model", "data", "train"))
    width, arch = model_hp.get("WIDTH"), model_hp.get("ARCH")
    size, batch = data_hp.get("INPUT_SIZE"), train_hp.get("BATCH_SIZE")
    if facts.device != "cpu" or arch not in SMALL_CNNS or not all(isinstance(v, int) for v in (width, size, batch)):
        return None
    model = ModelRecipe(arch=arch, width=width, stages=int(model_hp.get("STAGES") or 3),
                        depth=int(model_hp.get("DEPTH") or 1))
    longer = dataclasses.replace(facts, time_per_iter=seconds, num_train=max(1, num_train))
    wider = pick_width(longer, model, size, batch, min_epochs=final_epochs(num_train))
    if wider <= width or width not in CPU_WIDTHS:
        return None  # a width the expert did not choose was set on purpose by an edit: keep it
    try:
        source = set_hparams(pipeline.model, {"WIDTH": wider})
    except HParamError:
        return None
    note = (f"WIDTH {width} -> {wider}, so the {num_train} images are still seen ~{final_epochs(num_train)}+ times "
            f"in {seconds:.0f} s")
    return pipeline.with_module("model", source), note
