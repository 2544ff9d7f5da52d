"""docs/ARCHITECTURE.md's layout block names every module of edged/, and no module that is gone."""
from __future__ import annotations

import re
from pathlib import Path

import edged

ROOT = Path(edged.__file__).parent
DOC = ROOT.parent / "docs" / "ARCHITECTURE.md"


def test_the_layout_block_lists_every_module():
    text = DOC.read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    listed, stack = set(), []
    for line in block.splitlines()[1:]:  # the first line is the fence's own, then `edged/`
        m = re.match(r"^( *)(\S+)", line)
        if not m or m.group(2) == "edged/":
            continue
        depth = len(m.group(1)) // 2 - 1
        stack[depth:] = [m.group(2).rstrip("/")]
        if m.group(2).endswith(".py"):
            listed.add("/".join(stack))
    modules = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if p.name != "__init__.py"}
    assert sorted(modules - listed) == [], "modules missing from docs/ARCHITECTURE.md's layout"
    assert sorted(listed - modules) == [], "modules listed in docs/ARCHITECTURE.md that do not exist"
