"""Only here to compile the cffi extension; metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["asupermachine/_core/kvm/_build.py:ffibuilder"])
