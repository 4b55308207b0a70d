"""The documentation cannot drift from the code or rot: a short README, links that resolve, an options
reference that lists every option `pytest --help` shows, and an API page that covers `__all__`.

`make lint` builds the site with `mkdocs build --strict` (links and anchors inside docs/); these tests need no
MkDocs, so they hold wherever the suite runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_steer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
#: a markdown link or image: [text](target) / ![alt](target), target without spaces
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
#: a pymdownx snippet include: --8<-- "path" or --8<-- "path:section"
SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"\s*$', re.M)
#: flags of the worked examples (docs/extending.md, docs/extending-builtins.md): the examples declare them
EXAMPLE_FLAGS = {"--steer-shout-levels", "--steer-shout-times", "--steer-shout-cases", "--steer-recording-log",
                 "--steer-x"}


def _expand(path: Path) -> str:
    """The file's text with its snippet includes replaced by what they include, as the site shows it."""
    def include(match: re.Match[str]) -> str:
        text = (ROOT / match[1]).read_text("utf-8")
        if match[2] is None:
            return text
        start, end = f"--8<-- [start:{match[2]}]", f"--8<-- [end:{match[2]}]"
        return text.split(start, 1)[1].split("\n", 1)[1].split(end, 1)[0]
    return SNIPPET.sub(include, path.read_text("utf-8"))


def _slug(heading: str) -> str:
    """GitHub's and MkDocs' anchor for an ASCII heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return re.sub(r"[ -]+", "-", text).strip("-")


def _anchors(path: Path) -> set[str]:
    text = _expand(path)
    headings = {_slug(h) for h in re.findall(r"^#{1,6} +(.+?) *$", text, re.M)}
    return headings | set(re.findall(r"\{ *#([\w-]+) *\}", text))  # attr_list ids: **Bold.**{ #id }


def _code_free(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def test_readme_is_short() -> None:
    lines = README.read_text("utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/ (at most 250)"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(Path(p).relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    """Every relative link points at an existing file, and its #anchor (if any) at a heading there."""
    text = _code_free(path.read_text("utf-8"))
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]  # http:, https:, mailto:
    broken = []
    for target in targets:
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, "broken links in " + path.name + ":\n" + "\n".join(broken)


@pytest.mark.parametrize("path", [p for p in PAGES if SNIPPET.search(p.read_text("utf-8"))], ids=lambda p: p.name)
def test_included_sections_have_no_relative_links(path: Path) -> None:
    """A relative link in an included section resolves from the file it is written in, not from the page
    that shows it (README's `docs/x.md` is `docs/docs/x.md` in the site), so included sections carry none."""
    for file, section in SNIPPET.findall(path.read_text("utf-8")):
        text = (ROOT / file).read_text("utf-8")
        if section:
            text = text.split(f"--8<-- [start:{section}]", 1)[1].split(f"--8<-- [end:{section}]", 1)[0]
        relative = [t for t in LINK.findall(_code_free(text)) if not re.match(r"([a-z]+:|#)", t)]
        assert not relative, f"{file}:{section or ''} is shown in docs/{path.name} and links {relative}"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_snippets_resolve(path: Path) -> None:
    """An include names an existing file and a section marked in it (pymdownx fails the build otherwise)."""
    for file, section in SNIPPET.findall(path.read_text("utf-8")):
        text = (ROOT / file).read_text("utf-8")
        if section:
            assert f"--8<-- [start:{section}]" in text and f"--8<-- [end:{section}]" in text, (file, section)


def test_every_readme_section_has_a_page() -> None:
    """The README links every page of the site, and every page is in the site's navigation."""
    readme = README.read_text("utf-8")
    nav = (ROOT / "mkdocs.yml").read_text("utf-8")
    for page in PAGES:
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
        assert f": {page.name}" in nav, f"mkdocs.yml's nav lacks {page.name}"


def test_options_reference_lists_every_option_of_help(tmp_path: Path) -> None:
    """Each flag of `pytest --help`'s steer group is in the generated reference, and nothing else is."""
    # each in a fresh process, as for a user and the docs build: this one has other tests' methods and tasks
    def run(*args: str) -> str:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        out = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr
        return out.stdout

    group = run("-m", "pytest", "--help", "-p", "no:cacheprovider").split(
        "pytest-steer: LLM steering evaluations:", 1)[1].split("\n\n", 1)[0]
    in_help = set(re.findall(r"^  (--steer-[a-z0-9-]+)", group, re.M))
    assert len(in_help) >= 40, group  # the run's, IFEval's and three methods' options

    reference = run(str(DOCS / "gen_options.py"))
    in_reference = set(re.findall(r"^\| `(--steer-[a-z0-9-]+)", reference, re.M))
    assert in_help - in_reference == set(), "in `pytest --help` but not in the options reference"
    assert in_reference - in_help == set(), "in the options reference but not in `pytest --help`"
    # the page and the build are wired to it
    assert "<!-- options-reference -->" in (DOCS / "options.md").read_text("utf-8").splitlines()
    assert "docs/gen_options.py" in (ROOT / "mkdocs.yml").read_text("utf-8")


def test_docs_name_only_declared_options() -> None:
    """A `--steer-*` flag in the README or the docs that no code declares is a renamed or removed option."""
    from pytest_steer.spec import declared_options

    declared = {o.cli for o in declared_options()}
    stale = {}
    for path in [README, *PAGES]:
        named = set(re.findall(r"--steer-[a-z0-9-]*[a-z0-9]", path.read_text("utf-8")))
        if named - declared - EXAMPLE_FLAGS:
            stale[path.name] = sorted(named - declared - EXAMPLE_FLAGS)
    assert not stale, f"flags no code declares: {stale}"


def test_api_page_covers_the_public_api() -> None:
    page = (DOCS / "api.md").read_text("utf-8")
    rendered = set(re.findall(r"^::: pytest_steer\.(\w+)$", page, re.M))
    public = set(pytest_steer.__all__) - {"__version__"}
    assert public - rendered == set(), "names of pytest_steer.__all__ missing from docs/api.md"
    assert rendered - public == set(), "docs/api.md renders names that are not public"

