"""The house (CONTRIBUTING.md): every module of the package stands on a floor, imports only
from its own floor or below (imports inside functions included: that is where an upward
arrow hides), and no two modules import each other, directly or round a longer cycle."""

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"

#: module (or package: all it holds) -> floor; the most specific name wins
FLOORS = {
    # 1: no numerics of the package: checks, keys, the cache, figures, the chapters' books
    "_checks": 1, "_digest": 1, "cache": 1, "plotting": 1, "exercises": 1,
    "chapters": 1, "glued": 1, "runs": 1, "device": 1,
    # 2: what is observed and scored, and the dynamics
    "observe": 2, "metrics": 2, "systems": 2,
    # 3: analysis steps, networks, the cycle, placement on devices
    "filters": 3, "surrogates": 3, "assimilate": 3, "sharding": 3,
    # 4: the experiments and the harness
    "experiments": 4,
    # 5: the command line
    "cli": 5,
}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted((SRC / "scoreda").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: pathlib.Path) -> set[str]:
    """The package's modules that ``path`` imports anywhere in its text; ``from a import b``
    is the module ``a.b`` when that is a module, else ``a``; the root ``scoreda`` (read for
    ``__version__``) is left out."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "scoreda":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "scoreda"}
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: a relative import; the package imports absolutely")
    return found - {"scoreda"}


def _floor(module: str) -> int:
    parts = module.split(".")[1:]
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in FLOORS:
            return FLOORS[".".join(parts[:n])]
    raise AssertionError(f"{module} stands on no floor: add it to FLOORS (and to "
                         "CONTRIBUTING.md's house)")


GRAPH = {m: _imports(p) for m, p in MODULES.items() if m != "scoreda"}


def test_every_module_stands_on_a_floor_and_imports_only_from_below():
    upward = [f"{m} (floor {_floor(m)}) imports {d} (floor {_floor(d)})"
              for m, deps in GRAPH.items() for d in sorted(deps) if _floor(d) > _floor(m)]
    assert not upward, "upward arrows:\n" + "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of its modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _without_package_faces(graph):
    """A package's ``__init__`` re-exports its own modules: that is its face, not a
    dependency, so those arrows are left out of the search for cycles."""
    return {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}


def test_no_module_imports_itself_round_a_cycle():
    assert _cycle(_without_package_faces(GRAPH)) is None, \
        " -> ".join(_cycle(_without_package_faces(GRAPH)))


def test_the_checks_of_the_house_can_fail():
    """The two checks on made-up graphs: a cycle and an upward arrow are found."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert _floor("scoreda.experiments.compare.model") == 4 > _floor("scoreda.cache") == 1
    with pytest.raises(AssertionError, match="stands on no floor"):
        _floor("scoreda.newroom")


def test_contributing_draws_every_floor_of_the_house():
    """CONTRIBUTING.md's drawing names every top-level room of FLOORS."""
    text = (SRC.parent / "CONTRIBUTING.md").read_text()
    house = text[text.index("## The house"):text.index("## Recipe 1")]
    missing = [room for room in FLOORS if room.split(".")[0] not in house]
    assert not missing, f"CONTRIBUTING.md's house does not name {missing}"
