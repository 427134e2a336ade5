"""Builds the C sampler through cffi; all other metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["csrc/build_sampler.py:ffibuilder"])
