"""Training step time and peak memory per preset: NUDF (batch 4 × 15,000 points, the spec's), the U-Net
baseline (batch 4 whole ROI images), at the preset's input resolution; and the Implicit U-Net presets (``iunet*``:
batch 4 patches of the preset's side, the preset's points per patch; ``iunet-conv*``: the same encoder's U-Net).

One step = augmentation on the batch + forward + loss + backward + optimiser update, as ``training/module.py``
does it (NUDF: clamped L1 on points; U-Net: Dice + cross-entropy on every voxel; Implicit U-Net: point sampling +
Dice + cross-entropy on the points), on random images (patch labels: a ball of each of 2 foreground classes). Each (preset,
device) runs in a fresh subprocess so peak-memory figures do not mix, under an address-space limit
(``--memory-limit-gb``) so that a step that needs more fails cleanly and is reported as "out of memory":

- CPU: peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus the peak before the model and
  batch were built (torch's CPU allocator is invisible to tracemalloc);
- CUDA: ``torch.cuda.max_memory_allocated()`` (tensors only; the caching allocator reserves somewhat more).

Usage: ``python benchmarks/train_step.py [--presets nudf64 nudf128 unet64 ...] [--batch 4] [--points 15000]
[--steps 3] [--memory-limit-gb 20]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _nudf_step(preset: str, device: str, batch: int, points: int, generator):
    """(model, step function, res) for a NUDF preset."""
    import torch

    from implicitseg.data.augment import apply_augmentation, draw_augmentation
    from implicitseg.fitting.losses import clamped_l1_loss
    from implicitseg.methods.nudf import preset_config
    from implicitseg.models.nudf import build_model

    config = preset_config(preset)
    res = config.roi.res
    model = build_model(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    image = torch.rand(batch, 1, res, res, res, generator=generator).to(device)
    points_unit = (torch.rand(batch, points, 3, generator=generator) * 2 - 1).to(device)
    distances_unit = (torch.rand(batch, points, generator=generator) * 0.2).to(device)

    def step() -> None:
        params = draw_augmentation(config.train.augment, batch, generator=generator)
        moved_image, moved_points = apply_augmentation(image, points_unit, params)
        loss = clamped_l1_loss(model(moved_image, moved_points), distances_unit, config.train.clamp_unit)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, step, res


def _unet_step(preset: str, device: str, batch: int, generator):
    """(model, step function, res) for a U-Net preset."""
    import torch
    from monai.losses import DiceCELoss

    from implicitseg.data.augment import draw_augmentation, warp_volumes
    from implicitseg.methods.unet import preset_config
    from implicitseg.models.unet import build_unet

    config = preset_config(preset)
    res = config.roi.res
    model = build_unet(config.model).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    image = torch.rand(batch, 1, res, res, res, generator=generator).to(device)
    label = (torch.rand(batch, 1, res, res, res, generator=generator) > 0.9).long().to(device)

    def step() -> None:
        params = draw_augmentation(config.train.augment, batch, generator=generator)
        moved_image, moved_label = warp_volumes(image, label, params)
        loss = loss_function(model(moved_image), moved_label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, step, res


def _patch_step(preset: str, device: str, batch: int, generator):
    """(model, step function, patch side) for an Implicit U-Net preset (or its ``-conv`` U-Net), 3 classes."""
    import torch

    from implicitseg.config import LabelsConfig
    from implicitseg.methods.implicit_unet import PRESETS
    from implicitseg.methods.base import copy_preset
    from implicitseg.training.module import PatchSegmentationModule

    config = copy_preset(PRESETS, preset)
    config.labels = LabelsConfig(names=("background", "organ", "lesion"))
    module = PatchSegmentationModule(config).to(device).train()
    optimizer = module.configure_optimizers()
    side = config.grid.patch_voxels
    image = torch.rand(batch, 1, side, side, side, generator=generator).to(device)
    grid = torch.stack(torch.meshgrid(*[torch.arange(side)] * 3, indexing="ij")).float()
    radius = torch.linalg.norm(grid - (side - 1) / 2, dim=0)
    label = ((radius < side / 3).long() + (radius < side / 8).long())[None, None].expand(batch, -1, -1, -1, -1)
    label = label.contiguous().to(device)
    module._augment_generator = generator

    def step() -> None:
        loss = module.training_step({"image": image, "label": label, "case_id": ["x"] * batch}, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    module.log = lambda *args, **kwargs: None  # no trainer attached
    return module.model, step, side


def measure(preset: str, device: str, batch: int, points: int, steps: int, warmup: int) -> dict:
    """Median step time (s) and peak memory (MB) of ``steps`` timed training steps after ``warmup`` ones."""
    import torch

    from implicitseg.models import count_parameters

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    generator = torch.Generator().manual_seed(0)
    if preset.startswith("nudf"):
        model, step, res = _nudf_step(preset, device, batch, points, generator)
    elif preset.startswith("iunet"):
        model, step, res = _patch_step(preset, device, batch, generator)
    else:
        model, step, res = _unet_step(preset, device, batch, generator)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def timed_step() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        timed_step()
    times = [timed_step() for _ in range(steps)]
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        method = "torch.cuda.max_memory_allocated"
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) / 1024  # Linux: kB
        method = "ru_maxrss increase"
    return {
        "preset": preset, "device": device, "res": res, "batch": batch,
        "points": points if preset.startswith("nudf") else None,
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
    parser.add_argument("--memory-limit-gb", type=float, default=20.0,
                        help="address-space limit of each CPU worker; a step needing more is reported as out of memory")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--worker", nargs=2, metavar=("PRESET", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.worker[1] == "cpu" and args.memory_limit_gb > 0:
            limit = int(args.memory_limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
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
                       "--points", str(args.points), "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--memory-limit-gb", str(args.memory_limit_gb)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                out_of_memory = any(text in done.stderr for text in ("out of memory", "can't allocate memory",
                                                                       "MemoryError", "std::bad_alloc",
                                                                       "DefaultCPUAllocator"))
                print(f"{preset} on {device} failed:\n{done.stderr[-1500:]}", file=sys.stderr)
                rows.append({"preset": preset, "device": device, "failed": "out of memory" if out_of_memory
                             else f"exit {done.returncode}", "limit_gb": args.memory_limit_gb})
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(f"batch {args.batch} (NUDF: × {args.points} points); median of {args.steps} steps after {args.warmup} "
          f"warm-up; CPU workers limited to {args.memory_limit_gb:g} GB of address space")
    header = (f"{'preset':<10} {'device':<6} {'res':>4} {'params':>10} {'threads':>7} {'step s':>8} "
              f"{'peak MB':>9}  memory")
    print(header)
    print("-" * len(header))
    for row in rows:
        if "failed" in row:
            print(f"{row['preset']:<10} {row['device']:<6} {'':>4} {'':>10} {'':>7} {'':>8} {'':>9}  {row['failed']}")
            continue
        print(f"{row['preset']:<10} {row['device']:<6} {row['res']:>4} {row['parameters']:>10,} {row['threads']:>7} "
              f"{row['step_s_median']:>8.3f} {row['peak_mb']:>9.0f}  {row['memory_method']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
