"""Only here to compile the cffi extensions; metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["asupermachine/_core/kvm/_build.py:ffibuilder", "asupermachine/_core/native/_build.py:ffibuilder"])
