"""What generated code is handed inside the sandbox: TrainData, Context, and batched prediction.

Stand-alone like child.py (no automodel imports), mounted beside it in the
sandbox; see interfaces/train.py for the contract these implement.
"""

from __future__ import annotations

import time


class TrainData:
    """The training split as train.py sees it (see interfaces/train.py)."""

    def __init__(self, torch, images, labels, train_tf, eval_tf, mix, info, num_workers: int):
        self._torch = torch
        self._images, self._labels = images, labels
        self._train_tf, self._eval_tf, self._mix = train_tf, eval_tf, mix
        self.info = info
        self.num_train = int(len(labels))
        self._num_workers = num_workers

    def _dataset(self, transform):
        torch = self._torch
        images, labels = self._images, self._labels

        class _Split(torch.utils.data.Dataset):
            def __len__(self):
                return len(labels)

            def __getitem__(self, i):
                return transform(images[i]), int(labels[i])

        return _Split()

    def loader(self, batch_size: int, shuffle: bool = True, drop_last: bool = True):
        torch = self._torch
        batch_size = max(1, int(batch_size))
        # Never let drop_last make an epoch empty (tiny preflight subsets).
        drop_last = bool(drop_last) and self.num_train >= batch_size
        dl = torch.utils.data.DataLoader(
            self._dataset(self._train_tf), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
            num_workers=self._num_workers, persistent_workers=False,
        )
        if self._mix is None:
            return dl
        mix, info = self._mix, self.info

        class _Mixed:
            def __len__(self):
                return len(dl)

            def __iter__(self):
                for x, y in dl:
                    yield mix(x, y, info)

        return _Mixed()

    def eval_loader(self, batch_size: int = 256):
        return self._torch.utils.data.DataLoader(
            self._dataset(self._eval_tf), batch_size=max(1, int(batch_size)), shuffle=False
        )


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


def predict(torch, model, images, eval_tf, device, batch_size=256):
    model.eval()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.stack([eval_tf(img) for img in images[start : start + batch_size]]).to(device)
            logits = model(batch)
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            outs.append(torch.softmax(logits.float(), dim=1).cpu())
    if not outs:
        return torch.zeros((0, 0)).numpy()
    return torch.cat(outs).numpy()
