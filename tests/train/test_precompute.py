"""compute_features: every image once, in order, with the padded last batch cut back and one
batch in flight."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxcls.train.precompute import compute_features


def test_compute_features_in_order_with_a_partial_last_batch():
    x = np.random.default_rng(0).integers(0, 256, (23, 4, 4, 3), dtype=np.uint8)
    shapes, done = [], []
    fn = jax.jit(lambda b: jnp.stack([b.astype(jnp.float32).mean((1, 2, 3)),
                                      b[:, 0, 0, 0].astype(jnp.float32)], 1))

    def feature_fn(batch):
        shapes.append(batch.shape)
        return fn(batch)
    out = compute_features(feature_fn, x, bs=5, progress=done.append)
    ref = np.stack([x.astype(np.float32).mean((1, 2, 3)), x[:, 0, 0, 0].astype(np.float32)], 1)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    assert shapes == [(5, 4, 4, 3)] * 5          # 23 images: the last batch padded to 5
    assert done == [5, 5, 5, 5, 3] and out.dtype == np.float32
    assert compute_features(feature_fn, x[:0], bs=5).shape == (0,)
