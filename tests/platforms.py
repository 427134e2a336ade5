"""The platform the suite's skips read: the real one, or MLXSERVE_TEST_PLATFORM, which the
suite's own check sets to "darwin" to see the Linux-only tests skip as they would on a Mac."""

from __future__ import annotations

import os
import sys

import pytest

PLATFORM = os.environ.get("MLXSERVE_TEST_PLATFORM", sys.platform)
LINUX = PLATFORM == "linux"
linux_only = pytest.mark.skipif(not LINUX, reason="reads /proc or needs Linux's llama.cpp wheel")
