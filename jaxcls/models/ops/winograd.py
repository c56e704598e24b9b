"""A 3x3, stride-1, pad-1 convolution by Winograd's minimal filtering F(2x2, 3x3).

Each 2x2 block of outputs is computed from a 4x4 tile of the input with 16 products per
channel pair instead of 36: the tile and the kernel are each taken to a 4x4 "transform
domain" by fixed matrices (entries 0, +-1, +-1/2), multiplied there as 16 independent
matrix products over channels, and brought back. That is 2.25x fewer multiply-adds than
the direct convolution, at the price of elementwise transforms around the products.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2015), section 4.

On a CPU the 16 products are one batched matmul, which XLA runs near the machine's
peak, so for ResNet layers with small maps this beats XLA's own convolution in both
directions; `applies` says on which maps the 'cpu' kernels use it (per-layer and whole-step
timings: bench/README.md, "Notes on the model and the kernels"; `python bench/bench_step.py`).

Numerics: every transform entry is exact in binary, and the products sum over the same
channels, so results differ from `lax.conv_general_dilated` only by rounding order,
about 1e-6 relative in float32 (tests/models/test_winograd.py checks outputs
and both gradients to 1e-5).

The backward pass is written out (a custom VJP): the input gradient is the same
algorithm run backwards, and the kernel gradient is 16 products in the transform
domain, so neither goes through a convolution. The transformed input tiles (4x the
size of the input) are kept for the backward pass; recomputing them would change
nothing, as XLA merges the recomputation with the forward's.

Compile time matters as much as run time here: XLA:CPU compiles every fused kernel for
about 10 ms, so the transforms are written as a few large kernels and the kernel
transform as a matmul: 9 fused kernels per convolution, forward and backward, against
about 50 for the same arithmetic written per tile entry (see _stack16).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


# The F(2x2, 3x3) matrices (Lavin & Gray, eq. 7): input tiles d -> B^T d B, kernels
# g -> G g G^T, products m -> A^T m A.
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)

# Training uses Winograd on output maps of at most 28x28 pixels (on larger maps a whole
# ResNet34 step gains nothing; `python bench/bench_step.py`, A/B runs in bench/README.md) ...
WINOGRAD_MAX_PIXELS = 784
# ... with at least 128 input channels (64-channel products run at a third of the speed, and
# compiling those layers cost 1-2.5 s for no gain; bench/README.md).
WINOGRAD_MIN_CHANNELS = 128
# A forward pass alone has no kernel gradients to pay for: every ResNet34 map up to 56x56,
# 64 channels included, is faster by Winograd (`python bench/bench_forward.py`).
WINOGRAD_INFERENCE_MAX_PIXELS = 3136
WINOGRAD_INFERENCE_MIN_CHANNELS = 64


def applies(height: int, width: int, channels: int, inference: bool) -> bool:
    """Whether the model computes a 3x3 stride-1 convolution with `channels` inputs and a
    height x width output by Winograd: on a training trace (inference=False), or a
    forward-only one."""
    if inference:
        return height * width <= WINOGRAD_INFERENCE_MAX_PIXELS and channels >= WINOGRAD_INFERENCE_MIN_CHANNELS
    return height * width <= WINOGRAD_MAX_PIXELS and channels >= WINOGRAD_MIN_CHANNELS


def _combine(matrix: np.ndarray, xs: list) -> list:
    """[sum_r matrix[a, r] * xs[r] for each row a], with zeros skipped and +-1 as add/sub."""
    out = []
    for row in matrix:
        acc = None
        for coef, x in zip(row, xs):
            if coef == 0:
                continue
            term = x if abs(coef) == 1 else x * abs(coef)
            if acc is None:
                acc = term if coef > 0 else -term
            else:
                acc = acc + term if coef > 0 else acc - term
        out.append(acc)
    return out


def _combine2(matrix: np.ndarray, grid: list) -> list:
    """matrix @ grid @ matrix.T for a 2-D grid (list of lists) of same-shape arrays."""
    cols = [_combine(matrix, [row[s] for row in grid]) for s in range(len(grid[0]))]
    return [_combine(matrix, [col[a] for col in cols]) for a in range(matrix.shape[0])]


def _stack16(grid: list) -> jax.Array:
    """A 4x4 grid of same-shape arrays -> one [16, ...] array.

    Stacked four at a time: XLA:CPU fuses a 4-way stack with the arithmetic that feeds
    it, but leaves a 16-way stack as 16 separate kernels, and every kernel costs about
    10 ms of compile time (a ResNet34 step would take seconds longer to compile).
    """
    return jnp.stack([jnp.stack(row) for row in grid]).reshape((16,) + grid[0][0].shape)


def _grid(a: jax.Array) -> list:
    """[16, ...] -> the 4x4 grid of its slices (the inverse of _stack16)."""
    return [[a[4 * i + j] for j in range(4)] for i in range(4)]


def _tiles(x: jax.Array, th: int, tw: int) -> jax.Array:
    """The transformed input tiles, [16, n * th * tw, c]: B^T d B for every 4x4 tile d.

    The input is zero-padded by 1 (plus 1 more on an odd side); tile (i, j) starts at
    padded pixel (2i, 2j), so its entry (r, s) is a stride-2 slice of the padded input.
    """
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - w), (0, 0)))
    grid = [[xp[:, r:r + 2 * th:2, s:s + 2 * tw:2].reshape(-1, c) for s in range(4)]
            for r in range(4)]
    return _stack16(_combine2(B_T, grid))


# G g G^T for all 16 entries at once: kron(G, G) [16, 9] times the kernel as [9, cin*cout],
# one matrix product instead of 16 elementwise kernels.
G_KRON = np.kron(G, G)


def _interleave(parts: list, n: int, th: int, tw: int) -> jax.Array:
    """parts[p][q] of shape [n * th * tw, c] -> y[n, 2i + p, 2j + q, c]."""
    c = parts[0][0].shape[-1]
    rows = [jnp.stack([parts[p][q].reshape(n, th, tw, c) for q in range(2)], axis=3)
            for p in range(2)]
    return jnp.stack(rows, axis=2).reshape(n, 2 * th, 2 * tw, c)


def _batched_dot(a, b, a_contract, b_contract):
    """Sixteen matrix products in one: batch axis 0 of both operands."""
    return jax.lax.dot_general(a, b, (((a_contract,), (b_contract,)), ((0,), (0,))))


@jax.jit
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Same as `lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)))` in NHWC/HWIO.

    x: [n, h, w, cin]; kernel: [3, 3, cin, cout]. Any h, w >= 1. Jitted, so that a model
    applied outside `jit` compiles each convolution once rather than its ~100 small ops one
    by one; inside a caller's `jit` it is inlined.
    """
    return _winograd(x, kernel)


@jax.custom_vjp
def _winograd(x, kernel):
    return _forward(x, kernel)[0]


def _forward(x, kernel):
    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3) or kernel.shape[2] != x.shape[-1]:
        raise ValueError(f'winograd.conv3x3 takes x [n, h, w, cin] and a 3x3 HWIO kernel '
                         f'[3, 3, cin, cout]; got x {x.shape} and kernel {kernel.shape}')
    n, h, w, cin = x.shape
    cout = kernel.shape[-1]
    th, tw = (h + 1) // 2, (w + 1) // 2
    v = _tiles(x, th, tw)
    u = (jnp.asarray(G_KRON, kernel.dtype) @ kernel.reshape(9, -1)).reshape(16, cin, cout)
    m = _batched_dot(v, u, 2, 1)
    y = _interleave(_combine2(A_T, _grid(m)), n, th, tw)[:, :h, :w]
    return y, (v, u, x.shape)


def _backward(res, g):
    v, u, (n, h, w, cin) = res
    cout = u.shape[-1]
    th, tw = (h + 1) // 2, (w + 1) // 2
    # Cotangent of the products: A (2x2 block of g) A^T, per tile.
    gp = jnp.pad(g, ((0, 0), (0, 2 * th - h), (0, 2 * tw - w), (0, 0)))
    dm = _stack16(_combine2(A_T.T, [[gp[:, p::2, q::2].reshape(-1, cout) for q in range(2)]
                                    for p in range(2)]))
    # Input: back through the products (u transposed), then B (.) B^T; tile entry (r, s)
    # of tile (i, j) adds into padded pixel (2i + r, 2j + s). Entries r = 2 dr + pr land on
    # pixels of parity pr, shifted by dr tiles, so each parity class is four shifted sums.
    e = _combine2(B_T.T, _grid(_batched_dot(dm, u, 2, 2)))
    parity = []
    for pr in range(2):
        row = []
        for ps in range(2):
            acc = None
            for dr in range(2):
                for ds in range(2):
                    t = e[2 * dr + pr][2 * ds + ps].reshape(n, th, tw, cin)
                    t = jnp.pad(t, ((0, 0), (dr, 1 - dr), (ds, 1 - ds), (0, 0)))
                    acc = t if acc is None else acc + t
            row.append(acc.reshape(-1, cin))
        parity.append(row)
    dx = _interleave(parity, n, th + 1, tw + 1)[:, 1:1 + h, 1:1 + w]
    # Kernel: the input tiles against the products' cotangent, then G^T (.) G.
    du = _batched_dot(v, dm, 1, 1)
    dkernel = (jnp.asarray(G_KRON.T, du.dtype) @ du.reshape(16, -1)).reshape(3, 3, cin, cout)
    return dx, dkernel


_winograd.defvjp(_forward, _backward)
