"""Sends itself SIGKILL in the middle of training, with little memory in use.
It must be reported as killed by SIGKILL, not as out of memory."""

import os
import signal


def train(model, data, ctx):
    if ctx.preflight:
        return model
    os.kill(os.getpid(), signal.SIGKILL)
    return model
