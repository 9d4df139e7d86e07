"""The import layering, enforced: the core imports no adapter, no MD engine and no application code.

Every ``import`` and ``from ... import`` of every module of the package is read from its source
(AST, function-level imports included), resolved to an absolute module name, and checked against
the layer of the importing module:

* **core** (graph, models, losses, training, checkpoint, predictor, conventions, the rollout loop,
  metrics, the data-kind registry, N-body data, ...): may import the standard library, numpy,
  scipy, torch, tqdm, POT and other core modules; of MDAnalysis only its array analyses
  (``MDAnalysis.lib``, ``MDAnalysis.analysis``), never its Universe or readers (the adapter's job);
  never ``fastegnn_md.adapters``, an MD engine (OpenMM, pdbfixer, ASE, SPlisHSPlasH), or an
  application module;
* **adapters** (``fastegnn_md.adapters.*``): may import the core and each other, not the
  application layer;
* **application** (CLI, rollout pipelines and reports, ``datasets``, ``validate``, the SPH
  generator, compatibility re-exports): anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fastegnn_md
import fastegnn_md.adapters

PACKAGE = Path(fastegnn_md.__file__).parent
ADAPTERS = Path(fastegnn_md.adapters.__file__).parent

#: Application modules (and packages): everything under these names sits above core and adapters.
APPLICATION = (
    "fastegnn_md.cli",
    "fastegnn_md.datasets",
    "fastegnn_md.rollouts",
    "fastegnn_md.reports",
    "fastegnn_md.adapters.openmm.validate",
    "fastegnn_md.adapters.splishsplash",
    "fastegnn_md.adapters._splishsplash_worker",
    # Compatibility re-exports of moved application code:
    "fastegnn_md.data.sources",
    "fastegnn_md.trajectory_rollout",
    "fastegnn_md.sph_rollout",
    "fastegnn_md.report",
    "fastegnn_md.sph_report",
    "fastegnn_md.adapters.openmm_validate",
)
#: The package's front door: re-exports the public API of every layer.
FACADE = ("fastegnn_md",)
ENGINES = ("openmm", "pdbfixer", "ase", "pysplishsplash")
#: The only parts of MDAnalysis the core may use: analyses of plain arrays.
MDANALYSIS_FOR_CORE = ("MDAnalysis.lib", "MDAnalysis.analysis")


def _module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts and parts[0] == "adapters":  # an installed link to adapters/, read below
            continue
        files[".".join(("fastegnn_md", *parts)).removesuffix(".__init__")] = path
    for path in ADAPTERS.rglob("*.py"):
        parts = path.relative_to(ADAPTERS).with_suffix("").parts
        files[".".join(("fastegnn_md", "adapters", *parts)).removesuffix(".__init__")] = path
    return files


MODULES = _module_files()


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def layer(module: str) -> str:
    if module in FACADE:
        return "facade"
    if _within(module, APPLICATION):
        return "application"
    if _within(module, ("fastegnn_md.adapters",)):
        return "adapter"
    return "core"


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, function-level ones included;
    ``from X import y`` yields X.y as well as X, since y may be a submodule."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.append((node.lineno, origin))
            found += [(node.lineno, f"{origin}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None if it may."""
    if imported not in MODULES and _within(imported, ("fastegnn_md",)):
        return None  # a name imported from a module (X.y where y is a function), not a module
    where = layer(importer)
    if where in ("facade", "application"):
        return None
    if _within(imported, ("fastegnn_md",)):
        target = layer(imported)
        if target == "application":
            return f"{where} module imports application module {imported}"
        if where == "core" and target == "adapter":
            return f"core module imports adapter {imported}"
        return None
    if where == "core":
        top = imported.split(".")[0]
        if top in ENGINES:
            return f"core module imports MD engine {imported}"
        if top == "MDAnalysis" and not _within(imported, MDANALYSIS_FOR_CORE):
            return f"core module imports {imported} (only MDAnalysis.lib/analysis are allowed in the core)"
    return None


def test_every_module_is_parsed_and_classified():
    assert "fastegnn_md.graph" in MODULES and "fastegnn_md.adapters.mdanalysis.reading" in MODULES
    assert layer("fastegnn_md.predictor") == "core"
    assert layer("fastegnn_md.rollouts.pipeline") == "application"
    assert layer("fastegnn_md.adapters.openmm.stepper") == "adapter"
    assert layer("fastegnn_md.adapters.openmm.validate") == "application"


@pytest.mark.parametrize("importer, imported", [
    ("fastegnn_md.predictor", "fastegnn_md.adapters.mdanalysis"),
    ("fastegnn_md.rollout", "openmm.app"),
    ("fastegnn_md.metrics", "MDAnalysis.coordinates"),
    ("fastegnn_md.data.kinds", "fastegnn_md.datasets"),
    ("fastegnn_md.adapters.ase", "fastegnn_md.rollouts.md"),
])
def test_the_check_sees_a_violation(importer, imported):
    # The check itself can fail: each of these would be refused if the module imported it.
    assert violation(importer, imported) is not None


def test_no_module_imports_across_its_layer():
    problems = []
    for module, path in sorted(MODULES.items()):
        for line, imported in imports_of(module, path):
            reason = violation(module, imported)
            if reason:
                problems.append(f"{path}:{line}: {reason}")
    assert not problems, "\n".join(problems)
