"""Where the test suite's time goes: a pytest plugin that charges each test the CPU it took.

On a 2-core machine the suite is CPU-bound (two xdist workers keep both cores busy), so its
wall time follows the CPU seconds its tests take, and a test's CPU is what there is to cut:
its worker's (compile threads included) plus that of the subprocesses it waited for. Run it
from the repository root, as the README's test command runs the suite:

    rm -rf /tmp/c && JAXCLS_TEST_COMPILE_CACHE=/tmp/c PYTHONPATH=bench \\
        .venv/bin/python -m pytest -q -n 2 --dist loadfile -p suite_cpu

(an empty compile cache is the first run on a fresh machine; keep the cache for a later
run). After the usual summary it prints the CPU seconds of each test file and of the
costliest tests: the total, the part in subprocesses, and the worker's own XLA compile
seconds and tracing and lowering seconds (jax's monitoring events; a subprocess's compiles
are inside its CPU). A third table sums the workers' XLA compiles by jitted function (a
load from the persistent cache is not counted): how many programs of `train_step` etc. the
suite compiled, their seconds, and the test files that asked for them. `--suite-cpu-top N`
sets how many rows each table shows.
"""
from __future__ import annotations

import collections
import json
import os
import resource
import tempfile
import threading
import time

import pytest

ENV = 'SUITE_CPU_OUT'   # the JSON-lines file the workers append to; set by the controller
# jax's duration events: the XLA compile (or the load from the persistent cache), and the
# Python-side work before it (tracing to a jaxpr, lowering that to MLIR).
COMPILE = '/jax/core/compile/backend_compile_duration'
TRACE = ('/jax/core/compile/jaxpr_trace_duration',
         '/jax/core/compile/jaxpr_to_mlir_module_duration')

HIT = '/jax/compilation_cache/cache_hits'   # fired just before the compile event it served

_seconds = collections.Counter()   # this process's jax event totals
_compiled: list = []               # (jitted function, seconds) of each XLA compile, not cache loads
_hit = threading.local()
_listening = False


def _listen(event: str, duration: float, **kwargs) -> None:
    if event == COMPILE:
        _seconds['compile'] += duration
        if not getattr(_hit, 'last', False):
            _compiled.append((kwargs.get('fun_name'), duration))
        _hit.last = False
    elif event in TRACE:
        _seconds['trace'] += duration


def _listen_hit(event: str, **kwargs) -> None:
    if event == HIT:
        _hit.last = True


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def _write(row: dict) -> None:
    with open(os.environ[ENV], 'a') as f:   # one short line per write: appends stay whole
        f.write(json.dumps(row) + '\n')


def pytest_addoption(parser):
    parser.addoption('--suite-cpu-top', type=int, default=15,
                     help='suite_cpu: rows in each table (default 15)')


def pytest_configure(config):
    if not hasattr(config, 'workerinput'):   # the controller (or a run without xdist)
        fd, path = tempfile.mkstemp(prefix='suite-cpu-', suffix='.jsonl')
        os.close(fd)
        os.environ[ENV] = path               # the workers xdist starts next inherit it
        config._suite_cpu = (path, time.time())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _listening
    if not _listening:   # the first test here (an xdist controller runs none, nor imports jax)
        import jax
        jax.monitoring.register_event_duration_secs_listener(_listen)
        jax.monitoring.register_event_listener(_listen_hit)
        _listening = True
    own0, kids0 = _cpu()
    before, t0, n0 = dict(_seconds), time.time(), len(_compiled)
    yield
    own1, kids1 = _cpu()
    _write({'test': item.nodeid, 'own': own1 - own0, 'sub': kids1 - kids0,
            'wall': time.time() - t0, 'programs': _compiled[n0:],
            **{k: _seconds[k] - before.get(k, 0.0) for k in ('compile', 'trace')}})


def _table(rows, top, label):
    lines = [f"{'CPU s':>7} {'subproc':>8} {'compile':>8} {'trace':>7} {'wall s':>7}  {label}"]
    for name, r in sorted(rows.items(), key=lambda kv: -(kv[1]['own'] + kv[1]['sub']))[:top]:
        lines.append(f"{r['own'] + r['sub']:7.1f} {r['sub']:8.1f} {r['compile']:8.1f} "
                     f"{r['trace']:7.1f} {r['wall']:7.1f}  {name}")
    return lines


def _programs(tests, top):
    """The workers' XLA compiles by jitted function: count, seconds, the test files asking."""
    by = collections.defaultdict(lambda: [0, 0.0, collections.Counter()])
    for r in tests:
        for fun, s in r['programs']:
            row = by[fun]
            row[0] += 1
            row[1] += s
            row[2][r['test'].split('::')[0]] += s
    lines = [f"{'compiles':>8} {'s':>7}  function: the files that compiled most of it"]
    for fun, (n, s, where) in sorted(by.items(), key=lambda kv: -kv[1][1])[:top]:
        files = ', '.join(f'{os.path.basename(f)} {x:.0f}' for f, x in where.most_common(4))
        more = f' (+{len(where) - 4} files)' if len(where) > 4 else ''
        lines.append(f'{n:8d} {s:7.1f}  {fun}: {files}{more}')
    if not by:
        lines.append('       0          (every program came from the persistent cache)')
    return lines


def pytest_terminal_summary(terminalreporter, config):
    if not hasattr(config, '_suite_cpu'):
        return
    path, started = config._suite_cpu
    with open(path) as f:
        tests = [json.loads(line) for line in f if line.strip()]
    os.remove(path)
    total = lambda key: sum(r[key] for r in tests)
    in_tests = total('own') + total('sub')
    own, kids = _cpu()   # this process and every one it started (xdist's workers have ended)
    files = collections.defaultdict(collections.Counter)
    for r in tests:
        files[r['test'].split('::')[0]].update(
            {k: r[k] for k in ('own', 'sub', 'compile', 'trace', 'wall')})
    top = config.getoption('--suite-cpu-top')
    head = (f"suite_cpu: {time.time() - started:.0f} s wall, {own + kids:.0f} CPU s (pytest and "
            f"the processes it started), {in_tests:.0f} of them in {len(tests)} tests "
            f"({total('sub'):.0f} in the tests' subprocesses)")
    jax_line = (f"  the workers' own XLA compiles (or cache loads): {total('compile'):.0f} s; "
                f"tracing and lowering: {total('trace'):.0f} s")
    out = [head, jax_line, '']
    out += _table(files, top, 'file') + ['']
    out += _table({r['test']: r for r in tests}, top, 'test') + ['']
    out += _programs(tests, top)
    terminalreporter.write_sep('=', 'suite_cpu')
    for line in out:
        terminalreporter.write_line(line)
