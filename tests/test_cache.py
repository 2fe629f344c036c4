"""The Verilog cache sees every source that can change the generated Verilog: editing a
constant the RTL imports from the contract rebuilds, in a real run of the generator."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from heterotron.sim.flows.build import ENV_BUILD_DIR

REPO = Path(__file__).resolve().parent.parent

GENERATE = """
import json, sys
sys.path.insert(0, {site!r})
from heterotron.sim.flows.build import generate, generator_sources
from heterotron.sim.flows.units import get_unit
unit = get_unit("pim")
params = unit.resolve(overrides={{"rows": "8", "cols": "2", "lanes": "4", "adc_share": "2"}})
g = generate(unit, params)
print(json.dumps({{"verilog": str(g.verilog), "key": g.key,
                  "sources": [str(p) for p in generator_sources()]}}))
"""


def _generate(site: Path, build: Path) -> dict:
    proc = subprocess.run([sys.executable, "-I", "-c", GENERATE.format(site=str(site))],
                          capture_output=True, text=True, cwd=build.parent,
                          env={ENV_BUILD_DIR: str(build), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_editing_a_contract_constant_rebuilds(tmp_path):
    # A private copy of the package, so the edit below touches no one else's files.
    site = tmp_path / "site" / "heterotron"
    for folder in ("hdl", "sim", "tb", "scripts", "configs"):
        shutil.copytree(REPO / folder, site / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    build = tmp_path / "build"
    first = _generate(site.parent, build)
    assert str(site / "hdl" / "contract" / "pim.py") in first["sources"]
    again = _generate(site.parent, build)
    assert again["key"] == first["key"]  # unchanged sources: the entry is reused

    # The PiM ADC's fractional bits, a constant the golden model and the RTL share.
    contract = site / "hdl" / "contract" / "pim.py"
    text = contract.read_text()
    assert "\nADC_FRAC = 12\n" in text
    contract.write_text(text.replace("\nADC_FRAC = 12\n", "\nADC_FRAC = 10\n"))
    edited = _generate(site.parent, build)
    assert edited["key"] != first["key"]
    assert edited["verilog"] != first["verilog"]
    assert Path(edited["verilog"]).read_text() != Path(first["verilog"]).read_text()

    # A new subfolder of hdl/ is part of the digest as soon as it exists.
    extra = site / "hdl" / "extra"
    extra.mkdir()
    (extra / "__init__.py").write_text("# a new subpackage\n")
    assert _generate(site.parent, build)["key"] != edited["key"]
