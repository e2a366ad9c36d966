"""Execute the Python blocks of the teaching guides, in order, so they never rot.

Each guide listed here is run like a notebook: its ```python blocks share one namespace and run
top to bottom; the blocks hold their own asserts (shapes, numpy references).
"""

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
EXECUTED_GUIDES = ["guide/attention-from-scratch.md", "guide/tensorboard.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(text):
    """The source of every fenced ```python block, in order."""
    return [m.group(1) for m in _BLOCK.finditer(text)]


def test_block_extraction_finds_fenced_python_only():
    text = "intro\n```python\na = 1\n```\n```text\nnot code\n```\n```python\nb = a + 1\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = a + 1\n"]


@pytest.mark.parametrize("page", EXECUTED_GUIDES)
def test_guide_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets may write log folders
    text = (DOCS / page).read_text()
    blocks = python_blocks(text)
    assert blocks, f"{page}: no ```python blocks found"
    namespace = {"__name__": "__docs__"}
    for number, source in enumerate(blocks, start=1):
        code = compile(source, f"{page}[block {number}]", "exec")
        exec(code, namespace)  # noqa: S102 - running our own documentation is the point
