"""What a chapter computed: the numbers it glued into its prose (``myst_nb.glue``), read
from an executed notebook, and, for each, the sentence of the book that shows it and the
unit printed after it. ``results.json`` of a run and the records of chapter 9 are made of
these; NaN is written as JSON ``null``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from scoreda.chapters import _cells, notebooks, parse_value


def glued_values(executed: dict) -> dict[str, Any]:
    """Every value the notebook glued (``myst_nb.glue``), by name."""
    values = {}
    for cell in executed["cells"]:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook")
            if record:  # Markdown (a verdict) as its text, anything else as its plain text
                data, prefix = output["data"], record["mime_prefix"]
                markdown = data.get(prefix + "text/markdown")
                text = data.get(prefix + "text/plain")
                values[record["name"]] = ("".join(markdown) if markdown
                                          else parse_value("".join(text)) if text else None)
    return values



#: a glue role of the book's Markdown: {glue:text}`name:format`, {glue:md}`chapter.ipynb::name`
_GLUE_ROLE = re.compile(r"\{glue(?::(?:text|md|any|math|figure))?\}`([^`]+)`")



#: what the book prints right after a number: its unit
_UNIT = re.compile(r"\s*(%|×|ms|s|min|h|hours|minutes|seconds|[KMG]iB|windows/s|time units"
                   r"|Lyapunov times?|steps|snapshots|cycles|members|trials|trajectories|epochs)"
                   r"(?![\w/])")



def _glue_role(content: str, notebook: str) -> tuple[str, str] | None:
    """(name, format) of a role's content for ``notebook``; ``None`` for another document's."""
    if "::" in content:
        document, content = content.split("::", 1)
        if Path(document).name != notebook:
            return None
    name, _, form = content.partition(":")
    return name.strip(), form.strip()



def _plain(text: str) -> str:
    """Markdown as one line of plain text (roles, emphasis, links and math markers out)."""
    text = re.sub(r"\{(?:cite|numref|ref|doc)[^}]*\}`([^`<]*)(?:<[^>]*>)?`", r"\1", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[*`]|^#+ ", "", text, flags=re.M)
    return " ".join(text.split())



def describe_values(path: Path, names) -> dict[str, dict[str, str | None]]:
    """For each glued name: the sentence of the book that shows it (``description``, the
    number itself as ``{value}``, other numbers as ``…``) and the unit printed after it
    (``unit``: ``%`` for a percent format, else the word after the number, else ``None``).
    Read from the notebook's Markdown, then the other chapters' and the book's pages (which
    name it as ``notebook.ipynb::name``). A name the prose never shows (``shown`` false, glued
    for a table, another page or a test) is described as its first shown sibling of the same
    kind (the name's first word: ``rmse``), else ``None``."""
    documents = [path] + [p for p in notebooks() if p != path]
    book = path.parent.parent / "book"
    documents += sorted(book.glob("*.md")) if book.is_dir() else []
    found: dict[str, dict[str, str | None]] = {}
    for document in documents:
        if document.suffix == ".ipynb":
            texts = ["".join(c["source"]) for c in _cells(document) if c["cell_type"] == "markdown"]
        else:
            texts = [document.read_text()]
        for text in texts:
            for paragraph in re.split(r"\n\s*\n|\n(?=\s*(?:[-*+]|\d+\.) )", text):  # list items apart
                paragraph = re.sub(r"^\s*(?:[-*+]|\d+\.)\s+", "", paragraph)
                sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z(*{])", " ".join(paragraph.split()))
                for sentence in sentences:
                    for match in _GLUE_ROLE.finditer(sentence):
                        role = _glue_role(match.group(1), path.name)
                        if role is None or role[0] in found:
                            continue
                        name, form = role
                        after = _UNIT.match(sentence[match.end():])
                        unit = "%" if form.endswith("%") else (after.group(1) if after else None)

                        def shown(m, name=name):
                            other = _glue_role(m.group(1), path.name)
                            return "{value}" if other and other[0] == name else "…"

                        line = _plain(_GLUE_ROLE.sub(shown, sentence))
                        found[name] = {"description": line if len(line) <= 300 else line[:299] + "…",
                                       "unit": unit}
    described = {}
    for name in names:  # a number the prose never shows: its kind from a shown sibling
        if name in found:
            described[name] = found[name] | {"shown": True}
            continue
        kind = name.split("_", 1)[0]
        sibling = next((other for other in found if other.split("_", 1)[0] == kind), None)
        described[name] = ({"description": f"as {sibling} (\"{found[sibling]['description']}\"), "
                                           f"for {name[len(kind) + 1:].replace('_', ' ') or name}",
                            "unit": found[sibling]["unit"], "shown": False} if sibling
                           else {"description": None, "unit": None, "shown": False})
    return described



def _json_number(value: Any) -> Any:
    """A glued value for JSON: NaN as ``null``, infinities as ``"inf"`` / ``"-inf"``."""
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf"):
        value = float(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value



def _nan_names(values: dict[str, Any]) -> tuple[list[str], int]:
    """The glued numbers that are NaN, and how many numbers were glued."""
    numbers = {k: v for k, v in values.items()
               if (isinstance(v, (int, float)) and not isinstance(v, bool))
               or (isinstance(v, str) and v.strip().lower() in ("nan", "inf", "-inf"))}
    return sorted(k for k, v in numbers.items() if _json_number(v) is None), len(numbers)
