"""The config schema: configs read back from YAML/JSON are type-checked, and settings by dotted key (``--set``,
``--config``, ``load_run(overrides=...)``) are checked against it, errors naming the key and what it takes."""

import pytest
import yaml

from implicitseg import methods
from implicitseg.config import NudfConfig, Settings, config_from_dict, config_to_dict, preset_named
from implicitseg.errors import InputError
from implicitseg.io.configs import settings_from_file
from implicitseg.methods.nudf import preset_config


@pytest.mark.parametrize("name", [m.name for m in methods._table().values()])
def test_every_preset_reads_back_from_its_yaml(name):
    method = methods.get_method(name)
    for preset in method.presets.values():
        text = yaml.safe_dump(config_to_dict(preset), sort_keys=False)
        assert config_from_dict(method.config_class, yaml.safe_load(text)) == preset


@pytest.mark.parametrize("data, message", [
    ({"roi": {"res": "sixty-four"}}, "f.yaml: roi.res: expected an integer, got 'sixty-four'"),
    ({"roi": {"res": 32.5}}, "roi.res: expected an integer, got 32.5"),
    ({"point_cloud": {"n_dense": True}}, "point_cloud.n_dense: expected an integer, got True"),
    ({"train": {"augment": {"probability": "often"}}}, "train.augment.probability: expected a number, got 'often'"),
    ({"meshing": {"method": 3}}, "meshing.method: expected a string, got 3"),
    ({"train": {"clamp_keeps_gradient": "yes"}}, "train.clamp_keeps_gradient: expected true or false, got 'yes'"),
    ({"intensity": {"window": [-1000]}}, "intensity.window: expected a list of 2 numbers, got [-1000]"),
    ({"decoder": {"hidden": 256}}, "decoder.hidden: expected a list of integers, got 256"),
    ({"decoder": {"hidden": [256, "wide"]}}, "decoder.hidden[1]: expected an integer, got 'wide'"),
    ({"roi": 70}, "f.yaml: roi: expected a mapping, got int"),
    ({"roi": {"size": 70}}, "f.yaml: unknown key(s) roi.size; roi has size_mm, res"),
])
def test_wrong_types_and_unknown_keys_name_the_key_and_what_it_takes(data, message):
    with pytest.raises(InputError) as error:
        config_from_dict(NudfConfig, data, where="f.yaml")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_numbers_are_read_as_their_field_holds_them():
    config = config_from_dict(NudfConfig, {"roi": {"size_mm": 50, "res": 32.0},
                                           "train": {"learning_rate": "1e-4"},  # YAML 1.1 reads 1e-4 as a string
                                           "intensity": {"window": [-100, 200]}})
    assert config.roi.size_mm == 50.0 and isinstance(config.roi.size_mm, float)
    assert config.roi.res == 32 and isinstance(config.roi.res, int)
    assert config.train.learning_rate == 1e-4 and config.intensity.window == (-100.0, 200.0)


def test_set_text_is_parsed_for_each_fields_type():
    settings = Settings.from_assignments(["point_cloud.n_dense=200000", "train.learning_rate=1e-4",
                                          "meshing.method=poisson", "intensity.window=[-160, 240]",
                                          "train.clamp_keeps_gradient=false", "decoder.hidden=[64,64]"])
    config, applied = settings.apply(preset_config("nudf-demo"))
    assert (config.point_cloud.n_dense, config.train.learning_rate, config.meshing.method) == (200_000, 1e-4, "poisson")
    assert config.intensity.window == (-160.0, 240.0) and config.train.clamp_keeps_gradient is False
    assert config.decoder.hidden == (64, 64)
    assert applied == {"point_cloud.n_dense": 200_000, "train.learning_rate": 1e-4, "meshing.method": "poisson",
                       "intensity.window": [-160.0, 240.0], "train.clamp_keeps_gradient": False,
                       "decoder.hidden": [64, 64]}
    assert preset_config("nudf-demo").point_cloud.n_dense == 100_000  # the preset itself is untouched


def test_a_string_field_takes_the_text_as_written():
    config, _ = Settings.from_assignments(["shapes.anchor=012", "shapes.anchor_case=true"]).apply(
        methods.get_method("ismm").preset("ismm"))
    assert config.shapes.anchor == "012" and config.shapes.anchor_case == "true"


def test_a_files_nested_sections_and_dotted_keys_both_apply():
    config, applied = Settings("f.yaml", {"meshing": {"band": {"cell_mm": 2}}, "point_cloud.n_seeds": 10}).apply(
        preset_config("nudf-demo"))
    assert config.meshing.band.cell_mm == 2.0 and config.point_cloud.n_seeds == 10
    assert applied == {"meshing.band.cell_mm": 2.0, "point_cloud.n_seeds": 10}


@pytest.mark.parametrize("assignment, message", [
    ("point_cloud.n_dens=5", "--set: point_cloud.n_dens: no such setting (point_cloud has n_seeds, n_dense,"),
    ("pointcloud.n_dense=5", "--set: pointcloud.n_dense: no such setting (nudf's config has method, preset, roi,"),
    ("point_cloud.n_dense=many", "--set: point_cloud.n_dense: expected an integer, got 'many'"),
    ("point_cloud.n_dense=", "--set: point_cloud.n_dense: expected an integer, got None"),
    ("meshing=poisson", "--set: meshing: a section; set its keys (meshing.KEY=VALUE)"),
    ("roi.res.x=1", "--set: roi.res.x: roi.res is a value, not a section"),
    ("point_cloud.n_dense", "--set 'point_cloud.n_dense': expected section.key=value"),
    ("=5", "--set '=5': expected section.key=value"),
])
def test_bad_settings_name_the_key_and_the_problem(assignment, message):
    with pytest.raises(InputError) as error:
        Settings.from_assignments([assignment]).apply(preset_config("nudf-demo"))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_fixed_section_refuses_a_change_but_not_its_own_value():
    fixed = {"roi": "fixed when PREP was prepared"}
    config = preset_config("nudf-demo")
    same, _ = Settings.from_assignments(["roi.res=32", "point_cloud.n_dense=5"]).apply(config, fixed)
    assert same.roi.res == 32 and same.point_cloud.n_dense == 5
    with pytest.raises(InputError, match=r"^--set: roi.res: fixed when PREP was prepared$"):
        Settings.from_assignments(["roi.res=64"]).apply(config, fixed)


def test_a_config_file_names_its_preset(tmp_path):
    (tmp_path / "mine.yaml").write_text("preset: nudf-demo\npoint_cloud:\n  n_dense: 5\n")
    settings = [settings_from_file(tmp_path / "mine.yaml"), Settings.from_assignments(["meshing.method=poisson"])]
    assert preset_named(settings) == "nudf-demo" and preset_named(settings[1:]) is None
    with pytest.raises(InputError, match="nothere.yaml: config file not found"):
        settings_from_file(tmp_path / "nothere.yaml")


def test_a_setting_with_fixed_choices_refuses_any_other_value_when_read_or_set():
    with pytest.raises(InputError, match=r"meshing\.method: expected one of udf-mc, poisson, got 'posson'"):
        config_from_dict(NudfConfig, {"meshing": {"method": "posson"}}, where="run/config.yaml")
    config = preset_config("nudf-demo")
    with pytest.raises(InputError, match=r"--set: meshing\.components\.rule: expected one of supported, largest, all"):
        Settings.from_assignments(["meshing.components.rule=biggest"]).apply(config)
    changed, applied = Settings.from_assignments(["meshing.method=poisson"]).apply(config)
    assert changed.meshing.method == "poisson" and applied == {"meshing.method": "poisson"}


def test_every_method_config_gives_each_field_one_role_and_knows_its_input_size():
    for name in ("nudf", "unet", "roi", "implicit-unet", "nisf", "ismm"):
        method = methods.get_method(name)
        roles = method.config_class.roles()
        assert set(roles.values()) <= {"data", "network", "train", "predict"} and "train" in roles
        config = method.preset(next(iter(method.presets)))
        assert config.input_res() >= 0
    nisf = methods.get_method("nisf").preset("nisf-demo")
    with pytest.raises(InputError, match="--res does not apply to method 'nisf'"):
        nisf.set_input_size(res=64)
    unet = methods.get_method("unet").preset("unet64")
    unet.set_input_size(res=32, roi_mm=50.0)
    assert (unet.input_res(), unet.roi_size_mm()) == (32, 50.0)
    with pytest.raises(InputError, match="--roi-mm must be positive"):
        unet.set_input_size(roi_mm=-1.0)
