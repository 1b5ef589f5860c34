"""The house rules of the package, checked: no import cycle (imports inside functions count too),
no block of six or more lines written twice."""
import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "deflate"
MIN_LINES = 6


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body (functions included)."""
    files = {module_name(f, src): f for f in src.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import name` imports the module pkg.name when there is one, else pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            graph[mod] |= {t for t in targets if t in files and t != mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle_inside_a_function(tmp_path):
    pkg = tmp_path / "deflate"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import x\n")
    (pkg / "c.py").write_text("import deflate.a\nx = 1\n")
    assert find_cycle(import_graph(pkg)) == ["deflate.a", "deflate.sub.b", "deflate.c", "deflate.a"]
    (pkg / "c.py").write_text("x = 1\n")
    assert find_cycle(import_graph(pkg)) is None


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines that carry code: blank lines, comments, docstring-only
    lines, lone brackets and imports are passed over, white space folded."""
    out = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = re.sub(r"\s+", " ", raw.split("  #")[0]).strip()
        if (not line or line.startswith(("#", "import ", "from ")) or re.fullmatch(r"[\])}(\[{,:]+", line)
                or line.startswith(('"""', "'''"))):
            continue
        out.append((n, line))
    return out


def repeated_blocks(src: Path = SRC, size: int = MIN_LINES) -> list[str]:
    """Places where ``size`` consecutive code lines stand again elsewhere (or twice in one file)."""
    seen: dict[tuple, tuple[Path, int]] = {}
    found = []
    for path in sorted(src.rglob("*.py")):
        lines = code_lines(path)
        for i in range(len(lines) - size + 1):
            block = tuple(t for _, t in lines[i:i + size])
            if block in seen and seen[block][0] != path or (block in seen and seen[block][1] + size <= lines[i][0]):
                first = seen[block]
                found.append(f"{first[0].relative_to(src.parent)}:{first[1]} ~ {path.relative_to(src.parent)}:{lines[i][0]}")
            seen.setdefault(block, (path, lines[i][0]))
    return found


def test_no_repeated_blocks():
    found = repeated_blocks()
    assert not found, f"blocks of {MIN_LINES}+ lines written twice: " + "; ".join(found[:10])


def test_the_repeat_check_finds_a_repeat(tmp_path):
    body = "".join(f"    x{i} = compute({i}, y)\n" for i in range(7))
    (tmp_path / "a.py").write_text("def f(y):\n" + body)
    (tmp_path / "b.py").write_text("def g(y):\n    # the same, reformatted\n" + body.replace("= ", "=  "))
    assert repeated_blocks(tmp_path) and "b.py" in repeated_blocks(tmp_path)[0]
    (tmp_path / "b.py").write_text("def g(y):\n    return y\n")
    assert repeated_blocks(tmp_path) == []
