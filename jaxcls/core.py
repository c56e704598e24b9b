"""fastai 0.7's ``fastai.core`` under jaxcls: small helpers.

    from jaxcls.core import *        # was: from fastai.core import *

``to_np(x)``: any array (a jax array from a loader or a step, on any device) as numpy.

A thin re-export for porting notebooks: no logic of its own, and nothing in jaxcls imports it.
"""
from jaxcls.data.loader import to_host as to_np

__all__ = [
    'to_np',
]
