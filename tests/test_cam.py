"""Class activation maps: Grad-CAM weights against finite differences, CAM = Grad-CAM for a
linear head, shapes and ranges. (Localisation on trained models is measured in the issue's
closing note; see bench/ and the issue tracker.)"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxcls.cam import cam, class_activation_map, gradcam_weights
from jaxcls.models.head import ConvNet, Head
from jaxcls.models.resnet import ResNet


def tiny_net(head=None, pool=True):
    net = ConvNet(ResNet((1, 1, 1), 'basic', None), head or Head(3), pool=pool)
    k = jax.random.PRNGKey(0)
    v = net.init({'params': k, 'dropout': k}, jnp.zeros((1, 64, 64, 3)))
    # Non-trivial BatchNorm statistics so the head is not the identity.
    v = jax.tree_util.tree_map_with_path(
        lambda p, a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(len(str(p))), a.shape)
        if 'batch_stats' in str(p) and 'mean' in str(p) else a, v)
    return net, {'params': v['params'], 'batch_stats': v['batch_stats']}


def test_gradcam_weights_equal_finite_differences():
    net, v = tiny_net()
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3))
    fmap = net.apply(v, x, method=ConvNet.feature_map)
    cls = jnp.array([0, 2])
    w = np.asarray(gradcam_weights(net, v, fmap, cls))
    hw = fmap.shape[1] * fmap.shape[2]
    eps = 1e-2
    for b in range(2):
        for ch in [0, 17, 100, 255]:
            def score(t):
                f = fmap.at[b, :, :, ch].add(t)
                return float(net.apply(v, f, method=ConvNet.from_feature_map)[b, int(cls[b])])
            # Adding t to a whole channel moves the logit by t * sum over space of the
            # gradient = t * hw * (the Grad-CAM weight).
            fd = (score(eps) - score(-eps)) / (2 * eps) / hw
            np.testing.assert_allclose(w[b, ch], fd, rtol=2e-2, atol=2e-5)


class AvgLinear(nn.Module):
    """A head linear in average-pooled features, where CAM is defined."""
    @nn.compact
    def __call__(self, f, train=False):
        return nn.Dense(3, name='fc')(f.mean((1, 2)))


def test_gradcam_equals_cam_for_a_linear_head():
    net, v = tiny_net(AvgLinear(), pool=False)
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 64, 64, 3))
    low, up = class_activation_map(net, v, x, jnp.array([0, 1, 2]))
    fmap = net.apply(v, x, method=ConvNet.feature_map)
    ref = cam(fmap, v['params']['head']['fc']['kernel'], jnp.array([0, 1, 2]))
    np.testing.assert_allclose(low, ref, rtol=1e-4, atol=1e-5)


def test_shapes_ranges_and_any_class():
    net, v = tiny_net()
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 64, 64, 3))
    low, up = class_activation_map(net, v, x, 1)
    assert low.shape == (4, 4, 4) and up.shape == (4, 64, 64)
    for m in (np.asarray(low), np.asarray(up)):
        assert m.min() >= 0 and m.max() <= 1 + 1e-6
        assert np.all((m.max(axis=(1, 2)) == 0) | np.isclose(m.max(axis=(1, 2)), 1))
    other, _ = class_activation_map(net, v, x, jnp.array([0, 2, 0, 2]), upsample=False)
    assert not np.allclose(other, low)   # a different class gives a different map
