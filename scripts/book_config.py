"""The book's configuration with launch buttons, for a published copy of the repository.

``_config.yml`` has no repository URL (the book builds offline, from any clone), so its pages
show no Binder, Colab or repository buttons. Where the repository is published, set its URL
and build with the configuration this script writes::

    SCOREDA_REPOSITORY_URL=https://github.com/OWNER/scoreda bash scripts/book.sh

Each notebook page then offers "launch on Binder" (the repository's environment, built from
``pyproject.toml``) and "open in Colab" (the notebook alone: its first cell must then
``pip install`` the package from the same URL, which the book's introduction shows), and a
link to the repository. tests/test_launch_buttons.py checks that Jupyter Book accepts the
result.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "_build" / "launch_config.yml"
URL = re.compile(r"^https://[A-Za-z0-9.-]+(/[A-Za-z0-9._~-]+){2,}/?$")


def launch_config(url: str, branch: str = "main") -> dict:
    """``_config.yml`` plus the repository (``url``, ``branch``) and launch buttons."""
    if not URL.match(url):
        raise ValueError(f"repository URL must look like https://host/owner/name, got {url!r}")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["repository"] = {"url": url.rstrip("/"), "path_to_book": ".", "branch": branch}
    config["html"] = dict(config.get("html", {}), use_repository_button=True)
    config["launch_buttons"] = {"notebook_interface": "jupyterlab",
                                "binderhub_url": "https://mybinder.org",
                                "colab_url": "https://colab.research.google.com"}
    return config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the published repository, https://host/owner/name")
    parser.add_argument("--branch", default="main")
    args = parser.parse_args(argv)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(yaml.safe_dump(launch_config(args.url, args.branch), sort_keys=False))
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
