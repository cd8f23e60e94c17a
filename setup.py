"""Build hook for the optional C accelerator; all metadata is in pyproject.toml.

``optional=True``: where no compiler is available the build goes on without
the extension and lomond uses wsaccel or pure Python (see lomond/accel.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("lomond._speedups", ["lomond/_speedups.c"], optional=True)])
