"""Reference train.py: time-budgeted SGD with a warm-up/cosine schedule on ctx.progress().

The learning rate follows the fraction of the time budget used, so the schedule
ends exactly when time does, whatever the machine's speed.
"""

BATCH_SIZE = 64          # images per step
OPTIMIZER = "sgd"        # "sgd" (Nesterov momentum) or "adamw"
LR = 0.05                # peak learning rate (SGD); AdamW uses LR / 25
MOMENTUM = 0.9           # SGD momentum
WEIGHT_DECAY = 5e-4      # L2 penalty on conv/linear weights (not on norms or biases)
WARMUP = 0.05            # fraction of the time budget spent warming the LR up linearly
FINAL_LR_FRACTION = 0.01 # LR at the end of the cosine decay, as a fraction of the peak
LABEL_SMOOTHING = 0.1    # cross-entropy label smoothing
CHANNELS_LAST = True     # NHWC memory layout: 1.3-1.8x faster convolutions on CPU
LOG_EVERY = 10           # steps between logged curve points
CHECKPOINT_EVERY = 10.0  # seconds between checkpoints (used if training is interrupted)

import math
import time

import torch
import torch.nn.functional as F


def _lr_factor(progress: float) -> float:
    if progress < WARMUP:
        return max(progress / WARMUP, 0.02)
    t = (progress - WARMUP) / max(1e-9, 1.0 - WARMUP)
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _optimizer(model):
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    if OPTIMIZER == "adamw":
        return torch.optim.AdamW(groups, lr=LR / 25)
    return torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM, nesterov=True)


def train(model, data, ctx):
    memory_format = torch.channels_last if CHANNELS_LAST else torch.contiguous_format
    model = model.to(ctx.device, memory_format=memory_format)
    opt = _optimizer(model)
    peak = [g["lr"] for g in opt.param_groups]
    step = 0
    last_ckpt = time.monotonic()
    model.train()
    while not ctx.should_stop():
        for images, targets in data.loader(BATCH_SIZE, shuffle=True, drop_last=True):
            if ctx.should_stop():
                break
            factor = _lr_factor(ctx.progress())
            for group, lr in zip(opt.param_groups, peak):
                group["lr"] = lr * factor
            images = images.to(ctx.device, non_blocking=True).contiguous(memory_format=memory_format)
            targets = targets.to(ctx.device, non_blocking=True)
            logits = model(images)
            loss = F.cross_entropy(logits, targets, label_smoothing=LABEL_SMOOTHING)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % LOG_EVERY == 0:
                ctx.log("train/loss", loss.item(), step)
                if targets.ndim == 1:
                    ctx.log("train/accuracy", (logits.argmax(1) == targets).float().mean().item(), step)
                ctx.log("lr", opt.param_groups[0]["lr"], step)
            if time.monotonic() - last_ckpt > CHECKPOINT_EVERY:
                ctx.checkpoint(model)
                last_ckpt = time.monotonic()
    return model
