"""Two small fixes to the HTML that Jupyter Book 1.0 renders, found by the browser test
(tests/test_browser.py), which fails on any console error:

* sphinx-thebe's inline configuration script (``const THEBE_JS_URL = ...``) and
  sphinx-togglebutton's are emitted twice per page (registered on both the application and
  the already-created builder), and the second ``const`` declaration is a SyntaxError: drop
  repeated scripts from each page's script list, keeping the first of each.
* pydata-sphinx-theme logs "Got invalid theme mode" on a first visit when no
  ``default_mode`` reaches its templates (sphinx-book-theme does not accept the option):
  give the templates "light".

And a style sheet (``static/reading.css``): table cells wrap inside the text column, so the
comparison tables' knobs column is read whole at a laptop's width, code lines of up to 88
characters fit the column and printed output wraps (tests/test_browser.py checks that no
table cell is cut and that nothing on a page scrolls sideways).
"""

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"


def _theme_mode(app, config):
    config.html_context = {"default_mode": "light", **(config.html_context or {})}


def _static(app, config):
    config.html_static_path = list(config.html_static_path or []) + [str(STATIC)]


def _unique_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # the same inline script arrives once with filename None, once with "" (no file)
        key = (str(getattr(script, "filename", script) or ""),
               tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("config-inited", _theme_mode)
    app.connect("config-inited", _static)
    app.add_css_file("reading.css")
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
