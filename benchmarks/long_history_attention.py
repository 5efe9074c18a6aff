"""Full vs local + compressed-global attention for long histories: time and memory per length.

For each history length (default 50, 200, 500) and each attention kind, a SASRec network (hidden
64, 2 blocks, 2 heads, local block 50) runs a training step (forward + backward of the hidden
states' sum) on a batch of full-length random histories. Reported: median seconds per step and
the peak memory the step adds: CUDA peak allocation on a GPU, else the growth of the peak resident
set of a fresh process per configuration (so runs do not share an allocator high-water mark).

    nice -n 15 python -m benchmarks.long_history_attention [--lengths 50 200 500] [--batch 32]
        [--repeats 5] [--device cpu|cuda] [--threads 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time

import torch

from benchmarks.common import write_results

NAME = "long_history_attention"
KINDS = ("full", "local")


def run_one(kind: str, length: int, batch: int, repeats: int, device: str, threads: int) -> dict:
    """Median step time and the peak memory one training step adds."""
    from trainer.models.sasrec import SASRecConfig, SASRecNetwork

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = SASRecConfig(max_len=length, dim=64, blocks=2, heads=2, attention=kind, block_size=50)
    network = SASRecNetwork(config, num_items=10_000, feature_sizes={}).to(device).train()
    items = torch.randint(1, 10_001, (batch, length), device=device)
    cuda = device.startswith("cuda")

    def step() -> None:
        network.zero_grad(set_to_none=True)
        network(items, {}).sum().backward()
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    step()  # warm-up; also the step whose peak memory is reported
    if cuda:
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return {
        "kind": kind,
        "length": length,
        "seconds_per_step": statistics.median(times),
        "peak_step_mib": peak_mib,
    }


def _child(queue, args) -> None:
    queue.put(run_one(*args))


def measure(kind: str, length: int, batch: int, repeats: int, device: str, threads: int) -> dict:
    """On CPU each configuration runs in a fresh process, so peak RSS growth is its own."""
    args = (kind, length, batch, repeats, device, threads)
    if device.startswith("cuda"):
        return run_one(*args)
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, args))
    process.start()
    result = queue.get()
    process.join()
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rows = [
        measure(kind, length, args.batch, args.repeats, args.device, args.threads)
        for length in args.lengths
        for kind in KINDS
    ]
    print(f"SASRec training step, batch {args.batch}, hidden 64, 2 blocks, 2 heads, {args.device}")
    print(f"{'length':>7} {'attention':>10} {'ms/step':>10} {'peak MiB':>10}")
    for row in rows:
        print(
            f"{row['length']:>7} {row['kind']:>10} {1000 * row['seconds_per_step']:>10.1f}"
            f" {row['peak_step_mib']:>10.1f}"
        )
    results = {
        "batch": args.batch,
        "repeats": args.repeats,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "threads": args.threads,
        "torch": torch.__version__,
        "rows": rows,
    }
    write_results(NAME, results)
    return results


if __name__ == "__main__":
    main()
