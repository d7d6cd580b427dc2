"""The architecture and the style as CI checks them: the import-linter contracts of pyproject.toml,
ruff (lint and format), one interface for every model family, and no module that imports two families."""

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from loraedit.backends import registry
from loraedit.backends.base import FAMILY_ATTRIBUTES

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / cmd[0]), *cmd[1:]], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_import_contracts_are_kept():
    """`lint-imports` names the broken contract and the import that breaks it."""
    out = run("lint-imports", "--no-cache")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("cmd", [("ruff", "check", "."), ("ruff", "format", "--check", ".")], ids=["lint", "format"])
def test_ruff(cmd):
    out = run(*cmd)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


@pytest.mark.parametrize("name", sorted(registry.FAMILIES))
def test_every_family_has_the_whole_interface(name):
    family = registry.family(name)
    assert [a for a in FAMILY_ATTRIBUTES if not hasattr(family, a)] == []
    assert family.NAME == name


def test_every_backend_names_a_registered_family():
    assert {spec.family for spec in registry.BACKENDS.values()} <= set(registry.FAMILIES)
    assert {spec.name for spec in registry.BACKENDS.values() if spec.tiny} >= {"tiny", "tiny-hunyuan"}


def test_no_module_imports_two_families():
    graph = grimp.build_graph("loraedit")
    families = [registry.FAMILIES[name] for name in sorted(registry.FAMILIES)]
    both = []
    for module in sorted(graph.modules):
        if any(module == f or module.startswith(f + ".") or f.startswith(module + ".") for f in families):
            continue  # a family itself, or a package that holds them
        reached = {f for f in families if graph.chain_exists(importer=module, imported=f, as_packages=True)}
        if len(reached) > 1:
            both.append(module)
    assert both == []  # cli reaches both only through the registry's lazy imports, which grimp does not follow
