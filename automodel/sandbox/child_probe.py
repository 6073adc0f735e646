"""The throughput probe, run inside the sandbox before the first pipeline is written.

It trains a reference network (the plain CNN of the expert's small-image
recipe: a conv-BN-ReLU stem of WIDTH channels, then per stage 2x2 max-pooling
and two conv-BN-ReLU doubling the channels) on real training
images through the batched data path, at a few widths, for a few steps each,
and reports images per second. The Architect sizes the first pipeline from
these figures: measured on this machine, now, at the data's resolution.

Stand-alone like child.py (no automodel imports), mounted beside it in the sandbox.
"""

from __future__ import annotations

import time


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
    """{"images_per_second": {width: rate}, ...} for the widths in spec, each timed for about spec["seconds"]."""
    size = int(spec.get("input_size") or images.shape[1])
    stages = int(spec.get("stages") or (3 if size <= 40 else 4))
    batch = min(int(spec.get("batch_size", 128)), len(labels))
    per_width = float(spec.get("seconds", 1.0))
    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    mean = x_all.float().mean(dim=(0, 1, 2)).view(1, -1, 1, 1)
    channels, classes = int(x_all.shape[3]), int(y_all.max().item()) + 1
    rates: dict[str, float] = {}
    for width in spec.get("widths", [16, 32, 64]):
        torch.manual_seed(0)
        net = reference_net(torch, channels, classes, int(width), stages).to(device, memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)

        def step():
            idx = torch.randint(0, len(y_all), (batch,), device=device)
            x = x_all[idx].permute(0, 3, 1, 2).float() - mean
            if x.shape[2] != size:
                x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            x = torch.where(torch.rand(batch, 1, 1, 1, device=device) < 0.5, x.flip(3), x)
            loss = torch.nn.functional.cross_entropy(net(x.contiguous(memory_format=torch.channels_last)), y_all[idx])
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
        rates[str(width)] = round(done * batch / (time.perf_counter() - start), 1)
    return {"images_per_second": rates, "input_size": size, "stages": stages, "batch_size": batch,
            "threads": torch.get_num_threads(), "device": str(device)}
