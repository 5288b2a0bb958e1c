"""The book's chapters as the package sees them, without running one: where the notebooks
are, their titles, the parameters each declares (the cell tagged ``parameters``: literal
assignments with a comment), the sizes a scale switches to (``if scale == "paper":``), and
the relations between parameters that the cell tagged ``checks`` states.

A value is checked against its default (type, range, choices; :func:`check_value`), then all
of them together by executing the ``checks`` cell, plain Python that raises ``ValueError``,
on the defaults with the overrides (:func:`check_relations`), as the notebook itself will
before its first computation. :func:`validate` does both and turns a refusal into a
``SystemExit`` that says what is allowed (the command line's message).

A notebook is named by its number (``"04"``), stem, file name, path, or a part of its stem
that only it has (:func:`find_notebook`).
"""

from __future__ import annotations

import ast
import copy
import json
import math
import os
import re
from pathlib import Path
from typing import Any, NamedTuple


class Parameter(NamedTuple):
    """One assignment of a notebook's ``parameters`` cell and its trailing comment."""

    name: str
    default: Any
    comment: str

    def may_be_zero(self) -> bool:
        """Whether 0 is an allowed value of a number: a default of 0, ``seed``, or a comment
        that says ``0 or more`` (``spin_up = 500  # steps before ..., 0 or more``; ``>= 0``
        is read too, but papermill's ``inspect`` cannot parse a comment holding ``=``);
        other sizes must be > 0."""
        return (self.default == 0 or self.name == "seed"
                or re.search(r"(?<![\d.])0(?:\.0+)? or more|>= ?0(?:\.0+)?(?!\.?\d)", self.comment) is not None)

    def choices(self) -> tuple[str, ...] | None:
        """For a string: the default and every quoted word in its comment (double quotes may
        hold spaces: ``"noisy data"``). For a list of strings: the allowed elements, its
        default's and the quoted ones in its comment."""
        quoted = [a or b for a, b in re.findall(r"\"([^\"]+)\"|'([A-Za-z0-9_\-]+)'", self.comment)]
        if isinstance(self.default, str):
            return tuple(dict.fromkeys([self.default, *quoted]))
        if isinstance(self.default, list) and self.default and all(
                isinstance(v, str) for v in self.default):
            return tuple(dict.fromkeys([*self.default, *quoted]))
        return None



def notebooks_dir() -> Path:
    """The book's notebooks: ``$SCOREDA_NOTEBOOKS``, else the repository of this package,
    else ``./notebooks``."""
    if os.environ.get("SCOREDA_NOTEBOOKS"):
        return Path(os.environ["SCOREDA_NOTEBOOKS"])
    repository = Path(__file__).resolve().parents[2] / "notebooks"
    return repository if repository.is_dir() else Path.cwd() / "notebooks"



def notebooks() -> list[Path]:
    return sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))



def find_notebook(name: str) -> Path:
    """A notebook by its file name, stem, number prefix (``"06"``), path
    (``notebooks/06_hybrid_training.ipynb``, what tab completion gives) or a part of its stem
    that only one notebook has (``"hybrid"``); ``SystemExit`` names the candidates otherwise."""
    name = Path(name).name if ("/" in name or name.endswith(".ipynb")) else name
    known = notebooks()
    candidates = [p for p in known if name in (p.name, p.stem) or p.stem.startswith(f"{name}_")]
    if not candidates and name:
        candidates = [p for p in known if name.lower() in p.stem.lower()]
    if len(candidates) != 1:
        which = (f"{len(candidates)} match: {', '.join(p.stem for p in candidates)}" if candidates
                 else f"known: {', '.join(p.stem for p in known)}")
        raise SystemExit(f"scoreda: no single notebook matches {name!r}; {which}")
    return candidates[0]



def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]



def title(path: Path) -> str:
    for cell in _cells(path):
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem



def parameters(path: Path) -> dict[str, Parameter]:
    """The assignments of the cell tagged ``parameters`` (literal values only)."""
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{path.name}: expected one cell tagged 'parameters', found {len(tagged)}")
    source = "".join(tagged[0]["source"])
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            found[name] = Parameter(name, ast.literal_eval(node.value),
                                    _comment(lines, node.end_lineno - 1))
    return found


def _comment(lines: list[str], index: int) -> str:
    """The trailing comment of ``lines[index]``, continued by the comment-only lines right
    below it whose ``#`` sits in the same column (a long comment wrapped to 88 characters)."""
    line = lines[index]
    if "#" not in line:
        return ""
    column = line.index("#")
    parts = [line[column + 1:].strip()]
    for below in lines[index + 1:]:
        if below.strip().startswith("#") and below.index("#") == column and column > 0:
            parts.append(below[column + 1:].strip())
        else:
            break
    return " ".join(parts)



def scale_overrides(path: Path, scale: str = "paper") -> dict[str, Any]:
    """What ``scale`` changes in the notebook: the literal assignments (tuple unpacking
    included) under its ``if scale == "paper":`` block, read from the source, not executed.
    Empty for a notebook whose sizes do not depend on the scale."""
    found = {}
    for cell in _cells(path):
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:  # IPython magics: not a scale block
            continue
        for node in tree.body:
            test = node.test if isinstance(node, ast.If) else None
            if not (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
                    and test.left.id == "scale" and isinstance(test.ops[0], ast.Eq)
                    and isinstance(test.comparators[0], ast.Constant)
                    and test.comparators[0].value == scale):
                continue
            for stmt in node.body:
                if not isinstance(stmt, ast.Assign):
                    continue
                target, value = stmt.targets[0], stmt.value
                if isinstance(target, ast.Name):
                    found[target.id] = ast.literal_eval(value)
                elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                    for t, v in zip(target.elts, value.elts):
                        found[t.id] = ast.literal_eval(v)
    return found



def effective_parameters(path: Path, scale: str = "book") -> dict[str, Any]:
    """Every parameter of the notebook at ``scale``: its defaults with the scale's changes
    (and ``scale`` itself, for a notebook that has it)."""
    found = {name: p.default for name, p in parameters(path).items()}
    return found | scale_overrides(path, scale) | ({"scale": scale} if "scale" in found else {})



def parse_value(text: str) -> Any:
    """A Python literal (``3``, ``0.5``, ``[1, 2]``, ``'x'``), else the text as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text



def check_value(param: Parameter, value: Any) -> Any:
    """The value if it has the default's type and an allowed range, else ``ValueError``."""
    default = param.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{param.name} must be True or False, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{param.name} must be a number like {default!r}, got {value!r}")
        if isinstance(default, int) and not isinstance(value, int):
            raise ValueError(f"{param.name} must be an integer like {default!r}, got {value!r}")
        if not math.isfinite(value) or value < 0 or (value == 0 and not param.may_be_zero()):
            bound = ">= 0" if param.may_be_zero() else "> 0"
            raise ValueError(f"{param.name} must be a finite number {bound}, got {value!r}")
        return float(value) if isinstance(default, float) else value
    if isinstance(default, str):
        choices = param.choices()
        if not isinstance(value, str) or (len(choices) > 1 and value not in choices):
            raise ValueError(f"{param.name} must be one of {list(choices)}, got {value!r}")
        return value
    if isinstance(default, (list, dict, tuple)):
        if type(value) is not type(default):
            raise ValueError(f"{param.name} must be a {type(default).__name__} like {default!r}, got {value!r}")
        if isinstance(default, dict):
            if set(value) != set(default):
                raise ValueError(f"{param.name} must have the keys {sorted(default)}, got {sorted(value)}")
            for key, v in value.items():
                check_value(Parameter(f"{param.name}[{key!r}]", default[key], ""), v)
            return value
        _check_elements(param, list(value))
        return value
    return value



def _check_elements(param: Parameter, values: list) -> None:
    """The elements of a list parameter: of its default's element type (integers or numbers,
    finite and >= 0; strings among :meth:`Parameter.choices`), none repeated."""
    default = list(param.default)
    repeated = sorted({repr(v) for i, v in enumerate(values) if v in values[:i]})
    if repeated:
        raise ValueError(f"{param.name} repeats {', '.join(repeated)}")
    if not default:
        return
    if all(isinstance(v, str) for v in default):
        choices = param.choices()
        bad = [v for v in values if not isinstance(v, str) or v not in choices]
        if bad:
            raise ValueError(f"{param.name} may hold only {list(choices)}, got {bad[0]!r}")
        return
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in default):
        integers = all(isinstance(v, int) for v in default)
        for v in values:  # >= 0: a grid may hold 0 (no model error), the notebook checks more
            kind = "integer" if integers else "number"
            ok_type = (isinstance(v, int) if integers else isinstance(v, (int, float))) \
                and not isinstance(v, bool)
            if not ok_type or not math.isfinite(v) or v < 0:
                raise ValueError(f"{param.name} must hold finite {kind}s >= 0 like "
                                 f"{default!r}, got {v!r}")



def checks_source(path: Path) -> str | None:
    """The source of the notebook's cell tagged ``checks`` (``None`` without one): the scale's
    sizes and the relations between parameters, in plain Python that raises ``ValueError``."""
    tagged = [c for c in _cells(path) if "checks" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) > 1:
        raise ValueError(f"{path.name}: expected at most one cell tagged 'checks', found {len(tagged)}")
    return "".join(tagged[0]["source"]) if tagged else None



def check_relations(path: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Execute the notebook's ``checks`` cell on its parameters (the defaults with
    ``overrides``), as the notebook will before its first computation: a relation it refuses
    (``burn_in`` that leaves nothing to score, tuning seeds among the reported ones) becomes a
    ``SystemExit`` before anything runs. Returns the cell's namespace (the effective sizes)."""
    source = checks_source(path)
    namespace = copy.deepcopy({name: p.default for name, p in parameters(path).items()} | overrides)
    if source is None:
        return namespace
    try:
        exec(compile(source, f"<{path.name}: checks cell>", "exec"), namespace)
    except ValueError as error:
        raise SystemExit(f"scoreda: {path.stem}: {error}") from None
    except Exception as error:  # a combination the cell did not foresee: still refused here
        raise SystemExit(f"scoreda: {path.stem}: these parameters fail the checks cell "
                         f"({type(error).__name__}: {error})") from None
    namespace.pop("__builtins__", None)
    return namespace



def validate(path: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Check overrides against the notebook's parameters (names, types, ranges, choices) and
    the relations its ``checks`` cell states; a ``SystemExit`` says what is allowed."""
    known = parameters(path)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise SystemExit(f"scoreda: {path.stem} has no parameter {', '.join(unknown)}; "
                         f"allowed: {', '.join(known)}")
    try:
        checked = {name: check_value(known[name], value) for name, value in overrides.items()}
    except ValueError as error:
        raise SystemExit(f"scoreda: {error}") from None
    check_relations(path, checked)
    return checked
