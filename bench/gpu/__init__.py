"""The sections of bench_gpu.py, one measurement per file, and what they share.

    sizes.py            the full run's sizes and --tiny's (one dataclass, two instances)
    common.py           messages, the arch of a size, the epoch timer of sections 2 and 4
    checks.py           the environment checks made before anything heavy
    jpegs.py            the generated folder of JPEGs of section 4 (not timed)
    torch_peer.py       the client of bench/peers/torch_gpu.py: timeouts, restarts, modes
    context.py          one run's state: the peer, the guard around each section, alternation
    train_synthetic.py  1. ResNet34 training on synthetic data on the device (+ torch)
    train_aug.py        2. the same from the uint8 cache with on-device augmentation
    forward.py          3. the frozen body's forward pass (+ torch)
    lesson.py           4. the lesson on a folder of JPEGs, twice
    table.py            the summary table: its rows, targets and verdicts
"""
