"""Reusable pytest conformance suites for evercore storage backends.

Subclass :class:`StorageEngineConformance` (and the subscription suite) in a
``Test*`` class and provide an ``engine`` fixture; see :mod:`evercore.testing.engine`.
The reliability suites (model-based, concurrency stress, hostile input) take the same
fixture; see :mod:`evercore.testing.reliability`. Needs pytest and hypothesis.
"""

import pytest

# Rewrite the suites' asserts so a failing check shows its values, as in a test file.
pytest.register_assert_rewrite(
    "evercore.testing.engine", "evercore.testing.reliability", "evercore.testing.subscriptions"
)

from evercore.testing.engine import StorageEngineConformance  # noqa: E402
from evercore.testing.reliability import (  # noqa: E402
    ConcurrencyStress,
    HostileInputRefusal,
    ModelBasedReliability,
    MultiProcessStress,
)
from evercore.testing.subscriptions import SubscriptionConformance  # noqa: E402

__all__ = [
    "ConcurrencyStress",
    "HostileInputRefusal",
    "ModelBasedReliability",
    "MultiProcessStress",
    "StorageEngineConformance",
    "SubscriptionConformance",
]
