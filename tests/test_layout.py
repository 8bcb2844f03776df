"""The package's layout: no import loops, no import back up, no layer names outside the models."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "lasagne_caption"


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(name):
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()


def _is_module(name):
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph():
    """``{module: {imported project modules}}``, imports inside functions included."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # "from pkg import module" imports the module; "from pkg import name", pkg
                targets = [source + "." + a.name if _is_module(source + "." + a.name) else source
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target and not _is_module(target):
                    target = target.rpartition(".")[0]
                if target.split(".")[0] == "lasagne_caption" and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def test_the_graph_sees_the_packages_modules():
    graph = import_graph()
    assert "lasagne_caption.models.seminar" in graph["lasagne_caption.checkpoint"] \
        or "lasagne_caption.models" in graph["lasagne_caption.checkpoint"]
    assert "lasagne_caption.errors" in graph["lasagne_caption.data.readers"]


def test_no_import_loops():
    graph = import_graph()
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import loop: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_module_imports_its_own_package_or_one_above():
    """A package's ``__init__`` hands names on; the modules inside never go through it."""
    graph = import_graph()
    upward = []
    for module, targets in graph.items():
        own = module if _is_package(module) else module.rpartition(".")[0]
        ancestors = {".".join(own.split(".")[:i]) for i in range(1, len(own.split(".")) + 1)}
        for target in targets:
            if target in ancestors:
                upward.append("%s imports %s" % (module, target))
    assert upward == []


@pytest.mark.parametrize("module", ["generate", "caption", "evaluate", "train"])
def test_decoding_and_commands_never_name_a_layer(module):
    """Only a network's own module knows its layers: the rest use its interface."""
    tree = ast.parse((PACKAGE / (module + ".py")).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("net", "top", "input_layers"):
            pytest.fail("%s.py line %d uses .%s" % (module, node.lineno, node.attr))
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and node.value.id == "net":
            pytest.fail("%s.py line %d indexes a layer dictionary" % (module, node.lineno))
        if isinstance(node, ast.Name) and node.id == "lasagne":
            pytest.fail("%s.py line %d uses Lasagne directly" % (module, node.lineno))
