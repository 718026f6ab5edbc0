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

NUDF and U-Net presets take ``--precision 32 bf16-mixed`` (one row each: the forward pass and loss under bfloat16
autocast); NUDF presets also ``--contiguous`` (one more row each with the encoder in contiguous memory format
instead of the model's ``channels_last_3d``), ``--compile`` (one more row each with the encoder and the decoder
under ``torch.compile``; the warm-up steps, compilation included, are reported apart) and ``--profile STEPS``
(that many more steps under ``torch.profiler``: ms per step of augmentation, encoder, feature gathering, decoder,
loss, backward pass (split by operator into encoder, gathering and decoder) and optimiser).

Usage: ``python benchmarks/train_step.py [--presets nudf64 nudf128 unet64 ...] [--batch 4] [--points 15000]
[--steps 3] [--memory-limit-gb 20] [--precision 32 bf16-mixed] [--contiguous] [--compile] [--profile 2]``
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


def _nudf_step(preset: str, device: str, batch: int, points: int, generator, precision: str = "32",
               channels_last: bool = True, compiled: bool = False):
    """(model, step function, res) for a NUDF preset. ``precision`` ``bf16-mixed``: the forward pass and the loss
    under ``torch.autocast`` in bfloat16 (weights and optimiser in float32, as Lightning's ``bf16-mixed``);
    ``channels_last``: the encoder in ``torch.channels_last_3d`` memory format, as the model builds it (False: in
    contiguous format, the layout before the model chose channels-last); ``compiled``: the encoder and the
    decoder's per-grid forward under ``torch.compile`` (the gathering, a custom autograd function, stays eager).
    Each part of the step runs
    under a ``torch.profiler.record_function`` label (augment, encoder, gather, decoder, loss, backward,
    optimizer) for ``--profile``."""
    import contextlib

    import torch
    from torch.profiler import record_function

    from implicitseg.data.augment import apply_augmentation, draw_augmentation
    from implicitseg.fitting.losses import clamped_l1_loss
    from implicitseg.methods.nudf import preset_config
    from implicitseg.models.encoders import gather_feature_levels
    from implicitseg.models.nudf import build_model

    config = preset_config(preset)
    res = config.roi.res
    model = build_model(config).to(device).train()
    image = torch.rand(batch, 1, res, res, res, generator=generator).to(device)
    if not channels_last:
        model.encoder.to(memory_format=torch.contiguous_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    points_unit = (torch.rand(batch, points, 3, generator=generator) * 2 - 1).to(device)
    distances_unit = (torch.rand(batch, points, generator=generator) * 0.2).to(device)
    autocast = (lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)) if precision == "bf16-mixed" \
        else contextlib.nullcontext
    encode = model.encode if channels_last else model.encoder
    decode_levels = model.decoder.forward_levels
    if compiled:
        encode, decode_levels = torch.compile(encode), torch.compile(decode_levels)

    def step() -> None:
        with record_function("augment"):
            params = draw_augmentation(config.train.augment, batch, generator=generator)
            moved_image, moved_points = apply_augmentation(image, points_unit, params)
        with autocast():
            with record_function("encoder"):
                features = encode(moved_image)
            with record_function("gather"):
                gathered = gather_feature_levels(features, moved_points, model.displacement_unit)
            with record_function("decoder"):
                predicted = decode_levels(gathered)
            with record_function("loss"):
                loss = clamped_l1_loss(predicted.float(), distances_unit, config.train.clamp_unit)
        with record_function("backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("optimizer"):
            optimizer.step()

    return model, step, res


def _unet_step(preset: str, device: str, batch: int, generator, precision: str = "32"):
    """(model, step function, res) for a U-Net preset; ``precision`` ``bf16-mixed``: forward and loss under
    bfloat16 autocast, as Lightning's ``bf16-mixed`` does it."""
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

    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def step() -> None:
        params = draw_augmentation(config.train.augment, batch, generator=generator)
        moved_image, moved_label = warp_volumes(image, label, params)
        with autocast:
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


PROFILE_REGIONS = ("augment", "encoder", "gather", "decoder", "loss", "backward", "optimizer")
"""The labelled parts of a NUDF step (``--profile``); the backward pass is one region, split below by operator."""

BACKWARD_PARTS = {"Convolution": "encoder convolutions", "NativeBatchNorm": "encoder batch norm",
                  "MaxPool": "encoder pooling", "GridSampler": "gather (grid_sample)", "Addmm": "decoder linear",
                  "Softplus": "decoder linear"}
"""Autograd nodes (``autograd::engine::evaluate_function: <Node>Backward0``) by the part of the network they belong
to; every other node (ReLU of both, concatenations, views) is ``other``."""


def _profile(step, steps: int) -> dict:
    """Run ``steps`` steps under ``torch.profiler``: ms per step of each labelled region (wall, inclusive) and of
    the backward pass's operators by family (self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step()
    averages = profiler.key_averages()
    regions = {event.key: event.cpu_time_total / 1000 / steps for event in averages if event.key in PROFILE_REGIONS}
    backward: dict[str, float] = {}
    for event in averages:
        if not event.key.startswith("autograd::engine::evaluate_function: "):
            continue
        node = event.key.split(": ", 1)[1]
        part = next((label for prefix, label in BACKWARD_PARTS.items() if node.startswith(prefix)), "other")
        backward[part] = backward.get(part, 0.0) + event.cpu_time_total / 1000 / steps
    return {"regions_ms": {name: regions.get(name, 0.0) for name in PROFILE_REGIONS},
            "backward_ms_by_part": dict(sorted(backward.items(), key=lambda item: -item[1]))}


def measure(preset: str, device: str, batch: int, points: int, steps: int, warmup: int, precision: str = "32",
            channels_last: bool = True, profile_steps: int = 0, compiled: bool = False) -> dict:
    """Median step time (s) and peak memory (MB) of ``steps`` timed training steps after ``warmup`` ones (NUDF:
    in ``precision``, ``channels_last``; with ``profile_steps``, that many more steps profiled)."""
    import torch

    from implicitseg.models import count_parameters

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    generator = torch.Generator().manual_seed(0)
    if preset.startswith("nudf"):
        model, step, res = _nudf_step(preset, device, batch, points, generator, precision, channels_last, compiled)
    elif preset.startswith("iunet"):
        model, step, res = _patch_step(preset, device, batch, generator)
    else:
        model, step, res = _unet_step(preset, device, batch, generator, precision)
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

    warmup_times = [timed_step() for _ in range(warmup)]
    times = [timed_step() for _ in range(steps)]
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        method = "torch.cuda.max_memory_allocated"
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) / 1024  # Linux: kB
        method = "ru_maxrss increase"
    profiled = _profile(step, profile_steps) if profile_steps and preset.startswith("nudf") else None
    return {
        "preset": preset, "device": device, "res": res, "batch": batch,
        "points": points if preset.startswith("nudf") else None,
        "precision": precision if preset.startswith(("nudf", "unet")) else "32",
        "channels_last": bool(channels_last and preset.startswith("nudf")),
        "compiled": bool(compiled and preset.startswith("nudf")), "warmup_s_all": warmup_times,
        "parameters": count_parameters(model), "threads": torch.get_num_threads(),
        "step_s_median": statistics.median(times), "step_s_all": times,
        "peak_mb": peak_mb, "memory_method": method, **({"profile": profiled} if profiled else {}),
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
    parser.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16-mixed"],
                        help="NUDF and U-Net: one row per precision (bf16-mixed: autocast of forward and loss)")
    parser.add_argument("--contiguous", action="store_true",
                        help="NUDF: also a row per precision with the encoder in contiguous memory format")
    parser.add_argument("--compile", action="store_true",
                        help="NUDF: also a row per precision with the encoder and decoder under torch.compile")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="NUDF: profile this many more steps (torch.profiler): ms per step of each part")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--worker", nargs=4, metavar=("PRESET", "DEVICE", "PRECISION", "LAYOUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.worker[1] == "cpu" and args.memory_limit_gb > 0:
            limit = int(args.memory_limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        preset, device, precision, layout = args.worker
        print(json.dumps(measure(preset, device, args.batch, args.points, args.steps, args.warmup, precision,
                                 layout != "contiguous", args.profile, compiled=layout == "compiled")))
        return

    devices = args.devices
    if devices is None:
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    layouts = (["contiguous"] if args.contiguous else []) + ["channels_last"] + (["compiled"] if args.compile else [])
    jobs = [(preset, device, precision, layout) for preset in args.presets for device in devices
            for precision, layout in ([(p, l) for p in args.precision for l in layouts] if preset.startswith("nudf")
                                      else [(p, "contiguous") for p in args.precision] if preset.startswith("unet")
                                      else [("32", "contiguous")])]
    for preset, device, precision, layout in jobs:
        command = [sys.executable, __file__, "--worker", preset, device, precision, layout,
                   "--batch", str(args.batch), "--points", str(args.points), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--memory-limit-gb", str(args.memory_limit_gb),
                   "--profile", str(args.profile)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            out_of_memory = any(text in done.stderr for text in ("out of memory", "can't allocate memory",
                                                                   "MemoryError", "std::bad_alloc",
                                                                   "DefaultCPUAllocator"))
            print(f"{preset} on {device} failed:\n{done.stderr[-1500:]}", file=sys.stderr)
            rows.append({"preset": preset, "device": device, "precision": precision, "layout": layout,
                         "failed": "out of memory" if out_of_memory else f"exit {done.returncode}",
                         "limit_gb": args.memory_limit_gb})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(f"batch {args.batch} (NUDF: × {args.points} points); median of {args.steps} steps after {args.warmup} "
          f"warm-up; CPU workers limited to {args.memory_limit_gb:g} GB of address space")
    header = (f"{'preset':<15} {'device':<6} {'precision':<10} {'layout':<13} {'res':>4} {'params':>10} "
              f"{'threads':>7} {'step s':>8} {'peak MB':>9}  memory")
    print(header)
    print("-" * len(header))
    for row in rows:
        layout = ("compiled" if row.get("compiled") or row.get("layout") == "compiled" else "channels_last"
                  if row.get("channels_last") or row.get("layout") == "channels_last" else "contiguous")
        first = f"{row['preset']:<15} {row['device']:<6} {row.get('precision', '32'):<10} {layout:<13}"
        if "failed" in row:
            print(f"{first} {'':>4} {'':>10} {'':>7} {'':>8} {'':>9}  {row['failed']}")
            continue
        warmup = ", ".join(f"{seconds:.1f}" for seconds in row.get("warmup_s_all", []))
        print(f"{first} {row['res']:>4} {row['parameters']:>10,} {row['threads']:>7} "
              f"{row['step_s_median']:>8.3f} {row['peak_mb']:>9.0f}  {row['memory_method']}"
              + (f"; warm-up steps {warmup} s" if row.get("compiled") else ""))
    for row in rows:
        if "profile" in row:
            regions = row["profile"]["regions_ms"]
            total = sum(regions.values())
            print(f"\nprofile, {row['preset']} {row.get('precision')} "
                  f"{'channels_last' if row['channels_last'] else 'contiguous'} (ms per step, share of the parts):")
            print("  " + ", ".join(f"{name} {ms:.0f} ({ms / total:.0%})" for name, ms in regions.items()))
            print("  backward by part: " + ", ".join(f"{name} {ms:.0f}"
                                                    for name, ms in row["profile"]["backward_ms_by_part"].items()))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
