"""Hostile and mistaken input, refused before any I/O with a typed error naming the
value: on every backend through the facade, and for URIs and backend options."""

from __future__ import annotations

from evercore.testing.reliability import HostileInputRefusal

from tests.backends import engine_fixture


class TestHostileInput(HostileInputRefusal):
    """Keys, payloads, nesting, NaN, batch size and unstorable text, per backend."""

    engine = engine_fixture()
