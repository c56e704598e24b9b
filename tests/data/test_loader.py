"""DataLoader: batch shapes and dtypes, per-key order, exactly-once epochs, padding, prefetch, sharding."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import jax
import numpy as np
import pytest

from jaxcls.data.loader import DataLoader, epoch_order


def images(n, s=4):
    """n tiny images whose first pixel holds their index, so a batch says which rows it holds."""
    x = np.zeros((n, s, s, 3), np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return x


def rows(batch):
    return np.asarray(batch['image'])[:, 0, 0, 0].tolist()


def test_batches_shapes_dtypes_and_padding():
    dl = DataLoader(images(10), np.arange(10) % 3, bs=4, prefetch=0)
    assert len(dl) == 3
    bs = list(dl)
    assert len(bs) == 3
    for b in bs:
        assert set(b) == {'image', 'label', 'mask'}
        assert b['image'].shape == (4, 4, 4, 3) and b['image'].dtype == np.uint8
        assert b['label'].shape == (4,) and b['label'].dtype == np.int32
        assert b['mask'].shape == (4,) and b['mask'].dtype == np.float32
        assert isinstance(b['image'], jax.Array)
    assert [rows(b) for b in bs] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9]]
    assert np.asarray(bs[2]['mask']).tolist() == [1, 1, 0, 0]
    assert np.asarray(bs[2]['label']).tolist() == [2, 0, 2, 0]
    # masked evaluation counts every image exactly once
    seen = np.concatenate([np.asarray(b['image'])[:, 0, 0, 0][np.asarray(b['mask']) > 0] for b in bs])
    assert sorted(seen.tolist()) == list(range(10))


def test_padding_wider_than_remainder():
    dl = DataLoader(images(5), None, bs=4, prefetch=0)
    b = list(dl)[-1]
    assert rows(b) == [4, 4, 4, 4] and np.asarray(b['mask']).tolist() == [1, 0, 0, 0]
    assert np.asarray(b['label']).tolist() == [0, 0, 0, 0]  # unlabelled: zeros


def test_drop_last():
    dl = DataLoader(images(10), np.arange(10), bs=4, drop_last=True, shuffle=True, key=3)
    assert len(dl) == 2
    bs = list(dl)
    assert len(bs) == 2 and all(np.asarray(b['mask']).sum() == 4 for b in bs)
    assert rows(bs[0]) + rows(bs[1]) == dl.order(0)[:8].tolist()


def test_shuffle_deterministic_per_key_and_epoch():
    # Pinned: the same key gives this order on any machine (threefry fold_in + numpy PCG64).
    assert epoch_order(0, 0, 10).tolist() == [0, 4, 9, 2, 3, 8, 6, 1, 5, 7]
    assert epoch_order(0, 1, 10).tolist() == [9, 8, 6, 0, 5, 2, 3, 4, 1, 7]
    assert epoch_order(jax.random.key(0), 0, 10).tolist() == epoch_order(jax.random.PRNGKey(0), 0, 10).tolist() \
        == epoch_order(0, 0, 10).tolist()
    a = DataLoader(images(23), np.arange(23), bs=5, shuffle=True, key=7)
    b = DataLoader(images(23), np.arange(23), bs=5, shuffle=True, key=7)
    c = DataLoader(images(23), np.arange(23), bs=5, shuffle=True, key=8)
    ea = [[rows(x) for x in a] for _ in range(3)]
    eb = [[rows(x) for x in b] for _ in range(3)]
    assert ea == eb and a.epoch == 3
    assert ea[0] != ea[1] != ea[2]
    assert [rows(x) for x in c] != ea[0]
    for ep in ea:  # every image exactly once per epoch (plus padding repeats in the last batch)
        flat = sum(ep, [])
        assert sorted(flat[:23]) == list(range(23)) and len(flat) == 25
    # iter_epoch(e) reproduces epoch e, and can resume mid-epoch
    assert [rows(x) for x in a.iter_epoch(1)] == ea[1]
    assert [rows(x) for x in a.iter_epoch(1, start=3)] == ea[1][3:]


def test_labels_follow_images_and_multilabel():
    y = np.eye(4, dtype=np.float32)[np.arange(9) % 4]
    dl = DataLoader(images(9), y, bs=3, shuffle=True, key=1)
    for b in dl:
        assert b['label'].shape == (3, 4) and b['label'].dtype == np.float32
        np.testing.assert_array_equal(np.asarray(b['label']), y[rows(b)])


def test_memmap_input(tmp_path):
    np.save(tmp_path / 'x.npy', images(6))
    x = np.load(tmp_path / 'x.npy', mmap_mode='r')
    dl = DataLoader(x, np.arange(6), bs=4, shuffle=True, key=0)
    assert sorted(sum([rows(b) for b in dl], [])[:6]) == list(range(6))


def test_prefetch_depth():
    dl = DataLoader(images(40), np.arange(40), bs=2, prefetch=2)
    it = iter(dl)
    first = next(it)
    deadline = time.time() + 10
    while dl.produced < 4 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    # 1 consumed + 2 ready on device in the queue + 1 built and waiting for a free slot
    assert dl.produced == 4
    assert rows(first) == [0, 1]
    second = next(it)
    deadline = time.time() + 10
    while dl.produced < 5 and time.time() < deadline:
        time.sleep(0.01)
    assert rows(second) == [2, 3] and dl.produced == 5
    before = threading.active_count()
    it.close()  # abandoning an epoch stops the producer thread
    assert threading.active_count() == before - 1
    assert sum(1 for _ in dl) == 20


def test_producer_errors_reach_the_consumer():
    class Broken:
        def __len__(self):
            return 8

        def __getitem__(self, idx):
            raise OSError('disk gone')
    dl = DataLoader(Broken(), None, bs=4)
    with pytest.raises(OSError, match='disk gone'):
        next(iter(dl))


def test_argument_errors():
    with pytest.raises(ValueError, match='x has 3 images but y has 2 targets'):
        DataLoader(images(3), np.arange(2), bs=2)
    with pytest.raises(ValueError, match='bs must be >= 1'):
        DataLoader(images(3), None, bs=0)


SHARDED = textwrap.dedent('''
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jaxcls.data.loader import DataLoader
    assert jax.device_count() == 8, jax.devices()
    x = np.zeros((20, 4, 4, 3), np.uint8); x[:, 0, 0, 0] = np.arange(20)
    dl = DataLoader(x, np.arange(20), bs=16, shuffle=True, key=0)
    bs = list(dl)
    assert len(bs) == 2
    for b in bs:
        for k, v in b.items():
            assert isinstance(v.sharding, NamedSharding) and v.sharding.spec == P('data'), (k, v.sharding)
            assert len(v.addressable_shards) == 8
            assert all(s.data.shape[0] == 2 for s in v.addressable_shards), k
            assert len({s.device for s in v.addressable_shards}) == 8
    host = [dl.host_batch(i) for i in dl.batch_indices(0)]
    for b, h in zip(bs, host):
        np.testing.assert_array_equal(np.asarray(b['image']), h['image'])
        np.testing.assert_array_equal(np.asarray(b['mask']), h['mask'])
    got = np.concatenate([np.asarray(b['image'])[:, 0, 0, 0][np.asarray(b['mask']) > 0] for b in bs])
    assert sorted(got.tolist()) == list(range(20))
    assert dl.order(0).tolist() == {order}, dl.order(0).tolist()
    try:
        DataLoader(x, None, bs=12)
    except ValueError as e:
        assert 'bs=12 is not divisible by the 8 devices' in str(e) and 'bs=8 or bs=16' in str(e), e
    else:
        raise AssertionError('bs=12 on 8 devices should fail')
    print('SHARDED-OK')
''')


def test_sharded_batches_on_8_cpu_devices():
    order = epoch_order(0, 0, 20).tolist()  # the order does not depend on the device count
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8", JAX_PLATFORMS='cpu')
    r = subprocess.run([sys.executable, '-c', SHARDED.replace('{order}', str(order))], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and 'SHARDED-OK' in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize('bs, drop_last, labels', [(4, False, 'int'), (3, True, 'int'),
                                                   (4, False, 'multi'), (8, False, None)])
def test_device_resident_x_gives_the_batches_the_host_path_gives(bs, drop_last, labels):
    x = images(10)
    y = {'int': np.arange(10) % 3, 'multi': (np.arange(20).reshape(10, 2) % 3 == 0), None: None}[labels]
    host = DataLoader(x, y, bs=bs, shuffle=True, key=5, drop_last=drop_last, prefetch=0)
    dev = DataLoader(jax.device_put(x), y, bs=bs, shuffle=True, key=5, drop_last=drop_last)
    assert dev._on_device and not host._on_device and len(dev) == len(host)
    for e in (0, 1):
        hb, db = list(host.iter_epoch(e)), list(dev.iter_epoch(e, start=0))
        assert len(hb) == len(db)
        for h, d in zip(hb, db):
            for k in ('image', 'label', 'mask'):
                assert d[k].dtype == h[k].dtype and d[k].shape == h[k].shape, k
                np.testing.assert_array_equal(np.asarray(d[k]), np.asarray(h[k]), err_msg=k)
    # resuming mid-epoch, and the same epoch again, as the host path does
    assert [rows(b) for b in dev.iter_epoch(1, start=1)] == [rows(b) for b in host.iter_epoch(1, start=1)]
    assert dev.produced == sum(len(dev) for _ in (0, 1)) + len(dev) - 1
