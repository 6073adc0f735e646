"""The throughput probe, run inside the sandbox before the first pipeline is written.

It trains a reference network (the plain CNN of the expert's small-image
recipe: a conv-BN-ReLU stem of WIDTH channels, then per stage 2x2 max-pooling
and two conv-BN-ReLU doubling the channels) on real training
images through the batched data path, at a few widths, for a few steps each,
and reports images per second. The Architect sizes the first pipeline from
these figures: measured on this machine, now, at the data's resolution.

It also times bfloat16 autocast at the first width: CPUs with bf16 matrix
units (AMX, AVX512-BF16) train a small CNN 1.6-2x faster in bf16, others
several times slower, and only a measurement tells them apart. When bf16 wins
by BF16_MARGIN the figures say "precision": "bf16" and the Architect turns
autocast on. The other widths are timed in float32 only: a bf16 power law
through two points misjudges the widths between them (on Fashion-MNIST one
through WIDTH 16 and 32 promised 3,190 images/s at WIDTH 24 and the run got
2,390), so the Architect scales the float32 law by a discounted gain instead.

Stand-alone like child.py (no automodel imports), mounted beside it in the sandbox.
"""

from __future__ import annotations

import time

BF16_MARGIN = 1.15  # bf16 must be this much faster to be worth its coarser arithmetic


def reference_net(torch, channels: int, classes: int, width: int, stages: int):
    nn = torch.nn

    def conv_bn(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    layers, cin = conv_bn(channels, width), width
    for i in range(stages):
        cout = width * 2 ** (i + 1)
        layers += [nn.MaxPool2d(2), *conv_bn(cin, cout), *conv_bn(cout, cout)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def measure(torch, np, images, labels, spec: dict, device) -> dict:
    """{"images_per_second": {width: float32 rate}, "precision": "bf16" | "fp32", "bf16_images_per_second":
    {first width: rate}, ...} for the widths in spec, each timed for about spec["seconds"]."""
    size = int(spec.get("input_size") or images.shape[1])
    stages = int(spec.get("stages") or (3 if size <= 40 else 4))
    batch = min(int(spec.get("batch_size", 128)), len(labels))
    per_width = float(spec.get("seconds", 1.0))
    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    mean = x_all.float().mean(dim=(0, 1, 2)).view(1, -1, 1, 1)
    channels, classes = int(x_all.shape[3]), int(y_all.max().item()) + 1

    def rate(width: int, bf16: bool) -> float:
        torch.manual_seed(0)
        net = reference_net(torch, channels, classes, width, stages).to(device, memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)

        def step():
            idx = torch.randint(0, len(y_all), (batch,), device=device)
            x = x_all[idx].permute(0, 3, 1, 2).float() - mean
            if x.shape[2] != size:
                x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            x = torch.where(torch.rand(batch, 1, 1, 1, device=device) < 0.5, x.flip(3), x)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = net(x.contiguous(memory_format=torch.channels_last))
            loss = torch.nn.functional.cross_entropy(logits.float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        for _ in range(2):  # warm up kernels and allocator
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        done, start = 0, time.perf_counter()
        while done < 3 or time.perf_counter() - start < per_width:
            step()
            done += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        return round(done * batch / (time.perf_counter() - start), 1)

    widths = [int(w) for w in spec.get("widths", [16, 32, 64])]
    rates = {str(width): rate(width, False) for width in widths}
    bf16 = rate(widths[0], True) if spec.get("try_bf16", True) else 0.0
    faster = bf16 > 0 and bf16 >= BF16_MARGIN * rates[str(widths[0])]
    return {"images_per_second": rates, "precision": "bf16" if faster else "fp32",
            "bf16_images_per_second": {str(widths[0]): bf16} if bf16 else {},
            "input_size": size, "stages": stages, "batch_size": batch,
            "threads": torch.get_num_threads(), "device": str(device)}
