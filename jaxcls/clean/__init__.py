"""Cleaning a dataset with a model: rank the files a model and its labels disagree on
(`ranking`), show them as a contact sheet (`sheet`), and act on the decisions by moving
files, never deleting them, with an undo manifest (`moves`).

`jaxcls clean MODEL PATH`, `jaxcls clean --apply decisions.csv PATH`, `jaxcls clean --undo
MANIFEST` and, in a notebook, `jaxcls.widgets.ImageClassifierCleaner(learn)` are built on
these.
"""
from .moves import Applied, DecisionError, apply_decisions, undo
from .ranking import CleanRow, format_table, rank, write_csv

__all__ = ['Applied', 'CleanRow', 'DecisionError', 'apply_decisions', 'format_table', 'rank',
           'undo', 'write_csv']
