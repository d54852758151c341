"""The README and the pages under docs/: every relative link resolves, and the README stays a
short page for users (a table of contents, a "Citing" section, at most README_MAX_LINES lines).

Links are checked as GitHub renders them: inline links and images ``[text](target)``, and
reference definitions ``[name]: target``, outside code blocks and code spans. A target's path
is relative to the page that holds it; a ``#fragment`` must be the anchor of a heading of the
target page (GitHub's rule: lower case, punctuation dropped, spaces to hyphens).
"""
import os
import re
from collections import Counter
from typing import Iterator, List, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
README_MAX_LINES = 260

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def pages() -> List[str]:
    docs = sorted(
        os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md")
    )
    return [README] + docs


def prose_lines(path: str) -> Iterator[Tuple[int, str]]:
    """(line number, text) of each line outside fenced code blocks, code spans removed."""
    in_fence = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if _FENCE.match(line):
                in_fence = not in_fence
                continue
            if not in_fence:
                yield number, _CODE_SPAN.sub("", line)


def links(path: str) -> List[Tuple[int, str]]:
    found = []
    for number, line in prose_lines(path):
        found += [(number, m.group(1)) for m in _INLINE_LINK.finditer(line)]
        m = _REFERENCE.match(line)
        if m:
            found.append((number, m.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(path: str) -> List[Tuple[int, str]]:
    """(level, text) of each heading outside code blocks."""
    found = []
    in_fence = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if _FENCE.match(line):
                in_fence = not in_fence
            elif not in_fence:
                m = _HEADING.match(line)
                if m:
                    found.append((len(m.group(1)), m.group(2)))
    return found


def anchors(path: str) -> Set[str]:
    """Every anchor of ``path``'s headings, with GitHub's -1, -2 ... for repeated ones."""
    seen: Counter = Counter()
    result = set()
    for _, text in headings(path):
        base = slug(text)
        result.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return result


def broken_links(path: str, root: str = ROOT) -> List[str]:
    problems = []
    for number, target in links(path):
        if _EXTERNAL.match(target):
            continue
        file_part, _, fragment = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
            if file_part else path
        where = f"{os.path.relpath(path, root)}:{number}: {target}"
        if not os.path.exists(resolved):
            problems.append(f"{where}: {os.path.relpath(resolved, root)} does not exist")
        elif not resolved.startswith(root + os.sep):
            problems.append(f"{where}: points outside the repository")
        elif fragment and resolved.endswith(".md") and fragment not in anchors(resolved):
            problems.append(f"{where}: no heading with anchor #{fragment}")
    return problems


@pytest.mark.parametrize("path", pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_the_docs_have_pages_and_the_readme_links_them():
    docs = [p for p in pages() if p != README]
    assert docs, "docs/ has no .md page"
    linked = {os.path.normpath(os.path.join(ROOT, t.partition("#")[0])) for _, t in links(README)}
    assert [os.path.relpath(p, ROOT) for p in docs if p not in linked] == []


def test_readme_is_short_with_contents_and_citing():
    with open(README, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= README_MAX_LINES
    sections = [text for level, text in headings(README) if level == 2]
    assert "Citing" in sections and "License" in sections
    assert "Contents" in sections
    # the table of contents links every other section of the README
    contents = {t for _, t in links(README) if t.startswith("#")}
    assert {"#" + slug(s) for s in sections if s != "Contents"} <= contents
    assert "@inproceedings{lin2017focal," in "\n".join(lines)


def test_the_checker_finds_broken_links_and_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## A `code` heading: twice\n\n## A code heading twice\n\n"
        "[ok](#title) [ok](#a-code-heading-twice-1) [ok](page.md#a-code-heading-twice)\n"
        "[missing](nothing.md) [bad anchor](#nowhere) ![img](gone.png)\n"
        "`[in a code span](nothing.md)` [web](https://example.com/x.md)\n\n"
        "```\n[in a fence](nothing.md)\n```\n\n[ref]: also_missing.md\n",
        encoding="utf-8",
    )
    problems = broken_links(str(page), root=str(tmp_path))
    assert [p.split(": ")[1] for p in problems] == [
        "nothing.md", "#nowhere", "gone.png", "also_missing.md"
    ]


def test_the_readmes_own_project_snippet_runs_without_a_gpu(tmp_path):
    """Issue 28 (11): the README's "Use from your own project" code runs as written, from
    another directory (its config found by name, issue 28 (10)), on a machine without a GPU,
    and builds a RetinaFocal."""
    import subprocess
    import sys

    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Use from your own project", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "build_model(cfg)" in code
    check = code + "\nassert type(model).__name__ == 'RetinaFocal', type(model)\n" \
        "assert next(model.parameters()).device.type == 'cpu'\n"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # as on a machine without a GPU
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])  # the package under test, from a folder that is not the checkout
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
