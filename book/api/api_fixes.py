"""Autodoc adjustments for the API reference (book/api/), loaded through ``_config.yml``.

* Napoleon reads the first line of a data, attribute or property docstring as
  ``type: description`` when it has a colon, so ``#: Colours of ...: colour-blind safe``
  would become a description with the type "Colours of ..."; the package never writes
  types there (annotations give them), so those docstrings bypass napoleon.
* A NamedTuple of the package describes its fields in its docstring's ``Fields:`` section
  (rendered by napoleon as a custom section, see ``napoleon_custom_sections``), and its
  signature gives their types. The attributes Python generates for the fields carry only
  the docstring "Alias for field number N"; they are skipped instead of listed one by one.
* A Flax NNX module's class signature comes out as its metaclass's ``(*args, **kwargs)``;
  the class's own ``__init__`` gives the real one (``config, *, rngs``).
* A dataclass field with a ``default_factory`` shows the default ``<factory>``, which is no
  Python expression, so Sphinx cannot parse the signature and prints it raw; it shows the
  factory's call (``dict()``) instead.
* Evaluated annotations name ``jax.Array``, ``jax.sharding.Mesh`` and ``flax.nnx.Rngs`` by
  the private modules that define them (``jax.jaxlib._jax.Array``, ...); signatures name
  them by their public paths instead, which is also what ``maximum_signature_line_length``
  should measure.
"""

import dataclasses
import re

from sphinx.util import inspect as sphinx_inspect

_FIELD_ALIAS = re.compile(r"Alias for field number \d+")
_ARGS_KWARGS = re.compile(r"\(\*args(: [\w.~]+)?, \*\*kwargs(: [\w.~]+)?\)")
_PRIVATE_PATH = re.compile(r"\b(?:jax|jaxlib|flax)(?:\.\w+)*\.(Array|Mesh|Rngs)\b")
_PUBLIC_PATH = {"Array": "jax.Array", "Mesh": "jax.sharding.Mesh", "Rngs": "flax.nnx.Rngs"}


_NO_NAPOLEON = ("data", "attribute", "property")
_before_napoleon = {}


def _save_docstring(app, what, name, obj, options, lines):
    if what in _NO_NAPOLEON:
        _before_napoleon[id(lines)] = list(lines)


def _restore_docstring(app, what, name, obj, options, lines):
    saved = _before_napoleon.pop(id(lines), None)
    if saved is not None:
        lines[:] = saved


def _skip_field_aliases(app, what, name, obj, skip, options):
    if _FIELD_ALIAS.fullmatch((getattr(obj, "__doc__", None) or "").strip()):
        return True
    return None


def _fix_signature(app, what, name, obj, options, signature, return_annotation):
    if what == "class" and signature and _ARGS_KWARGS.fullmatch(signature) \
            and "__init__" in vars(obj):
        init = sphinx_inspect.signature(obj.__init__, bound_method=True)
        signature = sphinx_inspect.stringify_signature(
            init, show_return_annotation=False,
            unqualified_typehints=app.config.autodoc_typehints_format == "short")

    if what == "class" and signature and dataclasses.is_dataclass(obj):
        for field in dataclasses.fields(obj):
            factory = field.default_factory
            if factory is not dataclasses.MISSING:
                call = f"{factory.__name__}()" if factory.__name__.isidentifier() else "..."
                signature = re.sub(rf"(\b{field.name}(: [^=,]+)? = )<factory>", rf"\g<1>{call}",
                                   signature)

    def public(text):
        return text and _PRIVATE_PATH.sub(lambda m: _PUBLIC_PATH[m[1]], text)

    return public(signature), public(return_annotation)


def setup(app):
    # napoleon handles autodoc-process-docstring at the default priority, 500
    app.connect("autodoc-process-docstring", _save_docstring, priority=400)
    app.connect("autodoc-process-docstring", _restore_docstring, priority=600)
    app.connect("autodoc-skip-member", _skip_field_aliases)
    app.connect("autodoc-process-signature", _fix_signature)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
