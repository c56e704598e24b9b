"""jaxcls.data.transforms hands on the names of tfm_config and tfm_ops (code outside data uses
`T.augment`, `T.tfms_from_model`...), and the configuration half needs no jax."""
import subprocess
import sys

from jaxcls.data import tfm_config, tfm_ops
from jaxcls.data import transforms as T


def test_every_name_is_the_defining_modules_own():
    assert set(T.__all__) == set(tfm_config.__all__) - {'rgb_triple'} | set(tfm_ops.__all__)
    for name in T.__all__:
        home = tfm_config if name in tfm_config.__all__ else tfm_ops
        assert getattr(T, name) is getattr(home, name), name


def test_the_configuration_imports_neither_jax_nor_the_device_ops():
    code = ('import sys, jaxcls.data.tfm_config as c\n'
            'c.tfms_from_model("resnet34", 224, c.transforms_side_on, max_zoom=1.1)\n'
            'print(sorted(m for m in sys.modules if m == "jax" or m.endswith("tfm_ops")))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'
