"""The training loop: its events in order, the position callbacks see, stopping, resuming inside
an epoch, and the abort path. A plain-Python step: nothing is compiled here."""
import numpy as np
import pytest

from jaxcls.train.callbacks import Callback
from jaxcls.train.loop import Loop
from jaxcls.train.schedules import hparams_table


class State:
    def __init__(self, step=0):
        self.step = step


def step(state, batch, hp):
    """Counts steps; the 'loss' is the batch itself, plus the rate, so the test sees both."""
    return State(state.step + 1), {'loss': batch + float(hp.lr[0])}


def batches(n):
    return lambda epoch, start: iter(range(epoch * 100 + start, epoch * 100 + n))


class Log(Callback):
    def __init__(self, stop_at=None):
        self.seen, self.stop_at = [], stop_at

    def before_fit(self, loop):
        self.seen.append('before_fit')

    def before_epoch(self, loop):
        self.seen.append(('before_epoch', loop.epoch, loop.fit_epoch, loop.batch))

    def before_batch(self, loop):
        self.seen.append(('before_batch', loop.iteration))

    def after_batch(self, loop):
        self.seen.append(('after_batch', loop.iteration, loop.step, loop.batch,
                          round(float(loop.metrics['loss']), 6)))
        return self.stop_at == loop.iteration

    def after_train(self, loop):
        self.seen.append(('after_train', loop.epoch))

    def after_epoch(self, loop):
        self.seen.append(('after_epoch', loop.logs['epoch'], loop.epoch, loop.fit_epoch, loop.done))

    def after_fit(self, loop):
        self.seen.append('after_fit')


def table(n, groups=2):
    return hparams_table(np.arange(n, dtype=np.float64)[:, None] / 1000 * np.ones(groups))


def test_events_come_in_fastai_2_order_with_the_position_after_each_step():
    log = Log()
    loop = Loop(step, State(5), batches(2), table(4), 2, [log], epoch=3)
    final = loop.fit(2)
    assert final.step == 9 and loop.iteration == 4 and loop.step == 9 and loop.epoch == 5
    assert log.seen == [
        'before_fit',
        ('before_epoch', 3, 0, 0),
        ('before_batch', 0), ('after_batch', 1, 6, 1, 300.0),
        ('before_batch', 1), ('after_batch', 2, 7, 2, 301.001),
        ('after_train', 3), ('after_epoch', 3, 4, 1, False),
        ('before_epoch', 4, 1, 0),
        ('before_batch', 2), ('after_batch', 3, 8, 1, 400.002),
        ('before_batch', 3), ('after_batch', 4, 9, 2, 401.003),
        ('after_train', 4), ('after_epoch', 4, 5, 2, True),
        'after_fit']


def test_true_from_after_batch_ends_the_epoch_and_the_fit_and_the_epoch_still_closes():
    log = Log(stop_at=3)
    loop = Loop(step, State(), batches(4), table(12), 4, [log])
    loop.fit(3)
    assert loop.iteration == 3 and loop.fit_epoch == 1
    assert [e[0] if isinstance(e, tuple) else e for e in log.seen][-3:] == ['after_train', 'after_epoch', 'after_fit']


def test_a_resumed_fit_starts_inside_its_epoch_with_its_schedule_row():
    log = Log()
    loop = Loop(step, State(10), batches(3), table(6), 3, [log], epoch=7)
    loop.fit(2, fit_epoch=0, batch=2, iteration=2, hist=[{'epoch': 6}])
    first = [e for e in log.seen if isinstance(e, tuple) and e[0] == 'after_batch'][0]
    assert first == ('after_batch', 3, 11, 3, 702.002)      # batch 2 of epoch 7, row 2
    assert loop.iteration == 6 and loop.hist[0] == {'epoch': 6}


def test_the_schedule_s_last_row_serves_past_its_end_and_callbacks_run_in_order():
    order = []

    class A(Callback):
        order = 70

        def after_batch(self, loop):
            order.append('A')

    class B(Callback):
        order = 10

        def after_batch(self, loop):
            order.append('B')
    loop = Loop(step, State(), batches(3), table(2), 3, [A(), B()])
    loop.fit(1)
    assert order[:2] == ['B', 'A']
    assert loop.iteration == 2   # the table ends the fit when its rows are used up


def test_an_error_reaches_every_callback_s_on_abort_and_propagates():
    aborted = []

    class Boom(Callback):
        def after_batch(self, loop):
            raise KeyboardInterrupt

        def on_abort(self, loop, error):
            aborted.append((type(error).__name__, loop.iteration))
    loop = Loop(step, State(), batches(3), table(3), 3, [Boom()])
    with pytest.raises(KeyboardInterrupt):
        loop.fit(1)
    assert aborted == [('KeyboardInterrupt', 1)] and loop.state.step == 1


def test_old_style_hooks_are_called_by_the_events():
    seen = []

    class Old(Callback):
        def on_train_begin(self, learner):
            seen.append(('begin', learner))

        def on_batch_end(self, learner, iteration, logs):
            seen.append(('batch', iteration, round(float(logs['loss']), 6)))

        def on_epoch_end(self, learner, epoch, logs):
            seen.append(('epoch', epoch))
            return True   # stop after the first epoch

        def on_train_end(self, learner):
            seen.append('end')
    loop = Loop(step, State(), batches(2), table(4), 2, [Old()], learner='L')
    loop.fit(2)
    assert seen == [('begin', 'L'), ('batch', 1, 0.0), ('batch', 2, 1.001), ('epoch', 0), 'end']
