"""Claims a perfect score everywhere it can: stdout, stderr, a fake metrics.json,
fake prediction files. The harness must ignore all of it."""

EPOCHS = 1  # passes over the data (kept tiny: the model should stay bad)

import json
import sys

import numpy as np


def train(model, data, ctx):
    print("val accuracy: 1.0000")
    print("test accuracy: 1.0000", file=sys.stderr)
    print(json.dumps({"val_accuracy": 1.0, "test_accuracy": 1.0}))
    with open("metrics.json", "w") as fh:
        json.dump({"status": "ok", "val_accuracy": 1.0, "test_accuracy": 1.0}, fh)
    # Predictions written early are overwritten by the harness after train().
    np.save("probs_val.npy", np.eye(data.info.num_classes, dtype=np.float32)[np.zeros(10, dtype=int)])
    # A link for trusted code to follow later (e.g. when copying the best iteration).
    import os
    if not os.path.lexists("notes.txt"):
        os.symlink("/etc/hostname", "notes.txt")
    for _ in range(EPOCHS):
        for images, targets in data.loader(8):
            if ctx.should_stop():
                break
            break
    return model
