"""Sampling: parameters, their validation, and the C sampler's typed wrapper."""

from mlxserve.sampling.params import SamplingParams
from mlxserve.sampling.validation import SamplingParamError, validate_sampling

__all__ = ["Sampler", "SamplingParamError", "SamplingParams", "validate_sampling"]


def __getattr__(name: str):
    # The compiled extension loads on first use, so the API layer can validate parameters
    # (and report a missing build clearly) without importing it.
    if name == "Sampler":
        from mlxserve.sampling.sampler import Sampler

        return Sampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
