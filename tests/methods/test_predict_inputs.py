"""predict refuses damaged input images before it writes anything for them."""

import dataclasses

import numpy as np
import pytest
import torch

from helpers import AFFINE_CASES
from implicitseg import methods
from implicitseg.errors import InputError
from implicitseg.io.configs import save_config
from implicitseg.io.images import Volume, write_image
from implicitseg.methods.nudf import preset_config
from implicitseg.methods.pipeline import run_predict


@pytest.mark.parametrize("keep", [3000, "half"])
def test_a_truncated_image_is_named_and_nothing_is_written_for_it(tmp_path, monkeypatch, keep):
    path = tmp_path / "case_1.nii.gz"
    write_image(path, Volume(np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32),
                             AFFINE_CASES["oblique"]))
    data = path.read_bytes()
    path.write_bytes(data[: 3000 if keep == 3000 else len(data) // 2])
    config = preset_config("nudf-demo")
    save_config(tmp_path / "run" / "config.yaml", config)
    fake_nudf = dataclasses.replace(methods.get_method("nudf"),
                                    load=lambda run, which, device: (torch.nn.Identity(), config))
    monkeypatch.setattr(methods, "_table", lambda: {"nudf": fake_nudf})
    with pytest.raises(InputError, match=r"case_1.nii.gz: truncated file: the gzip stream ends early: .* of the "
                                         r"256,000 bytes of voxel data its header declares are there"):
        run_predict(tmp_path / "run", [path], tmp_path / "out", roi_center="0,0,0", show_progress=False)
    assert not (tmp_path / "out" / "case_1").exists()
