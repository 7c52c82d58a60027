"""The layering rules of docs/development.md, checked on the source (every import, function-local ones
included):

- ``hnpal`` never imports ``tasks``; no task module imports another (tasks import services, never the
  reverse, and follow-up work is enqueued by name through ``hnpal.jobs``);
- ``hnpal.llm`` imports no domain (the domains use it and register with it);
- no ``_private`` name is imported across packages;
- every task name given to ``hnpal.jobs`` is a registered task;
- no modules of ``hnpal`` import each other in a circle (a lower layer reaches up only by what it is given).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hnpal import jobs
from hnpal.celery import app

ROOT = Path(__file__).resolve().parents[1]
# What hnpal.llm may use besides itself: configuration, storage and accounting infrastructure.
LLM_MAY_IMPORT = (
    "hnpal.llm",
    "hnpal.db",
    "hnpal.errors",
    "hnpal.usage",
    "hnpal.ops.metrics",
    "hnpal.runtime",
    "config",
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    line: int
    target: str  # the imported module (for ``from a import b``: "a.b" when b is a module, else "a")
    names: tuple[str, ...]  # the names taken by ``from a import ...``


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if not level:
        return name or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports(*packages: str) -> Iterator[Import]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = _module_name(path)
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield Import(module, node.lineno, alias.name, ())
                elif isinstance(node, ast.ImportFrom):
                    target = _resolve(module, path.name == "__init__.py", node.level, node.module)
                    yield Import(module, node.lineno, target, tuple(a.name for a in node.names))


def _in(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def test_hnpal_never_imports_tasks() -> None:
    found = [f"{i.module}:{i.line} imports {i.target}" for i in imports("hnpal") if _in(i.target, "tasks")]
    assert not found, "services enqueue by name through hnpal.jobs; they never import a task:\n" + "\n".join(found)


def test_no_task_module_imports_another() -> None:
    found = [
        f"{i.module}:{i.line} imports {i.target} {i.names or ''}"
        for i in imports("tasks")
        if _in(i.target, "tasks") and not (i.target == "tasks" and not i.names)
    ]
    assert not found, "a task's follow-up is a job by name, its shared code a service:\n" + "\n".join(found)


def test_the_model_layer_imports_no_domain() -> None:
    found = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in imports("hnpal/llm")
        if _in(i.target, "hnpal") and not any(_in(i.target, allowed) for allowed in LLM_MAY_IMPORT)
    ]
    assert not found, "the domains use hnpal.llm and register with it:\n" + "\n".join(found)


def _package_of(module: str) -> str:
    """hnpal.telegram.updates -> hnpal.telegram; tasks.crawl -> tasks; hnpal.jobs -> hnpal.jobs."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "hnpal" else parts[0]


def test_no_private_name_crosses_packages() -> None:
    found = [
        f"{i.module}:{i.line} takes {name} from {i.target}"
        for i in imports("hnpal", "tasks", "config")
        for name in i.names
        if name.startswith("_") and not name.startswith("__")
        and _package_of(i.target) != _package_of(i.module)
    ]  # fmt: skip
    assert not found, "\n".join(found)


def _job_names() -> Iterator[tuple[str, str]]:
    """(where, task name) for every job named in hnpal and tasks: the name constants of hnpal.jobs, and
    each string literal given to jobs.enqueue / job / send_now / a Batch's enqueue."""
    for name, value in vars(jobs).items():
        if name.isupper() and isinstance(value, str) and value.startswith("hnpal."):
            yield f"hnpal.jobs.{name}", value
    for package in ("hnpal", "tasks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr not in ("enqueue", "job", "send_now"):
                    continue
                for arg in node.args[:2]:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("hnpal."):
                        yield f"{path.relative_to(ROOT)}:{node.lineno}", arg.value
                    elif isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name) and arg.value.id == "jobs":
                        assert hasattr(jobs, arg.attr), f"{path.relative_to(ROOT)}:{node.lineno}: jobs.{arg.attr}"


def test_every_job_names_a_registered_task() -> None:
    app.loader.import_default_modules()
    named = list(_job_names())
    assert len(named) >= 15
    unknown = [f"{where}: {name}" for where, name in named if name not in app.tasks]
    assert not unknown, "\n".join(unknown)


def _module_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (``from a import b``: ``a.b`` when that is a module)."""
    modules = {_module_name(p) for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for i in imports(package):
        targets = [f"{i.target}.{n}" for n in i.names if f"{i.target}.{n}" in modules] or [i.target]
        graph[i.module].update(t for t in targets if t in modules and t != i.module)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_modules_import_each_other_in_a_circle() -> None:
    circles = _circles(_module_graph("hnpal"))
    assert not circles, "modules that import each other (function-local imports count):\n" + "\n".join(
        " <-> ".join(c) for c in circles
    )


def test_a_circle_is_found() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_the_scan_sees_imports_inside_functions_and_relative_ones(tmp_path, monkeypatch) -> None:
    """Function-local imports are where the old cycles hid; a relative import names its real target."""
    package = tmp_path / "hnpal" / "demo_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("def f():\n    from tasks.crawl import crawl_post\n    from . import _x\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = {(i.module, i.target, i.names) for i in imports("hnpal")}
    assert ("hnpal.demo_pkg.mod", "tasks.crawl", ("crawl_post",)) in found
    assert ("hnpal.demo_pkg.mod", "hnpal.demo_pkg", ("_x",)) in found
