"""The house rules of the package, checked: no import cycle (imports inside functions count too),
the subpackages in the pipeline's order (a lower layer never imports a higher one), no private
name used across modules, every stage's DVC deps covering all the code it runs, no block of six or
more lines written twice, and one piece of code per job (one inference loop, one training skeleton,
one JSON reader). Each check has a planted-violation twin that must fail it."""
import ast
import re
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "deflate"
# the pipeline's layers, bottom up: a module may import its own layer and the ones before it
LAYERS = ("infra", "data", "evaluation", "model", "answering", "baselines", "reports", "stages", "cli")
COMPAT = ("engine",)  # old import paths that logged MLflow models use: top layer, imported by nothing
MIN_LINES = 6


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: str, files: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports anywhere in its body (functions included), with the
    packages above each (importing ``deflate.data.records`` runs ``deflate/__init__.py`` and
    ``deflate/data/__init__.py`` too)."""
    found: set[str] = set()
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
        for t in targets:
            parts = t.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & files.keys()
    return found


def source_files(src: Path = SRC) -> dict[str, Path]:
    return {module_name(f, src): f for f in src.rglob("*.py")}


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the package modules it imports (a package's own __init__ is not an edge)."""
    files = source_files(src)
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        graph[mod] = {t for t in imports_of(path, package, files) if t != mod and not mod.startswith(t + ".")}
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


def layer_breaks(src: Path = SRC) -> list[str]:
    """Imports that go up the layers (or into a folder that is no layer)."""
    def layer(mod: str) -> int:
        parts = mod.split(".")
        if len(parts) == 1:
            return -1
        return LAYERS.index(parts[1]) if parts[1] in LAYERS else len(LAYERS) - 1 if parts[1] in COMPAT else len(LAYERS)
    graph = import_graph(src)
    return ([f"{m} -> {d}" for m, deps in sorted(graph.items()) for d in sorted(deps)
             if layer(d) > layer(m) or layer(m) == len(LAYERS)]
            + [f"{m} -> {d} (a compatibility path)" for m, deps in sorted(graph.items()) for d in sorted(deps)
               if d.split(".")[-1] in COMPAT and d.count(".") == 1])


def test_layers_import_only_downwards():
    assert {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"} | {"cli"} == set(LAYERS)
    assert {p.stem for p in SRC.glob("*.py")} == {"__init__", "cli", *COMPAT}
    assert layer_breaks() == []


def test_the_layer_check_finds_an_upward_import(tmp_path):
    pkg = tmp_path / "deflate"
    for d in ("infra", "model"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "m.py").write_text("from deflate.infra import f\n")
    (pkg / "infra" / "f.py").write_text("x = 1\n")
    assert layer_breaks(pkg) == []
    (pkg / "infra" / "f.py").write_text("def g():\n    from deflate.model.m import y\n")
    assert layer_breaks(pkg) == ["deflate.infra.f -> deflate.model", "deflate.infra.f -> deflate.model.m"]
    (pkg / "infra" / "f.py").write_text("x = 1\n")
    (pkg / "engine.py").write_text("from deflate.model.m import y\n")  # a compatibility path: may import down
    assert layer_breaks(pkg) == []
    (pkg / "model" / "m.py").write_text("import deflate.engine\n")  # ... but nothing may import it
    assert layer_breaks(pkg) == ["deflate.model.m -> deflate.engine", "deflate.model.m -> deflate.engine (a compatibility path)"]


def private_uses(paths: list[Path], files: dict[str, Path]) -> list[str]:
    """``from deflate.x import _name`` and ``module._name`` on a deflate module, outside that module."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = set()  # local names bound to deflate modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deflate"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{path.name}:{node.lineno} imports {node.module}.{a.name}")
                    if f"{node.module}.{a.name}" in files:
                        modules.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                modules |= {a.asname for a in node.names if a.asname and a.name in files}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_private_name_is_used_across_modules():
    files = source_files()
    assert private_uses(sorted(SRC.rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
                        + sorted((ROOT / "stages").glob("*.py")), files) == []


def test_the_private_check_finds_both_forms(tmp_path):
    (tmp_path / "a.py").write_text("from deflate.model import train\nfrom deflate.answering.pyfunc import _rows\n"
                                   "train._step(1)\ntrain.fit(2)\n")
    found = private_uses([tmp_path / "a.py"], source_files())
    assert found == ["a.py:2 imports deflate.answering.pyfunc._rows", "a.py:3 uses train._step"]


PLUMBING = {"stage_params", "stage_timer", "relaunch", "is_main", "write_json", "write_text"}


def stage_script_breaks(script: Path) -> list[str]:
    """A stage script wires params to one library call: one ``with stage_timer(...)`` holding one
    statement with one call into the package; outside it, only plumbing (params, launch, writing)."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    ours = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            and (n.module or "").startswith("deflate") for a in n.names}

    def calls(nodes) -> list[str]:
        out = []
        for node in (c for n in nodes for c in ast.walk(n) if isinstance(c, ast.Call)):
            f = node.func
            name = (f.id if isinstance(f, ast.Name) and f.id in ours else
                    f.attr if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in ours
                    else None)
            if name is not None and name not in PLUMBING:
                out.append(name)
        return out

    timers = [n for n in tree.body if isinstance(n, ast.With) and isinstance(n.items[0].context_expr, ast.Call)
              and getattr(n.items[0].context_expr.func, "id", "") == "stage_timer"]
    if len(timers) != 1:
        return [f"{script.name}: {len(timers)} stage_timer blocks"]
    breaks = [f"{script.name}: {len(timers[0].body)} statements timed"] if len(timers[0].body) != 1 else []
    if len(inside := calls(timers[0].body)) != 1:
        breaks.append(f"{script.name}: {len(inside)} library calls timed ({', '.join(inside)})")
    breaks += [f"{script.name}: {name} called outside the timed call" for name in
               calls(n for n in tree.body if n is not timers[0])]
    return breaks


def test_each_stage_script_is_one_call():
    scripts = sorted((ROOT / "stages").glob("*.py"))
    assert len(scripts) == 18
    assert [b for f in scripts for b in stage_script_breaks(f)] == []


def test_the_stage_script_check_finds_a_second_call(tmp_path):
    head = "from deflate.infra.config import stage_params\nfrom deflate.infra.runtime import stage_timer\n" \
           "from deflate.data.synth import write_desire, write_mepave\n"
    (tmp_path / "s.py").write_text(head + "with stage_timer('s'):\n    write_desire(stage_params())\n")
    assert stage_script_breaks(tmp_path / "s.py") == []
    (tmp_path / "s.py").write_text(head + "with stage_timer('s'):\n    write_desire(1)\n    write_mepave(2)\n")
    assert stage_script_breaks(tmp_path / "s.py") == ["s.py: 2 statements timed",
                                                      "s.py: 2 library calls timed (write_desire, write_mepave)"]
    (tmp_path / "s.py").write_text(head + "x = write_mepave(2)\nwith stage_timer('s'):\n    write_desire(x)\n")
    assert stage_script_breaks(tmp_path / "s.py") == ["s.py: write_mepave called outside the timed call"]


def stage_scripts(dvc_file: Path) -> dict[str, tuple[Path, list[Path]]]:
    """Each stage of a dvc.yaml: the Python script its cmd runs and its deps, resolved from the
    file's folder (a ``foreach`` stage's ``do`` counts once)."""
    out = {}
    for name, st in yaml.safe_load(dvc_file.read_text(encoding="utf-8"))["stages"].items():
        st = st.get("do", st)
        script = next(w for w in st["cmd"].split() if w.endswith(".py"))
        out[name] = ((dvc_file.parent / script).resolve(),
                     [(dvc_file.parent / d).resolve() for d in st.get("deps", []) if "${" not in d])
    return out


def uncovered_code(dvc_file: Path, src: Path = SRC) -> list[str]:
    """Package files a stage runs (its script's imports, followed through the package) that none of
    its deps names or holds: a change there would leave the stage's outputs looking up to date."""
    files = source_files(src)
    graph = import_graph(src)
    missing = []
    for name, (script, deps) in stage_scripts(dvc_file).items():
        todo = list(imports_of(script, "", files))
        seen: set[str] = set()
        while todo:
            m = todo.pop()
            if m in seen or m not in files:
                continue
            seen.add(m)
            todo += graph[m] | {".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)}
        need = [files[m].resolve() for m in sorted(seen)] + [script]
        missing += [f"{name}: {f.relative_to(src.parents[1])}" for f in need
                    if not any(f == d or d in f.parents for d in deps)]
    return missing


DVC_FILES = [ROOT / "dvc.yaml", *sorted((ROOT / "pipelines").glob("*/dvc.yaml"))]


def test_every_stage_depends_on_all_the_code_it_runs():
    assert len(DVC_FILES) == 4
    for f in DVC_FILES:
        assert uncovered_code(f) == [], f


def test_the_deps_check_finds_a_missing_folder(tmp_path):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "stages").symlink_to(ROOT / "stages")
    (tmp_path / "src").symlink_to(ROOT / "src")
    assert uncovered_code(tmp_path / "dvc.yaml") == []
    text = (tmp_path / "dvc.yaml").read_text().replace("src/deflate/model,", "", 1)
    (tmp_path / "dvc.yaml").write_text(text)
    assert "train_generator: src/deflate/model/train.py" in uncovered_code(tmp_path / "dvc.yaml")


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


# One piece of code per job: the call that only the job's one home may make.
ONE_HOME = {
    "inference loop": ("batches", "model/batching.py"),        # batcher.batches(..., shuffle=False): infer
    "training skeleton": ("fit", "model/train.py"),            # fit(...): train_and_save
    "JSON reader": ("loads", "infra/files.py"),                # json.loads(path.read_text()): read_json
}


def second_homes(src: Path = SRC) -> list[str]:
    """Calls outside their job's home: ``X.batches(...)`` with ``shuffle=False`` (or none), a bare
    ``fit(...)``, ``json.loads(...)`` of a ``read_text()`` / ``read_bytes()``."""
    found = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            shuffle = next((k.value for k in node.keywords if k.arg == "shuffle"), None)
            reads_file = any(isinstance(a, ast.Call) and isinstance(a.func, ast.Attribute)
                             and a.func.attr in ("read_text", "read_bytes") for a in node.args)
            job = ("inference loop" if name == "batches" and isinstance(f, ast.Attribute)
                   and not (isinstance(shuffle, ast.Constant) and shuffle.value is True)
                   else "training skeleton" if name == "fit" and isinstance(f, ast.Name)
                   else "JSON reader" if name == "loads" and reads_file else None)
            if job and rel != ONE_HOME[job][1]:
                found.append(f"{rel}:{node.lineno}: a second {job} (its home is {ONE_HOME[job][1]})")
    return found


def test_one_piece_of_code_per_job():
    found = second_homes()
    assert not found, "; ".join(found)


def test_the_one_home_check_finds_second_loops(tmp_path):
    for home in ("model/batching.py", "model/train.py", "infra/files.py"):
        (tmp_path / home).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / home).write_text("def ok(b, e, p):\n    return b.batches(e, 8, shuffle=False)\n")
    (tmp_path / "model" / "train.py").write_text("def ok(m):\n    return fit(m)\n")
    (tmp_path / "infra" / "files.py").write_text("def ok(p):\n    return json.loads(p.read_text())\n")
    (tmp_path / "answering").mkdir()
    (tmp_path / "answering" / "loops.py").write_text(
        "def a(b, e):\n    return b.batches(e, 8)\n"                          # an inference loop of its own
        "def t(b, e):\n    return b.batches(e, 8, shuffle=True)\n"            # training order: allowed
        "def g(m):\n    return fit(m)\n"                                      # a training skeleton of its own
        "def j(p):\n    return json.loads(p.read_text(encoding='utf-8'))\n")  # a JSON reader of its own
    found = second_homes(tmp_path)
    assert [f.split(": ")[1] for f in found] == ["a second inference loop (its home is model/batching.py)",
                                                 "a second training skeleton (its home is model/train.py)",
                                                 "a second JSON reader (its home is infra/files.py)"], found
    assert all(f.startswith("answering/loops.py:") for f in found)


def unresolved_imports(paths: list[Path]) -> list[str]:
    """``from deflate.x import name`` lines whose module or name no longer exists (the scripts are
    parsed, not run: a benchmark's own work never starts)."""
    import importlib

    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deflate"):
                try:
                    mod = importlib.import_module(node.module)
                except ImportError:
                    found.append(f"{path.name}:{node.lineno} {node.module}")
                    continue
                found += [f"{path.name}:{node.lineno} {node.module}.{a.name}" for a in node.names
                          if not hasattr(mod, a.name) and f"{node.module}.{a.name}" not in source_files()]
    return found


def test_benchmarks_and_stage_scripts_import_what_exists():
    scripts = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "stages").glob("*.py"))
    assert unresolved_imports(scripts) == []


def test_the_import_check_finds_a_renamed_name(tmp_path):
    (tmp_path / "b.py").write_text("from deflate.model.train import fit, _gone\nfrom deflate.nowhere import x\n"
                                   "from deflate.evaluation import metrics\n")
    assert unresolved_imports([tmp_path / "b.py"]) == ["b.py:1 deflate.model.train._gone", "b.py:2 deflate.nowhere"]
