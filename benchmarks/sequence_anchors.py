"""A sequence model (SASRec or BERT4Rec) on any dataset folder, against its published anchor.

Always reports full ranking (FULL, seen items excluded); with ``--sampled`` also the sampled
protocol of the dataset's anchor: a fixed negatives file (``--negatives-file``, e.g. lastfm_s3rec's
LastFM_sample.txt, 99 per user), or ``--num-negatives`` seeded uniform or popularity draws
(video_sasrec: 100 uniform; beauty_bert4rec: 100 popularity). Writes per-epoch and total
training time to benchmarks/results/sequence_anchors_<tag>.json.

    nice -n 15 python -m benchmarks.sequence_anchors --model sasrec \\
        --dataset ../shared/data/lastfm_s3rec --sampled --negatives-file LastFM_sample.txt \\
        --tag lastfm
    nice -n 15 python -m benchmarks.sequence_anchors --model sasrec \\
        --dataset ../shared/data/video_sasrec --sampled --num-negatives 100 --tag video
    nice -n 15 python -m benchmarks.sequence_anchors --model bert4rec \\
        --dataset ../shared/data/beauty_bert4rec --sampled --sampling popularity \\
        --tag bert4rec_beauty
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    folder = Path(args.dataset)
    data = split_dataset(load_dataset(folder))
    cls = get_model_class(args.model)
    overrides = [f"epochs={args.epochs}", f"max_seconds={args.minutes * 60.0}", *args.set]
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
    eval_seconds = time.perf_counter() - started
    epoch_seconds = [line["seconds"] for line in report.history]
    anchors = ANCHORS.get((data.info.name, args.model), {})
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
        "epochs_run": report.epochs,
        "best_epoch": report.best_epoch,
        "train_seconds_total": report.seconds,
        "train_seconds_per_epoch_mean": sum(epoch_seconds) / max(len(epoch_seconds), 1),
        "epoch_log": report.history,
        "eval_seconds": eval_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "test": {
            name: {k: v for k, v in m.items() if isinstance(v, int | float) and "/" not in k}
            for name, m in tables.items()
        },
        "anchors": anchors,
        "device": torch.cuda.get_device_name() if config.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
    }
    print(f"\n{args.model} on {data.info.name}, test stage, {int(tables['full']['users'])} users")
    print(f"{'row':<44}{'HR@10':>9}{'NDCG@10':>9}")
    for name, metrics in tables.items():
        print(f"{'this run, ' + name:<44}{metrics['HR@10']:>9.4f}{metrics['NDCG@10']:>9.4f}")
    for row, values in anchors.items():
        print(f"{row:<44}{values['HR@10']:>9.4f}{values['NDCG@10']:>9.4f}")
    print(
        f"epochs {report.epochs} (best {report.best_epoch}), "
        f"{results['train_seconds_per_epoch_mean']:.2f} s/epoch, {report.seconds:.0f} s training"
    )
    write_results(f"{NAME}_{args.tag}" if args.tag else NAME, results, module=NAME)
    return results


if __name__ == "__main__":
    main()
