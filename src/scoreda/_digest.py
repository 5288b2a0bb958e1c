r"""Content digests: what a cached or memoised result is keyed by.

A cache entry must be keyed by *what it computes*, never by a name alone: two lambdas share
the name ``<lambda>``, and a function redefined in a notebook keeps its name while its body
changes. :func:`digest` walks a value and hashes what determines its behaviour:

* numbers, strings, bytes, ``None``: by value (typed, so ``1``, ``1.0`` and ``"1"`` differ);
* NumPy and JAX arrays (and typed PRNG keys): dtype, shape and bytes;
* tuples, lists, dicts, sets, named tuples, dataclasses and any JAX pytree (e.g. a Flax
  ``State`` of parameters): their type, keys and members;
* functions of the user (defined in ``__main__``, a notebook, a test or any module outside
  an installed third-party package): their bytecode, constants, the values of the globals
  they load, their defaults, attributes and the contents of their closure, recursively;
  classes of the user: their methods and attributes and their bases; modules of the user:
  their source file;
* functions and classes of this package: their qualified name, closure and defaults (their
  code is covered by :func:`package_digest`, which a cache adds to its key);
* functions, classes and modules of installed third-party packages: their qualified name
  and the package's version, and a function's closure and defaults (``jax.vmap(f)`` is a
  library function whose closure holds ``f``);
* ``functools.partial`` and jitted or wrapped functions: the wrapped function, arguments
  and keywords; instances of user classes (a dataclass with ``__call__``): their class and
  fields; a Flax NNX graph definition: its structure and the classes of its nodes.

Anything else (an open file, an arbitrary object whose state cannot be read) raises
:class:`Unkeyable`, which names where in the value it sits: a cache refuses what it cannot
key instead of guessing.
"""

from __future__ import annotations

import dataclasses
import dis
import enum
import functools
import hashlib
import importlib.metadata
import inspect
import re
import sys
import sysconfig
import types
from collections.abc import Mapping
from pathlib import Path, PurePath

import numpy as np

_PACKAGE = __name__.split(".")[0]
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class Unkeyable(TypeError):
    """A value whose behaviour cannot be digested (see :func:`digest`)."""


def digest(value, name: str = "value") -> str:
    """A hex SHA-256 digest (20 characters) of what ``value`` computes or holds.

    ``name`` is used in the :class:`Unkeyable` message (e.g. ``"case.obs"``)."""
    h = hashlib.sha256()
    _Walker(h).walk(value, name)
    return h.hexdigest()[:20]


@functools.lru_cache(maxsize=1)
def package_digest() -> str:
    """A digest of every Python source file of this package (its code, as installed)."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def _third_party_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(str(Path(paths[k]).resolve()) for k in ("purelib", "platlib", "stdlib", "platstdlib")
                 if k in paths)


_ROOTS = _third_party_roots()


def _origin(module_name: str | None) -> str:
    """``"package"`` (this package), ``"library"`` (an installed package or the standard
    library: keyed by name and version) or ``"user"`` (keyed by content)."""
    if not module_name:
        return "user"
    top = module_name.split(".")[0]
    if top == _PACKAGE:
        return "package"
    if top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()):
        return "library"
    module = sys.modules.get(module_name) or sys.modules.get(top)
    path = getattr(module, "__file__", None)
    if path is None:
        return "user" if module_name == "__main__" else "library"
    resolved = str(Path(path).resolve())
    return "library" if resolved.startswith(_ROOTS) and module_name != "__main__" else "user"


@functools.lru_cache(maxsize=256)
def _version(top: str) -> str:
    try:
        return importlib.metadata.version(top)
    except Exception:
        module = sys.modules.get(top)
        return str(getattr(module, "__version__", "?"))


class _Walker:
    def __init__(self, h):
        self.h = h
        self.active: set[int] = set()  # objects on the current path (recursion guard)

    def put(self, *parts) -> None:
        for p in parts:
            self.h.update(str(p).encode())
            self.h.update(b"\x00")

    def walk(self, value, where: str) -> None:  # noqa: C901 (one dispatch table)
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes, range,
                                               slice, type(Ellipsis), np.dtype, PurePath)):
            self.put(type(value).__name__, repr(value))
            return
        if isinstance(value, (np.generic, np.ndarray)) or _is_jax_array(value):
            self._array(value)
            return
        if type(value) is object:  # a bare sentinel: no state (a library's marker)
            self.put("object")
            return
        if isinstance(value, inspect.Signature):
            self.put("signature", str(value))
            return
        if isinstance(value, enum.Enum):
            self.put("enum", type(value).__module__, type(value).__qualname__, value.name)
            return
        ident = id(value)
        if ident in self.active:
            self.put("cycle")
            return
        self.active.add(ident)
        try:
            self._composite(value, where)
        finally:
            self.active.discard(ident)

    def _composite(self, value, where):
        if isinstance(value, types.ModuleType):
            top = value.__name__.split(".")[0]
            origin = _origin(value.__name__)
            self.put("module", value.__name__, _version(top) if origin == "library" else "")
            path = getattr(value, "__file__", None)
            if origin == "user" and path and Path(path).is_file():
                self.h.update(Path(path).read_bytes())  # a helper module: by its source
            return
        if isinstance(value, functools.partial):
            self.put("partial")
            self.walk(value.func, f"{where}.func")
            self.walk(value.args, f"{where}.args")
            self.walk(value.keywords, f"{where}.keywords")
            return
        if isinstance(value, types.MethodType):
            self.put("method")
            self.walk(value.__func__, f"{where}.__func__")
            self.walk(value.__self__, f"{where}.__self__")
            return
        if isinstance(value, types.FunctionType):
            self._function(value, where)
            return
        if isinstance(value, type):
            self._named("class", value, where)
            return
        if isinstance(value, (types.BuiltinFunctionType, np.ufunc)):
            self.put("builtin", getattr(value, "__module__", None) or type(value).__module__,
                     getattr(value, "__qualname__", getattr(value, "__name__", repr(value))))
            return
        if isinstance(value, types.CodeType):
            self._code(value, where)
            return
        if callable(value) and hasattr(value, "__wrapped__") and not dataclasses.is_dataclass(value):
            self.put("wrapped", type(value).__qualname__)  # jax.jit, functools.wraps, ...
            self.walk(value.__wrapped__, f"{where}.__wrapped__")
            return
        if _is_graph_definition(value):  # a Flax NNX GraphDef: static structure, no arrays
            self.put("graphdef", _ADDRESS.sub("", repr(value)))
            for i, node in enumerate(getattr(value, "nodes", ())):
                node_type = getattr(node, "type", None)
                if isinstance(node_type, type):  # a user's Module subclass: by its methods
                    self.walk(node_type, f"{where}.nodes[{i}].type")
            return
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            self.put(type(value).__name__, len(value))
            for i, v in enumerate(value):
                self.walk(v, f"{where}[{i}]")
            return
        if isinstance(value, tuple):  # a named tuple
            self.put("namedtuple")
            self.walk(type(value), f"{where} (class)")
            for field, v in zip(value._fields, value):
                self.put(field)
                self.walk(v, f"{where}.{field}")
            return
        if isinstance(value, Mapping):
            self.put("mapping", len(value))
            items = sorted(((digest(k, f"{where} key"), k, v) for k, v in value.items()),
                           key=lambda item: item[0])
            for key_digest, k, v in items:
                self.put(key_digest)
                self.walk(v, f"{where}[{k!r}]")
            return
        if isinstance(value, (set, frozenset)):
            self.put(type(value).__name__, *sorted(digest(v, where) for v in value))
            return
        if dataclasses.is_dataclass(value):
            self.put("dataclass")
            self.walk(type(value), f"{where} (class)")  # a user's __call__ is part of it
            for field in dataclasses.fields(value):
                self.put(field.name)
                self.walk(getattr(value, field.name), f"{where}.{field.name}")
            return
        if self._pytree(value, where):
            return
        raise Unkeyable(f"{where} holds a {type(value).__module__}.{type(value).__qualname__}, "
                        "whose state cannot be digested, so a result computed with it cannot be "
                        "cached safely")

    def _array(self, value):
        if _is_jax_array(value):
            import jax

            if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
                value = jax.random.key_data(value)
        a = np.asarray(value)
        if a.dtype == object:
            raise Unkeyable("an object array cannot be digested")
        self.put("array", a.dtype.str, a.shape)
        self.h.update(np.ascontiguousarray(a).tobytes())

    def _named(self, kind, value, where):
        module = getattr(value, "__module__", None)
        origin = _origin(module)
        qualname = getattr(value, "__qualname__", getattr(value, "__name__", "?"))
        if origin == "library":
            top = (module or "?").split(".")[0]
            self.put(kind, module, qualname, _version(top))
        elif kind == "class" and origin == "user":  # its methods and attributes, its bases
            self.put(kind, module, qualname)
            for base in value.__bases__:
                self.walk(base, f"{where} (base {base.__qualname__})")
            for k, v in sorted(vars(value).items()):
                if k in _CLASS_BOOKKEEPING:
                    continue
                self.put(k)
                if isinstance(v, (staticmethod, classmethod)):
                    v = v.__func__
                elif isinstance(v, property):
                    v = (v.fget, v.fset, v.fdel)
                self.walk(v, f"{where}.{k}")
        else:
            self.put(kind, module, qualname)

    def _function(self, fn: types.FunctionType, where: str):
        # a wrapper's module is copied from what it wraps (functools.wraps): the code's
        # file tells where it was written
        code_origin = _origin(fn.__module__) if fn.__module__ == fn.__globals__.get("__name__") \
            else _origin(fn.__globals__.get("__name__"))
        if code_origin == "library":
            self._named("function", fn, where)
        else:
            self.put("function", fn.__module__, fn.__qualname__)
        if code_origin == "user":  # the package's own code is in package_digest()
            self._code(fn.__code__, where)
            for name in _global_names(fn.__code__):
                if name in fn.__globals__:
                    self.put("global", name)
                    self.walk(fn.__globals__[name], f"{where} (global {name!r})")
        attributes = {k: v for k, v in vars(fn).items() if k not in ("__wrapped__", "__qualname__")}
        if attributes:
            self.walk(attributes, f"{where} (attributes)")
        if hasattr(fn, "__wrapped__"):
            self.walk(fn.__wrapped__, f"{where}.__wrapped__")
        self.walk(fn.__defaults__, f"{where} (defaults)")
        self.walk(fn.__kwdefaults__, f"{where} (keyword defaults)")
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            self.put("free", var)
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later)
                self.put("empty")
                continue
            self.walk(contents, f"{where} (closure variable {var!r})")

    def _code(self, code: types.CodeType, where: str):
        self.put("code", code.co_code.hex(), code.co_names, code.co_varnames, code.co_freevars,
                 code.co_argcount, code.co_kwonlyargcount, code.co_flags)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._code(const, where)
            else:
                self.walk(const, f"{where} (constant)")

    def _pytree(self, value, where) -> bool:
        if "jax" not in sys.modules:
            return False
        import jax

        try:
            leaves, _ = jax.tree_util.tree_flatten_with_path(value)
        except Exception:
            return False
        if len(leaves) == 1 and leaves[0][1] is value:
            return False  # not a registered container
        self.put("pytree", len(leaves))
        self.walk(type(value), f"{where} (class)")
        for path, leaf in leaves:
            key = jax.tree_util.keystr(path)
            self.put(key)
            self.walk(leaf, f"{where}{key}")
        return True


def _global_names(code: types.CodeType):
    """The names ``code`` (and the code nested in it) loads as globals (``LOAD_GLOBAL``,
    ``LOAD_NAME``), not its attribute names (``jnp.log`` does not read a global ``log``)."""
    names = {ins.argval for ins in dis.get_instructions(code)
             if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(ins.argval, str)}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return sorted(names)


#: class attributes that are bookkeeping, not behaviour (or are covered otherwise)
_CLASS_BOOKKEEPING = frozenset({
    "__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__annotations__",
    "__dataclass_fields__", "__dataclass_params__", "__match_args__", "__slotnames__",
    "__orig_bases__", "__parameters__", "__abstractmethods__", "_abc_impl", "__firstlineno__",
    "__static_attributes__", "__annotate__", "__type_params__"})


def _is_jax_array(value) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(value, jax.Array)


def _is_graph_definition(value) -> bool:
    t = type(value)
    return t.__module__.startswith("flax.nnx") and t.__name__ == "GraphDef"
