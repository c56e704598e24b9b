import jax
import jax.numpy as jnp
import numpy as np

from jaxcls import xla


def _conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def test_cpu_options_are_known_to_this_jaxlib_and_keep_convolutions_off_ynnpack():
    opts = xla.compiler_options()
    assert jax.default_backend() == 'cpu'
    # jax 0.10 knows the option; a jaxlib without it would give {} (and this test would
    # say so rather than pass silently).
    assert opts == xla.CPU_OPTIONS
    x, k = jnp.ones((2, 16, 16, 32)), jnp.ones((3, 3, 32, 32))   # big enough for YNNPACK
    ours = xla.jit(_conv).lower(x, k).compile().as_text()
    assert 'ynn_fusion' not in ours and 'convolution' in ours
    assert 'ynn_fusion' in jax.jit(_conv).lower(x, k).compile().as_text()   # jax's default
    np.testing.assert_allclose(xla.jit(_conv)(x, k), _conv(x, k))


def test_jit_takes_static_arguments_donation_and_its_own_options_as_jax_jit_does():
    @xla.jit(static_argnums=(1,))
    def scale(x, n):
        return x * n
    assert scale.__name__ == 'scale'
    np.testing.assert_array_equal(scale(jnp.arange(3.0), 2), [0.0, 2.0, 4.0])
    add = xla.jit(lambda a: a + 1, donate_argnums=0,
                  compiler_options={'xla_cpu_enable_fast_math': False})
    a = jnp.arange(3.0)
    np.testing.assert_array_equal(add(a), [1.0, 2.0, 3.0])
    assert a.is_deleted()
    assert 'add' in add.lower(jnp.arange(3.0)).as_text()


def test_an_unknown_option_falls_back_to_none(monkeypatch):
    monkeypatch.setattr(xla, 'CPU_OPTIONS', {'xla_cpu_no_such_option_here': 'x'})
    monkeypatch.setattr(xla, '_known', {})
    assert xla.compiler_options() == {}
    np.testing.assert_array_equal(xla.jit(jnp.negative)(jnp.ones(2)), [-1.0, -1.0])
