import os

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

# Property tests (tests/test_properties.py): "ci", the default, is small and reproducible (the
# same examples on every run, no example database written); "nightly" explores many more, fresh
# ones each run: HYPOTHESIS_PROFILE=nightly python -m pytest tests/test_properties.py
_SLOW_EXAMPLES = [HealthCheck.too_slow, HealthCheck.data_too_large]
# The explain phase (which lines only failing examples ran) takes minutes on a failure.
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, database=None,
                          suppress_health_check=_SLOW_EXAMPLES,
                          phases=[p for p in Phase if p is not Phase.explain])
settings.register_profile("nightly", max_examples=500, deadline=None,
                          suppress_health_check=_SLOW_EXAMPLES, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
