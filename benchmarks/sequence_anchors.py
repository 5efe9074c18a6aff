"""A sequence model (SASRec or BERT4Rec) on any dataset folder, against its published anchor.

Always reports full ranking (FULL, seen items excluded); with ``--sampled`` also the sampled
protocol of the dataset's anchor: a fixed negatives file (``--negatives-file``, e.g. lastfm_s3rec's
LastFM_sample.txt, 99 per user), or ``--num-negatives`` seeded uniform or popularity draws
(video_sasrec: 100 uniform; beauty_bert4rec: 100 popularity). ``--seeds 0,1,2`` trains once per
seed and reports mean and standard deviation (small sets such as LastFM move by 0.01 to 0.02
between seeds). Writes per-epoch and total training time to
benchmarks/results/sequence_anchors_<tag>.json.

    nice -n 15 python -m benchmarks.sequence_anchors --model sasrec \\
        --dataset ../shared/data/lastfm_s3rec --sampled --negatives-file LastFM_sample.txt \\
        --seeds 0,1,2 --tag lastfm
    nice -n 15 python -m benchmarks.sequence_anchors --model sasrec \\
        --dataset ../shared/data/video_sasrec --sampled --num-negatives 100 --tag video
    nice -n 19 python -m benchmarks.sequence_anchors --threads 1 --model sasrec \\
        --dataset ../shared/data/video_sasrec --sampled --num-negatives 100 --minutes 45 \\
        --set layout=paper --set loss=bce --set dim=50 --set heads=1 --set dropout=0.5 \\
        --set attention_dropout=0.5 --set batch_size=128 --set valid_negatives=100 \\
        --set valid_users=0 --set eval_every=2 --set patience=15 --tag video_cpu_bce_paper
    # ... plus the paper code's attention, user sampler and negatives (docs/sequence-models.md):
    #     --set attention_output=false --set batching=users --set negative_exclusion=history
    nice -n 15 python -m benchmarks.sequence_anchors --model bert4rec \\
        --dataset ../shared/data/beauty_bert4rec --sampled --sampling popularity \\
        --tag bert4rec_beauty
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import peak_rss_mib, write_results
from trainer.config import build_config
from trainer.data.loaders import load_dataset
from trainer.data.loaders.s3rec import read_negatives
from trainer.data.splits import split_dataset
from trainer.evaluation import evaluate
from trainer.models.registry import get_model_class

NAME = "sequence_anchors"
# (dataset folder name, model) -> published figures (anchors §3.2 to §3.4).
ANCHORS = {
    ("lastfm_s3rec", "sasrec"): {
        "sampled (S-uni99 fixed file), S3-Rec paper": {"HR@10": 0.4706, "NDCG@10": 0.2755},
        "FULL, S3-Rec repo": {"HR@10": 0.0688, "NDCG@10": 0.0390},
    },
    ("video_sasrec", "sasrec"): {
        "S-uni100, SASRec paper (Games)": {"HR@10": 0.7410, "NDCG@10": 0.5360}
    },
    ("beauty_bert4rec", "bert4rec"): {
        "S-pop100, BERT4Rec paper (unverified)": {"HR@10": 0.3025, "NDCG@10": 0.1862},
        "FULL, Klenitskiy & Vasilev 2023": {"HR@10": 0.0338, "NDCG@10": 0.0187},
    },
    ("beauty_s3rec", "sasrec"): {"FULL, S3-Rec repo": {"HR@10": 0.0605, "NDCG@10": 0.0318}},
}


def train_and_evaluate(args: argparse.Namespace, data, folder: Path, seed: int) -> dict:
    """One training run with ``seed``: its report, configuration and metric tables."""
    cls = get_model_class(args.model)
    overrides = [
        f"epochs={args.epochs}",
        f"max_seconds={args.minutes * 60.0}",
        *args.set,
        f"seed={seed}",
    ]
    config = build_config(cls.config_class, None, overrides)
    model = cls(config, data.num_users, data.num_items)
    report = model.fit(data, progress=True)
    started = time.perf_counter()
    tables = {"full": evaluate(model, data, "test", protocol="full", ks=(1, 5, 10, 20))}
    if args.sampled:
        negatives = None
        if args.negatives_file:
            negatives = read_negatives(folder / args.negatives_file, data.users, data.items)
        tables["sampled"] = evaluate(
            model,
            data,
            "test",
            protocol="sampled",
            ks=(1, 5, 10),
            negatives=negatives,
            num_negatives=args.num_negatives,
            sampling=args.sampling,
        )
    epoch_seconds = [line["seconds"] for line in report.history]
    return {
        "seed": seed,
        "config": config,
        "epochs_run": report.epochs,
        "best_epoch": report.best_epoch,
        "train_seconds_total": report.seconds,
        "train_seconds_per_epoch_mean": sum(epoch_seconds) / max(len(epoch_seconds), 1),
        "epoch_log": report.history,
        "eval_seconds": time.perf_counter() - started,
        "test": {
            name: {k: v for k, v in m.items() if isinstance(v, int | float) and "/" not in k}
            for name, m in tables.items()
        },
    }


def summarise(runs: list[dict]) -> dict:
    """Mean and sample standard deviation over seeds of every test metric."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for table in runs[0]["test"]:
        out[table] = {}
        for key in runs[0]["test"][table]:
            values = np.array([run["test"][table][key] for run in runs], dtype=np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out[table][key] = {"mean": float(values.mean()), "std": std}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sasrec", choices=["sasrec", "bert4rec"])
    parser.add_argument("--dataset", required=True, help="dataset folder (any loadable format)")
    parser.add_argument("--sampled", action="store_true", help="also the sampled protocol")
    parser.add_argument("--negatives-file", help="fixed negatives, relative to the dataset folder")
    parser.add_argument("--num-negatives", type=int, default=100)
    parser.add_argument("--sampling", default="uniform", choices=["uniform", "popularity"])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=0.0, help="training time limit (0 = none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--seeds", default="0", help="comma-separated training seeds; several give mean and std"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        parser.error("--seeds needs at least one integer")

    folder = Path(args.dataset)
    data = split_dataset(load_dataset(folder))
    runs = [train_and_evaluate(args, data, folder, seed) for seed in seeds]
    config = runs[0].pop("config")
    for run in runs[1:]:
        run.pop("config")
    anchors = ANCHORS.get((data.info.name, args.model), {})
    summary = summarise(runs)
    train_total = [run["train_seconds_total"] for run in runs]
    per_epoch = [run["train_seconds_per_epoch_mean"] for run in runs]
    results = {
        "model": args.model,
        "dataset": data.info.name,
        "protocols": {
            "full": "FULL, leave-one-out, seen items excluded",
            "sampled": (
                f"fixed negatives from {args.negatives_file}"
                if args.negatives_file
                else f"{args.num_negatives} {args.sampling} negatives (seeded)"
            )
            if args.sampled
            else None,
        },
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "seeds": seeds,
        # Single-seed files keep the earlier layout; with several seeds these are means.
        "epochs_run": runs[0]["epochs_run"] if len(runs) == 1 else None,
        "best_epoch": runs[0]["best_epoch"] if len(runs) == 1 else None,
        "train_seconds_total": float(np.mean(train_total)),
        "train_seconds_per_epoch_mean": float(np.mean(per_epoch)),
        "epoch_log": runs[0]["epoch_log"] if len(runs) == 1 else None,
        "eval_seconds": float(np.mean([run["eval_seconds"] for run in runs])),
        "peak_rss_mib": peak_rss_mib(),
        "test": {t: {k: v["mean"] for k, v in m.items()} for t, m in summary.items()},
        "test_std": {t: {k: v["std"] for k, v in m.items()} for t, m in summary.items()},
        "runs": runs if len(runs) > 1 else None,
        "anchors": anchors,
        "device": torch.cuda.get_device_name() if config.device.startswith("cuda") else "cpu",
        "threads": args.threads,
        "torch": torch.__version__,
    }
    users = int(runs[0]["test"]["full"]["users"])
    label = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean ± std of {len(seeds)} seeds"
    print(f"\n{args.model} on {data.info.name}, test stage, {users} users, {label}")
    print(f"{'row':<44}{'HR@10':>17}{'NDCG@10':>17}")
    for name, metrics in summary.items():
        hr, nd = metrics["HR@10"], metrics["NDCG@10"]
        spread = len(runs) > 1
        print(
            f"{'this run, ' + name:<44}{hr['mean']:>9.4f}"
            + (f" ± {hr['std']:.4f}" if spread else " " * 9)
            + f"{nd['mean']:>9.4f}"
            + (f" ± {nd['std']:.4f}" if spread else "")
        )
    for row, values in anchors.items():
        print(f"{row:<44}{values['HR@10']:>9.4f}{values['NDCG@10']:>17.4f}")
    for run in runs:
        print(
            f"seed {run['seed']}: epochs {run['epochs_run']} (best {run['best_epoch']}), "
            f"{run['train_seconds_per_epoch_mean']:.2f} s/epoch, "
            f"{run['train_seconds_total']:.0f} s training"
        )
    write_results(f"{NAME}_{args.tag}" if args.tag else NAME, results, module=NAME)
    return results


if __name__ == "__main__":
    main()
