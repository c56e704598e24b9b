"""Writes a randomly initialised torchvision resnet34 state dict (seed 0) to each path asked,
in torchvision's .pth format: the local "pretrained" weights bench_build.py gives both sides.

Runs in the torch venv (torch and torchvision; never jax or jaxcls), once per request:

    echo '{"paths": ["/tmp/w/resnet34-b627a593.pth"]}' | .venv-torch/bin/python bench/peers/torch_weights.py

Protocol: one JSON line on stdin, {"paths": [...]}; one JSON line on stdout, {"ok": true}.
"""
import json
import os
import sys

import torch
import torchvision


def main():
    a = json.loads(sys.stdin.readline())
    torch.manual_seed(0)
    sd = torchvision.models.resnet34().state_dict()
    for path in a['paths']:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(sd, path)
    print(json.dumps({'ok': True}))


if __name__ == '__main__':
    main()
