"""Launch buttons appear when the book is built for a published repository
(scripts/book_config.py, used by scripts/book.sh with SCOREDA_REPOSITORY_URL), and only then."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
URL = "https://github.com/example-owner/scoreda"


def _theme_options(user_yaml: dict) -> dict:
    config = pytest.importorskip("jupyter_book.config")
    final, _ = config.get_final_config(user_yaml=user_yaml, cli_config={"latex_individualpages": False},
                                       sourcedir=ROOT, validate=True,
                                       raise_on_invalid=True)
    return final["html_theme_options"]


def test_with_a_repository_url_every_page_offers_binder_colab_and_the_repository(load_script):
    generated = load_script("book_config").launch_config(URL)
    # the YAML written for jupyter-book round-trips and Jupyter Book's schema accepts it
    assert yaml.safe_load(yaml.safe_dump(generated)) == generated
    options = _theme_options(generated)
    assert options["repository_url"] == URL and options["use_repository_button"] is True
    assert options["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert options["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert options["path_to_docs"] == "."


def test_without_one_the_offline_book_shows_no_launch_buttons():
    options = _theme_options(yaml.safe_load((ROOT / "_config.yml").read_text()))
    assert options["use_repository_button"] is False
    assert not options["launch_buttons"].get("binderhub_url")
    assert not options["launch_buttons"].get("colab_url")


@pytest.mark.parametrize("url", ["github.com/owner/scoreda", "https://github.com/owner",
                                 "https://github.com/owner/scoreda; rm -rf /", ""])
def test_a_malformed_repository_url_is_refused(url, load_script):
    with pytest.raises(ValueError, match="https://host/owner/name"):
        load_script("book_config").launch_config(url)
