"""Shared fixtures: both decoder implementations, and seeded randomness."""

from __future__ import annotations

import os
import random

import pytest

from fastmetrics.decode import DecoderC, DecoderPy


def compiled_decoder() -> type[DecoderPy]:
    """``DecoderC``; skips the test on a pure-Python install, but fails it when ``CI=true``."""
    if DecoderC is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fastmetrics._core is not built, but CI=true requires the compiled core")
        pytest.skip("fastmetrics._core is not built (pure-Python install)")
    return DecoderC


@pytest.fixture(scope="session", params=["py", "c"])
def decoder_cls(request: pytest.FixtureRequest) -> type[DecoderPy]:
    """The pure-Python twin (``py``) and the compiled decoder (``c``)."""
    if request.param == "py":
        return DecoderPy
    return compiled_decoder()


@pytest.fixture(scope="session")
def decoder_c() -> type[DecoderPy]:
    """The compiled decoder alone, for tests that hold it equal to the twin."""
    return compiled_decoder()


class Rand(random.Random):
    """A ``random.Random`` whose repr names its seed (``FASTMETRICS_TEST_SEED=<seed>`` replays)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.initial_seed = seed

    def __repr__(self) -> str:
        return f"Rand(seed={self.initial_seed})"


@pytest.fixture
def rand(request: pytest.FixtureRequest) -> Rand:
    """Seeded randomness for hand-rolled generators; the seed is in the repr and the report."""
    env = os.environ.get("FASTMETRICS_TEST_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(2**32)
    request.node.user_properties.append(("seed", seed))
    return Rand(seed)
