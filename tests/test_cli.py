"""The CLI contract: --help everywhere; user errors exit 2 with one line naming the problem, no traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest

from implicitseg.io.images import Volume, write_image


def run_cli(*arguments, cwd=None):
    return subprocess.run([sys.executable, "-m", "implicitseg.cli", *map(str, arguments)],
                          capture_output=True, text=True, encoding="utf-8", cwd=cwd, timeout=300)


@pytest.mark.parametrize("command", ["synth", "prepare", "check", "train", "predict", "evaluate", "compare", "demo"])
def test_every_command_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def _assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_user_errors_exit_2_with_one_line(tmp_path):
    _assert_user_error(run_cli("prepare", tmp_path, "--method", "nudf", "--out", tmp_path / "prep"), "no dataset.json")
    _assert_user_error(run_cli("prepare", tmp_path, "--method", "nosuch", "--out", tmp_path / "prep"), "unknown method")
    _assert_user_error(run_cli("train", tmp_path, "--out", tmp_path / "run"), "manifest.json")
    _assert_user_error(run_cli("predict", tmp_path / "norun", tmp_path, "--out", tmp_path / "o", "--roi-center", "0,0,0"),
                       "no config.yaml")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("method: nudf\n")
    _assert_user_error(run_cli("predict", tmp_path / "run", tmp_path, "--out", tmp_path / "o", "--roi-center", "1,2"),
                       "--roi-center")
    _assert_user_error(run_cli("predict", tmp_path / "run", tmp_path / "missing.nii.gz", "--out", tmp_path / "o",
                               "--roi-center", "1,2,3"), "missing.nii.gz")
    _assert_user_error(run_cli("evaluate", tmp_path / "nopred", tmp_path, "--out", tmp_path / "m"), "nopred")


def test_train_without_a_validation_says_so(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from implicitseg.cli import app
    from implicitseg.methods import pipeline

    monkeypatch.setattr(pipeline, "run_train", lambda *args, **kwargs: {"epochs_completed": 1, "best_val_loss": None})
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "trained 1 epochs; no validation ran" in result.output


def test_unreadable_and_nan_images_are_named(tmp_path):
    dataset = tmp_path / "data"
    (dataset / "imagesTr").mkdir(parents=True)
    (dataset / "labelsTr").mkdir()
    (dataset / "imagesTr" / "a.nii.gz").write_bytes(b"garbage")
    array = np.zeros((8, 8, 8), np.float32)
    array[4, 4, 4] = np.nan
    write_image(dataset / "imagesTr" / "b.nii.gz", Volume(array, np.eye(4)))
    label = np.zeros((8, 8, 8), np.int16)
    write_image(dataset / "labelsTr" / "a.nii.gz", Volume(label, np.eye(4)))
    (dataset / "dataset.json").write_text(json.dumps(
        {"name": "bad", "training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}], "test": []}))
    _assert_user_error(run_cli("prepare", dataset, "--method", "nudf", "--out", tmp_path / "prep"), "a.nii.gz")
    (dataset / "dataset.json").write_text(json.dumps(
        {"name": "bad", "training": [{"image": "imagesTr/b.nii.gz", "label": "labelsTr/a.nii.gz"}], "test": []}))
    _assert_user_error(run_cli("prepare", dataset, "--method", "nudf", "--out", tmp_path / "prep"), "case ids do not match")


def test_roi_sources_and_whole_image_methods_refuse_what_does_not_apply(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("method: unet\n")
    _assert_user_error(run_cli("predict", tmp_path / "run", tmp_path, "--out", tmp_path / "o", "--roi-center", "1,2,3",
                               "--roi-run", tmp_path / "roi_run"), "exactly one of --roi-center")
    _assert_user_error(run_cli("prepare", tmp_path, "--method", "roi", "--roi-mm", "50", "--out", tmp_path / "prep"),
                       "--roi-mm does not apply to method 'roi'")


def test_synth_writes_the_asked_number_of_test_cases(tmp_path):
    result = run_cli("synth", tmp_path / "ds", "--kind", "organ", "--cases", "1", "--test-cases", "2", "--seed", "3")
    assert result.returncode == 0, result.stderr
    listing = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert len(listing["training"]) == 1 and len(listing["test"]) == 2
    assert len(list((tmp_path / "ds" / "imagesTs").glob("*.nii.gz"))) == 2


CLI_DAMAGES = {
    "truncated image": ["imagesTr/c1.nii.gz: truncated file"],
    "label origin 5 mm off": ["labelsTr/c1.nii.gz: labelmap not on the grid of its image", "imagesTr/c1.nii.gz",
                              "origin 5.00 mm apart"],
    "label cropped 10 voxels": ["labelsTr/c1.nii.gz", "size: image 40×44×30, label 40×44×20"],
    "undeclared label value": ["labelsTr/c1.nii.gz: label value(s) 3 are not declared in dataset.json's labels (0, 1)"],
}


@pytest.mark.parametrize("damage", sorted(CLI_DAMAGES))
def test_a_damaged_case_stops_prepare_with_one_line_and_nothing_written_for_it(tmp_path, damage):
    from helpers import damage_small_dataset, write_small_dataset

    write_small_dataset(tmp_path / "data")
    damage_small_dataset(tmp_path / "data", damage)
    _assert_user_error(run_cli("prepare", tmp_path / "data", "--method", "unet", "--preset", "unet-demo", "--roi-mm",
                               "40", "--out", tmp_path / "prep"), *CLI_DAMAGES[damage])
    assert not (tmp_path / "prep" / "c1").exists() and not (tmp_path / "prep" / "manifest.json").exists()


def test_check_prints_one_line_per_damaged_case_and_exits_2(tmp_path):
    from helpers import damage_small_dataset, write_small_dataset

    write_small_dataset(tmp_path / "data", n_cases=5)
    for position, damage in enumerate(sorted(CLI_DAMAGES), start=1):
        damage_small_dataset(tmp_path / "data", damage, case=f"c{position}")
    result = run_cli("check", tmp_path / "data", "--workers", "2", "--json", tmp_path / "check.json")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines), result.stderr
    for position, damage in enumerate(sorted(CLI_DAMAGES), start=1):
        line = next(line for line in lines if f"c{position}.nii.gz" in line)
        assert all(fragment.replace("c1", f"c{position}") in line for fragment in CLI_DAMAGES[damage]), line
    assert "labels on the image grid" in result.stdout and "✗" in result.stdout
    written = json.loads((tmp_path / "check.json").read_text())
    assert written["ok"] is False and len([p for check in written["checks"] for p in check["problems"]]) == 4
    assert not list(tmp_path.glob(".tmp-*"))


def test_check_on_a_synthetic_dataset_is_all_clear(tmp_path):
    from implicitseg.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "organ", kind="organ", n_cases=2, seed=0, n_test=1)
    result = run_cli("check", tmp_path / "organ", "--method", "implicit-unet", "--json", tmp_path / "check.json")
    assert result.returncode == 0, result.stderr
    assert "all checks hold for 2 case(s) and 1 test image(s)" in result.stdout and "✗" not in result.stdout
    assert json.loads((tmp_path / "check.json").read_text())["ok"] is True


def test_bad_settings_exit_2_with_one_line_naming_the_key(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("method: nudf\npreset: nudf-demo\n")
    predict = ["predict", tmp_path / "run", tmp_path, "--out", tmp_path / "o", "--roi-center", "0,0,0"]
    _assert_user_error(run_cli(*predict, "--set", "roi.res=16", "--set", "meshing.method=poisson"),
                       "--set: roi.res: may not change for a trained run", "predict may change point_cloud, meshing")
    assert not (tmp_path / "o").exists()


def test_settings_are_recorded_in_config_yaml_and_data_sections_stay_as_prepared(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from helpers import write_small_dataset
    from implicitseg.cli import app
    from implicitseg.errors import InputError

    write_small_dataset(tmp_path / "data", n_cases=3)
    (tmp_path / "mine.yaml").write_text("preset: unet-demo\nintensity:\n  scale: 500\n")
    runner = CliRunner()
    prepare = ["prepare", str(tmp_path / "data"), "--method", "unet", "--out", str(tmp_path / "prep"), "--roi-mm", "40"]
    result = runner.invoke(app, [*prepare, "--set", "model.channel=[8]"])
    assert isinstance(result.exception, InputError) and not (tmp_path / "prep").exists()
    assert str(result.exception).startswith("--set: model.channel: no such setting (model has channels, strides,")
    result = runner.invoke(app, [*prepare, "--config", str(tmp_path / "mine.yaml"), "--set", "roi.res=16"])
    assert result.exit_code == 0, result.output
    prepared = yaml.safe_load((tmp_path / "prep" / "config.yaml").read_text())
    assert prepared["preset"] == "unet-demo" and prepared["roi"] == {"size_mm": 40.0, "res": 16}
    assert prepared["intensity"]["scale"] == 500.0

    train = ["train", str(tmp_path / "prep"), "--out", str(tmp_path / "run"), "--max-epochs", "1"]
    result = runner.invoke(app, [*train, "--set", "train.learning_rate=2e-3", "--set", "train.batch_size=1",
                                 "--set", "roi.res=16"])  # the prepared value: no change
    assert result.exit_code == 0, result.output
    trained = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert trained["train"]["learning_rate"] == 2e-3 and trained["train"]["batch_size"] == 1
    assert trained["roi"] == prepared["roi"] and trained["intensity"] == prepared["intensity"]

    result = runner.invoke(app, [*train, "--resume", "--set", "intensity.scale=1000"])
    assert isinstance(result.exception, InputError), result.output
    assert "intensity.scale: fixed when" in str(result.exception) and "prepare again" in str(result.exception)


def test_predict_set_changes_the_mesher_and_prediction_json_records_it(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from helpers import AFFINE_CASES, ImageLevelSetModel, blurred_sphere_hu, fake_runs
    from implicitseg.cli import app
    from implicitseg.geometry.frames import index_to_world
    from implicitseg.io.configs import save_config
    from implicitseg.methods.nudf import preset_config

    affine = AFFINE_CASES["anisotropic"]
    center = index_to_world(np.array([[30.0, 25.0, 15.0]]), affine)[0]
    write_image(tmp_path / "case_2.nii.gz", Volume(blurred_sphere_hu(affine, (60, 50, 30), center, 10.0), affine))
    config = preset_config("nudf-demo")
    config.roi.size_mm, config.roi.res = 40.0, 48
    save_config(tmp_path / "run" / "config.yaml", config)
    fake_runs(monkeypatch, ("nudf", ImageLevelSetModel(), config))
    result = CliRunner().invoke(app, [
        "predict", str(tmp_path / "run"), str(tmp_path / "case_2.nii.gz"), "--out", str(tmp_path / "out"),
        "--roi-center", ",".join(map(str, center)), "--set", "meshing.method=poisson",
        "--set", "point_cloud.n_dense=20000", "--set", "meshing.n_subsample=2000"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "case_2" / "prediction.json").read_text())
    assert record["meshing"]["method"] == "poisson" and "point_cloud_s" in record["timings"]
    assert record["overrides"] == {"meshing.method": "poisson", "point_cloud.n_dense": 20000,
                                   "meshing.n_subsample": 2000}
    assert 1000 < record["counts"]["n_points"] <= 20000
    written = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert written["meshing"]["method"] == "poisson" and written["point_cloud"]["n_dense"] == 20000
    assert config.meshing.method == "udf-mc"  # the run's own config is untouched


def test_predict_keep_going_predicts_the_rest_and_names_the_failed_image(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from helpers import AFFINE_CASES, ImageLevelSetModel, blurred_sphere_hu, fake_runs
    from implicitseg.cli import app
    from implicitseg.errors import InputError
    from implicitseg.geometry.frames import index_to_world
    from implicitseg.io.configs import save_config
    from implicitseg.methods.nudf import preset_config

    affine = AFFINE_CASES["oblique"]
    center = index_to_world(np.array([[30.0, 25.0, 15.0]]), affine)[0]
    images = tmp_path / "images"
    for case in ("case_1", "case_2"):
        write_image(images / f"{case}.nii.gz", Volume(blurred_sphere_hu(affine, (60, 50, 30), center, 10.0), affine))
    damaged = images / "case_1.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:3000])
    config = preset_config("nudf-demo")
    config.roi.size_mm, config.roi.res = 40.0, 48
    save_config(tmp_path / "run" / "config.yaml", config)
    fake_runs(monkeypatch, ("nudf", ImageLevelSetModel(), config))
    predict = ["predict", str(tmp_path / "run"), str(images), "--roi-center", ",".join(map(str, center))]

    stopped = CliRunner().invoke(app, [*predict, "--out", str(tmp_path / "stop")])
    assert isinstance(stopped.exception, InputError) and "case_1.nii.gz" in str(stopped.exception)
    assert not (tmp_path / "stop" / "case_2").exists()

    result = CliRunner().invoke(app, [*predict, "--out", str(tmp_path / "out"), "--keep-going"])
    assert isinstance(result.exception, InputError), result.output
    assert str(result.exception).startswith("1 of 2 images could not be predicted: ")
    assert "case_1.nii.gz" in str(result.exception) and "case_1: failed: " in result.output
    assert (tmp_path / "out" / "case_2" / "mesh.vtk").is_file() and not (tmp_path / "out" / "case_1").exists()
    failures = json.loads((tmp_path / "out" / "failures.json").read_text())["failures"]
    assert [failure["case"] for failure in failures] == ["case_1"] and "truncated" in failures[0]["error"]
