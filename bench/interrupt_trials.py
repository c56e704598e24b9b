"""Ctrl-C at chosen moments of a real `jaxcls` command: exit status, time to exit, hangs and
leftovers, tried many times (issue 23).

    python bench/interrupt_trials.py --tries 5                  # this checkout, every moment
    python bench/interrupt_trials.py --tries 10 \\
        --side before "PYTHONPATH=../wt-before .venv/bin/python -m jaxcls.cli" \\
        --side after  "PYTHONPATH=. .venv/bin/jaxcls"
    python bench/interrupt_trials.py --moments training,checkpoint --tries 3 --seed 1
    python bench/interrupt_trials.py --report /tmp/interrupt_trials.jsonl   # the table again

Each try starts the command (`train`, `lr-find` or `predict`, resnet18 at 32 px, batch 8,
random weights) on a folder of generated JPEGs, waits for its moment, seen in the command's
output or on disk, plus a random delay so tries land at different instants, and sends
SIGINT to its process group, as a terminal's Ctrl-C does (`--to-pid`: the process alone).
It records the exit status (negative: killed by that signal), the seconds from SIGINT to
exit, a hang (no exit within `--hang-s`: the group is killed), partial files left anywhere
under the data folder (names with 'orbax-checkpoint-tmp', '.tmp' or '.tmp.npy'), processes
of the group still alive a second after the exit (decode workers), a traceback on stderr,
and the last stderr line, which should say what was saved ('own line': it starts a line of
its own on stderr rather than ending the decode progress bar there; the epoch bars go to
stdout, another pipe, so whether it ends one of them on a terminal is not seen here).
`landed` counts the tries whose signal went out while the command's output (or the disk)
still showed the moment.

The moments (`--moments`, default all):

  decoding        train on the 1500 images, decode cache removed: while the decode progress
                  bar runs (threads)
  decoding-procs  the same with every training image twice (2400: worker processes)
  compiling       train, compilation cache off: after 'epoch 1/' appears, before the first step
  training        train: mid-epoch, in epoch 1 or 2
  validating      train: after epoch 1's or 2's bar closes, before its table row
  checkpoint      train: when a temporary folder appears under PATH/models after an epoch's
                  row (the checkpoint write), else 0.3 s after the row (nothing written then)
  saving          train --epochs 1: while the final model is written (a temporary folder
                  outside the checkpoints), else once the run prints its accuracy (too late)
  lr-find         lr-find (one epoch): partway through the range test
  predict         predict on the 1500 images with a saved model, at a random time within
                  the shortest uninterrupted predict seen so far
  finishing       the same predict, within 0.5 s after its last line ('wrote N predictions'):
                  the command has done its work and is shutting down

All but the decoding moments and predict train on 400 of the images (validating on 200),
so that an epoch is short (50 steps).

Each side (`--side LABEL COMMAND`, repeatable; `--command COMMAND` for a single side;
default this checkout's `python -m jaxcls.cli`) gets its own copy of the folder (hard
links), decode cache and compilation cache (JAXCLS_COMPILATION_CACHE under `--workdir`),
which one run of each command warms first; `VAR=value` words in front of COMMAND go into its
environment, and PYTHONUNBUFFERED=1 makes its output arrive as a terminal's would. Tries
alternate sides and moments in a random order, so both sides meet the same machine load.
Every try is one JSON line appended to `--jsonl`; the table gives, per moment and side, the
exit statuses seen, the median and longest time to exit, and the counts of the rest. A try is
a failure when it did not exit 130 within 2 s, hung, left a partial file or a process,
printed a traceback, or its last line does not say what was saved; failures are listed
with their output's tail.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

from timing import machine, table_lines, with_checkout
from watched_run import Run, group_members, last_line, partial_files

MOMENTS = ('decoding', 'decoding-procs', 'compiling', 'training', 'validating', 'checkpoint',
           'saving', 'lr-find', 'predict', 'finishing')
FLAGS = ['--arch', 'resnet18', '--sz', '32', '--bs', '8', '--no-pretrained', '--unfreeze']
NAME = 'resnet18_32'                          # the model name train uses with FLAGS
EXIT_LIMIT_S = 2.0                            # issue 23: exit 130 within 2 s
CLASSES = ('cats', 'dogs')


# ----------------------------------------------------------------------------- the images

def _jpeg(job: tuple[str, int, int, int, int]) -> None:
    """One photo-like JPEG: a class tint on an upsampled 8x6 random field, +-8 grain."""
    import numpy as np
    from PIL import Image
    path, i, w, h, quality = job
    rng = np.random.default_rng(i)
    field = rng.integers(0, 256, (6, 8, 3)).astype(np.float32) * 0.5 + (100, 30)[i % 2]
    im = Image.fromarray(field.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    a = np.asarray(im).astype(np.int16) + rng.integers(-8, 9, (h, w, 3), dtype=np.int16)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, 'JPEG', quality=quality)


def make_images(root: str, n: int, w: int, h: int, quality: int = 90) -> str:
    """train/<class>/ and valid/<class>/ (one image in five) under `root`, reused when a
    previous run made the same ones."""
    marker, want = os.path.join(root, 'made.json'), {'n': n, 'w': w, 'h': h, 'q': quality}
    if os.path.exists(marker) and json.load(open(marker)) == want:
        return root
    jobs = []
    for i in range(n):
        split = 'valid' if (i // 2) % 5 == 4 else 'train'
        d = os.path.join(root, split, CLASSES[i % 2])
        os.makedirs(d, exist_ok=True)
        jobs.append((os.path.join(d, f'{CLASSES[i % 2]}.{i}.jpg'), i, w, h, quality))
    with ProcessPoolExecutor(os.cpu_count()) as ex:
        list(ex.map(_jpeg, jobs, chunksize=32))
    json.dump(want, open(marker, 'w'))
    return root


def link_tree(src: str, dst: str, train_copies: int = 1, per_class: Optional[int] = None) -> str:
    """`dst`/train and /valid as hard links to `src`'s images (train ones `train_copies`
    times over, under different names; `per_class`: only that many training images per
    class, half as many validation ones), so each side decodes into a cache of its own."""
    for split in ('train', 'valid'):
        for cls in CLASSES:
            d = os.path.join(dst, split, cls)
            os.makedirs(d, exist_ok=True)
            names = sorted(os.listdir(os.path.join(src, split, cls)))
            if per_class:
                names = names[:per_class if split == 'train' else per_class // 2]
            for f in names:
                for k in range(train_copies if split == 'train' else 1):
                    to = os.path.join(d, f'{k}-{f}' if k else f)
                    if not os.path.exists(to):
                        os.link(os.path.join(src, split, cls, f), to)
    return dst


# ----------------------------------------------------------------------------- the moments

class Side:
    """One jaxcls command line under test, with its data folders and caches in `workdir`."""

    def __init__(self, label: str, command: str, workdir: str, src: str, base_env: dict):
        words = shlex.split(command)
        self.env = dict(base_env)
        while words and re.match(r'^[A-Za-z_][A-Za-z0-9_]*=', words[0]):
            k, v = words.pop(0).split('=', 1)
            if k == 'PYTHONPATH':               # the command runs elsewhere (below)
                v = os.pathsep.join(os.path.abspath(d) for d in v.split(os.pathsep) if d)
            self.env[k] = v
        if words and os.sep in words[0]:
            words[0] = os.path.abspath(words[0])
        # The command runs in its own folder: `python -m jaxcls.cli` puts the working folder
        # first on sys.path, which must not be a checkout other than the one PYTHONPATH names.
        self.label, self.argv, self.dir = label, words, os.path.join(workdir, label)
        self.data = link_tree(src, os.path.join(self.dir, 'data'))
        self.data_procs = link_tree(src, os.path.join(self.dir, 'data-procs'), train_copies=2)
        self.data_small = link_tree(src, os.path.join(self.dir, 'data-small'), per_class=200)
        self.env.update(PYTHONUNBUFFERED='1',
                        JAXCLS_COMPILATION_CACHE=os.path.join(self.dir, 'xla'))
        self.predict_s = None

    def folder(self, moment: str) -> str:
        """The data folder of `moment`'s tries: 1500 images to decode or predict, twice the
        training ones for worker processes, 400 + 200 for the rest (short epochs)."""
        return {'decoding': self.data, 'predict': self.data, 'finishing': self.data,
                'decoding-procs': self.data_procs}.get(moment, self.data_small)

    def args(self, moment: str, data: str) -> list[str]:
        if moment == 'lr-find':
            return self.argv + ['lr-find', data, *FLAGS]
        if moment in ('predict', 'finishing'):
            return self.argv + ['predict', os.path.join(self.data_small, 'models', 'trials-model'),
                                os.path.join(data, 'train'), os.path.join(data, 'valid'),
                                '--csv', os.path.join(self.dir, 'predictions.csv')]
        epochs = '1' if moment == 'saving' else '3'
        return self.argv + ['train', data, *FLAGS, '--epochs', epochs, '--lr', '0.02']

    def warm(self) -> None:
        """Run each command once to the end: the decode and compilation caches, the model
        predict uses, and predict's uninterrupted duration."""
        train = self.argv + ['train', self.data_small, *FLAGS, '--epochs', '1', '--lr', '0.02',
                             '--name', 'trials-model']
        for name, argv in (('train', train), ('lr-find', self.args('lr-find', self.data_small)),
                           ('predict', self.args('predict', self.data)),
                           ('predict', self.args('predict', self.data))):
            t = time.monotonic()
            p = subprocess.run(argv, env=self.env, cwd=self.dir, capture_output=True, text=True,
                               timeout=900)
            took = time.monotonic() - t
            if p.returncode not in (0, 1):
                raise SystemExit(f'{self.label}: the warm-up {name} run failed ({p.returncode}): '
                                 f'{(p.stdout + p.stderr)[-2000:]}')
            print(f'  {self.label}: warm-up {name} {took:.1f} s', flush=True)
            if name == 'predict':
                self.predict_s = min(took, self.predict_s or took)


def clean(side: Side, data: str, moment: str) -> None:
    """What an earlier try may have left: its checkpoints, model, plots, partial files (and
    the decode cache, for the decoding moments)."""
    import shutil
    for d in (os.path.join(data, 'models', f'{NAME}-checkpoints'),
              os.path.join(data, 'models', NAME), os.path.join(data, 'jaxcls-out')):
        shutil.rmtree(d, ignore_errors=True)
    if moment.startswith('decoding'):
        shutil.rmtree(os.path.join(data, 'tmp'), ignore_errors=True)
    for rel in partial_files(data):                     # parents first: theirs go with them
        p = os.path.join(data, rel)
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            os.remove(p)


def wait_for(run: Run, cond, timeout: float) -> bool:
    """Poll `cond()` every 10 ms; False when the command ended or `timeout` passed first."""
    while not cond():
        if run.p.poll() is not None or run.elapsed() > timeout:
            return False
        time.sleep(0.01)
    return True


def reach(run: Run, moment: str, data: str, rng: random.Random, side: Side, timeout: float):
    """Wait for `moment` in `run`; returns (reached, what the try aimed at)."""
    models = os.path.join(data, 'models')
    if moment.startswith('decoding'):
        delay = rng.uniform(0, 1.5)
        ok = wait_for(run, lambda: (run.state('err')[0] or ('',))[0].startswith('decode'), timeout)
        return ok and _sleep(delay), {'delay_s': delay}
    if moment == 'compiling':
        delay = rng.uniform(0, 2.0)
        ok = wait_for(run, lambda: (run.state('out')[0] or ('',))[0].startswith('epoch 1/'), timeout)
        return ok and _sleep(delay), {'delay_s': delay}
    if moment in ('training', 'validating'):
        e, f = rng.choice((1, 2)), rng.uniform(0.05, 0.95)

        def at():
            bar, cleared, _ = run.state('out')
            if not bar or not bar[0].startswith(f'epoch {e}/'):
                return False
            return cleared if moment == 'validating' else bar[1] >= max(1, f * bar[2])
        delay = rng.uniform(0, 0.3 if moment == 'validating' else 0.1)
        return wait_for(run, at, timeout) and _sleep(delay), {'epoch': e, 'fraction': f,
                                                             'delay_s': delay}
    if moment in ('checkpoint', 'saving'):
        e = rng.choice((1, 2)) if moment == 'checkpoint' else 1
        outside = moment == 'saving'

        def tmp():
            return [p for p in partial_files(models) if not outside or '-checkpoints' not in p]
        if moment == 'checkpoint':
            ok = wait_for(run, lambda: run.state('out')[2] >= e, timeout)
            ok = ok and (wait_for(run, tmp, run.elapsed() + 0.3) or run.p.poll() is None)
        else:
            ok = wait_for(run, lambda: tmp() or 'validation accuracy' in run.text('out'), timeout)
        delay = rng.uniform(0, 0.1) if tmp() else 0.0
        return ok and _sleep(delay), {'epoch': e, 'delay_s': delay}
    if moment == 'lr-find':
        f = rng.uniform(0.05, 0.7)
        ok = wait_for(run, lambda: (lambda b: bool(b) and b[0] == 'lr_find' and
                                    b[1] >= max(1, f * b[2]))(run.state('out')[0]), timeout)
        return ok, {'fraction': f}
    if moment == 'predict':
        at = rng.uniform(1.0, 0.9 * side.predict_s)
        return wait_for(run, lambda: run.elapsed() >= at, timeout), {'at_s': at}
    if moment == 'finishing':
        delay = rng.uniform(0, 0.5)
        ok = wait_for(run, lambda: 'wrote ' in run.text('out'), timeout)
        return ok and _sleep(delay), {'delay_s': delay}
    raise ValueError(moment)


def _sleep(s: float) -> bool:
    time.sleep(s)
    return True


def landed(run: Run, moment: str, data: str, aim: dict) -> bool:
    """Whether the output (or the disk) still showed `moment` when the signal went out."""
    bar_out, cleared_out, rows = run.state('out')
    bar_err, cleared_err, _ = run.state('err')
    if moment.startswith('decoding'):
        return bool(bar_err) and bar_err[0].startswith('decode') and not cleared_err and not bar_out
    if moment == 'compiling':
        return bool(bar_out) and bar_out[0].startswith('epoch 1/') and bar_out[1] == 0
    if moment == 'training':
        return bool(bar_out) and bar_out[0].startswith('epoch') and not cleared_out and bar_out[1] > 0
    if moment == 'validating':
        return cleared_out and rows == aim['epoch'] - 1
    if moment in ('checkpoint', 'saving'):
        return any(moment == 'checkpoint' or '-checkpoints' not in p
                   for p in partial_files(os.path.join(data, 'models')))
    if moment == 'lr-find':
        return bool(bar_out) and bar_out[0] == 'lr_find' and not cleared_out
    return run.p.poll() is None


def one_try(side: Side, moment: str, rng: random.Random, hang_s: float, to_pid: bool) -> dict:
    data = side.folder(moment)
    clean(side, data, moment)
    env = dict(side.env, **({'JAXCLS_COMPILATION_CACHE': '0'} if moment == 'compiling' else {}))
    rec = {'side': side.label, 'moment': moment, 'load': round(os.getloadavg()[0], 2),
           'time': time.strftime('%Y-%m-%dT%H:%M:%S')}
    run = Run(side.args(moment, data), env, side.dir)
    try:
        return _signal(run, rec, side, moment, data, rng, hang_s, to_pid)
    finally:
        if run.p.poll() is None:              # this script was stopped: stop the try too
            run.kill()


def _signal(run: Run, rec: dict, side: Side, moment: str, data: str, rng: random.Random,
            hang_s: float, to_pid: bool) -> dict:
    reached, aim = reach(run, moment, data, rng, side, timeout=300)
    rec.update(aim=aim, signal_at_s=round(run.elapsed(), 3))
    if not reached or run.p.poll() is not None:       # ended (or stuck) before its moment
        ended = run.p.poll()
        if moment == 'predict' and ended == 0:       # faster than thought: aim earlier
            side.predict_s = min(side.predict_s, run.elapsed())
        run.kill()
        return dict(rec, missed=True, rc=ended, tail=(run.text('out') + run.text('err'))[-1500:])
    rec['landed'] = landed(run, moment, data, aim)
    (os.kill if to_pid else os.killpg)(run.p.pid, signal.SIGINT)
    t_sig = time.monotonic()
    try:
        run.p.wait(timeout=hang_s)
        rec['hang'] = False
    except subprocess.TimeoutExpired:
        rec['hang'] = True
        run.kill()
    rec['exit_s'] = round(time.monotonic() - t_sig, 3)
    for t in run.readers:
        t.join(5)
    time.sleep(1.0)
    rec['orphans'] = group_members(run.p.pid)
    if rec['orphans']:
        run.kill()
    err = run.text('err')
    rec.update(rc=run.p.returncode, partial=partial_files(data), last_line=last_line(err)[-300:],
               traceback='Traceback' in err)
    rec['says_saved'] = bool(re.search(r'jaxcls: interrupted\b.*(saved|checkpoint)',
                                       rec['last_line']))
    rec['own_line'] = any(ln.startswith('jaxcls: interrupted') for ln in re.split(r'[\r\n]', err))
    rec['failed'] = bool(rec['rc'] != 130 or rec['exit_s'] > EXIT_LIMIT_S or rec['hang'] or
                         rec['partial'] or rec['orphans'] or rec['traceback'] or not rec['says_saved'])
    if rec['failed']:
        rec['tail'] = (run.text('out')[-600:] + '\n--- stderr ---\n' + err[-2500:])
    return rec


# ----------------------------------------------------------------------------- the table

def own_line(r: dict) -> bool:
    """Whether the 'jaxcls: interrupted' line started a line of its own on stderr."""
    if 'jaxcls: interrupted' in r['last_line']:
        return r['last_line'].startswith('jaxcls: interrupted')
    return bool(r.get('own_line'))


def table(records: list[dict]) -> list[str]:
    groups = collections.defaultdict(list)
    for r in records:
        groups[(r['moment'], r['side'])].append(r)
    order = {m: i for i, m in enumerate(MOMENTS)}
    body = []
    for (moment, side), rs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99),
                                                                     kv[0][1])):
        done = [r for r in rs if not r.get('missed')]
        codes = collections.Counter(r['rc'] for r in done)
        times = [r['exit_s'] for r in done]
        missed = f' (+{len(rs) - len(done)} missed)' if len(done) < len(rs) else ''
        body.append([moment, side, f'{len(done)}{missed}', str(sum(r['landed'] for r in done)),
                     ', '.join(f'{c} x{n}' for c, n in sorted(codes.items(), key=lambda kv: -kv[1])),
                     f'{statistics.median(times):.2f} / {max(times):.2f}' if times else '-',
                     str(sum(r['hang'] for r in done)), str(sum(bool(r['partial']) for r in done)),
                     str(sum(bool(r['orphans']) for r in done)), str(sum(r['traceback'] for r in done)),
                     str(sum(r['says_saved'] for r in done)),
                     str(sum(own_line(r) for r in done)),
                     str(sum(r['failed'] for r in done))])
    head = ['moment', 'side', 'tries', 'landed', 'exit statuses', 'exit s med / max', 'hangs',
            'partial left', 'procs left', 'traceback', 'says saved', 'own line', 'failed']
    return table_lines(head, body)


def report(records: list[dict], tail_lines: int = 12) -> None:
    loads = [r['load'] for r in records]
    if loads:
        print(f'load average at the tries: {min(loads):.1f} - {max(loads):.1f} '
              f'(median {statistics.median(loads):.1f}), {os.cpu_count()} cores')
    print('\n'.join(table(records)))
    groups = collections.defaultdict(list)
    for r in records:
        if r.get('failed') or r.get('missed'):
            groups[(r['side'], r['moment'], reasons(r))].append(r)
    for (side, moment, why), rs in groups.items():
        r = rs[0]
        print(f"\n--- {side} {moment}: {len(rs)} x {why}; the first at {r.get('signal_at_s')} s "
              f"(aim {r.get('aim')}, landed {r.get('landed')}, exit {r.get('exit_s')} s, "
              f"partial {r.get('partial')}, procs {r.get('orphans')}):")
        print('\n'.join('    ' + ln for ln in r.get('tail', '').splitlines()[-tail_lines:]))


def reasons(r: dict) -> str:
    """Why a try failed, in a few words."""
    if r.get('missed'):
        return f"missed its moment (ended with {r.get('rc')})"
    why = [f"rc {r['rc']}"] if r['rc'] != 130 else []
    why += [f'over {EXIT_LIMIT_S:g} s'] if r['exit_s'] > EXIT_LIMIT_S and not r['hang'] else []
    why += ['hang'] * r['hang'] + ['partial files'] * bool(r['partial'])
    why += ['processes left'] * bool(r['orphans']) + ['traceback'] * r['traceback']
    why += ['last line says nothing of what was saved'] * (not r['says_saved'])
    return ', '.join(why)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--side', nargs=2, action='append', metavar=('LABEL', 'COMMAND'),
                    help='a jaxcls command line to try, e.g. before "PYTHONPATH=../wt-before '
                         '.venv/bin/python -m jaxcls.cli" (repeatable)')
    ap.add_argument('--command', help='a single side: the jaxcls command line (label jaxcls)')
    ap.add_argument('--moments', default=','.join(MOMENTS),
                    help=f'comma-separated, of {", ".join(MOMENTS)}')
    ap.add_argument('--tries', type=int, default=5, help='tries per moment and side (default 5)')
    ap.add_argument('--seed', type=int, default=0, help='seed of the delays and the order (default 0)')
    ap.add_argument('--images', type=int, default=1500, help='JPEGs in the folder (default 1500)')
    ap.add_argument('--image-size', default='1280x960', help='their WxH (default 1280x960: '
                    'about 2 s to decode on 2 cores)')
    ap.add_argument('--hang-s', type=float, default=60.0, help='no exit this long after SIGINT '
                    'is a hang (default 60)')
    ap.add_argument('--to-pid', action='store_true', help='signal the process alone, not its group')
    ap.add_argument('--workdir', default='/tmp/interrupt_trials', help='images, caches, runs')
    ap.add_argument('--jsonl', default='/tmp/interrupt_trials.jsonl', help='raw results, appended')
    ap.add_argument('--report', nargs='+', metavar='JSONL', help='print the table of saved results')
    a = ap.parse_args(argv)
    if a.report:
        report([json.loads(ln) for f in a.report for ln in open(f) if ln.strip()])
        return
    moments = [m.strip() for m in a.moments.split(',') if m.strip()]
    bad = [m for m in moments if m not in MOMENTS]
    if bad:
        ap.error(f'unknown moment(s) {bad}; choose from {", ".join(MOMENTS)}')
    w, h = (int(v) for v in a.image_size.lower().split('x'))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))    # unwinds: the try is stopped
    sides = a.side or [('jaxcls', a.command or shlex.join([sys.executable, '-m', 'jaxcls.cli']))]
    print(f'{machine()}; {a.images} JPEGs of {w}x{h}; {a.tries} tries of {len(moments)} moments '
          f'on {len(sides)} side(s); results appended to {a.jsonl}', flush=True)
    src = make_images(os.path.join(a.workdir, 'images'), a.images, w, h)
    base = with_checkout(dict(os.environ)) if not (a.side or a.command) else dict(os.environ)
    made = [Side(label, cmd, a.workdir, src, base) for label, cmd in sides]
    for s in made:
        s.warm()
    rng, records = random.Random(a.seed), []
    with open(a.jsonl, 'a') as out:
        for k in range(a.tries):
            plan = [(m, s) for m in moments for s in made]
            rng.shuffle(plan)
            for moment, side in plan:
                r = dict(one_try(side, moment, rng, a.hang_s, a.to_pid), round=k, seed=a.seed)
                records.append(r)
                out.write(json.dumps(r) + '\n')
                out.flush()
                print(f"  {k + 1}/{a.tries} {side.label:>8} {moment:<15} "
                      + ('missed' if r.get('missed') else
                         f"rc {r['rc']:>4}  {r['exit_s']:6.2f} s  landed {r['landed']!s:<5}  "
                         f"{'FAILED ' if r['failed'] else ''}{r['last_line'][:90]}"), flush=True)
    report(records)


if __name__ == '__main__':
    main()
