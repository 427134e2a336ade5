"""Load OpenBLAS ahead of MLX on Linux so MLX's CPU backend resolves BLAS symbols to it."""

import ctypes
import logging
import os
import sys

from mlxserve.environment import env_flag

log = logging.getLogger(__name__)

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)


def preload_openblas() -> bool:
    """Return True when OpenBLAS was loaded; a no-op off Linux (macOS uses Metal and Accelerate)."""
    if not sys.platform.startswith("linux") or env_flag("NO_OPENBLAS"):
        return False
    if "mlx.core" in sys.modules:
        log.debug("mlx.core was imported before mlxserve; OpenBLAS preload is too late")
    for path in OPENBLAS_CANDIDATES:
        if os.path.exists(path):
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            return True
    log.warning("OpenBLAS not found: MLX on CPU will be slow (install libopenblas0-pthread)")
    return False
