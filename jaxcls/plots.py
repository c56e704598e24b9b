"""All of jaxcls's pictures. The only module that imports matplotlib, and only when called.

Every function returns its matplotlib Figure and saves it when given `fname`.
Without a display (no $DISPLAY, as on servers and in CI) the Agg backend is used.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional


def _plt():
    import matplotlib
    if 'matplotlib.pyplot' not in sys.modules and not os.environ.get('DISPLAY') \
            and 'ipykernel' not in sys.modules and sys.platform.startswith('linux'):
        matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _finish(fig, fname: Optional[Any]):
    fig.tight_layout()
    if fname is not None:
        fig.savefig(fname, dpi=100)
    return fig


def plot_lr(rec, show_moms: bool = False, fname: Any = None):
    """The learning rate (last layer group) at each iteration; momentum beside it if asked."""
    plt = _plt()
    ncols = 2 if show_moms else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(rec.iterations, rec.lrs)
    ax.set_xlabel('iterations')
    ax.set_ylabel('learning rate')
    if show_moms:
        axes[0, 1].plot(rec.iterations, rec.moms)
        axes[0, 1].set_xlabel('iterations')
        axes[0, 1].set_ylabel('momentum')
    return _finish(fig, fname)


def _skip(values, n_skip, n_skip_end):
    end = len(values) - n_skip_end if n_skip_end else len(values)
    return values[n_skip:end]


def plot_lr_find(rec, n_skip: int = 10, n_skip_end: int = 5, fname: Any = None):
    """Smoothed loss against learning rate (log scale), as fastai's `sched.plot()`."""
    plt = _plt()
    lrs, losses = _skip(rec.lrs, n_skip, n_skip_end), _skip(rec.losses, n_skip, n_skip_end)
    if not lrs:
        lrs, losses = rec.lrs, rec.losses  # too few points to skip any: show them all
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale('log')
    ax.set_xlabel('learning rate (log scale)')
    ax.set_ylabel('loss')
    sug = getattr(rec, 'suggestions', {}) or {}
    if 'valley' in sug:
        import numpy as np
        i = int(np.argmin(np.abs(np.log(np.asarray(rec.lrs)) - np.log(sug['valley']))))
        ax.plot([sug['valley']], [rec.losses[i]], 'o', color='C1',
                label=f"valley: {sug['valley']:.2e}")
        ax.legend()
    return _finish(fig, fname)


def plot_loss(rec, n_skip: int = 10, n_skip_end: int = 5, fname: Any = None):
    """Smoothed training loss against iteration."""
    plt = _plt()
    its = _skip(rec.iterations, n_skip, n_skip_end) or rec.iterations
    losses = _skip(rec.losses, n_skip, n_skip_end) or rec.losses
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(its, losses)
    ax.set_xlabel('iterations')
    ax.set_ylabel('loss')
    return _finish(fig, fname)
