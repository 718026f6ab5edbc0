import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# Lets test modules import tests/helpers.py as `helpers`.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seeded_global_generators():
    """Every test starts from the same global random state, whatever ran before it on its worker (pytest-xdist
    hands tests to workers in a different order each run), so a random draw cannot fail one run in many."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
