"""Every registered attention core has its docs page, and the README lists it."""

import pathlib

import pytest

import keras_transformers as kt

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", kt.attention.available())
def test_attention_core_has_a_docs_page(name):
    page = ROOT / "docs" / "variants" / f"{name}.md"
    assert page.exists(), f"docs/variants/{name}.md is missing"
    text = page.read_text()
    assert "```python" in text, f"docs/variants/{name}.md has no example"


@pytest.mark.parametrize("name", kt.attention.available() + kt.positional.available())
def test_readme_feature_table_names_every_variant(name):
    assert f"`{name}`" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", kt.positional.available())
def test_positional_encoding_is_documented(name):
    assert f"`{name}`" in (ROOT / "docs" / "positional" / "index.md").read_text()
