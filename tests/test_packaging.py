"""The ``heterotron.*`` import names map onto the repository folders, in editable and normal
installs alike, and the configurations ship with the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import heterotron.hdl
import heterotron.scripts
import heterotron.sim
import heterotron.tb

REPO = Path(__file__).resolve().parent.parent


def test_namespaces_map_onto_folders():
    for module, folder in ((heterotron.hdl, "hdl"), (heterotron.sim, "sim"),
                           (heterotron.tb, "tb"), (heterotron.scripts, "scripts")):
        assert Path(next(iter(module.__path__))).name == folder


def test_normal_install_has_every_package_and_the_configs(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(REPO)], check=True)
    for rel in ("heterotron/hdl/requantizer.py", "heterotron/sim/runner.py",
                "heterotron/tb/requantizer.py", "heterotron/scripts/cli.py",
                "heterotron/configs/default.toml", "heterotron/sim/data/sentences.txt",
                "heterotron/sim/data/paragraphs.txt",
                "heterotron/sim/data/calibration_paragraphs.txt"):
        assert (target / rel).is_file(), rel
    # Run from the installed copy, not the checkout, and use a built-in configuration.
    env = dict(os.environ, PYTHONPATH=str(target))
    code = ("import heterotron.hdl.requantizer as r, heterotron.scripts.cli as c;"
            "print(r.__file__); print(c.load_config('small')[0])")
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, "
                           f"{str(target)!r}); {code}"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, check=True)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(str(target))
    assert lines[1] == "built-in small"
