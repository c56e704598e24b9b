"""The persistent compilation cache: on by default, off with JAXCLS_COMPILATION_CACHE=0,
never overriding a cache folder the user configured; a run writes compiled programs there."""
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import jax, jax.numpy as jnp
    from jaxcls import compile_cache
    import sys
    print('FOLDER', compile_cache.enable())
    if len(sys.argv) < 2:
        raise SystemExit
    import jaxcls.models.resnet as R
    m = R.ResNet((1, 1, 1, 1), 'basic', 3)
    v = jax.jit(m.init)(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))
    jax.jit(jax.grad(lambda v: m.apply(v, jnp.ones((2, 32, 32, 3))).sum()))(v)
''')


def _run(env, compile=False):
    env = dict(os.environ, JAX_PLATFORMS='cpu', **env)
    env.pop('JAX_COMPILATION_CACHE_DIR', None)   # conftest's, for the suite's subprocesses
    r = subprocess.run([sys.executable, '-c', SCRIPT] + (['compile'] if compile else []), env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return [l.split(' ', 1)[1] for l in r.stdout.splitlines() if l.startswith('FOLDER')][0]


def test_cache_folder_fills_and_can_be_turned_off(tmp_path):
    folder = tmp_path / 'xla'
    assert _run({'JAXCLS_COMPILATION_CACHE': str(folder)}, compile=True) == str(folder)
    assert len(os.listdir(folder)) >= 1      # the gradient program took > 1 s to compile
    assert _run({'JAXCLS_COMPILATION_CACHE': '0'}) == 'None'


def test_user_configuration_stands(tmp_path, monkeypatch):
    import jax
    from jaxcls import compile_cache
    monkeypatch.delenv('JAXCLS_COMPILATION_CACHE', raising=False)
    before = jax.config.jax_compilation_cache_dir
    assert before  # tests/conftest.py configured one
    assert compile_cache.enable() == before
    assert jax.config.jax_compilation_cache_dir == before
