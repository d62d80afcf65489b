"""Clean forward passes with glibc's default allocator settings and with resbench's
(:func:`resbench.engine.allocator.keep_freed_memory`), side by side in one run.

Each round starts two fresh processes, one per setting (the order alternating from round to round), and each
times ``--passes`` clean passes of the model over ``--images`` random images after one warm-up pass. Prints
per setting the median pass, its system (kernel) CPU time per pass and the peak resident memory, then the
ratio of the medians, and whether both settings give the same logits bit for bit.

Usage: ``python benchmarks/allocator.py [--models lenet5,resnet20] [--images 1000] [--rounds 5] [--passes 3]
[--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

IMAGE_SHAPES = {"lenet5": (1, 28, 28)}
DEFAULT_SHAPE = (3, 32, 32)

_CHILD = """
import hashlib, json, resource, sys, time
import torch
from resbench.engine.allocator import keep_freed_memory
from resbench.models import build_model
model_name, images, passes, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
shape = tuple(json.loads(sys.argv[5]))
kept = keep_freed_memory()
torch.set_num_threads(threads)
torch.manual_seed(0)
model = build_model(model_name, shape, 10).eval()
inputs = torch.rand(images, *shape, generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    logits = model(inputs)
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = []
    for _ in range(passes):
        started = time.perf_counter()
        model(inputs)
        seconds.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"kept": kept, "seconds": seconds, "system": (after.ru_stime - before.ru_stime) / passes,
                  "peak_mib": after.ru_maxrss / 1024, "logits": hashlib.sha256(logits.numpy().tobytes()).hexdigest()}))
"""


def _child(model: str, images: int, passes: int, threads: int, system: bool) -> dict:
    environment = dict(os.environ, RESBENCH_SYSTEM_MALLOC="1" if system else "0")
    shape = IMAGE_SHAPES.get(model, DEFAULT_SHAPE)
    completed = subprocess.run([sys.executable, "-c", _CHILD, model, str(images), str(passes), str(threads),
                                json.dumps(shape)], env=environment, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet20")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="pairs of fresh processes")
    parser.add_argument("--passes", type=int, default=3, help="timed passes per process")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    print(f"cpu, {args.threads} thread(s), {args.images} images in one batch, {args.rounds} rounds x {args.passes} "
          "passes per setting")
    print(f"{'model':<9} {'setting':<8} {'median pass ms':>14} {'system ms/pass':>14} {'peak MiB':>9}")
    for model in args.models.split(","):
        runs: dict[str, list[dict]] = {"system": [], "kept": []}
        for round_ in range(args.rounds):
            order = ["system", "kept"] if round_ % 2 == 0 else ["kept", "system"]
            for setting in order:
                runs[setting].append(_child(model, args.images, args.passes, args.threads, setting == "system"))
        medians = {}
        for setting, results in runs.items():
            medians[setting] = statistics.median(second for result in results for second in result["seconds"])
            print(f"{model:<9} {setting:<8} {1000 * medians[setting]:>14.1f} "
                  f"{1000 * statistics.median(result['system'] for result in results):>14.1f} "
                  f"{max(result['peak_mib'] for result in results):>9.0f}")
        same = len({result["logits"] for results in runs.values() for result in results}) == 1
        applied = all(result["kept"] for result in runs["kept"])
        print(f"{model:<9} kept/system pass time {medians['kept'] / medians['system']:.2f}; same logits: "
              f"{'yes' if same else 'no'}; setting applied: {'yes' if applied else 'no (not glibc)'}")


if __name__ == "__main__":
    main()
