"""Sphinx glue for the API reference page (``book/api.md``).

As a Sphinx extension (``sphinx: local_extensions: {api_reference: book/_ext}`` in
``_config.yml``) it does two things.

**References reach the one place an object is documented.** The API reference documents
each public object once, under the name a reader imports it by: ``nninvert_lib.verify``,
not ``nninvert_lib.result.verify``. The library's docstrings, though, refer to objects
where they are defined (``:func:`~nninvert_lib.result.verify```, ``:class:`Figure3```
inside ``nninvert_lib.comparison``), and those references would quietly stay plain text.
This module handles ``missing-reference`` for the Python domain: it imports the object
the reference names (trying the reference's module and class context first), finds the
documented name whose object is the same Python object, and resolves the reference to
it; a bare name (``:func:`training_set_probs```) that no context explains goes to the one
documented object of that name, if there is exactly one. Only names under
``nninvert_lib`` are imported; references that still do not resolve are left to Sphinx as
before.

**Constants do not inherit their type's docstring.** ``.. autodata::`` of a module-level
constant defined elsewhere (``nninvert_lib.PAPER_ACCURACY`` lives in
``nninvert_lib.models``) finds no ``#:`` comment in ``nninvert_lib/__init__.py`` and
falls back to ``dict.__doc__``, which is not reStructuredText. Such docstrings are
dropped; the page describes the constant in the directive's body instead.

**A constant's comment is prose, not a type.** Napoleon reads the first line of a data,
attribute or property docstring as "type: description", so the comment "#: SELU's
infimum -λα: SELU outputs lie strictly above it." would render with the type "SELU's
infimum -λα". The library gives types as annotations, never in these comments, so where
napoleon made a type of such a line, the docstring is parsed again as an ordinary one.
"""
from __future__ import annotations

import importlib
import inspect

PACKAGE = "nninvert_lib"


def _import(name: str):
    """The object called ``name`` (``pkg.module.Class.attr``), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:
            continue
        try:
            for attr in parts[i:]:
                obj = inspect.getattr_static(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _identity(obj):
    """A key for objects whose identity means something (not ints or strings)."""
    obj = getattr(obj, "__func__", obj)           # staticmethod, classmethod
    if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj) \
            or isinstance(obj, property):
        return id(obj)
    return None


_index_cache: dict[int, tuple[int, dict]] = {}   # per process: ids are not stable across runs


def _documented(env) -> dict:
    """identity -> documented full name, rebuilt when the domain gained objects."""
    objects = env.get_domain("py").objects
    cached = _index_cache.get(id(env))
    if cached is None or cached[0] != len(objects):
        index = {}
        for name, entry in objects.items():
            if name.startswith(PACKAGE) and not entry.aliased:
                key = _identity(_import(name))
                if key is not None:
                    index.setdefault(key, name)
        cached = (len(objects), index)
        _index_cache.clear()
        _index_cache[id(env)] = cached
    return cached[1]


def resolve_alias(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = []
    if module and cls:
        candidates.append(f"{module}.{cls}.{target}")
    if module:
        candidates.append(f"{module}.{target}")
    candidates += [target, f"{PACKAGE}.{target}"]
    index = _documented(env)
    for candidate in candidates:
        if not candidate.startswith(PACKAGE + ".") and candidate != PACKAGE:
            continue
        key = _identity(_import(candidate))
        if key is not None and key in index:
            return _resolve(app, env, node, contnode, index[key])
    # a bare name (``:func:`training_set_probs``` in a docstring shown under the root's
    # name): the one documented object of that name, if there is exactly one
    if "." not in target:
        named = [n for n in env.get_domain("py").objects
                 if n.startswith(PACKAGE + ".") and n.rsplit(".", 1)[1] == target]
        if len(named) == 1:
            return _resolve(app, env, node, contnode, named[0])
    return None


def _resolve(app, env, node, contnode, name: str):
    return env.get_domain("py").resolve_xref(env, node.get("refdoc", env.docname), app.builder,
                                             node["reftype"], name, node, contnode)


_PROSE_KINDS = ("data", "attribute", "property")
_original: dict[str, list[str]] = {}


def before_napoleon(app, what, name, obj, options, lines):
    """Drop a constant's inherited type docstring; remember the rest for ``after_napoleon``."""
    if what not in _PROSE_KINDS:
        return
    if what != "property" and not inspect.isclass(obj) and lines and type(obj).__doc__ \
            and "\n".join(lines).strip() == inspect.cleandoc(type(obj).__doc__).strip():
        lines.clear()
    _original[name] = list(lines)


def after_napoleon(app, what, name, obj, options, lines):
    """Parse a data/attribute/property docstring as prose: no "type: description" line."""
    original = _original.pop(name, None)
    if original is None or not any(line.startswith(":type: ") for line in lines):
        return
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    lines[:] = GoogleDocstring(original, app.config, app, "", name, obj, options).lines()


def setup(app):
    app.connect("missing-reference", resolve_alias)
    app.connect("autodoc-process-docstring", before_napoleon, priority=400)
    app.connect("autodoc-process-docstring", after_napoleon, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
