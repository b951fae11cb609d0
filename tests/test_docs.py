"""The docs: the generated API reference is fresh, every module is decided, links resolve."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

import tinkex_actors

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen_api() -> ModuleType:
    return _generator()


def test_every_public_named_module_is_documented_or_internal(gen_api: ModuleType) -> None:
    assert gen_api.undecided_modules() == [], "add them to PUBLIC or INTERNAL in docs/gen_api.py"


def test_committed_api_reference_is_fresh(gen_api: ModuleType) -> None:
    wanted = gen_api.pages()
    committed = {p.name: p.read_text() for p in (ROOT / "docs" / "api").glob("*.md")}
    assert sorted(committed) == sorted(wanted), "run: python docs/gen_api.py"
    stale = [name for name, text in wanted.items() if committed[name] != text]
    assert stale == [], f"docs/api is stale ({stale}): run python docs/gen_api.py"


def test_every_package_export_is_in_the_reference() -> None:
    page = (ROOT / "docs" / "api" / "tinkex_actors.md").read_text()
    for name in tinkex_actors.__all__:
        assert f"`{name}`" in page, name


def test_docstring_rendering(gen_api: ModuleType) -> None:
    text = gen_api.render_docstring(
        """Summary with ``code`` and :class:`~a.b.Thing`.

        Args:
            first: what it is,
                continued here.
            second: another.

        Example::

            x = 1
        """
    )
    assert "Summary with `code` and `Thing`." in text
    assert "- `first`: what it is, continued here." in text
    assert "- `second`: another." in text
    assert "```python\nx = 1\n```" in text
    assert gen_api.format_value(frozenset({"b", "a"})) == "frozenset({'a', 'b'})"


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "examples" / "README.md", *(ROOT / "docs").rglob("*.md")]


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        if not resolved.exists():
            broken.append(target)
    assert broken == []
