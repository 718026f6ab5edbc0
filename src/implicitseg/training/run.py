"""Train a run folder with Lightning, resume it, and load its network back (DESIGN §5), for any method: a
:class:`TrainingRecipe` names the method's config class, Lightning module and dataset.

``RUN/config.yaml`` (the fully resolved config), ``RUN/checkpoints/{last,best}.ckpt`` (written atomically; only
plain types and tensors, so ``torch.load(weights_only=True)`` reads them), ``RUN/logs/{csv,tensorboard}/``.
"""

from __future__ import annotations

import copy
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, Dataset

from implicitseg.config import MethodConfig, config_from_dict, config_to_dict
from implicitseg.errors import InputError
from implicitseg.io.atomic import atomic_path
from implicitseg.io.configs import load_yaml, save_config
from implicitseg.training.module import MODEL_PREFIX, ConfiguredModule

CONFIG_NAME = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class TrainingRecipe:
    """What :func:`train_run` and :func:`load_model` need of a method.

    ``module_class(config)`` builds the Lightning module (its ``.model`` is the network, its config class is
    ``module_class.config_class``); ``dataset(prep_dir, split, config)`` gives the ``train`` / ``val`` dataset.
    """

    method: str
    module_class: type[ConfiguredModule]
    dataset: Callable[[Path, str, Any], Dataset]
    trainer_options: Callable[[Any], dict] | None = None
    """Extra ``L.Trainer`` arguments for a config (e.g. NISF validates every N epochs, with gradients)."""

    @property
    def config_class(self) -> type:
        return self.module_class.config_class


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the target folder, then renames it into place.

    Lightning's own writer goes through an fsspec transaction whose temporary file lives in the system temp
    folder; moving it across file systems is a copy, so a kill could leave a truncated checkpoint.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        with atomic_path(path) as temporary:
            torch.save(checkpoint, temporary)


class SessionTimer(Timer):
    """``Timer`` whose limit counts only this invocation: ``--max-time`` on a resumed run is a fresh budget
    (Lightning's Timer would add the time spent before the interruption)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None


def parse_max_time(text: str) -> timedelta:
    """``"HH:MM:SS"`` or ``"DD:HH:MM:SS"`` → a positive duration; anything else raises :class:`InputError`."""
    match = re.fullmatch(r"(?:(\d+):)?(\d+):([0-5]\d):([0-5]\d)", text.strip())
    if not match:
        raise InputError(f"--max-time {text!r}: expected HH:MM:SS or DD:HH:MM:SS")
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if duration.total_seconds() <= 0:
        raise InputError(f"--max-time {text!r}: must be longer than zero")
    return duration


def _differing_sections(saved: dict, current: MethodConfig) -> list[str]:
    """The fields of ``current`` that may not change in a trained run (method, preset, its data and network
    sections) whose value differs in ``saved`` (a plain config mapping), or that only one of them has."""
    changeable = current.sections_with("train", "predict")
    current_dict = config_to_dict(current)
    names = sorted((set(saved) | set(current_dict)) - set(changeable))
    return [name for name in names if saved.get(name) != current_dict.get(name)]


def _read_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """``torch.load(weights_only=True)`` with errors turned into :class:`InputError` naming ``path``."""
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: not a readable checkpoint ({first_line})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def _best_score(checkpoint: dict) -> float | None:
    for state in (checkpoint.get("callbacks") or {}).values():
        if isinstance(state, dict) and state.get("monitor") == "val_loss" and "best_model_score" in state:
            score = state["best_model_score"]
            return None if score is None else float(score)
    return None


def _stopped_early(checkpoint: dict) -> bool:
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if str(name).startswith("EarlyStopping") and isinstance(state, dict):
            return int(state.get("stopped_epoch", 0)) > 0
    return False


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """Lightning's precision for ``train.precision``: ``auto`` becomes ``bf16-mixed`` where the device runs bfloat16
    natively (a CUDA GPU with bfloat16 support; a CPU with AVX-512 BF16 or AMX), else ``32-true``; the other values
    are returned as they are."""
    if precision != "auto":
        return precision
    on_cuda = accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())
    if on_cuda:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    else:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16-mixed" if native else "32-true"


def launched_externally() -> bool:
    """True when a launcher started this process as one of several: ``torchrun`` (``WORLD_SIZE`` > 1) or a SLURM job
    step of several tasks (``srun``, ``SLURM_NTASKS`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (
        int(os.environ.get("SLURM_NTASKS", "1")) > 1 and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"))


def train_run(recipe: TrainingRecipe, prep_dir: Path, run_dir: Path, config: Any, *, max_epochs: int | None = None,
              max_time: str | None = None, devices: int = 1, num_nodes: int = 1, resume: bool = False,
              progress: bool = True, accelerator: str = "auto") -> dict:
    """Train ``config``'s network (the method of ``recipe``) on the prepared folder ``prep_dir`` into ``run_dir``.

    ``max_epochs``: total epochs of the run (counting earlier sessions; default ``config.train.max_epochs``).
    ``max_time``: wall-clock budget of this invocation, ``HH:MM:SS`` or ``DD:HH:MM:SS``, checked after each epoch.
    ``devices`` > 1: DDP with one spawned process per device (gloo on CPU, NCCL on GPU). Under an external launcher
    (``torchrun``, ``srun``: :func:`launched_externally`) or with ``num_nodes`` > 1, every process runs this function
    itself and Lightning joins them (``devices`` per node × ``num_nodes``).
    ``resume``: continue from ``run_dir/checkpoints/last.ckpt``. Returns a summary: epochs, best val loss,
    time, paths.
    """
    prep_dir, run_dir = Path(prep_dir), Path(run_dir)
    if int(devices) < 1:
        raise InputError(f"--devices must be >= 1, got {devices!r}")
    if int(num_nodes) < 1:
        raise InputError(f"--num-nodes must be >= 1, got {num_nodes!r}")
    if max_epochs is not None and int(max_epochs) < 1:
        raise InputError(f"--max-epochs must be >= 1, got {max_epochs!r}")
    duration = parse_max_time(max_time) if max_time is not None else None
    config = copy.deepcopy(config)
    if max_epochs is not None:
        config.train.max_epochs = int(max_epochs)

    checkpoint_dir = run_dir / CHECKPOINT_DIR
    last_path = checkpoint_dir / "last.ckpt"
    config_path = run_dir / CONFIG_NAME
    start_epoch = 0
    if resume:
        if not last_path.is_file():
            raise InputError(f"{last_path}: no checkpoint to resume from (train without --resume first)")
        if config_path.is_file():
            saved = load_yaml(config_path)
            differing = _differing_sections(saved, config)
            if differing:
                raise InputError(f"{config_path}: the run was trained with other {', '.join(differing)} "
                                 f"(method {saved.get('method')!r}, preset {saved.get('preset')!r}); resume it with "
                                 f"the same settings or choose another --out")
        last = _read_checkpoint(last_path)
        hyper = (last.get("hyper_parameters") or {}).get("config")
        differing = _differing_sections(hyper, config) if isinstance(hyper, dict) else []
        if differing:
            raise InputError(f"{last_path}: checkpoint trained with other {', '.join(differing)} (method "
                             f"{hyper.get('method')!r}, preset {hyper.get('preset')!r}); choose another --out")
        start_epoch = int(last.get("epoch", -1)) + 1
    elif checkpoint_dir.is_dir() and any(checkpoint_dir.glob("*.ckpt")):
        raise InputError(f"{run_dir}: already holds checkpoints; pass --resume to continue it or choose another --out")

    train_set = recipe.dataset(prep_dir, "train", config)
    val_set = recipe.dataset(prep_dir, "val", config)
    if len(train_set) == 0 or len(val_set) == 0:
        raise InputError(f"{prep_dir}: the train and val splits need at least one case each "
                         f"(train {len(train_set)}, val {len(val_set)})")

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config_path, config)
    L.seed_everything(config.train.seed + start_epoch, workers=True, verbose=False)

    workers = int(config.train.num_workers)
    loader_options: dict[str, Any] = {"batch_size": config.train.batch_size, "num_workers": workers,
                                      "persistent_workers": workers > 0}
    train_loader = DataLoader(train_set, shuffle=True, drop_last=False, **loader_options)
    val_loader = DataLoader(val_set, shuffle=False, **loader_options)

    # Two checkpoint callbacks: Lightning (>= 2.4) writes ``save_last`` only when the monitored metric improved.
    # "best" comes first so that last.ckpt carries the updated best score.
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor="val_loss", mode="min", save_top_k=1,
                        enable_version_counter=False, auto_insert_metric_name=False),
        ModelCheckpoint(dirpath=checkpoint_dir, filename="last", monitor=None, save_top_k=1,
                        enable_version_counter=False, auto_insert_metric_name=False),
        EarlyStopping(monitor="val_loss", mode="min", patience=config.train.early_stopping_patience),
    ]
    if duration is not None:
        callbacks.append(SessionTimer(duration=duration, interval="epoch"))
    loggers = [
        CSVLogger(run_dir / LOG_DIR, name="csv"),
        TensorBoardLogger(run_dir / LOG_DIR, name="tensorboard", default_hp_metric=False),
    ]
    precision = resolve_precision(config.train.precision, accelerator)
    strategy: Any = "auto"
    if num_nodes > 1 or launched_externally():
        # torchrun / SLURM started one process per device already: Lightning reads the rank from the environment
        strategy = DDPStrategy()
    elif devices > 1:
        # Spawned workers: Lightning's "ddp" re-executes sys.argv, which breaks when train_run is called from a
        # library or a test; spawning works from anywhere. The backend is gloo on CPU and NCCL on CUDA.
        strategy = DDPStrategy(start_method="spawn")
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        max_epochs=config.train.max_epochs,
        precision=precision,
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        enable_model_summary=progress,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
        **(recipe.trainer_options(config) if recipe.trainer_options else {}),
    )
    module = recipe.module_class(config)
    started = time.perf_counter()
    trainer.fit(module, train_loader, val_loader, ckpt_path=last_path if resume else None, weights_only=True)
    elapsed = time.perf_counter() - started

    if not last_path.is_file():
        raise RuntimeError(f"{last_path}: training ended without writing a checkpoint")
    last = _read_checkpoint(last_path)
    epochs_completed = int(last.get("epoch", -1)) + 1
    return {
        "run_dir": str(run_dir),
        "config": str(config_path),
        "best_checkpoint": str(checkpoint_dir / "best.ckpt"),
        "last_checkpoint": str(last_path),
        "log_dir": str(run_dir / LOG_DIR),
        "epochs_completed": epochs_completed,
        "epochs_this_session": epochs_completed - start_epoch,
        "best_val_loss": _best_score(last),
        "stopped_early": _stopped_early(last),
        "time_s": elapsed,
        "devices": int(devices),
        "num_nodes": int(num_nodes),
        "precision": precision,
    }


def load_model(recipe: TrainingRecipe, run_dir: Path, which: str = "best",
               map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any]:
    """The network of ``run_dir`` (checkpoint ``which`` ∈ {best, last}) in eval mode on ``map_location``, and the
    run's config. A run or checkpoint of another method, or a checkpoint of another preset than
    ``RUN/config.yaml``, raises :class:`InputError`."""
    run_dir = Path(run_dir)
    if which not in CHECKPOINTS:
        raise InputError(f"checkpoint {which!r}: expected one of {CHECKPOINTS}")
    config_path = run_dir / CONFIG_NAME
    saved = load_yaml(config_path)
    if saved.get("method") != recipe.method:
        raise InputError(f"{config_path}: a run of method {saved.get('method')!r}, not {recipe.method!r}")
    config = config_from_dict(recipe.config_class, saved, where=str(config_path))
    path = run_dir / CHECKPOINT_DIR / f"{which}.ckpt"
    checkpoint = _read_checkpoint(path, map_location="cpu")
    hyper = (checkpoint.get("hyper_parameters") or {}).get("config")
    if isinstance(hyper, dict):
        differing = _differing_sections(hyper, config)
        if differing:
            raise InputError(f"{path}: checkpoint of method {hyper.get('method')!r} preset {hyper.get('preset')!r} "
                             f"disagrees with {config_path} in {', '.join(differing)}")
    state = {key[len(MODEL_PREFIX):]: value for key, value in checkpoint["state_dict"].items()
             if key.startswith(MODEL_PREFIX)}
    model = recipe.module_class.build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:300]
        raise InputError(f"{path}: weights do not fit the network of {config_path} ({detail})") from None
    return model.to(map_location).eval(), config


__all__ = ["AtomicCheckpointIO", "SessionTimer", "TrainingRecipe", "load_model", "parse_max_time", "train_run"]
