"""Winograd F(2x2, 3x3): the same convolution as XLA's, in value and both gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcls.models.ops import winograd

from helpers import normal


def _lax_conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _close(a, b):
    # 1e-5 relative to the largest magnitude: the bar for reformulated convolutions.
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(np.asarray(b)).max()))


@pytest.mark.parametrize('shape,cout', [((2, 8, 8, 16), 16), ((3, 7, 5, 6), 10), ((1, 1, 1, 4), 3),
                                        ((2, 2, 3, 8), 8), ((4, 4, 4, 32), 24), ((2, 9, 9, 3), 5)])
def test_outputs_and_both_gradients_equal_xla_s_convolution(shape, cout):
    x = normal(0, shape)
    w = normal(1, (3, 3, shape[-1], cout)) * 0.2
    g = normal(2, shape[:3] + (cout,))   # a cotangent, no structure

    def value_and_pullback(conv):   # one program each: output and both gradients
        def f(x, w):
            y, pullback = jax.vjp(conv, x, w)
            return y, pullback(g)
        return jax.jit(f)(x, w)
    (y0, d0), (y1, d1) = value_and_pullback(_lax_conv), value_and_pullback(winograd.conv3x3)
    assert y1.shape == y0.shape == shape[:3] + (cout,)
    _close(y1, y0)
    for a, b in zip(d1, d0):
        assert a.shape == b.shape
        _close(a, b)


def test_gradient_through_a_nonlinearity_matches():
    # Cotangents that depend on the output, as in a network.
    x = normal(3, (2, 6, 6, 8))
    w = normal(4, (3, 3, 8, 8)) * 0.3

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.tanh(conv(jax.nn.relu(conv(x, w)), w)))
    g0 = jax.jit(jax.grad(loss(_lax_conv), argnums=(0, 1)))(x, w)
    g1 = jax.jit(jax.grad(loss(winograd.conv3x3), argnums=(0, 1)))(x, w)
    for a, b in zip(g1, g0):
        _close(a, b)


def test_the_transforms_are_the_published_ones():
    # A^T [(G g G^T) * (B^T d B)] A is the 2x2 correlation of a 4x4 tile d with a 3x3 g.
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    B_T, G, A_T = (m.astype(np.float64) for m in (winograd.B_T, winograd.G, winograd.A_T))
    y = A_T @ ((G @ g @ G.T) * (B_T @ d @ B_T.T)) @ A_T.T
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(y, direct, rtol=1e-12)


def test_a_wrong_kernel_says_what_it_needs():
    x = jnp.zeros((1, 4, 4, 8))
    with pytest.raises(ValueError, match=r'3x3 HWIO kernel.*\(5, 5, 8, 4\)'):
        winograd.conv3x3(x, jnp.zeros((5, 5, 8, 4)))
    with pytest.raises(ValueError, match=r'x \(1, 4, 4, 8\) and kernel \(3, 3, 6, 4\)'):
        winograd.conv3x3(x, jnp.zeros((3, 3, 6, 4)))


def test_forward_and_backward_compile_to_a_handful_of_kernels():
    # Every XLA:CPU kernel costs ~10 ms of compile time; a 16-way stack left unfused, or
    # the transforms done per tile entry, would give 30-50 per convolution and add
    # seconds to a ResNet34 step's compile (see _stack16).
    x, w = jnp.ones((4, 8, 8, 16)), jnp.ones((3, 3, 16, 16))
    g = jnp.ones((4, 8, 8, 16))

    def forward_and_backward(x, w):
        y, pullback = jax.vjp(winograd.conv3x3, x, w)
        return y, pullback(g)
    hlo = jax.jit(forward_and_backward).lower(x, w).compile().as_text().split('ENTRY')[1]
    assert hlo.count(' fusion(') <= 12
    assert ' convolution(' not in hlo
