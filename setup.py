"""Packages are discovered, not listed: every folder with an ``__init__.py`` under the
repository's source folders is a package, named under the one ``heterotron`` namespace
(``hdl/contract`` -> ``heterotron.hdl.contract``). The metadata is in ``pyproject.toml``."""

from pathlib import Path

from setuptools import setup

#: Source folder -> its import name.
ROOTS = {"hdl": "heterotron.hdl", "sim": "heterotron.sim", "tb": "heterotron.tb",
         "scripts": "heterotron.scripts", "configs": "heterotron.configs"}

here = Path(__file__).resolve().parent
package_dir = {}
for folder, name in ROOTS.items():
    for init in sorted((here / folder).rglob("__init__.py")):
        rel = init.parent.relative_to(here)
        package_dir[".".join([name, *rel.parts[1:]])] = rel.as_posix()

setup(packages=sorted(package_dir), package_dir=package_dir)
