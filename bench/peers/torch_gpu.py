"""The torch peer of bench_gpu.py: torchvision's ResNet (BasicBlock, the stages asked) with AMP
bfloat16 autocast and channels_last, training with SGD (lr 0.01, momentum 0.9) or the frozen
body's pooled features, eager or torch.compile.

Runs in the python that has torch and torchvision (never jax or jaxcls), on the device named
by its one argument:

    python bench/peers/torch_gpu.py cuda        # or cpu (bench_gpu.sh --tiny)

Protocol, JSON lines. First it writes one line: {"torch", "torchvision", "device",
"device_name"} once torch is imported, or {"error": ...} (no torch, or no CUDA device) and
exits. Then it answers each request line on stdin with one line on stdout, until stdin
closes; a failed request answers {"error": "Type: first line of the message"}.

    {"op": "setup", "kind": "train" | "forward", "stages": [3, 4, 6, 3], "sz": 224, "bs": 256,
     "compile": false, "warmup": 3}
        builds the model and one random batch (seed 0), times the first call (compile
        included) and runs `warmup` more; answers {"first": seconds}. A setup replaces the
        previous one of its kind (its memory given back first).
    {"op": "time", "kind": "train" | "forward", "steps": 20}
        times `steps` calls of that kind's step, the device synchronised before and after;
        answers {"seconds": seconds}.

"train" is one SGD step of cross-entropy on 2 classes, model in train mode; "forward" is the
body without avgpool and fc, then fastai's concat pooling (max and mean), in eval mode under
no_grad. cudnn.benchmark is on; on the CPU torch uses every core.
"""
import json
import os
import sys
import time


def out(d):
    sys.stdout.write(json.dumps(d) + '\n')
    sys.stdout.flush()


try:
    import torch
    import torchvision
    from torch import nn
    from torchvision.models.resnet import ResNet, BasicBlock
except Exception as e:
    out({'error': 'cannot import torch and torchvision: ' + repr(e)[:200]})
    sys.exit(0)

dev = sys.argv[1]
runners = {}


def sync():
    if dev == 'cuda':
        torch.cuda.synchronize()


class ConcatPool(nn.Module):  # fastai's AdaptiveConcatPool2d + flatten: what precompute stores
    def forward(self, x):
        return torch.cat([x.amax((2, 3)), x.mean((2, 3))], 1)


def setup(req):
    torch.manual_seed(0)
    m = ResNet(BasicBlock, req['stages'], num_classes=2).to(dev).to(memory_format=torch.channels_last)
    x = torch.randn(req['bs'], 3, req['sz'], req['sz'], device=dev).contiguous(
        memory_format=torch.channels_last)

    def autocast():
        return torch.autocast(dev, dtype=torch.bfloat16)
    if req['kind'] == 'train':
        m.train()
        y = torch.randint(0, 2, (req['bs'],), device=dev)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        target = m

        def build(fwd):
            def step():
                opt.zero_grad(set_to_none=True)
                with autocast():
                    loss = nn.functional.cross_entropy(fwd(x), y)
                loss.backward()
                opt.step()
            return step
    else:
        target = nn.Sequential(*list(m.children())[:-2], ConcatPool()).eval()

        def build(fwd):
            def step():
                with torch.no_grad(), autocast():
                    return fwd(x)
            return step
    # Eager and torch.compile are measured as two separate setups (eager first, so a
    # compile that fails or hangs still leaves the eager numbers); a setup replaces the
    # previous runner of its kind, whose memory is given back first.
    runners.pop(req['kind'], None)
    if dev == 'cuda':
        torch.cuda.empty_cache()
    t = time.perf_counter()
    step = build(torch.compile(target) if req['compile'] else target)
    step()
    sync()
    first = time.perf_counter() - t
    for _ in range(req['warmup']):
        step()
    sync()
    runners[req['kind']] = step
    return {'first': first}


def time_steps(req):
    step = runners[req['kind']]
    sync()
    t = time.perf_counter()
    for _ in range(req['steps']):
        step()
    sync()
    return {'seconds': time.perf_counter() - t}


def main():
    if dev == 'cuda' and not torch.cuda.is_available():
        out({'error': 'torch %s sees no CUDA device (torch.cuda.is_available() is False)'
             % torch.__version__})
        sys.exit(0)
    if dev == 'cpu':
        torch.set_num_threads(os.cpu_count() or 1)
    torch.backends.cudnn.benchmark = True
    out({'torch': torch.__version__, 'torchvision': torchvision.__version__, 'device': dev,
         'device_name': torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu'})
    for line in sys.stdin:
        req = json.loads(line)
        try:
            out(setup(req) if req['op'] == 'setup' else time_steps(req))
        except Exception as e:
            lines = str(e).strip().splitlines()
            out({'error': (type(e).__name__ + ': ' + (lines[0] if lines else ''))[:300]})


if __name__ == '__main__':
    main()
