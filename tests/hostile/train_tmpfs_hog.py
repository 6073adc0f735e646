"""Stores HOSTILE_CONFIG["gb"] GB (2 by default) in each of /dev/shm, /tmp and /,
the RAM-backed file systems of the sandbox, then sleeps. No process's own memory
figure shows it; the parent must count it against the memory limit."""

import json
import os
import time

CHUNK = 64 * 2**20


def _fill(folder, total):
    written = 0
    try:
        with open(os.path.join(folder, "hog.bin"), "wb") as fh:
            block = os.urandom(CHUNK)
            while written < total:
                fh.write(block)
                fh.flush()
                written += CHUNK
    except OSError as err:
        return f"{written} bytes, then {err.strerror}"
    return f"{written} bytes"


def train(model, data, ctx):
    if ctx.preflight:
        return model
    total = int(float(globals().get("HOSTILE_CONFIG", {}).get("gb", 2)) * 2**30)
    done = {folder: _fill(folder, total) for folder in ("/dev/shm", os.environ.get("TMPDIR", "/tmp"), "/")}
    print("HOSTILE_REPORT", json.dumps(done), flush=True)
    time.sleep(120)
    return model
