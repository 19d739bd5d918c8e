"""Training time per epoch on one device: run the same training on the CPU and on a GPU.

Trains the default model (slots, focus, scorer; 3 members, each trained in turn) on a gathered data set (the ``--cache`` file of
``locomo_crossval.py``, or a part of it) and prints each epoch's seconds and loss. The same
file, seed and settings on two devices give the comparison; ``--save-subset`` writes a smaller
file of some conversations to carry to another machine.

    python benchmarks/train_speed.py --cache DATA.npz [--convs conv-26,conv-30] [--device cuda]
        [--epochs 3] [--members 3] [--out benchmarks/results/train_speed.json] [--save-subset SMALL.npz]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ctxmem_plugin.training.trainer import TrainConfig, train
from ctxmem_plugin.training.data import TRAIN_KINDS, load_dataset, save_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="gathered data (.npz from locomo_crossval.py --cache)")
    parser.add_argument("--convs", default="", help="comma-separated conversation names to keep (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--members", type=int, default=TrainConfig.members, help="model members (each trained in turn)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default=None, help="write the figures here as JSON")
    parser.add_argument("--save-subset", default=None, help="write the kept conversations' data here and stop")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(Path(args.cache))
    if args.convs:
        data = data.subset(set(args.convs.split(",")))
    if args.save_subset:
        # Only what training reads travels: the benchmark-only follow-ups are left out.
        data = replace(data, examples=[e for e in data.examples if e.kind in TRAIN_KINDS])
        keep = {e.conv for e in data.examples}
        names = [c.name for i, c in enumerate(data.conversations) if i in keep]
        save_dataset(data, Path(args.save_subset), compress=True)
        print(f"wrote {data.describe()} of {names} to {args.save_subset}")
        return
    cfg = replace(TrainConfig(), epochs=args.epochs, members=args.members, focus_rate=data.focus_rate or 0.0, focus_pool=data.focus_pool)
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"training on {args.device} ({device_name}), {torch.get_num_threads()} CPU threads, data {data.describe()}", flush=True)
    began = time.perf_counter()
    _, log = train(data, cfg, device=args.device)
    total = time.perf_counter() - began
    for e in log:
        print(f"epoch {e['epoch']}: {e['seconds']:.2f}s loss {e['loss']:.5f}")
    print(f"total {total:.1f}s (first epoch includes start-up)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "device": args.device, "device_name": device_name, "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "data": data.describe(), "cache": Path(args.cache).name,
            "convs": args.convs, "config": asdict(cfg), "epochs": log, "total_seconds": total,
        }, indent=1))


if __name__ == "__main__":
    main()
