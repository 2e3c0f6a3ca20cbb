"""The project's layout as a checked rule: imports only go down the layers, no cycle,
and the whole tree passes the linter (ruff, configured in pyproject.toml)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bottom to top; a package may import only from packages at or below its own level.
# bench/ (benchmarks) sits above engine/ and below script/: script/benchmark.py, the
# command users call, imports bench/, and no benchmark imports a user command.
LAYERS = ["util", "data", "model", "detect", "deploy", "engine", "bench", "script"]
TOP_MODULES = {"train_and_eval_loop": len(LAYERS)}


def project_modules(root=ROOT):
    """{dotted module name: path} of every project file outside tests/."""
    mods = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0].startswith(".") or rel.parts[0] in ("tests", "runs", "build"):
            continue
        name = ".".join(rel.with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def imports_of(path, mods):
    """Project modules imported anywhere in ``path`` (functions included), as edges."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def level(module):
    top = module.split(".")[0]
    return TOP_MODULES.get(top, LAYERS.index(top) if top in LAYERS else None)


def import_graph(root=ROOT):
    mods = project_modules(root)
    return {m: imports_of(p, mods) - {m} for m, p in mods.items()}


def upward_imports(graph):
    return sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                  if level(a) is not None and level(b) is not None and level(b) > level(a))


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, edges = work[-1]
            advanced = False
            for w in edges:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_package_has_a_layer():
    tops = {m.split(".")[0] for m in project_modules()}
    assert tops <= set(LAYERS) | set(TOP_MODULES), tops - set(LAYERS) - set(TOP_MODULES)


def test_imports_only_go_down_and_form_no_cycle():
    graph = import_graph()
    assert upward_imports(graph) == []
    assert cycles(graph) == []


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    """The rule can fail: a floor module importing the engine, and a two-module cycle."""
    for pkg in ("util", "engine", "data"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "util" / "floor.py").write_text("def f():\n    from engine import run\n")
    (tmp_path / "engine" / "run.py").write_text("import data.a\n")
    (tmp_path / "data" / "a.py").write_text("from data import b\n")
    (tmp_path / "data" / "b.py").write_text("import data.a\n")
    graph = import_graph(tmp_path)
    assert upward_imports(graph) == ["util.floor -> engine", "util.floor -> engine.run"]
    assert cycles(graph) == [["data.a", "data.b"]]


def test_scripts_do_not_edit_sys_path():
    offenders = [str(p.relative_to(ROOT)) for top in ("script", "bench")
                 for p in (ROOT / top).glob("*.py")
                 if "sys.path" in p.read_text(encoding="utf-8")]
    assert offenders == []


def test_lint_is_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]


def test_benchmarks_live_in_bench_not_among_the_user_commands():
    assert sorted(p.name for p in (ROOT / "script").glob("bench_*.py")) == []
    assert (ROOT / "bench" / "runner.py").is_file()


def wide_functions(path, max_lines=50, max_params=6):
    """(name, lines, parameters) of the functions of ``path`` over either bound."""
    out = []
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            params = len(node.args.posonlyargs + node.args.args + node.args.kwonlyargs)
            if lines > max_lines or params > max_params:
                out.append((node.name, lines, params))
    return out


def long_tuples_returned(path, longest=3):
    """Functions of ``path`` that return a tuple of more than ``longest`` values."""
    return sorted({fn.name for fn in ast.walk(ast.parse(Path(path).read_text()))
                   if isinstance(fn, ast.FunctionDef) for node in ast.walk(fn)
                   if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple)
                   and len(node.value.elts) > longest})


def test_the_run_orchestration_stays_narrow(tmp_path):
    """engine/experiment.py tells a run as short named steps: no function over 50 lines or
    6 parameters, none returning a tuple of more than 3 values (a dataclass instead)."""
    experiment = ROOT / "engine" / "experiment.py"
    assert wide_functions(experiment) == []
    assert long_tuples_returned(experiment) == []
    wide = tmp_path / "wide.py"
    wide.write_text("def f(a, b, c, d, e, f, g):\n    return a, b, c, d\n")
    assert wide_functions(wide) == [("f", 2, 7)] and long_tuples_returned(wide) == ["f"]
