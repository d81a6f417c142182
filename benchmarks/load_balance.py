"""How long a batch takes when files are shared out statically (torchrun: file i to rank
i mod N) or from a shared queue (--devices, --ray: whoever is free takes the next file),
against the ideal (every GPU busy until the same moment: total audio / GPUs).

File lengths are lognormal with a median of 6 minutes (a video collection: many short
clips, a long tail of hour-long recordings); each GPU transcribes at the same speed, so
time is proportional to audio.  The queue takes files in the order given (no sorting by
length, which needs every length up front).  Figures are the median of ``--trials`` draws.

    python benchmarks/load_balance.py             # the table of docs/cluster.md
    python benchmarks/load_balance.py --sigma 1.0 # another spread of lengths
"""

from __future__ import annotations

import argparse
import heapq
import statistics

import numpy as np

MEDIAN_MIN = 6.0


def static_shares(lengths: np.ndarray, gpus: int) -> float:
    return max(lengths[rank::gpus].sum() for rank in range(gpus))


def shared_queue(lengths: np.ndarray, gpus: int) -> float:
    finish = [0.0] * gpus
    for length in lengths:  # the GPU that is free first takes the next file
        heapq.heappush(finish, heapq.heappop(finish) + float(length))
    return max(finish)


def ratios(files: int, gpus: int, sigma: float, trials: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    static, queue = [], []
    for _ in range(trials):
        lengths = rng.lognormal(np.log(MEDIAN_MIN), sigma, files)
        ideal = lengths.sum() / gpus
        static.append(static_shares(lengths, gpus) / ideal)
        queue.append(shared_queue(lengths, gpus) / ideal)
    return statistics.median(static), statistics.median(queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigma", type=float, nargs="*", default=[1.0, 1.1])
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--files", type=int, nargs="*", default=[50_000, 2_000])
    parser.add_argument("--trials", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"lognormal file lengths, median {MEDIAN_MIN:g} min; {args.gpus} GPUs; median of {args.trials} draws\n")
    print("| files | sigma | mean length, min | static shares / ideal | shared queue / ideal |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for files in args.files:
        for sigma in args.sigma:
            static, queue = ratios(files, args.gpus, sigma, args.trials, args.seed)
            mean = MEDIAN_MIN * np.exp(sigma**2 / 2)
            print(f"| {files:,} | {sigma:g} | {mean:.1f} | {static:.2f}x | {queue:.2f}x |")


if __name__ == "__main__":
    main()
