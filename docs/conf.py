"""Sphinx configuration of skadv's documentation.

Build (warnings are errors, every cross-reference checked):

    python -m sphinx -W --keep-going -n -b html docs docs/_build/html

The build runs the gallery (``examples/plot_*.py``) on one CPU thread and
needs no network. Set ``SKADV_DOCS_INTERSPHINX=1`` on a machine that can reach
the Python, NumPy, scikit-learn, PyTorch and skorch sites to link their names
too (the inventories are downloaded then; without it nothing is fetched).
"""

import importlib
import os
import sys
from pathlib import Path

from sphinx.util import logging

import skadv

logger = logging.getLogger("skadv.docs")

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "sphinxext"))

project = "skadv"
author = "the skadv developers"
copyright = "the skadv developers"
version = release = skadv.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",  # the results page includes the markdown tables of the runs
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}

templates_path = ["_templates"]
exclude_patterns = ["_build", "sg_execution_times.rst", "**.ipynb_checkpoints"]
default_role = "literal"  # `x` reads as code, as in numpydoc docstrings
nitpicky = True

# -- API reference ------------------------------------------------------------

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"  # the numpydoc sections say it all
# A method without a docstring of its own (e.g. an autoencoder's forward) is
# left out rather than shown with torch's or scikit-learn's docstring.
autodoc_inherit_docstrings = False
# numpydoc's own member tables would list scikit-learn's inherited methods,
# which are not documented here.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

# -- Cross-references to other projects -----------------------------------
# The inventories cannot be downloaded on every machine that builds the docs
# (CI has no network), so intersphinx is opt-in and the references to other
# projects are ignored by the nitpicky check when it is off.

if os.environ.get("SKADV_DOCS_INTERSPHINX"):
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
        "skorch": ("https://skorch.readthedocs.io/en/stable", None),
        "matplotlib": ("https://matplotlib.org/stable", None),
        "joblib": ("https://joblib.readthedocs.io/en/stable", None),
    }
else:
    intersphinx_mapping = {}

_EXTERNAL = (
    "sklearn",
    "torch",
    "skorch",
    "numpy",
    "joblib",
    "matplotlib",
    "captum",
    "art",
    "dask",
    "ray",
)
nitpick_ignore_regex = [
    # Objects of other projects (docstrings name e.g. torch.nn.Module,
    # sklearn.pipeline.Pipeline, art.attacks.evasion.FastGradientMethod):
    # resolved by intersphinx when it is on, plain text otherwise.
    (r"py:.*", rf"~?({'|'.join(_EXTERNAL)})(\..+)?"),
    # Python's built-in exceptions and types (numpydoc "Raises" sections).
    (r"py:(class|exc|obj)", r"(FileNotFoundError|ValueError|TypeError|ImportError)"),
]
nitpick_ignore = []

# -- Gallery ------------------------------------------------------------------


sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "skadv_gallery.ExampleOrder",
    "reset_modules": ("matplotlib", "skadv_gallery.reset_torch_threads"),
    "reference_url": {"skadv": None},  # link API names in the code blocks
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("skadv",),
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "matplotlib_animations": False,
    "image_srcset": [],
    "min_reported_time": 5,
    # An example that fails fails the build.
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
}

# -- HTML ---------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"skadv {version}"
html_static_path = ["_static"]
html_css_files = ["skadv.css"]
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    # API pages list their methods by full name, too long for the side bar.
    "secondary_sidebar_items": {
        "index": ["page-toc"],
        "api": ["page-toc"],
        "cli": ["page-toc"],
        "user_guide/*": ["page-toc"],
        "auto_examples/*": ["page-toc"],
        "generated/*": [],
    },
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "header_links_before_dropdown": 6,
}
# No section navigation where the page is wide content: the home page, the
# API and CLI overviews, and the examples (whose code needs the width).
html_sidebars = {"index": [], "cli": [], "api": [], "auto_examples/*": []}

# -- Generated pages ----------------------------------------------------------


def _write_cli_help(app):
    """Keep the command-line page in step with the parser.

    Writes ``generated/cli-commands.inc`` (included by ``cli.rst``): the
    ``--help`` of ``skadv`` and of each of its subcommands.
    """
    import argparse

    from skadv._cli import build_parser

    parser = build_parser()
    # argparse wraps to the terminal width: fix it so the page never changes.
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        helps = [("skadv", parser.format_help())]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps += [
                    (f"skadv {name}", sub.format_help())
                    for name, sub in action.choices.items()
                ]
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    parts = []
    for title, text in helps:
        body = "\n".join(f"   {line}".rstrip() for line in text.splitlines())
        heading = title
        parts.append(
            f"{heading}\n{'-' * len(heading)}\n\n.. code-block:: none\n\n{body}\n"
        )
    out = DOCS / "generated"
    out.mkdir(exist_ok=True)
    path = out / "cli-commands.inc"
    content = "\n".join(parts)
    if not path.exists() or path.read_text() != content:
        path.write_text(content)


def _check_api_coverage(app):
    """Warn (an error under -W) when a public name is missing from api.rst."""
    text = (DOCS / "api.rst").read_text()
    for module_name in (
        "skadv",
        "skadv.metrics",
        "skadv.attacks",
        "skadv.datasets",
        "skadv.models",
        "skadv.plotting",
    ):
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if name == "__version__":
                continue
            if not (
                f"\n   {name}\n" in text
                or f":: {module_name}.{name}\n" in text
                or f":: {name}\n" in text
            ):
                logger.warning(
                    f"{module_name}.{name} is public (in __all__) but missing "
                    "from docs/api.rst",
                    location="api",
                )
    # ATTACKS is written out by hand (autodoc would show tuple's docstring).
    from skadv.attacks import ATTACKS

    value = "(" + ", ".join(f'"{a}"' for a in ATTACKS) + ")"
    if f":value: {value}" not in text:
        logger.warning(
            f"docs/api.rst lists another value for skadv.attacks.ATTACKS than {value}",
            location="api",
        )


def _skip_member(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated metadata-routing setters.

    ``set_fit_request`` and friends are created on every estimator class by
    scikit-learn; they are documented there (metadata routing) and their
    docstrings point into scikit-learn's own user guide.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("builder-inited", _write_cli_help)
    app.connect("builder-inited", _check_api_coverage)
