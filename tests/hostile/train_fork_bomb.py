"""A bounded fork bomb: keeps forking sleeping children until HOSTILE_CONFIG["n"]
(10,000 by default) exist or fork fails. The process limit must stop it and
name the reason; none of its processes may be left."""

import os
import time


def train(model, data, ctx):
    if ctx.preflight:
        return model
    n = int(globals().get("HOSTILE_CONFIG", {}).get("n", 10_000))
    for _ in range(n):
        if os.fork() == 0:
            time.sleep(300)
            os._exit(0)
    time.sleep(300)
    return model
