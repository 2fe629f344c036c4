"""Component -> Verilog + JSON sidecar, cached by unit, parameters and generator source."""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from heterotron.hdl.contract.params import defaults
from heterotron.hdl.ports import NO_INIT
from heterotron.sim.flows.units import Unit

__all__ = ["Generated", "build_root", "generate", "generate_from", "sidecar", "port_list",
           "source_digest", "generator_sources", "locked"]


#: The user's setting for where generated files are cached.
ENV_BUILD_DIR = "HETEROTRON_BUILD_DIR"


def build_root() -> Path:
    """Where generated files are cached: ``$HETEROTRON_BUILD_DIR`` or ``./build``."""
    return Path(os.environ.get(ENV_BUILD_DIR, "build")).resolve()


def _version() -> str:
    try:
        return metadata.version("heterotron")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _imports(path: Path, module: str) -> set[str]:
    """The ``heterotron.*`` modules a source file imports (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else node.module
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # names that are submodules
    return {name for name in found if name.startswith("heterotron.")}


def _generator_modules() -> dict[Path, str]:
    """Every file the generator's output can depend on, with its module name: the
    ``heterotron.hdl`` package (all of it, subpackages too) and, transitively, every
    ``heterotron`` module it imports (the golden constants the RTL takes from
    ``heterotron.sim``, say)."""
    import heterotron.hdl as hdl

    root = Path(next(iter(hdl.__path__)))
    todo = [(p, ".".join(["heterotron.hdl", *(part for part in
                                               p.relative_to(root).with_suffix("").parts
                                               if part != "__init__")]))
            for p in sorted(root.rglob("*.py"))]
    seen: dict[Path, str] = {}
    while todo:
        path, module = todo.pop()
        if path in seen:
            continue
        seen[path] = module
        for name in _imports(path, module):
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                continue
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                todo.append((Path(spec.origin), name))
    return seen


def generator_sources() -> list[Path]:
    """The files of :func:`_generator_modules`, sorted."""
    return sorted(_generator_modules())


def source_digest() -> str:
    """Hash of the generator's sources (:func:`generator_sources`), each keyed by its module
    name: a changed component, or a changed golden constant a component imports, invalidates
    every cache entry."""
    h = hashlib.sha256()
    for path, module in sorted(_generator_modules().items()):
        h.update(module.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (parallel test workers share the cache)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def describe_shape(shape) -> Any:
    """A JSON description of a port's shape: bit offsets for structured payloads."""
    if isinstance(shape, data.ArrayLayout):
        return {"array": describe_shape(shape.elem_shape), "length": shape.length,
                "stride": Shape.cast(shape.elem_shape).width}
    if isinstance(shape, data.StructLayout):
        return {"struct": {name: {"offset": field.offset, "shape": describe_shape(field.shape)}
                           for name, field in shape}}
    s = Shape.cast(shape)
    return f"{'signed' if s.signed else 'unsigned'}({s.width})"


def sidecar(unit: Unit, component: wiring.Component, module: str) -> dict[str, Any]:
    """Ports, parameters and latency of a generated module, from the component itself."""
    return {
        "format": "heterotron-sidecar/1",
        "generator": f"heterotron {_version()}",
        "unit": unit.name,
        "module": module,
        "summary": unit.summary,
        "parameters": component.parameters,
        "latency_cycles": component.latency,
        # row units add what their latency depends on (row length, sequential stages)
        **({"timing": component.timing} if hasattr(component, "timing") else {}),
        "clock": "clk (rising edge)",
        "reset": "rst (synchronous, active high)",
        "ports": port_list(component),
    }


def port_list(component: wiring.Component) -> list[dict[str, Any]]:
    """The generated module's ports, clock and reset first."""
    ports = [
        {"name": "clk", "direction": "input", "width": 1},
        {"name": "rst", "direction": "input", "width": 1},
    ]
    for path, member, _value in component.signature.flatten(component):
        ports.append({
            "name": "__".join(str(p) for p in path),
            "direction": "input" if member.flow == wiring.In else "output",
            "width": Shape.cast(member.shape).width,
            "shape": describe_shape(member.shape),
        })
    return ports


@dataclass(frozen=True)
class Generated:
    verilog: Path
    sidecar: Path
    module: str
    params: dict[str, Any]
    key: str


def generate(unit: Unit, params: dict[str, Any], out_dir: Path | None = None) -> Generated:
    """Write ``<unit>.v`` and ``<unit>.json`` for ``params``.

    Without ``out_dir`` the files go to the cache ``build/gen/<unit>/<key>/`` and an unchanged
    entry is reused; with ``out_dir`` they are always written there.
    """
    params = defaults(unit.params, params)
    unit.validate(params)

    def make():
        component = unit.build(params)
        return component, sidecar(unit, component, unit.name)
    return generate_from(unit.name, params, make, params, out_dir)


def generate_from(name: str, key_source: Any, make, params: dict[str, Any],
                  out_dir: Path | None = None) -> Generated:
    """Write ``<name>.v`` and ``<name>.json`` from ``make() -> (component, sidecar dict)``,
    cached under the hash of ``key_source`` (JSON) and the generator's sources."""
    blob = json.dumps({"unit": name, "params": key_source, "src": source_digest()},
                      sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    cached = out_dir is None
    directory = build_root() / "gen" / name / key if cached else Path(out_dir)
    v_path, j_path = directory / f"{name}.v", directory / f"{name}.json"
    if not cached:
        directory.mkdir(parents=True, exist_ok=True)
        _write(name, make, v_path, j_path)
        return Generated(v_path, j_path, name, params, key)
    with locked(directory):
        if not (v_path.exists() and j_path.exists()):
            _write(name, make, v_path, j_path)
    return Generated(v_path, j_path, name, params, key)


@contextmanager
def _no_init_memories() -> Iterator[None]:
    """While converting: memories marked :data:`~heterotron.hdl.ports.NO_INIT` whose initial
    contents are all zero get no ``$meminit`` cell, so no initial block in the Verilog.
    (Amaranth 0.5 has no switch for it; its RTLIL emitter's ``emit_memory`` writes only
    that cell.)"""
    from amaranth.back import rtlil

    emit = rtlil.ModuleEmitter.emit_memory

    def emit_memory(self, cell_idx, cell):
        if cell.attributes.get(NO_INIT) and not any(cell.init):
            return
        emit(self, cell_idx, cell)

    rtlil.ModuleEmitter.emit_memory = emit_memory
    try:
        yield
    finally:
        rtlil.ModuleEmitter.emit_memory = emit


def to_verilog(component, name: str) -> str:
    """The Verilog of ``component`` as module ``name`` (without source locations), its
    :data:`~heterotron.hdl.ports.NO_INIT` memories without initial contents."""
    with _no_init_memories():
        return verilog.convert(component, name=name, emit_src=False)


def _write(name: str, make, v_path: Path, j_path: Path) -> None:
    component, meta = make()
    text = to_verilog(component, name)
    # Write to temporary names first: an interrupted run never leaves a half file in the cache.
    v_tmp, j_tmp = v_path.with_suffix(".v.tmp"), j_path.with_suffix(".json.tmp")
    v_tmp.write_text(text)
    j_tmp.write_text(json.dumps(meta, indent=2) + "\n")
    v_tmp.replace(v_path)
    j_tmp.replace(j_path)
