"""Reusable pytest conformance suites for evercore storage backends.

Subclass :class:`StorageEngineConformance` (and the subscription suite) in a
``Test*`` class and provide an ``engine`` fixture; see :mod:`evercore.testing.engine`.
Needs pytest.
"""

from evercore.testing.engine import StorageEngineConformance
from evercore.testing.subscriptions import SubscriptionConformance

__all__ = ["StorageEngineConformance", "SubscriptionConformance"]
