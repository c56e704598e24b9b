"""ARCHITECTURE.md's import rules, checked on the code: imports flow down the rooms, data and
models know nothing of each other or of train, plots imports nothing of jaxcls, no file
imports itself back through others, and no file is over 500 lines. Every import counts,
those inside functions too."""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'jaxcls')

# Room -> floor; a room may import rooms on lower floors and itself. data and models share a
# floor but may not import each other (the rule below).
FLOORS = {'atomic_file': -1,
          'archs': 0, 'xla': 0, 'compile_cache': 0, 'plots': 0, 'interrupts': 0, 'htmlpage': 0,
          'models': 1, 'data': 1, 'cam': 2, 'interpret': 3, 'clean': 3, 'train': 4,
          'demo': 5, 'report': 5, 'widgets': 5, 'commands': 6, 'clean_commands': 7, 'cli': 8}

# fastai 0.7's module names, for porting notebooks (ARCHITECTURE.md, "fastai's module names"):
# thin re-exports above every room; they may import any room (and each other), nothing imports them.
FACADES = {'imports', 'torch_imports', 'core', 'transforms', 'dataset', 'dataloader', 'model',
           'sgdr', 'metrics', 'learner', 'conv_learner', 'planet'}


def _modules():
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                name = 'jaxcls' if rel == '__init__' else 'jaxcls.' + rel.removesuffix('.__init__')
                out[name] = path
    return out


MODULES = _modules()


def _imports(name, path):
    """The jaxcls modules `name` imports (resolved to files), with the line of each."""
    tree = ast.parse(open(path).read())
    package = name if path.endswith('__init__.py') else name.rsplit('.', 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            # `from pkg import sub` depends on the submodule; `from pkg import name`, on pkg
            targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in MODULES else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition('.')[0]
            if t and t != name and t != 'jaxcls':
                found.append((t, node.lineno))
    return found


def _room(name):
    return name.split('.')[1]


GRAPH = {n: _imports(n, p) for n, p in MODULES.items()}


def test_imports_flow_down_the_rooms():
    wrong = []
    for name, deps in GRAPH.items():
        if name == 'jaxcls' or _room(name) in FACADES:   # the public API and the facades name
            continue                                      # every room, importing on first use
        for dep, line in deps:
            a, b = _room(name), _room(dep)
            if a == b:
                continue
            if b in FACADES:
                wrong.append(f'{os.path.relpath(MODULES[name], ROOT)}:{line} imports the facade {dep}')
                continue
            if FLOORS[b] >= FLOORS[a] or {a, b} == {'data', 'models'}:
                wrong.append(f'{os.path.relpath(MODULES[name], ROOT)}:{line} ({a}) imports {dep} ({b})')
    assert not wrong, '\n'.join(sorted(set(wrong)))


def test_the_facades_only_re_export():
    """Each fastai-named module is its docstring, imports and __all__, which names exactly
    what it imports; conv_learner hands on every other facade's names (but plots', and planet's:
    fastai's planet.py was a course file beside the notebooks, not a part of fastai)."""
    import importlib
    assert {f'jaxcls.{m}' for m in FACADES} <= set(MODULES)
    names = {}
    for m in sorted(FACADES):
        tree = ast.parse(open(MODULES[f'jaxcls.{m}']).read())
        bound, allowed = [], (ast.Import, ast.ImportFrom)
        for i, node in enumerate(tree.body):
            if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue
            if isinstance(node, allowed):
                bound += [(a.asname or a.name).split('.')[0] for a in node.names]
                continue
            assert isinstance(node, ast.Assign) and node.targets[0].id == '__all__', \
                f'jaxcls/{m}.py:{node.lineno} is not an import: a facade adds no logic'
        mod = importlib.import_module(f'jaxcls.{m}')
        assert sorted(mod.__all__) == sorted(bound), m
        assert all(getattr(mod, n) is not None for n in mod.__all__)
        names[m] = set(mod.__all__)
    others = set().union(*(v for k, v in names.items() if k not in ('conv_learner', 'planet')))
    assert names['conv_learner'] == others


def test_plots_draws_plain_arrays():
    assert GRAPH['jaxcls.plots'] == []


def test_no_import_circle():
    state, stack, circles = {}, [], []

    def visit(n):
        state[n] = 'open'
        stack.append(n)
        for dep, _ in GRAPH[n]:
            if state.get(dep) == 'open':
                circles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[n] = 'done'
    for n in GRAPH:
        if n not in state and n != 'jaxcls':
            visit(n)
    assert not circles, circles


@pytest.mark.parametrize('name', sorted(MODULES))
def test_no_file_is_over_500_lines(name):
    with open(MODULES[name]) as f:
        assert sum(1 for _ in f) <= 500, MODULES[name]
