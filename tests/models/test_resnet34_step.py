"""One real ResNet34 training step at 224 px runs on this CPU (slow, but it must work)."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxcls.models import resnet34
from jaxcls.train.optim import sgd
from jaxcls.train.state import create_train_state
from jaxcls.train.steps import train_step


def test_resnet34_train_step_at_224():
    module, variables = resnet34(num_classes=2)
    state = create_train_state(module.apply, variables, sgd(0.01))
    before = np.asarray(variables['params']['layer4']['2']['conv2']['kernel'])
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 224, 224, 3))
    state, metrics = train_step(state, {'image': x, 'label': jnp.array([0, 1])})
    loss = float(metrics['loss'])
    assert np.isfinite(loss) and 0.0 < loss < 20.0
    assert int(state.step) == 1
    after = np.asarray(state.params['layer4']['2']['conv2']['kernel'])
    assert np.abs(after - before).max() > 0
    assert state.batch_stats['layer4']['2']['bn2']['mean'].shape == (512,)
