"""The Lua scripts shipped as package data, loaded once per process."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's source and the SHA1 that ``EVALSHA`` knows it by."""

    name: str
    source: str
    sha: str


def _read(name: str) -> str:
    return files("evercore_redis").joinpath("lua").joinpath(f"{name}.lua").read_text("utf-8")


@cache
def load(name: str) -> LuaScript:
    """The script ``lua/<name>.lua`` of this package, after the shared ``lua/lib.lua``."""
    source = _read("lib") + _read(name)
    return LuaScript(name, source, hashlib.sha1(source.encode("utf-8")).hexdigest())
