"""SASRec on beauty_s3rec, full ranking, against the S3-Rec repository's SASRec row (anchors §3.2).

Settings of the S3-Rec code: max length 50, hidden 64, 2 blocks, 2 heads, lr 1e-3, batch 256;
dropout 0.5 (hidden) / 0.2 (attention) here. The loss defaults to full-softmax cross-entropy
(converges in far fewer epochs than the paper's one-negative BCE; ``--loss bce`` for the original).
The epoch is chosen on validation NDCG@10 (full ranking, seen items excluded); the test figures
come from ``trainer.evaluation.evaluate`` (FULL, LOO, seen items excluded, all 22,363 users).
Writes per-epoch and total training time to benchmarks/results/sasrec_beauty.json.

    nice -n 15 python -m benchmarks.sasrec_beauty [--epochs 200] [--minutes 0] [--loss ce]
        [--set device=cuda] [--set KEY=VALUE ...] [--tag NAME]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import peak_rss_mib, write_results
from trainer.config import build_config
from trainer.data.loaders import load_dataset
from trainer.data.splits import split_dataset
from trainer.evaluation import evaluate
from trainer.models.sasrec import SASRec, SASRecConfig
from trainer.paths import shared_data_dir

NAME = "sasrec_beauty"
# S3-Rec repository (all_rank.PNG) SASRec row; S3-Rec and ICLRec rows as the stretch goals.
ANCHORS = {
    "SASRec (S3-Rec repo)": {
        "hr@10": 0.0605,
        "ndcg@10": 0.0318,
        "hr@20": 0.0902,
        "ndcg@20": 0.0394,
    },
    "S3-Rec": {"hr@10": 0.0647, "ndcg@10": 0.0327, "hr@20": 0.0994, "ndcg@20": 0.0414},
    "ICLRec": {"hr@10": 0.0744, "ndcg@10": 0.0403, "hr@20": 0.1058, "ndcg@20": 0.0483},
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(shared_data_dir() / "beauty_s3rec"))
    parser.add_argument("--epochs", type=int, default=200, help="most training epochs")
    parser.add_argument("--minutes", type=float, default=0.0, help="training time limit (0 = none)")
    parser.add_argument("--loss", default="ce", choices=["ce", "bce", "sampled"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any SASRecConfig key"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = split_dataset(load_dataset(args.dataset))
    overrides = [
        f"epochs={args.epochs}",
        f"loss={args.loss!r}".replace("'", '"'),
        f"max_seconds={args.minutes * 60.0}",
        *args.set,
    ]
    config = build_config(SASRecConfig, None, overrides)
    model = SASRec(config, data.num_users, data.num_items)
    report = model.fit(data, progress=True)
    started = time.perf_counter()
    metrics = evaluate(model, data, "test", protocol="full", ks=(5, 10, 20))
    eval_seconds = time.perf_counter() - started

    epoch_seconds = [line["seconds"] for line in report.history]
    results = {
        "dataset": data.info.name,
        "protocol": "FULL, leave-one-out, seen items excluded",
        "users_evaluated": int(metrics.get("users", len(data.test))),
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "epochs_run": report.epochs,
        "best_epoch": report.best_epoch,
        "train_seconds_total": report.seconds,
        "train_seconds_per_epoch_mean": sum(epoch_seconds) / max(len(epoch_seconds), 1),
        "epoch_log": report.history,
        "eval_seconds": eval_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "test": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "anchors": ANCHORS,
        "threads": args.threads,
        "device": torch.cuda.get_device_name() if config.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
    }
    print(
        f"\nSASRec on {data.info.name}: FULL, LOO, seen excluded, "
        f"{results['users_evaluated']} users"
    )
    print(f"{'row':<24}{'HR@10':>9}{'NDCG@10':>9}{'HR@20':>9}{'NDCG@20':>9}")
    print(
        f"{'this run':<24}{metrics['HR@10']:>9.4f}{metrics['NDCG@10']:>9.4f}"
        f"{metrics['HR@20']:>9.4f}{metrics['NDCG@20']:>9.4f}"
    )
    for row, values in ANCHORS.items():
        print(
            f"{row:<24}{values['hr@10']:>9.4f}{values['ndcg@10']:>9.4f}"
            f"{values['hr@20']:>9.4f}{values['ndcg@20']:>9.4f}"
        )
    print(
        f"epochs {report.epochs} (best {report.best_epoch}), "
        f"{results['train_seconds_per_epoch_mean']:.1f} s/epoch, {report.seconds:.0f} s training, "
        f"{eval_seconds:.0f} s evaluation"
    )
    write_results(f"{NAME}_{args.tag}" if args.tag else NAME, results, module=NAME)
    return results


if __name__ == "__main__":
    main()
