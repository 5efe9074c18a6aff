"""Full vs local + compressed-global attention for long histories: time and memory per length.

For each history length (default 50, 200, 500) and each attention kind, a SASRec network (hidden
64, 2 blocks, 2 heads, local block 50) runs a training step (forward + backward of the hidden
states' sum) on a batch of full-length random histories. Reported: median seconds per step and
the peak memory the step adds: CUDA peak allocation on a GPU, else the growth of the peak resident
set of a fresh process per configuration (so runs do not share an allocator high-water mark).

    nice -n 15 python -m benchmarks.long_history_attention [--lengths 50 200 500] [--batch 32]
        [--repeats 5] [--device cpu|cuda] [--threads 2]

With ``--quality DATASET`` it instead trains SASRec (full-softmax CE) on a dataset folder at each
history length with each attention kind, and reports full-ranking test HR@10 / NDCG@10 (seen items
excluded) over all test users and over the users whose history is longer than 50 and 200 events,
to long_history_attention_quality.json. Local attention with at most two blocks equals full
attention exactly (tested), so at lengths up to two blocks only full attention is trained.

    nice -n 15 python -m benchmarks.long_history_attention --quality ../shared/data/lastfm_s3rec \
        --threads 1 --epochs 12
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


def history_slices(data, stage: str = "test", longer_than: tuple[int, ...] = (50, 200)) -> dict:
    """Users with targets: all, and those with more than each of ``longer_than`` history events."""
    import numpy as np

    history = data.positives(data.history(stage))
    counts = np.bincount(history["user_idx"].to_numpy(), minlength=data.num_users)
    users = np.unique(data.targets(stage)["user_idx"].to_numpy())
    slices = {"all": users}
    for n in longer_than:
        slices[f"history>{n}"] = users[counts[users] > n]
    return slices


def slice_quality(model, data, slices: dict, k: int = 10) -> dict:
    """HR@k and NDCG@k of the test targets per user slice (full ranking, seen items excluded)."""
    import numpy as np

    from trainer.evaluation.ranking import full_ranking

    targets = data.targets("test")
    wanted = dict(
        zip(
            targets["user_idx"].to_numpy().tolist(),
            targets["item_idx"].to_numpy().tolist(),
            strict=True,
        )
    )
    ranking = full_ranking(model, data, "test", k, users=slices["all"])
    row_of = {u: i for i, u in enumerate(ranking.users.tolist())}
    out = {}
    for name, users in slices.items():
        hits, gains = [], []
        for user in users.tolist():
            found = np.flatnonzero(ranking.items[row_of[user]] == wanted[user])
            hits.append(1.0 if len(found) else 0.0)
            gains.append(1.0 / np.log2(found[0] + 2.0) if len(found) else 0.0)
        out[name] = {
            "users": len(users),
            f"HR@{k}": float(np.mean(hits)) if hits else 0.0,
            f"NDCG@{k}": float(np.mean(gains)) if gains else 0.0,
        }
    return out


def quality(args: argparse.Namespace) -> dict:
    """Train SASRec per (length, attention) on ``args.quality`` and measure it per slice."""
    from pathlib import Path

    from trainer.data.loaders import load_dataset
    from trainer.data.splits import split_dataset
    from trainer.models.sasrec import SASRec, SASRecConfig

    torch.set_num_threads(args.threads)
    data = split_dataset(load_dataset(Path(args.quality)))
    slices = history_slices(data)
    rows = []
    for length in args.lengths:
        for kind in KINDS:
            if kind == "local" and length <= 2 * args.block:
                continue  # identical to full attention (at most two blocks)
            config = SASRecConfig(
                max_len=length,
                attention=kind,
                block_size=args.block,
                epochs=args.epochs,
                batch_size=args.train_batch,
                patience=0,
                device=args.device,
            )
            model = SASRec(config, data.num_users, data.num_items)
            report = model.fit(data, progress=False)
            seconds = [line["seconds"] for line in report.history]
            row = {
                "length": length,
                "kind": kind,
                "epochs": report.epochs,
                "best_epoch": report.best_epoch,
                "train_seconds_total": report.seconds,
                "train_seconds_per_epoch": sum(seconds) / len(seconds),
                "test": slice_quality(model, data, slices),
            }
            rows.append(row)
            print(
                f"{length:>7} {kind:>7} "
                + " ".join(
                    f"{name}: {m['HR@10']:.4f}/{m['NDCG@10']:.4f}"
                    for name, m in row["test"].items()
                )
                + f"  {row['train_seconds_per_epoch']:.1f} s/epoch",
                flush=True,
            )
    results = {
        "dataset": data.info.name,
        "protocol": "FULL, leave-one-out test stage, seen items excluded, HR@10 / NDCG@10",
        "model": "SASRec, loss ce, hidden 64, 2 blocks, 2 heads, dropout 0.5",
        "block_size": args.block,
        "epochs": args.epochs,
        "batch_size": args.train_batch,
        "slice_users": {name: len(users) for name, users in slices.items()},
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "threads": args.threads,
        "torch": torch.__version__,
        "rows": rows,
    }
    write_results(f"{NAME}_quality", results, module=NAME)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quality", metavar="DATASET", help="train and measure quality instead")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (--quality)")
    parser.add_argument("--train-batch", type=int, default=64, help="batch size (--quality)")
    parser.add_argument("--block", type=int, default=50, help="local attention block size")
    args = parser.parse_args(argv)
    if args.quality:
        return quality(args)
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
