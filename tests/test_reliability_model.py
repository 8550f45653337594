"""The model-based reliability test on every backend: random contexts and subscription
polls through the facade, compared step by step with a reference model."""

from __future__ import annotations

import pytest
from evercore.testing.reliability import ModelBasedReliability

from tests.backends import engine_fixture


class TestModelBased(ModelBasedReliability):
    """200 examples per backend (``EVERCORE_RELIABILITY_EXAMPLES`` for more)."""

    engine = engine_fixture()


@pytest.mark.slow
class TestModelBasedSoak(ModelBasedReliability):
    """Opt-in soak (``-m slow``): 2,000 examples of up to 30 steps per backend."""

    examples = 2000
    steps = 30
    engine = engine_fixture()
