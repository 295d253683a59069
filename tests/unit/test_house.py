"""The house stays easy to see: no module over 600 lines, no function over 60, and every file
a docstring, a comment or a doc names exists (a moved file leaves no stale pointer behind).

Why a test: these limits drift one honest commit at a time; a red test at the commit that
crosses them is cheaper than a clean-up issue later. Reading files only, no import.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "matomo_kafka"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60

#: Functions allowed over the limit, each with the reason (a literal in Matomo's own order).
LONG_FUNCTIONS: dict[str, str] = {}

#: Files named in the code that are not ours: where they come from.
NAMED_ELSEWHERE = {
    "CONFIGURATION.md": "librdkafka's reference of client properties",
    "name.json": "a pattern for fixture names (tests/fixtures/<version>/<name>.json)",
}

#: A file name with an ending we write: `paging.py`, `source/paging.py`, `scripts/test.sh`.
FILE_NAME = re.compile(r"(?<![\w.-])([\w./-]*\w\.(?:py|sh|md|json|yml|yaml|toml))\b")


def tracked_files() -> list[str]:
    """The repository's files as git knows them; outside a git checkout (an unpacked
    archive), every file but those of hidden folders and caches."""
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return [
            str(path.relative_to(ROOT))
            for path in ROOT.rglob("*")
            if path.is_file()
            and not any(part.startswith(".") or part == "__pycache__"
                        for part in path.relative_to(ROOT).parts)
        ]  # fmt: skip
    return out.split()


def python_files(under: str) -> list[Path]:
    return sorted((ROOT / under).rglob("*.py"))


def names_in_python(source: str) -> list[str]:
    """File names in the docstrings and comments of one module."""
    texts: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                texts.append(doc)
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    texts += [token.string for token in tokens if token.type == tokenize.COMMENT]
    return [name for text in texts for name in FILE_NAME.findall(text)]


def missing(names: list[str], files: list[str]) -> list[str]:
    """The names that are no tracked file's path nor the end of one (`paging.py`)."""
    out = []
    for name in names:
        bare = name.strip("./")
        if bare in NAMED_ELSEWHERE:
            continue
        if not any(path == bare or path.endswith("/" + bare) for path in files):
            out.append(name)
    return out


def test_no_module_over_600_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in python_files("src")
    }
    assert sizes, "no module found under src/"
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_over_60_lines() -> None:
    long: dict[str, int] = {}
    for path in python_files("src"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                where = f"{path.relative_to(ROOT)}::{node.name}"
                if size > MAX_FUNCTION_LINES and where not in LONG_FUNCTIONS:
                    long[where] = size
    assert long == {}


@pytest.mark.parametrize("under", ["src", "tests", "bench"])
def test_code_names_only_files_that_exist(under: str) -> None:
    files = tracked_files()
    stale = {
        str(path.relative_to(ROOT)): gone
        for path in python_files(under)
        if (gone := missing(names_in_python(path.read_text()), files))
    }
    assert stale == {}


def test_docs_name_only_files_that_exist() -> None:
    """README and docs/ (not CHANGELOG.md: history names files as they were then)."""
    files = tracked_files()
    code_file = re.compile(r"(?<![\w.-])([\w./-]*\w\.(?:py|sh))\b")
    stale = {}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        gone = missing(code_file.findall(doc.read_text()), files)
        if gone:
            stale[str(doc.relative_to(ROOT))] = gone
    assert stale == {}


def test_readme_stage_table_points_at_what_exists() -> None:
    """Each stage row's links and named files exist, and each folder of src/ has its row."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Where each stage lives", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\((src/matomo_kafka/[^)]*)\)", table)
    assert links, "the stage table links no folder"
    assert [link for link in links if not (ROOT / link).exists()] == []
    listed = {link.rstrip("/").split("/")[2] for link in links}
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages - listed == set()


def test_the_limits_can_fail() -> None:
    """The checks above see what they look for (a long function, a stale name)."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    tree = ast.parse(f"def too_long():\n{body}\n")
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    assert (node.end_lineno or 0) - node.lineno + 1 > MAX_FUNCTION_LINES
    source = (
        '"""Reads pages (see source/pagination.py and source/paging.py)."""\n# and sentlog.py\n'
    )
    assert missing(names_in_python(source), tracked_files()) == [
        "source/pagination.py",
        "sentlog.py",
    ]
