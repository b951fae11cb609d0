"""The docs: the generated API reference is fresh, every module is decided, links resolve."""

from __future__ import annotations

import ast
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


# ---------------------------------------------------------------------------- named file paths
#: What counts as a file path: a relative path of at least two components ending in one of
#: these extensions, inside a code span (`...`, ``...``) or code block, or a Markdown link
#: target. It is checked when its first component exists where it is resolved from (the
#: repository root, then the document's own directory; for docstrings also the package
#: directory), so names of files the code or the user makes (``out/summary.json``,
#: ``~/.tinker/credentials.json``) and paths of other projects are not taken for ours. URLs,
#: absolute paths, and placeholders (``<name>``, ``{id}``, globs) never match.
PATH_EXTENSIONS = ("py", "pyi", "md", "toml", "txt", "json", "proto", "png", "tsv", "csv", "sh")
CODE = re.compile(r"```.*?```|``[^`]+``|`[^`\n]+`", re.DOTALL)
NAMED_PATH = re.compile(
    rf"(?<![\w./~:<>{{}}*-])((?:[\w.-]+/)+[\w.-]+\.(?:{'|'.join(PATH_EXTENSIONS)}))(?![\w/<>{{}}*-])"
)
PACKAGE = ROOT / "tinkex_actors"


def named_paths(text: str) -> tuple[list[str], list[str]]:
    """The file paths ``text`` names in code, and those it links to (see PATH_EXTENSIONS)."""
    in_code = [path for span in CODE.findall(text) for path in NAMED_PATH.findall(span)]
    targets = [t.split("#", 1)[0] for t in LINK.findall(CODE.sub("", text))]
    return in_code, [t for t in targets if NAMED_PATH.fullmatch(t)]


def missing_paths(text: str, bases: list[Path]) -> list[str]:
    """The named paths that do not exist: a path in code under the first base holding its
    first component, a link target relative to the first base (the document's directory)."""
    in_code, links = named_paths(text)
    missing = []
    for path in in_code:
        base = next((b for b in bases if (b / path.split("/", 1)[0]).exists()), None)
        if base is not None and not (base / path).exists():
            missing.append(path)
    return missing + [link for link in links if not (bases[0] / link).exists()]


def _documents() -> list[Path]:
    return [
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        ROOT / "bench" / "README.md",
        ROOT / "examples" / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
    ]


@pytest.mark.parametrize("path", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_files_named_in_documents_exist(path: Path) -> None:
    assert missing_paths(path.read_text(), [path.parent, ROOT]) == []


def _docstrings(module: Path) -> list[str]:
    tree = ast.parse(module.read_text())
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [text for n in ast.walk(tree) if isinstance(n, kinds) and (text := ast.get_docstring(n))]


def test_files_named_in_docstrings_exist() -> None:
    missing = {}
    for module in sorted(PACKAGE.rglob("*.py")):
        for text in _docstrings(module):
            if gone := missing_paths(text, [module.parent, ROOT, PACKAGE]):
                missing[str(module.relative_to(ROOT))] = gone
    assert missing == {}


def test_named_paths_rules(tmp_path: Path) -> None:
    text = (
        "See `docs/server.md`, ``tests/test_nothing_here.py`` and [a](docs/nope.md).\n"
        "```\npython bench/soak.py --seconds 30\n```\n"
        "Not paths: `out/summary.json` is ours only by first component, "
        "`https://x.y/docs/a.md`, `/tmp/docs/a.md`, `docs/<name>.md`, `docs/*.md`, "
        "`~/.tinker/credentials.json`, docs/bare.md outside code."
    )
    assert named_paths(text) == (
        ["docs/server.md", "tests/test_nothing_here.py", "bench/soak.py", "out/summary.json"],
        ["docs/nope.md"],
    )
    assert missing_paths(text, [ROOT]) == ["tests/test_nothing_here.py", "docs/nope.md"]
    assert missing_paths("[up](../README.md) `../README.md`", [ROOT / "docs"]) == []
