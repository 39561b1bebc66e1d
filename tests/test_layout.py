"""The package's shape, checked with the standard library's `ast`: no import cycle inside
`medtfod/`, no module over 400 lines, and no public API function with more than 8 parameters
besides keyword-only options grouped in a dataclass."""
import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "medtfod")
MAX_LINES = 400
MAX_PARAMETERS = 8


def _modules():
    """{dotted module name: path} of every module in medtfod/."""
    found = {}
    root = os.path.dirname(PACKAGE)
    for dirpath, dirnames, filenames in os.walk(PACKAGE):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                dotted = os.path.relpath(path[:-3], root).replace(os.sep, ".")
                found[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return found


def _imports(module: str, path: str, modules) -> set:
    """The medtfod modules `module` imports, anywhere in its body (lazy imports count: a cycle
    dodged by importing inside a function is still a cycle)."""
    is_package = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if candidate in modules:
                    found.add(candidate)
                elif target in modules:
                    found.add(target)
    found.discard(module)
    return found


def import_cycles(graph) -> list:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_the_package():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    assert import_cycles(graph) == []


def test_no_module_is_over_400_lines():
    long = {os.path.relpath(p, PACKAGE): n for p in _modules().values()
            if (n := sum(1 for _ in open(p, encoding="utf-8"))) > MAX_LINES}
    assert long == {}


def _public_functions():
    """(where, function node) of every public function and method of the public API: names
    without a leading underscore, in modules without one."""
    for module, path in _modules().items():
        if any(part.startswith("_") and part != "__init__" for part in module.split(".")) or ".cli" in module:
            continue
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                yield f"{module}.{node.name}", node
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                            not item.name.startswith("_") or item.name == "__init__"):
                        yield f"{module}.{node.name}.{item.name}", item


def test_no_public_function_takes_more_than_8_parameters():
    wide = {}
    for where, node in _public_functions():
        args = node.args
        names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
        if len(names) > MAX_PARAMETERS:
            wide[where] = len(names)
    assert wide == {}
