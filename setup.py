"""Build configuration that pyproject.toml cannot express: ship the top-level folders in the wheel.

``notebooks/`` and ``experiments/`` stay at the top of the repository (the project layout asks for
them) and are mapped into the wheel as the data-only packages ``loopexp.notebooks`` and
``loopexp.experiments``, so an installed loopexp finds them with ``importlib.resources``
(see ``loopexp/design/resources.py``). A ``package_dir`` mapping needs the package list spelled
out, and
pyproject.toml cannot add mapped packages to an automatic ``find``: hence these few lines.
"""

from setuptools import find_packages, setup

BUNDLED = {"loopexp.notebooks": "notebooks", "loopexp.experiments": "experiments"}

setup(
    packages=[*find_packages(include=["loopexp", "loopexp.*"]), *BUNDLED],
    package_dir=BUNDLED,
    package_data={"loopexp.notebooks": ["*.ipynb"], "loopexp.experiments": ["*.yaml"]},
)
