"""The model-based reliability test on every backend: random contexts and subscription
polls through the facade, compared step by step with a reference model."""

from __future__ import annotations

from evercore.testing.reliability import ModelBasedReliability

from tests.backends import engine_fixture


class TestModelBased(ModelBasedReliability):
    """200 examples per backend (``EVERCORE_RELIABILITY_EXAMPLES`` for more)."""

    engine = engine_fixture()
