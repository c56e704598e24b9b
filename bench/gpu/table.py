"""bench_gpu.py's summary table: one row per measurement, its jaxcls and torch values, their
ratio, its target and whether it was met. tests/e2e/test_bench_gpu.py reads it: the head, the
'-+-' rule, and rows by the id in their first cell."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from gpu.common import say
from gpu.sizes import Sizes
from gpu.torch_peer import best_torch
from timing import table_lines

HEAD = ['measurement', 'jaxcls', 'pytorch', 'ratio', 'target', 'met/not met']


@dataclasses.dataclass
class Row:
    key: str            # short id the test looks for: '1', '2', '3', '4a', ...
    what: str
    jax: Optional[float]
    torch: Any = None   # a number, or a string ('not available', '-')
    torch_mode: str = ''
    higher_better: bool = True
    target: Optional[float] = None          # absolute target on the jaxcls value
    target_ratio: Optional[float] = None    # jaxcls / torch must be >= this
    unit: str = 'img/s'
    skipped: bool = False   # its section was left out (--sections)

    def cells(self, judge: bool) -> list[str]:
        if self.skipped:
            return [f'{self.key:<3}{self.what}', 'skipped', '-', '-', '-', '-']
        fmt = (lambda v: f'{v:.0f}' if v >= 100 else f'{v:.1f}') if self.unit == 'img/s' \
            else (lambda v: f'{v:.2f}')
        jv = 'failed' if self.jax is None else fmt(self.jax)
        if isinstance(self.torch, (int, float)):
            tv = fmt(self.torch) + (f' ({self.torch_mode})' if self.torch_mode else '')
            ratio = (f'{self.jax / self.torch:.2f}x' if self.higher_better
                     else f'{self.torch / self.jax:.2f}x') if self.jax else '-'
        else:
            tv, ratio = (self.torch or '-'), '-'
        parts = []
        if self.target is not None:
            parts.append(f'{">=" if self.higher_better else "<"} {self.target:g} '
                         f'{"img/s" if self.unit == "img/s" else "s"}')
        if self.target_ratio is not None:
            parts.append(f'>= {self.target_ratio:g}x torch')
        target = ' and '.join(parts) or '(none)'
        if not parts:
            met = '-'
        elif not judge:
            met = 'not judged (--tiny)'
        elif self.jax is None:
            met = 'NOT MET (failed)'
        else:
            ok = True
            if self.target is not None:
                ok = self.jax >= self.target if self.higher_better else self.jax < self.target
            untested = False
            if self.target_ratio is not None:
                if isinstance(self.torch, (int, float)):
                    ok = ok and self.jax / self.torch >= self.target_ratio
                else:
                    untested = True
            met = ('met' if ok else 'NOT MET') + (' (ratio untested: no torch)' if untested else '')
        return [f'{self.key:<3}{self.what}', jv, tv, ratio, target, met]


def print_table(rows: list[Row], judge: bool) -> None:
    for line in table_lines(HEAD, [r.cells(judge) for r in rows]):
        say(line)


def summary_rows(S: Sizes, sections: set, results: dict, j1_rate, t1: list, j3_rate, t3: list,
                 passes: list) -> list[Row]:
    """The table's rows, in order, with their targets (`passes`: section 4's two passes)."""
    warm = passes[1] or {}
    first = passes[0] or {}
    tr1, tm1 = best_torch(t1)
    tr3, tm3 = best_torch(t3)
    skip123, skip4 = not sections & {'1', '2', '3'}, '4' not in sections
    return [
        Row('1', 'train img/s, synthetic on device', j1_rate, tr1, tm1, target=9000,
            target_ratio=1.0, skipped=skip123),
        Row('2', 'train img/s, uint8 cache + device aug', results.get('train_aug', {}).get('rate'),
            '-', skipped=skip123),
        Row('3', 'frozen-body forward img/s', j3_rate, tr3, tm3, target=40000, skipped=skip123),
        Row('4a', 'lesson: from_paths (decode) s', warm.get('decode_s'), '-', unit='s',
            higher_better=False, skipped=skip4),
        Row('4b', 'lesson: pretrained(precompute) s', warm.get('precompute_s'), '-', unit='s',
            higher_better=False, skipped=skip4),
        Row('4c', f'lesson: fit(0.01, {S.fit_epochs}) s', warm.get('fit_s'), '-', unit='s',
            higher_better=False, skipped=skip4),
        Row('4', 'lesson: total s', warm.get('total_s'), '-', unit='s', higher_better=False,
            target=7, skipped=skip4),
        Row('4*', 'lesson: total s, first pass', first.get('total_s'), '-', unit='s',
            higher_better=False, skipped=skip4),
    ]
