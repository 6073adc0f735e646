"""Allocates memory without bound (100 MB chunks, actually touched)."""

CHUNK_MB = 100   # megabytes per allocation

import time

import numpy as np


def train(model, data, ctx):
    hoard = []
    while True:
        hoard.append(np.ones(CHUNK_MB * 2**20, dtype=np.uint8))
        time.sleep(0.05)
