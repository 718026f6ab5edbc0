"""NUDF training step time and peak memory per preset (NUDF spec: batch 4 × 15,000 points).

One step = augmentation on the batch + forward + clamped L1 loss + backward + Adam update, as
``training/module.py`` does it, on random inputs of the preset's resolution. Each (preset, device) runs in a
fresh subprocess so peak-memory figures do not mix:

- CPU: peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus the peak before the model and
  batch were built (torch's CPU allocator is invisible to tracemalloc);
- CUDA: ``torch.cuda.max_memory_allocated()`` (tensors only; the caching allocator reserves somewhat more).

Usage: ``python benchmarks/train_step.py [--presets nudf64 nudf128] [--batch 4] [--points 15000] [--steps 3]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(preset: str, device: str, batch: int, points: int, steps: int, warmup: int) -> dict:
    """Median step time (s) and peak memory (MB) of ``steps`` timed training steps after ``warmup`` ones."""
    import torch

    from implicitseg.data.augment import apply_augmentation, draw_augmentation
    from implicitseg.methods.nudf import preset_config
    from implicitseg.models.nudf import build_model, count_parameters
    from implicitseg.training.losses import clamped_l1_loss

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    config = preset_config(preset)
    res = config.roi.res
    generator = torch.Generator().manual_seed(0)
    model = build_model(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    image = torch.rand(batch, 1, res, res, res, generator=generator).to(device)
    points_unit = (torch.rand(batch, points, 3, generator=generator) * 2 - 1).to(device)
    distances_unit = (torch.rand(batch, points, generator=generator) * 0.2).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        params = draw_augmentation(config.train.augment, batch, generator=generator)
        moved_image, moved_points = apply_augmentation(image, points_unit, params)
        loss = clamped_l1_loss(model(moved_image, moved_points), distances_unit, config.train.clamp_unit)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        step()
    times = [step() for _ in range(steps)]
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        method = "torch.cuda.max_memory_allocated"
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) / 1024  # Linux: kB
        method = "ru_maxrss increase"
    return {
        "preset": preset, "device": device, "res": res, "batch": batch, "points": points,
        "parameters": count_parameters(model), "threads": torch.get_num_threads(),
        "step_s_median": statistics.median(times), "step_s_all": times,
        "peak_mb": peak_mb, "memory_method": method,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["nudf64", "nudf128"])
    parser.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if "
                                                                     "available)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--points", type=int, default=15_000)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--worker", nargs=2, metavar=("PRESET", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(measure(args.worker[0], args.worker[1], args.batch, args.points, args.steps, args.warmup)))
        return

    devices = args.devices
    if devices is None:
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for preset in args.presets:
        for device in devices:
            command = [sys.executable, __file__, "--worker", preset, device, "--batch", str(args.batch),
                       "--points", str(args.points), "--steps", str(args.steps), "--warmup", str(args.warmup)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{preset} on {device} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(f"batch {args.batch} × {args.points} points; median of {args.steps} steps after {args.warmup} warm-up")
    header = (f"{'preset':<10} {'device':<6} {'res':>4} {'params':>10} {'threads':>7} {'step s':>8} "
              f"{'peak MB':>9}  memory")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['preset']:<10} {row['device']:<6} {row['res']:>4} {row['parameters']:>10,} {row['threads']:>7} "
              f"{row['step_s_median']:>8.3f} {row['peak_mb']:>9.0f}  {row['memory_method']}")


if __name__ == "__main__":
    main()
