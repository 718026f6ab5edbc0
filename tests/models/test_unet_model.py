"""The U-Net baseline's network: comparable in size to NUDF's, shapes, and a clear error for a bad config."""

import pytest
import torch

from implicitseg.config import UnetModelConfig
from implicitseg.errors import InputError
from implicitseg.methods import nudf, roi_detector, unet
from implicitseg.models import count_parameters
from implicitseg.models.nudf import NudfModel
from implicitseg.models.unet import build_unet, input_multiple


@pytest.mark.parametrize(("preset", "expected"), [("unet64", 2_717_729), ("unet-demo", 681_553)])
def test_parameter_counts(preset, expected):
    assert count_parameters(build_unet(unet.preset_config(preset).model)) == expected
    assert count_parameters(build_unet(roi_detector.preset_config("roi32").model)) == 681_553


def test_unet64_is_about_the_size_of_nudf64():
    ratio = count_parameters(build_unet(unet.preset_config("unet64").model)) / count_parameters(
        NudfModel(nudf.preset_config("nudf64")))
    assert 0.9 < ratio < 1.2


def test_logits_have_the_input_grid_and_two_classes():
    config = UnetModelConfig(channels=(4, 8, 8), strides=(2, 2), num_res_units=1)
    assert input_multiple(config) == 4
    assert build_unet(config)(torch.zeros(2, 1, 12, 16, 8)).shape == (2, 2, 12, 16, 8)


def test_strides_must_match_levels():
    with pytest.raises(InputError, match="3 channel entries need 2 strides"):
        build_unet(UnetModelConfig(channels=(4, 8, 8), strides=(2,)))


def test_presets_are_chosen_by_resolution_and_copied():
    assert unet.preset_for_res(None) == "unet64" and unet.preset_for_res(128) == "unet128"
    assert roi_detector.preset_for_res(32) == "roi32" and nudf.preset_for_res(256) == "nudf256"
    with pytest.raises(InputError, match="no U-Net preset for --res 48; the presets take 64, 128, 256"):
        unet.preset_for_res(48)
    first = unet.preset_config("unet64")
    first.roi.res = 8
    assert unet.preset_config("unet64").roi.res == 64
