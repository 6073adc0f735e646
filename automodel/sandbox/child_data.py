"""What generated code is handed inside the sandbox: TrainData, Context, and batched prediction.

Two data paths, chosen by what data.py defines (interfaces/data.py):
- batched: the training images stay one uint8 tensor (N, H, W, C), on the
  training device; a batch is gathered by index and data.py's batch
  transform turns it into the float batch, with tensor operations. No Python
  runs per image, so the network's threads keep the cores busy.
- per image: data.py's transform runs on each numpy image, in a DataLoader.
Both count what they serve (images, batches) for the compute record.

Stand-alone like child.py (no automodel imports), mounted beside it in the sandbox.
"""

from __future__ import annotations

import time


class Transforms:
    """data.py's transforms: `batched` ones map uint8 (B, C, H, W) tensors, the others one (H, W, C) array."""

    def __init__(self, train, eval, batched: bool):
        self.train, self.eval, self.batched = train, eval, batched

    def eval_batch(self, torch, np, images, device):
        """The float batch the model sees for a chunk of decoded images (numpy uint8 (B, H, W, C))."""
        if self.batched:
            x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)
            return self.eval(x)
        return torch.stack([self.eval(img) for img in images]).to(device)


class TrainData:
    """The training split as train.py sees it (see interfaces/train.py)."""

    def __init__(self, torch, images, labels, transforms: Transforms, mix, info, num_workers: int, device):
        self._torch = torch
        self._np_images, self._labels = images, labels
        self._tf, self._mix = transforms, mix
        self.info = info
        self.num_train = int(len(labels))
        self._num_workers = num_workers
        self.images_served = 0
        self.batches_served = 0
        if transforms.batched:
            import numpy as np

            # NHWC uint8 in memory (on the device when training there): a gathered batch,
            # permuted to (B, C, H, W), is already in channels-last memory layout.
            self._x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
            self._y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)

    def _count(self, batches):
        for x, y in batches:
            self.images_served += int(x.shape[0])
            self.batches_served += 1
            yield x, y

    def _batched(self, transform, batch_size: int, shuffle: bool, drop_last: bool):
        torch = self._torch
        n = self.num_train
        order = torch.randperm(n, device=self._x.device) if shuffle else torch.arange(n, device=self._x.device)
        stop = n - batch_size + 1 if drop_last else n
        for start in range(0, max(stop, 0), batch_size):
            idx = order[start:start + batch_size]
            yield transform(self._x[idx].permute(0, 3, 1, 2)), self._y[idx]

    def _dataset(self, transform):
        torch = self._torch
        images, labels = self._np_images, self._labels

        class _Split(torch.utils.data.Dataset):
            def __len__(self):
                return len(labels)

            def __getitem__(self, i):
                return transform(images[i]), int(labels[i])

        return _Split()

    def loader(self, batch_size: int, shuffle: bool = True, drop_last: bool = True):
        batch_size = max(1, int(batch_size))
        # Never let drop_last make an epoch empty (tiny preflight subsets).
        drop_last = bool(drop_last) and self.num_train >= batch_size
        if self._tf.batched:
            count = self.num_train // batch_size if drop_last else -(-self.num_train // batch_size)
            batches = _Sized(lambda: self._batched(self._tf.train, batch_size, shuffle, drop_last), count)
        else:
            batches = self._torch.utils.data.DataLoader(
                self._dataset(self._tf.train), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                num_workers=self._num_workers, persistent_workers=False,
            )
        mix, info = self._mix, self.info
        if mix is None:
            return _Sized(lambda: self._count(iter(batches)), len(batches))
        return _Sized(lambda: self._count(mix(x, y, info) for x, y in batches), len(batches))

    def eval_loader(self, batch_size: int = 256):
        batch_size = max(1, int(batch_size))
        if self._tf.batched:
            count = -(-self.num_train // batch_size)
            return _Sized(lambda: self._batched(self._tf.eval, batch_size, False, False), count)
        return self._torch.utils.data.DataLoader(self._dataset(self._tf.eval), batch_size=batch_size, shuffle=False)


class _Sized:
    """An iterable over one epoch of batches that also knows its length, like a DataLoader."""

    def __init__(self, make, length: int):
        self._make, self._length = make, length

    def __len__(self):
        return self._length

    def __iter__(self):
        return iter(self._make())


class Context:
    """Resources and limits handed to train() (see interfaces/train.py)."""

    def __init__(self, torch, device, seed, time_budget, recorder, phase, max_steps=None):
        self._torch = torch
        self.device = device
        self.seed = seed
        self.time_budget = float(time_budget)
        self.preflight = phase == "preflight"
        self._start = time.monotonic()
        self.deadline = self._start + self.time_budget
        self._rec = recorder
        self._phase = phase
        self._max_steps = max_steps
        self._calls = 0
        self.first_batch_at = None
        self.checkpoint_state = None

    @property
    def steps(self) -> int:
        """Calls of should_stop() so far: the training steps, for a loop that checks once per batch."""
        return self._calls

    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def progress(self) -> float:
        frac = (time.monotonic() - self._start) / max(self.time_budget, 1e-9)
        if self._max_steps:
            frac = max(frac, self._calls / self._max_steps)
        return min(1.0, max(0.0, frac))

    def should_stop(self) -> bool:
        if self._calls == 0:
            self.first_batch_at = time.time()
            self._rec.event(f"{self._phase}_first_batch")
        self._calls += 1
        if self._max_steps is not None and self._calls > self._max_steps:
            return True
        return time.monotonic() >= self.deadline

    def log(self, tag, value, step) -> None:
        try:
            value = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            return
        self._rec.curve(tag, value, step, self._phase)

    def checkpoint(self, model) -> None:
        self.checkpoint_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def predict(torch, np, model, images, transforms: Transforms, device, batch_size=256):
    """Softmax probabilities (N, classes) of the model for decoded images (numpy uint8 (N, H, W, C))."""
    model.eval()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = transforms.eval_batch(torch, np, images[start:start + batch_size], device)
            logits = model(batch)
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            outs.append(torch.softmax(logits.float(), dim=1).cpu())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).numpy()
