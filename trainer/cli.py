"""``python -m trainer``: generate data, train and evaluate any registered model, list models.

Subcommands:

- ``generate``     write a synthetic marketplace (canonical dataset folder);
- ``train``        load a dataset, split it, train a model, save a checkpoint, print validation
                   metrics;
- ``evaluate``     load a checkpoint, rank on the valid or test stage, print a table and, as the
                   last line, one JSON object of metric name -> value;
- ``compare``      evaluate several trained models on one dataset, one row per model;
- ``list-models``  every registered model with a one-line description.

User errors (a missing dataset, a bad config key, an unknown model, a missing checkpoint) print one
message naming the problem and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from trainer.config import ConfigError, build_config
from trainer.data.marketplace import Marketplace
from trainer.data.splits import SplitError, split_dataset
from trainer.data.validation import DataValidationError
from trainer.paths import artifacts_dir

log = logging.getLogger("trainer")

SCALES = ("tiny", "small", "medium", "large")
SPLITS = ("leave_one_out", "fixed", "temporal")
EXIT_USAGE = 2


class CliError(Exception):
    """A problem with what the user asked for; printed as one message, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Shared steps


def model_class(name: str):
    from trainer.models.registry import all_models

    models = all_models()
    if name not in models:
        raise CliError(f"unknown model {name!r}; registered models: {', '.join(models)}")
    return models[name]


def _check_folder(path: Path) -> Path:
    if not path.exists():
        raise CliError(f"dataset folder not found: {path}")
    if not path.is_dir():
        raise CliError(f"--dataset must be a dataset folder, but {path} is a file")
    return path


def dataset_name(path: Path) -> str:
    """The name checkpoints are filed under: the dataset folder's name."""
    from trainer.data.loaders import dataset_name as folder_name

    return folder_name(_check_folder(path))


def load_dataset(path: Path) -> Marketplace:
    """A canonical dataset folder, or any folder in one of the real-dataset formats."""
    from trainer.data.loaders import load_dataset as load_any

    return load_any(_check_folder(path))


def default_checkpoint(dataset: str, model: str) -> Path:
    return artifacts_dir() / "trainer" / dataset / model / "model.pt"


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise CliError(
            f"--k must be comma-separated integers like 5,10,20, got {text!r}"
        ) from error
    if not ks or min(ks) < 1:
        raise CliError(f"--k must list cut-offs of at least 1, got {text!r}")
    return ks


def clean_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Plain floats for JSON (the evaluation library may return numpy scalars)."""
    return {str(name): float(value) for name, value in results.items()}


def run_evaluation(
    model,
    data,
    stage: str,
    protocol: str,
    ks: tuple[int, ...],
    negatives=None,
    num_negatives: int = 100,
    sampling: str = "uniform",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    from trainer.evaluation import evaluate

    if len(data.targets(stage)) == 0:
        raise CliError(
            f"dataset {data.info.name!r} has no {stage} targets under the {data.protocol} split"
        )
    results = evaluate(
        model,
        data,
        stage=stage,
        protocol=protocol,
        ks=ks,
        negatives=negatives,
        num_negatives=num_negatives,
        sampling=sampling,
        seed=seed,
        progress=progress,
    )
    return clean_metrics(results)


def print_metrics(results: dict[str, float], label: str) -> None:
    """The overall metrics as a table, the cold-start slices as a compact second table, and
    every number (slices included) as one JSON object on the last line."""
    from trainer.evaluation import format_table

    overall = {key: value for key, value in results.items() if "/" not in key}
    print(format_table({label: overall}))
    slices: dict[str, dict[str, float]] = {}
    for key, value in results.items():
        if "/" in key:
            name, metric = key.split("/", 1)
            slices.setdefault(name, {})[metric] = value
    if slices:
        wanted = ["users"] + [
            key
            for key in overall
            if key.split("@")[0] in ("HR", "Recall", "NDCG") and key.endswith(("@10", "@20"))
        ]
        print()
        print(f"cold-start slices ({label}):")
        print(format_table(slices, models_as_rows=True, keys=wanted))
    print(json.dumps(results))


# ---------------------------------------------------------------------------------------------
# Subcommands


def cmd_generate(args: argparse.Namespace) -> int:
    from trainer.data.synthetic import write_marketplace

    if args.seed < 0:
        raise CliError(f"--seed must be >= 0, got {args.seed}")
    if Path(args.out).is_file():
        raise CliError(f"--out must be a folder, but {args.out} is a file")
    start = time.perf_counter()
    folder = write_marketplace(args.scale, args.seed, Path(args.out), progress=not args.no_progress)
    print(
        f"wrote {args.scale} marketplace (seed {args.seed}) to {folder} "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from trainer.models.base import save_checkpoint

    cls = model_class(args.model)
    if args.config is not None and not Path(args.config).is_file():
        raise CliError(f"config file not found: {args.config}")
    config = build_config(cls.config_class, Path(args.config) if args.config else None, args.set)
    name = dataset_name(Path(args.dataset))
    market = load_dataset(Path(args.dataset))
    data = split_dataset(market, args.split)
    log.info(
        "dataset %s: %d users, %d items, %d training events (%s split), %d valid / %d test targets",
        name,
        data.num_users,
        data.num_items,
        len(data.train),
        data.protocol,
        len(data.valid),
        len(data.test),
    )
    try:
        model = cls(config, data.num_users, data.num_items)
    except ValueError as error:
        raise CliError(f"bad configuration for {args.model}: {error}") from error
    log.info("training %s with %s", args.model, config)
    report = model.fit(data, progress=not args.no_progress)
    log.info("trained %s: %d epoch(s) in %.1fs", args.model, report.epochs, report.seconds)
    out = Path(args.out) if args.out else default_checkpoint(name, args.model)
    save_checkpoint(
        model,
        data,
        out,
        dataset_path=str(Path(args.dataset).resolve()),
        train_seconds=report.seconds,
        epochs=report.epochs,
        best_epoch=report.best_epoch,
        history=report.history,
    )
    print(f"checkpoint: {out}")
    if len(data.valid) == 0:
        print(
            f"no validation targets in the {data.protocol} split of {name}; "
            f"run `python -m trainer evaluate` for test metrics"
        )
        return 0
    print("validation metrics (full ranking):")
    print_metrics(
        run_evaluation(
            model, data, "valid", "full", parse_ks(args.k), progress=not args.no_progress
        ),
        args.model,
    )
    return 0


def load_trained(
    dataset: str,
    model_name: str,
    checkpoint: str | None,
    split: str | None,
    market: Marketplace | None = None,
):
    """The checkpointed model and the dataset split it was trained with, checked to match."""
    from trainer.models.base import load_checkpoint

    model_class(model_name)
    name = dataset_name(Path(dataset))
    path = Path(checkpoint) if checkpoint else default_checkpoint(name, model_name)
    if not path.is_file():
        command = shlex.join(
            ["python", "-m", "trainer", "train", "--model", model_name, "--dataset", dataset]
        )
        raise CliError(f"no checkpoint at {path}; train one first with: {command}")
    saved = load_checkpoint(path)
    model = saved.model
    if model.name != model_name:
        raise CliError(f"checkpoint {path} holds model {model.name!r}, not {model_name!r}")
    market = market if market is not None else load_dataset(Path(dataset))
    data = split_dataset(market, split or saved.protocol)
    if saved.item_ids != data.items.ids.tolist() or saved.user_ids != data.users.ids.tolist():
        raise CliError(
            f"checkpoint {path} was trained on dataset {saved.dataset.get('name')!r} with "
            f"{len(saved.user_ids)} users and {len(saved.item_ids)} items; "
            f"{dataset} has {data.num_users} users and {data.num_items} items (different ids)"
        )
    if saved.dataset != dataclasses.asdict(data.info):
        log.warning(
            "warning: checkpoint %s was trained on a dataset described differently from %s "
            "(same ids; another seed or loader version?); evaluating anyway",
            path,
            dataset,
        )
    return model, data


def cmd_evaluate(args: argparse.Namespace) -> int:
    ks = parse_ks(args.k)
    if args.negatives is not None and args.protocol != "sampled":
        raise CliError("--negatives needs --protocol sampled")
    if args.num_negatives < 1:
        raise CliError(f"--num-negatives must be at least 1, got {args.num_negatives}")
    name = dataset_name(Path(args.dataset))
    model, data = load_trained(args.dataset, args.model, args.checkpoint, args.split)
    negatives = None
    if args.negatives is not None:
        if not Path(args.negatives).is_file():
            raise CliError(f"negatives file not found: {args.negatives}")
        from trainer.data.loaders import read_negatives

        negatives = read_negatives(Path(args.negatives), data.users, data.items)
    start = time.perf_counter()
    results = run_evaluation(
        model,
        data,
        args.stage,
        args.protocol,
        ks,
        negatives,
        args.num_negatives,
        args.sampling,
        args.seed,
        progress=not args.no_progress,
    )
    log.info(
        "evaluated %s on %s (%s, %s stage) in %.1fs",
        args.model,
        name,
        args.protocol,
        args.stage,
        time.perf_counter() - start,
    )
    print_metrics(results, args.model)
    return 0


# Headline columns of `compare`: accuracy, beyond-accuracy and the cold-user slice at K = 10/20.
COMPARE_KEYS = (
    "users",
    "HR@10",
    "NDCG@10",
    "Recall@20",
    "Precision@10",
    "Coverage@10",
    "ILD-category@10",
    "SellerDiversity@10",
    "Novelty@10",
    "cold_users/HR@10",
)


def cmd_compare(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    if not names:
        raise CliError("--models must name at least one model")
    market = load_dataset(Path(args.dataset))
    results: dict[str, dict[str, float]] = {}
    for name in names:
        model, data = load_trained(args.dataset, name, None, args.split, market=market)
        results[name] = run_evaluation(
            model, data, args.stage, "full", (10, 20), progress=not args.no_progress
        )
    from trainer.evaluation import format_table

    print(f"full ranking on {dataset_name(Path(args.dataset))} ({args.stage} stage):")
    print(format_table(results, models_as_rows=True, keys=COMPARE_KEYS))
    print(json.dumps(results))
    return 0


def cmd_list_models(args: argparse.Namespace) -> int:
    from trainer.models.registry import all_models

    models = all_models()
    width = max((len(name) for name in models), default=0)
    for name, cls in models.items():
        # The class docstring, else its module's (a model file documents one model).
        doc = cls.__doc__ or sys.modules[cls.__module__].__doc__ or ""
        summary = doc.strip().splitlines()
        print(f"{name:<{width}}  {summary[0] if summary else ''}")
    return 0


# ---------------------------------------------------------------------------------------------
# Parser


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress", action="store_true", help="hide progress bars (log lines still print)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Generate data, train and evaluate recommenders.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser(
        "generate",
        help="write a synthetic marketplace dataset folder",
        description="Write a deterministic synthetic marketplace as a canonical dataset folder.",
    )
    gen.add_argument(
        "--scale",
        choices=SCALES,
        default="tiny",
        help="size: tiny (~200 users, tests), small, medium, large (>=1M users)",
    )
    gen.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; the same scale and seed give the same dataset",
    )
    gen.add_argument("--out", required=True, help="folder to write the dataset into")
    _add_progress(gen)
    gen.set_defaults(run=cmd_generate)

    train = commands.add_parser(
        "train",
        help="train a model and save a checkpoint",
        description="Load a dataset, split it, train a model, save a checkpoint and print the "
        "validation metrics.",
    )
    train.add_argument(
        "--model", required=True, help="registered model name (see `python -m trainer list-models`)"
    )
    train.add_argument(
        "--dataset",
        required=True,
        help="dataset folder: a canonical folder (dataset.json + Parquet) or a "
        "folder in a supported real-dataset format (S3-Rec, SASRec, LightGCN, ...)",
    )
    train.add_argument(
        "--config",
        metavar="FILE.toml",
        help="TOML file with model settings (top level or a [model] table)",
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one model setting, value parsed as TOML (e.g. --set lr=3e-4); "
        "repeatable, applied after --config",
    )
    train.add_argument(
        "--split",
        choices=SPLITS,
        help="split protocol; default: the dataset's own (dataset.json 'split')",
    )
    train.add_argument(
        "--out",
        metavar="CHECKPOINT",
        help="checkpoint path; default: artifacts/trainer/<dataset-name>/<model>/model.pt",
    )
    train.add_argument(
        "--k", default="5,10,20", help="comma-separated cut-offs for the validation metrics"
    )
    _add_progress(train)
    train.set_defaults(run=cmd_train)

    ev = commands.add_parser(
        "evaluate",
        help="evaluate a trained checkpoint",
        description="Rank with a trained model and print a metrics table; the last line is one "
        "JSON object of metric name -> value.",
    )
    ev.add_argument("--dataset", required=True, help="the dataset folder the model was trained on")
    ev.add_argument("--model", required=True, help="registered model name of the checkpoint")
    ev.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="checkpoint path; default: artifacts/trainer/<dataset-name>/<model>/model.pt",
    )
    ev.add_argument(
        "--protocol",
        choices=("full", "sampled"),
        default="full",
        help="full: rank the whole catalogue (primary); sampled: rank each target "
        "against negatives (only to compare with published sampled numbers)",
    )
    ev.add_argument(
        "--negatives",
        metavar="FILE",
        help="fixed negatives file (`user neg1 ... negN` per line, e.g. "
        "lastfm_s3rec's LastFM_sample.txt); needs --protocol sampled",
    )
    ev.add_argument(
        "--num-negatives",
        type=int,
        default=100,
        help="negatives drawn per user for --protocol sampled without --negatives",
    )
    ev.add_argument(
        "--sampling",
        choices=("uniform", "popularity"),
        default="uniform",
        help="how drawn negatives are chosen: uniformly or by training popularity",
    )
    ev.add_argument("--seed", type=int, default=0, help="seed for drawing negatives")
    ev.add_argument(
        "--stage", choices=("valid", "test"), default="test", help="which targets to evaluate on"
    )
    ev.add_argument(
        "--split",
        choices=SPLITS,
        help="split protocol; default: the one the checkpoint was trained with",
    )
    ev.add_argument("--k", default="5,10,20", help="comma-separated cut-offs, e.g. 5,10,20")
    _add_progress(ev)
    ev.set_defaults(run=cmd_evaluate)

    cmp = commands.add_parser(
        "compare",
        help="evaluate several trained models side by side",
        description="Full-ranking evaluation of the default checkpoints of several models on one "
        "dataset, as one table with a row per model; the last line is one JSON object of model "
        "name -> metrics.",
    )
    cmp.add_argument(
        "--dataset", required=True, help="the dataset folder the models were trained on"
    )
    cmp.add_argument(
        "--models", required=True, help="comma-separated registered model names, e.g. mostpop,bprmf"
    )
    cmp.add_argument(
        "--stage", choices=("valid", "test"), default="test", help="which targets to evaluate on"
    )
    cmp.add_argument(
        "--split",
        choices=SPLITS,
        help="split protocol; default: the one each checkpoint was trained with",
    )
    _add_progress(cmp)
    cmp.set_defaults(run=cmd_compare)

    lm = commands.add_parser(
        "list-models",
        help="list registered models",
        description="Print every registered model with a one-line summary.",
    )
    lm.set_defaults(run=cmd_list_models)
    return parser


USER_ERRORS = (CliError, ConfigError, DataValidationError, SplitError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
