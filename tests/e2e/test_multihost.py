"""Several hosts: two processes on localhost, joined by jax.distributed.initialize() (CPU
collectives through gloo), each with one CPU device, decode only their own share of the images
and train one tiny model together; both end with the same parameters."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from jaxcls.data.decode import decode_files
from jaxcls.data.imagedata import ImageDataset
from jaxcls.data.items import folder_items
from jaxcls.data.loader import DataLoader, replicate, shard_indices

from helpers import make_folder

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: helpers.py


def _one_device_env() -> dict:
    """This process's environment for a worker with one CPU device (no forced device count)."""
    env = dict(os.environ)
    env['XLA_FLAGS'] = ' '.join(f for f in env.get('XLA_FLAGS', '').split() if 'device_count' not in f)
    return env

WORKER = textwrap.dedent('''
    import json, os, sys, threading, time
    pid, port, root, out, tests = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    import jax
    jax.config.update('jax_platforms', 'cpu')
    # CPU collectives across processes: gloo (the default from jax 0.5 on; 'none' before).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.config.update('jax_compilation_cache_dir', os.environ['JAXCLS_TEST_COMPILE_CACHE'])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2,
                               process_id=pid, initialization_timeout=60)
    import numpy as np
    import jaxcls.data.decode_one as decode_one
    decoded, lock, real_decode = [], threading.Lock(), decode_one.decode_image
    def counting(src, *a, **k):  # records every file this process decodes
        with lock:
            decoded.append(os.path.relpath(src, root))
        return real_decode(src, *a, **k)
    decode_one.decode_image = counting
    sys.path.insert(0, tests)
    from helpers import TINY
    from jaxcls import ConvLearner, ImageClassifierData, tfms_from_model, transforms_side_on
    from jaxcls.data.loader import replicate, to_host

    tfms = tfms_from_model(TINY, 32, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(root, bs=4, tfms=tfms, quiet=True, key=5)
    first = next(iter(data.trn_dl.iter_epoch(0)))
    trn_all = data.trn_dl.collect([b['image'] for b in data.trn_dl.iter_epoch(0)])
    learn = ConvLearner.pretrained(TINY, data, pretrained=False, quiet=True)
    learn.fit(1e-2, 2)
    preds, targs = learn.predict_with_targs()
    # Placing a state on the mesh: learner._place (replicate) against jax.device_put
    host = jax.tree_util.tree_map(np.asarray, (learn.state.params, learn.state.batch_stats))
    t = time.perf_counter(); by_put = jax.block_until_ready(learn._place(host))
    t_put = time.perf_counter() - t
    t = time.perf_counter(); by_rep = jax.block_until_ready(jax.device_put(host, jax.sharding.NamedSharding(data.trn_dl.mesh, jax.sharding.PartitionSpec())))
    t_rep = time.perf_counter() - t
    same = all(a.sharding == b.sharding and np.array_equal(a, b) for a, b in
               zip(jax.tree_util.tree_leaves(by_put), jax.tree_util.tree_leaves(by_rep)))
    leaves = jax.tree_util.tree_leaves((learn.state.params, learn.state.batch_stats))
    np.savez(out, *[np.asarray(a) for a in leaves])
    print(json.dumps({
        'process': jax.process_index(), 'processes': jax.process_count(),
        'devices': jax.device_count(), 'local_devices': jax.local_device_count(),
        'decoded': sorted(decoded),
        'trn_fnames': data.trn_ds.fnames, 'trn_ids': data.trn_ds.ids.tolist(),
        'val_fnames': data.val_ds.fnames, 'counts': data.trn_dl.counts,
        'n_batches': len(data.trn_dl), 'local_bs': data.trn_dl.local_bs,
        'cache_files': sorted(os.path.basename(ds.cache_file) for ds in (data.trn_ds, data.val_ds)),
        'first_batch_shape': list(first['image'].shape),
        'first_batch_local': [list(s.data.shape) for s in first['image'].addressable_shards],
        'first_batch_labels': to_host(first['label']).tolist(),
        'first_batch_mask': to_host(first['mask']).tolist(),
        'trn_all_sum': [int(v) for v in trn_all.reshape(len(trn_all), -1).sum(1)],
        'history': learn.history, 'preds_shape': list(preds.shape), 'targs': targs.tolist(),
        'trn_loss_first_last': [learn.sched.losses[0], learn.sched.losses[-1]],
        'place': {'leaves': len(jax.tree_util.tree_leaves(host)), 'device_put_s': t_rep,
                  'replicate_s': t_put, 'same': same}}))
''')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp('two_hosts')
    make_folder(root, n_train=10, n_valid=5, size=36)
    # One undecodable file at an odd index: process 1 keeps one image fewer than process 0.
    (root / 'train' / 'cats' / 'cats.00.png').write_bytes(b'')
    port = _free_port()
    env = _one_device_env()
    env.update(JAX_PLATFORMS='cpu', JAXCLS_TEST_COMPILE_CACHE=jax.config.jax_compilation_cache_dir)
    t0 = time.time()
    procs = [subprocess.Popen(
        [sys.executable, '-c', WORKER, str(i), str(port), str(root),
         str(root / f'params{i}.npz'), TESTS],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=240)
            assert p.returncode == 0, stderr[-4000:]
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    arrays = [np.load(root / f'params{i}.npz') for i in range(2)]
    return str(root), outs, [[a[k] for k in sorted(a.files, key=lambda s: int(s.split('_')[1]))]
                             for a in arrays], time.time() - t0


def test_two_processes_share_the_mesh(run):
    _, (a, b), _, _ = run
    assert (a['process'], b['process']) == (0, 1)
    assert a['processes'] == b['processes'] == 2
    assert a['devices'] == b['devices'] == 2 and a['local_devices'] == b['local_devices'] == 1
    # the global batch is 4 images, 2 from each process
    assert a['first_batch_shape'] == [4, 37, 37, 3] and a['first_batch_local'] == [[2, 37, 37, 3]]
    assert a['local_bs'] == b['local_bs'] == 2


def test_each_process_decodes_only_its_share(run):
    root, (a, b), _, _ = run
    lay = folder_items(root)
    files = list(lay.train.fnames) + list(lay.valid.fnames)
    assert len(lay.train) == 21 and lay.train.fnames[1] == 'train/cats/cats.00.png'
    for p, out in enumerate((a, b)):
        share = sorted(list(lay.train.fnames[p::2]) + list(lay.valid.fnames[p::2]))
        assert out['decoded'] == share                    # every file of its share, once
        assert out['trn_ids'] == [i for i in range(p, 21, 2) if i != 1]
        assert out['trn_fnames'] == [lay.train.fnames[i] for i in out['trn_ids']]
        assert out['val_fnames'] == list(lay.valid.fnames[p::2])
        # its own cache files: processes sharing a disk never collide
        assert [f.split('-')[:3] for f in out['cache_files']] == \
            [['train', f'p{p}of2', '37px'], ['valid', f'p{p}of2', '37px']]
    assert sorted(a['decoded'] + b['decoded']) == sorted(files)  # together: all, none twice
    assert a['counts'] == b['counts'] == [11, 9]
    # ceil(11 / 2) = 6 batches; process 1 runs out after 5 and pads its last slice with mask 0
    assert a['n_batches'] == b['n_batches'] == 6


def test_global_batches_are_the_concatenated_shares(run):
    root, (a, b), _, _ = run
    assert a['first_batch_labels'] == b['first_batch_labels']
    assert a['first_batch_mask'] == [1, 1, 1, 1]
    # collect() brings every training image back, once each, in split order (as one process
    # would see them): the same pixels as decoding the whole folder in this process
    lay = folder_items(root)
    whole = decode_files(lay.train.fnames, root, 37, quiet=True)
    assert len(whole.x) == 20
    assert a['trn_all_sum'] == b['trn_all_sum'] == [int(v) for v in whole.x.reshape(20, -1).sum(1)]


def test_they_train_one_model(run):
    _, (a, b), (pa, pb), seconds = run
    assert len(pa) == len(pb) > 10
    for x, y in zip(pa, pb):
        assert np.array_equal(x, y)       # bitwise: one model, replicated on both processes
    assert a['history'][-1]['val_loss'] == b['history'][-1]['val_loss']
    assert [h['accuracy'] for h in a['history']] == [h['accuracy'] for h in b['history']]
    assert a['preds_shape'] == [10, 2]    # predictions of the whole validation set on each
    assert a['targs'] == b['targs'] == [0] * 5 + [1] * 5   # in split order
    assert a['trn_loss_first_last'] == b['trn_loss_first_last']
    print(f'two-process run: {seconds:.1f} s')


def test_replicate_places_a_state_like_device_put(run):
    _, outs, _, _ = run
    for out in outs:
        assert out['place']['same'] and out['place']['leaves'] > 50
        print('placing {leaves} leaves: jax.device_put {device_put_s:.2f} s, replicate '
              '{replicate_s:.3f} s'.format(**out['place']))


RAISE = textwrap.dedent('''
    import sys
    pid, port, root = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    jax.config.update('jax_platforms', 'cpu')
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2,
                               process_id=pid, initialization_timeout=60)
    from jaxcls import ImageClassifierData
    try:
        ImageClassifierData.from_paths(root, bs=4, cache_size=16, quiet=True, on_bad='raise',
                                       cache_dir=False)
    except Exception as e:
        print(type(e).__name__, str(e)[:200])
''')


def test_a_bad_file_on_one_process_stops_both(run):
    """on_bad='raise' on process 1 (it holds the empty file) must not leave process 0 waiting
    in a collective: both stop, each saying why."""
    root = run[0]
    port = _free_port()
    env = _one_device_env()
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, '-c', RAISE, str(i), str(port), root], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=90)[0].strip().splitlines()[-1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert outs[0].startswith('RuntimeError process(es) [1] of 2 failed to decode their share '
                              'of train'), outs[0]
    assert outs[1].startswith('BadImageError 1 of 10 files in train-p1of2 could not be decoded'), outs[1]
    assert time.time() - t0 < 60


# ---------------------------------------------------------------- the same API in one process

def _images(n):
    x = np.zeros((n, 2, 2, 3), np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return x


def test_collect_and_targets_in_one_process():
    y = np.arange(11) * 10
    dl = DataLoader(_images(11), y, bs=4, shuffle=True, key=2, prefetch=0)
    for e in range(2):
        outs = [b['image'][:, 0, 0, 0] for b in dl.iter_epoch(e)]
        assert dl.collect(outs, epoch=e).tolist() == list(range(11))  # split order, padding gone
        assert dl.targets(e).tolist() == y.tolist() and dl.targets(e).dtype == y.dtype
    two = [np.stack([b['image'][:, 0, 0, 0]] * 2) for b in dl.iter_epoch(0)]  # batch axis 1
    assert dl.collect(two, axis=1).tolist() == [list(range(11))] * 2
    dropped = DataLoader(_images(11), y, bs=4, shuffle=True, key=2, drop_last=True)
    kept = dropped.collect([b['image'][:, 0, 0, 0] for b in dropped.iter_epoch(0)])
    assert len(kept) == 8 and kept.tolist() == sorted(kept.tolist())
    assert dropped.targets(0).tolist() == (kept * 10).tolist()
    # ids: rows of a shard report their place in the whole split
    part = DataLoader(_images(3), None, bs=2, ids=[7, 1, 4])
    assert part.collect([b['image'][:, 0, 0, 0] for b in part.iter_epoch(0)]).tolist() == [1, 2, 0]
    assert part.counts == [3] and part.n_total == 3 and part.local_bs == 2
    with pytest.raises(ValueError, match='ids has 2 entries for 3 images'):
        DataLoader(_images(3), None, bs=2, ids=[0, 1])


def test_shards_cover_the_split_once():
    for n, count in ((10, 3), (2, 4), (7, 1)):
        parts = [shard_indices(n, p, count) for p in range(count)]
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match='process index 2 is outside 0..1'):
        shard_indices(5, 2, 2)
    ds = ImageDataset(_images(5), np.arange(5) % 2, [f'f{i}' for i in range(5)], ['a', 'b'],
                      fingerprint='abc')
    s = ds.shard(0, 2)
    assert s.fnames == ['f0', 'f2', 'f4'] and s.ids.tolist() == [0, 2, 4]
    assert s.x[:, 0, 0, 0].tolist() == [0, 2, 4] and s.y.tolist() == [0, 0, 0]
    assert s.fingerprint == 'abc-p0of2' and ds.ids is None
    with pytest.raises(ValueError, match='already one process'):
        s.shard(0, 2)


def test_replicate_in_one_process():
    from jaxcls.data.loader import data_mesh
    tree = {'w': np.arange(3, dtype=np.float32), 'n': np.int32(4)}
    out = replicate(tree, data_mesh())
    assert out['w'].sharding.spec == jax.sharding.PartitionSpec()
    assert out['w'].tolist() == [0, 1, 2] and int(out['n']) == 4
