"""The package's import discipline: importing changes nothing, and the
dependencies run one way (docs/architecture.md).

- ``import tinynet, tinynet.plots, tinynet.train`` leaves os.environ,
  numba's config and matplotlib's backend as they were (checked in a fresh
  process, so nothing imported by other tests hides a change);
- no import cycle among tinynet's modules (read with the standard library's
  ast, without importing anything);
- layers never import a backend; no module imports a private name of another
  folder; the lab (kernels/) imports no private production name.
"""
import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGE = os.path.join(REPO, "tinynet")


def _modules(root, package):
    """module name -> path of every .py file under ``root`` (a package named ``package``)."""
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def _imports(name, path, is_package):
    """(module, imported name or None) for every import statement of a module, resolved."""
    tree = ast.parse(open(path).read(), path)
    base = name.split(".") if is_package else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = ".".join(base[:len(base) - node.level + 1])
                module = f"{parent}.{node.module}" if node.module else parent
            else:
                module = node.module
            out += [(module, a.name) for a in node.names]
    return out


def _graph(root=PACKAGE, package="tinynet"):
    """tinynet's import graph: module -> the tinynet modules it imports (statically).

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
    else to ``pkg``; importing ``a.b.c`` also runs ``a`` and ``a.b``, which
    are edges too.
    """
    modules = _modules(root, package)
    graph = {}
    for name, path in modules.items():
        edges = set()
        for module, imported in _imports(name, path, path.endswith("__init__.py")):
            if not module.startswith(package):
                continue
            target = f"{module}.{imported}" if f"{module}.{imported}" in modules else module
            parts = target.split(".")
            edges |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        edges.discard(name)
        graph[name] = {e for e in edges if e in modules and not name.startswith(e + ".")}
    return graph


def _cycle(graph):
    """One import cycle of ``graph`` as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_inside_tinynet():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_layers_never_import_a_backend():
    graph = _graph()
    for name, edges in graph.items():
        if name.startswith("tinynet.layers"):
            bad = sorted(e for e in edges if e.startswith("tinynet.backends."))
            assert not bad, f"{name} imports {bad}; layers ask tinynet.backends.get_backend()"


def _private_imports(root, package, allowed):
    """(importer, module, name) for each ``from X import _private`` across folders."""
    found = []
    for name, path in _modules(root, package).items():
        for module, imported in _imports(name, path, path.endswith("__init__.py")):
            if (module and module.startswith("tinynet") and imported
                    and imported.startswith("_") and not imported.startswith("__")
                    and not allowed(name, module)):
                found.append((name, module, imported))
    return found


def test_no_module_imports_a_private_name_of_another_folder():
    def same_folder(importer, module):
        return importer.rsplit(".", 1)[0] == module or \
            importer.rsplit(".", 1)[0] == module.rsplit(".", 1)[0]
    assert _private_imports(PACKAGE, "tinynet", same_folder) == []


def test_the_lab_imports_no_private_production_name():
    found = _private_imports(os.path.join(REPO, "kernels"), "kernels", lambda *_: False)
    assert found == [], f"the lab uses production's private names: {found}"


def test_the_lab_reads_no_private_production_attribute():
    """No ``module._name`` where ``module`` is a tinynet module the lab imported."""
    found = []
    for name, path in _modules(os.path.join(REPO, "kernels"), "kernels").items():
        tree = ast.parse(open(path).read(), path)
        aliases = _tinynet_aliases(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                found.append(f"{name}: {node.value.id}.{node.attr}")
    assert found == [], f"the lab reads production's private names: {found}"


def test_the_lab_patches_no_production_name():
    """No ``setattr(<tinynet module>, ...)``/``monkeypatch`` of production in kernels/."""
    for name, path in _modules(os.path.join(REPO, "kernels"), "kernels").items():
        text = open(path).read()
        tree = ast.parse(text, path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                            and target.value.id in _tinynet_aliases(tree):
                        pytest.fail(f"{name} assigns {target.value.id}.{target.attr}")


def _tinynet_aliases(tree):
    """Names bound to tinynet modules by a module's imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tinynet"):
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names
                      if a.name.startswith("tinynet")}
    return names


_PROBE = r"""
import json, os, sys
before = dict(os.environ)
import matplotlib
backend_before = matplotlib.get_backend()
import numba
config_before = {k: repr(v) for k, v in vars(numba.config).items() if k.isupper()}
import tinynet, tinynet.plots, tinynet.train
import tinynet.study.experiments
changed = {k: os.environ.get(k) for k in set(os.environ) | set(before)
           if os.environ.get(k) != before.get(k)}
config_after = {k: repr(v) for k, v in vars(numba.config).items() if k.isupper()}
print(json.dumps({"environ": changed, "backend": [backend_before, matplotlib.get_backend()],
                  "config": sorted(k for k in config_after if config_after[k] != config_before.get(k)),
                  "pool": numba.config.NUMBA_NUM_THREADS}))
"""


def test_importing_tinynet_changes_nothing_in_the_process():
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER_PRIORITY", "MPLBACKEND")}
    env["MPLBACKEND"] = "svg"  # a backend that is not Agg, chosen by the user
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["environ"] == {}, f"import tinynet changed os.environ: {result['environ']}"
    assert result["backend"][1] == result["backend"][0] == "svg", result["backend"]
    assert result["config"] == [], f"import tinynet changed numba.config: {result['config']}"


def test_the_cpu_backend_applies_the_process_settings_once():
    code = ("import os, tinynet as tn, tinynet.process as p\n"
            "assert 'OMP_WAIT_POLICY' not in os.environ\n"
            "tn.set_backend('cpu')\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), sorted(p.APPLIED))")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER_PRIORITY",
                        "NUMBA_THREADING_LAYER", "TINYNET_MALLOPT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "PASSIVE"
    assert "NUMBA_THREADING_LAYER_PRIORITY" in " ".join(out) and "OMP_WAIT_POLICY" in " ".join(out)
