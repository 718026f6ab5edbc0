"""Training a tiny NUDF run: outputs, resume, interruption, DDP on CPU, and loading the networks back."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from implicitseg.config import config_to_dict
from implicitseg.errors import InputError
from implicitseg.fitting.losses import clamped_l1_loss
from implicitseg.models.nudf import NudfModel
from implicitseg.methods.nudf import METHOD
from implicitseg.training.run import AtomicCheckpointIO, parse_max_time

train_run, load_model = METHOD.train, METHOD.load

STEPS_PER_EPOCH = 1  # two training cases in batches of two


def val_losses(run_dir: Path, version: int) -> dict[int, float]:
    """Epoch → val_loss from the CSV log of session ``version``."""
    with open(run_dir / "logs" / "csv" / f"version_{version}" / "metrics.csv") as handle:
        return {int(row["epoch"]): float(row["val_loss"]) for row in csv.DictReader(handle) if row["val_loss"]}


def read_checkpoint(run_dir: Path, which: str) -> dict:
    return torch.load(run_dir / "checkpoints" / f"{which}.ckpt", weights_only=True)


@pytest.fixture(scope="module")
def trained_run(sphere_prep: Path, tmp_path_factory: pytest.TempPathFactory, tiny_config) -> tuple[Path, dict]:
    """A run trained for 2 epochs (read-only: tests that change it work on a copy)."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    summary = train_run(sphere_prep, run_dir, tiny_config(), max_epochs=2, progress=False, accelerator="cpu")
    return run_dir, summary


def copy_run(trained_run: tuple[Path, dict], tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_run[0], tmp_path / "run"))


def test_clamped_l1_loss_known_values() -> None:
    predicted = torch.tensor([[0.05, 0.5, 0.3], [0.0, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[0.02, 0.2, 0.05], [0.1, 0.1, 0.1]])
    loss = clamped_l1_loss(predicted, target, clamp_unit=0.1, keep_gradient_above_clamp=False)
    # reference: row 0: 0.03 + |0.1 - 0.1| + |0.1 - 0.05| = 0.08; row 1: 0.3; mean over the batch of per-row sums
    assert float(loss.detach()) == pytest.approx((0.08 + 0.3) / 2)
    loss.backward()
    # predictions above the clamp get no gradient; those below get ±1/B
    torch.testing.assert_close(predicted.grad, torch.tensor([[0.5, 0.0, 0.0], [-0.5, -0.5, -0.5]]))


def test_clamped_l1_loss_fix_pulls_down_near_points_predicted_beyond_the_clamp() -> None:
    predicted = torch.tensor([[0.05, 0.5, 0.3], [0.0, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[0.02, 0.2, 0.05], [0.1, 0.1, 0.1]])
    loss = clamped_l1_loss(predicted, target, clamp_unit=0.1)
    # row 0: 0.03 + 0 (far point predicted far) + |0.3 - 0.05| = 0.28; row 1 unchanged: 0.3
    assert float(loss.detach()) == pytest.approx((0.28 + 0.3) / 2)
    loss.backward()
    torch.testing.assert_close(predicted.grad, torch.tensor([[0.5, 0.0, 0.5], [-0.5, -0.5, -0.5]]))
    # a network predicting beyond the clamp everywhere still learns (the reference's gradient would be all zero)
    everywhere_far = torch.full((1, 4), 0.5, requires_grad=True)
    clamped_l1_loss(everywhere_far, torch.tensor([[0.01, 0.02, 0.3, 0.5]]), 0.1).backward()
    assert everywhere_far.grad[0, :2].gt(0).all()


def test_two_epoch_run_writes_checkpoints_config_and_logs(trained_run, tiny_config) -> None:
    run_dir, summary = trained_run
    assert summary["epochs_completed"] == 2 and summary["epochs_this_session"] == 2
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    expected = tiny_config()
    expected.train.max_epochs = 2
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == config_to_dict(expected)
    losses = val_losses(run_dir, 0)
    assert sorted(losses) == [0, 1]
    assert summary["best_val_loss"] == pytest.approx(min(losses.values()))
    assert list((run_dir / "logs" / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    last = read_checkpoint(run_dir, "last")  # plain contents: loads with weights_only=True
    assert last["epoch"] == 1 and last["global_step"] == 2 * STEPS_PER_EPOCH
    assert last["hyper_parameters"] == {"config": config_to_dict(expected)}
    best = read_checkpoint(run_dir, "best")
    assert best["epoch"] == min(losses, key=losses.get)


def test_resume_runs_exactly_the_missing_epochs(trained_run, sphere_prep: Path, tmp_path: Path, tiny_config) -> None:
    run_dir = copy_run(trained_run, tmp_path)
    summary = train_run(sphere_prep, run_dir, tiny_config(), max_epochs=3, resume=True, progress=False,
                        accelerator="cpu")
    assert summary["epochs_completed"] == 3 and summary["epochs_this_session"] == 1
    assert sorted(val_losses(run_dir, 1)) == [2]
    assert read_checkpoint(run_dir, "last")["global_step"] == 3 * STEPS_PER_EPOCH
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_epochs"] == 3


def test_interrupted_run_continues_from_last_checkpoint(sphere_prep: Path, tmp_path: Path, tiny_config) -> None:
    run_dir = tmp_path / "run"
    train_run(sphere_prep, run_dir, tiny_config(), max_epochs=1, progress=False, accelerator="cpu")
    saved = read_checkpoint(run_dir, "last")
    # what a kill during a checkpoint write leaves behind: a partial temporary file beside the checkpoints
    (run_dir / "checkpoints" / ".tmp-dead0000-last.ckpt").write_bytes(b"partial")
    summary = train_run(sphere_prep, run_dir, tiny_config(), max_epochs=2, resume=True, progress=False,
                        accelerator="cpu")
    assert summary["epochs_completed"] == 2 and summary["epochs_this_session"] == 1
    resumed = read_checkpoint(run_dir, "last")
    # Adam's step count goes on from the saved optimizer state instead of starting again
    adam_steps = [float(state["step"]) for state in resumed["optimizer_states"][0]["state"].values()]
    assert set(adam_steps) == {2.0 * STEPS_PER_EPOCH}
    assert float(saved["optimizer_states"][0]["state"][0]["step"]) == 1.0 * STEPS_PER_EPOCH
    assert resumed["callbacks"] and _best_scores(resumed) <= _best_scores(saved)


def _best_scores(checkpoint: dict) -> float:
    return min(float(s["best_model_score"]) for s in checkpoint["callbacks"].values()
               if isinstance(s, dict) and s.get("best_model_score") is not None)


def test_refuses_to_overwrite_or_mix_runs(trained_run, sphere_prep: Path, tmp_path: Path, tiny_config) -> None:
    run_dir = trained_run[0]
    with pytest.raises(InputError, match="--resume"):
        train_run(sphere_prep, run_dir, tiny_config(), max_epochs=3, progress=False)
    with pytest.raises(InputError, match="last.ckpt: no checkpoint"):
        train_run(sphere_prep, tmp_path / "empty", tiny_config(), max_epochs=1, resume=True, progress=False)
    other = tiny_config()
    other.encoder.stem_channels = 8
    with pytest.raises(InputError, match="config.yaml.*encoder"):
        train_run(sphere_prep, run_dir, other, max_epochs=3, resume=True, progress=False)
    full_resolution = tiny_config("nudf64")
    full_resolution.roi.res = 64
    with pytest.raises(InputError, match="prepared at res 16"):
        train_run(sphere_prep, tmp_path / "new", full_resolution, max_epochs=1, progress=False)
    with pytest.raises(InputError, match="max-time"):
        train_run(sphere_prep, tmp_path / "new", tiny_config(), max_time="1 hour", progress=False)


def test_max_time_stops_training(sphere_prep: Path, tmp_path: Path, tiny_config) -> None:
    summary = train_run(sphere_prep, tmp_path / "run", tiny_config(), max_epochs=10_000, max_time="00:00:01",
                        progress=False, accelerator="cpu")
    assert 1 <= summary["epochs_completed"] < 10_000
    assert summary["time_s"] < 30


def test_parse_max_time() -> None:
    assert parse_max_time("01:02:03").total_seconds() == 3723
    assert parse_max_time("2:00:00:10").total_seconds() == 2 * 86400 + 10
    for bad in ("10", "00:00:00", "1:2:3", "00:61:00"):
        with pytest.raises(InputError):
            parse_max_time(bad)


def test_load_model_returns_trained_network(trained_run, tiny_config) -> None:
    run_dir = trained_run[0]
    model, config = load_model(run_dir, "best")
    assert isinstance(model, NudfModel) and not model.training
    assert config.preset == "nudf-demo" and config.roi.res == 16
    state = read_checkpoint(run_dir, "best")["state_dict"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, state["model." + name])
    with torch.no_grad():
        distances = model(torch.zeros(1, 1, 16, 16, 16), torch.zeros(1, 5, 3))
    assert distances.shape == (1, 5)


def test_load_model_refuses_checkpoint_of_another_preset(trained_run, tmp_path: Path, tiny_config) -> None:
    run_dir = copy_run(trained_run, tmp_path)
    other = tiny_config("nudf64")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(other)))
    with pytest.raises(InputError, match=r"best\.ckpt.*nudf-demo"):
        load_model(run_dir, "best")
    # no hyper-parameters to compare: the weights' shapes still give it away
    checkpoint = read_checkpoint(run_dir, "last")
    del checkpoint["hyper_parameters"]
    torch.save(checkpoint, run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(InputError, match=r"last\.ckpt: weights do not fit"):
        load_model(run_dir, "last")
    with pytest.raises(InputError, match="expected one of"):
        load_model(run_dir, "final")


def test_checkpoint_writes_are_atomic(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    with pytest.raises(Exception):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": lambda: None}, path)  # cannot pickle
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_complete_an_epoch(sphere_prep: Path, tmp_path: Path, tiny_config) -> None:
    summary = train_run(sphere_prep, tmp_path / "run", tiny_config(), max_epochs=1, devices=2, accelerator="cpu",
                        progress=False)
    assert summary["epochs_completed"] == 1 and summary["devices"] == 2
    assert read_checkpoint(tmp_path / "run", "last")["global_step"] == 1  # each process took one of the two cases
    assert sorted(val_losses(tmp_path / "run", 0)) == [0]


@pytest.mark.slow
def test_processes_started_by_torchrun_train_one_run_together(sphere_prep: Path, tmp_path: Path,
                                                              tiny_config) -> None:
    """What a cluster launch does (torchrun / srun start the processes, Lightning joins them), on one machine."""
    prep = Path(shutil.copytree(sphere_prep, tmp_path / "prep"))
    manifest = json.loads((prep / "manifest.json").read_text())
    (prep / "manifest.json").write_text(json.dumps({**manifest, "config": config_to_dict(tiny_config())}))
    script = Path(sys.executable).parent / "implicitseg"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               "train", str(prep), "--out", str(tmp_path / "run"), "--max-epochs", "1", "--devices", "2",
               "--num-nodes", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_checkpoint(tmp_path / "run", "last")["global_step"] == 1  # the two cases split over two processes
    assert sorted(val_losses(tmp_path / "run", 0)) == [0]


def test_a_bf16_mixed_run_trains_resumes_and_its_network_predicts_in_float32(sphere_prep: Path, tmp_path: Path,
                                                                              tiny_config) -> None:
    run_dir = tmp_path / "run"
    config = tiny_config()
    config.train.precision = "bf16-mixed"
    train_run(sphere_prep, run_dir, config, max_epochs=1, progress=False, accelerator="cpu")
    summary = train_run(sphere_prep, run_dir, config, max_epochs=2, resume=True, progress=False, accelerator="cpu")
    assert summary["epochs_completed"] == 2
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["precision"] == "bf16-mixed"
    assert all(torch.isfinite(torch.tensor(value)) for value in val_losses(run_dir, 1).values())
    model, loaded = load_model(run_dir, "last")
    assert loaded.train.precision == "bf16-mixed"
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    image = torch.rand(1, 1, loaded.roi.res, loaded.roi.res, loaded.roi.res)
    with torch.no_grad():
        distances = model(image, torch.zeros(1, 5, 3))
    assert distances.dtype == torch.float32 and torch.isfinite(distances).all()


def test_nudf64_draws_the_uniform_share_its_learning_curves_chose_and_the_larger_presets_the_papers() -> None:
    from implicitseg.methods.nudf import preset_config

    assert preset_config("nudf64").train.sample_fractions == (0.4, 0.4, 0.2)
    assert preset_config("nudf128").train.sample_fractions == (0.45, 0.45, 0.10)
    assert preset_config("nudf64").train.learning_rate == preset_config("nudf128").train.learning_rate == 1e-4


def test_auto_precision_is_bf16_mixed_only_where_the_cpu_runs_bfloat16(monkeypatch) -> None:
    from implicitseg.methods.nudf import preset_config
    from implicitseg.training.run import resolve_precision

    assert preset_config("nudf64").train.precision == "auto"
    assert preset_config("nudf-demo").train.precision == "32-true"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    assert resolve_precision("32-true", "cpu") == "32-true" and resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
