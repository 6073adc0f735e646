"""CONTRACT for train.py: the optimisation loop.

Your module starts with ONE block of UPPER_CASE hyperparameters, each with its
unit or meaning in a comment (batch size, optimizer, learning rate, weight
decay, schedule, label smoothing, EMA, ...).

Required: train. The harness owns reading the data, the splits and the
evaluation: train() only fits the model to the training split and returns it.
Validation and test labels are not available here, and nothing you print
about accuracy is used: the harness scores your returned model itself.
"""

import torch


def train(model: torch.nn.Module, data, ctx) -> torch.nn.Module:
    """Train `model` and return the trained model (in any mode; the harness
    calls .eval() before predicting).

    `data` gives the TRAINING split:
      data.info                        same info as build_model receives
      data.num_train                   number of training images
      data.loader(batch_size, shuffle=True, drop_last=True)
                                       an iterable over one epoch of
                                       (images float32 (B, C, H2, W2), targets)
                                       with data.py's train transform (and
                                       mix_batch if defined) applied; targets
                                       are int64 (B,) or float32
                                       (B, num_classes) soft targets. Batched
                                       transforms deliver them on ctx.device,
                                       per-image ones on the CPU: call
                                       .to(ctx.device) on both either way.
      data.eval_loader(batch_size)     the training images with the eval
                                       transform and int64 targets, in order.
    `ctx` gives the run's resources and limits:
      ctx.steps                        should_stop() calls so far (your steps)
      ctx.device                       torch.device to train on
      ctx.seed                         int; the harness has already seeded
                                       python, numpy and torch with it
      ctx.time_budget                  seconds available for training
      ctx.time_left()                  seconds left before the deadline
      ctx.progress()                   fraction of the budget used, 0.0 -> 1.0;
                                       schedule your learning rate on it so the
                                       schedule ends exactly when time does
      ctx.should_stop()                True once time is up: check it at every
                                       batch and return promptly when it is True
      ctx.log(tag, value, step)        record a scalar curve, e.g.
                                       ctx.log("train/loss", loss, step);
                                       use tags train/loss, train/accuracy, lr
      ctx.checkpoint(model)            remember the current weights; if train()
                                       later crashes or runs out of time the
                                       harness predicts with the last checkpoint
      ctx.preflight                    True during the quick preflight on a tiny
                                       subset (should_stop() turns True after a
                                       few batches); no special handling needed
    Cross-entropy accepts both integer and soft targets:
    torch.nn.functional.cross_entropy(logits, targets).
    """
    raise NotImplementedError
