"""The torch peer of bench_step.py and bench_forward.py: torchvision's resnet34, float32, kept
between requests so jaxcls and torch can be timed in alternation.

Runs in the torch venv (it imports torch and torchvision, never jax or jaxcls):

    .venv-torch/bin/python bench/peers/torch_resnet.py

Protocol, JSON lines: it writes {"ready": true} once torch is imported, then answers each
request line on stdin with one line on stdout, until stdin closes.

    request  {"sz": 64, "bs": 32, "mode": "eager" | "compile" | "forward", "steps": 3}
    answer   {"median": seconds, "first": seconds, "torch": "2.14.1 on cpu"}  or  {"error": "..."}

"eager" and "compile" train resnet34(num_classes=2) with SGD (lr 0.01, momentum 0.9) on one
random batch (torch.compile for "compile"); "forward" runs the resnet34 body (no avgpool
and fc) in eval mode under no_grad, then concat pooling (max and mean). The first request of
a (sz, mode) builds the model and runs one step, timed as "first"; every request then times
`steps` steps, each on its own, and answers their median. On a CUDA device each step ends
with torch.cuda.synchronize(). Uses every core (torch.set_num_threads(os.cpu_count())).
"""
import json
import os
import statistics
import sys
import time

import torch
import torchvision

torch.set_num_threads(os.cpu_count())
dev = 'cuda' if torch.cuda.is_available() else 'cpu'


def sync():
    if dev == 'cuda':
        torch.cuda.synchronize()


def first_call(step, catch):
    """(seconds of the first call, its error or None); `catch`: turn an exception into the error."""
    t = time.perf_counter()
    err = None
    try:
        step()
    except Exception as e:
        if not catch:
            raise
        err = repr(e)[:300]
    return time.perf_counter() - t, err


def forward_runner(req):
    body = torch.nn.Sequential(*list(torchvision.models.resnet34().children())[:-2]).eval().to(dev)
    x = torch.randn(req['bs'], 3, req['sz'], req['sz'], device=dev)

    def step():
        with torch.no_grad():
            f = body(x)
            f = torch.cat([f.amax((2, 3)), f.mean((2, 3))], 1)
        sync()
    first, _ = first_call(step, catch=False)
    return step, first, None


def train_runner(req):
    m = torchvision.models.resnet34(num_classes=2).to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(req['bs'], 3, req['sz'], req['sz'], device=dev)
    y = torch.randint(0, 2, (req['bs'],), device=dev)
    fwd = m
    err = None
    if req['mode'] == 'compile':
        try:
            fwd = torch.compile(m)
        except Exception as e:
            err = repr(e)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()
        sync()
    first, step_err = first_call(step, catch=True)
    return step, first, step_err or err


def main():
    models = {}
    print(json.dumps({'ready': True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        key = (req['sz'], req['mode'])
        if key not in models:
            models[key] = (forward_runner if req['mode'] == 'forward' else train_runner)(req)
        step, first, err = models[key]
        if err:
            print(json.dumps({'error': err}), flush=True)
            continue
        times = []
        for _ in range(req['steps']):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        print(json.dumps({'median': statistics.median(times), 'first': first,
                          'torch': torch.__version__ + ' on ' + dev}), flush=True)


if __name__ == '__main__':
    main()
