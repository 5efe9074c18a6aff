"""``python -m webapp.demo``: the whole demo on the embedded engine, ending with the storefront at
http://127.0.0.1:5000 (docs/storefront.md).

Steps, each skipped when its output is already there (``--retrain`` redoes the models):

1. the synthetic marketplace (``python -m trainer generate``; the Makefile's folder is reused);
2. a 128-d LightGCN retrieval model (``python -m trainer train``, 40 epochs, about a minute);
3. a small residual transformer ranker over its embeddings (``python -m webapp.demo train-ranker``,
   a child process: this module imports torch only there, the storefront process never does);
4. export to ONNX + embeddings, installed into a COPY of the package under the work folder
   (``python -m model_export ... --install``), never into vespa_app/package;
5. the embedded engine on that copy (``python -m vespa_app serve``, a child process stopped on
   exit), fed with products, users and sellers (``python -m model_export feed``); its data folder
   and the event log start empty on every run;
6. the storefront and the JSON API in this process, on ``--host``:``--port``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vespa_app" / "package"
DIM = 128  # the package's embedding width (product.sd x[128])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m webapp.demo",
        description="Generate (or reuse) a synthetic marketplace, train a retrieval model and a "
        "ranker with small budgets, export them into a copy of the Vespa package, start the "
        "embedded engine, feed it, and serve the storefront. Ctrl-C stops everything.",
        epilog="Internal: `python -m webapp.demo train-ranker DATASET CHECKPOINT OUT [--epochs N]` "
        "trains the ranker (step 3) in a child process.",
    )
    p.add_argument("--scale", default="small", help="synthetic marketplace scale (small)")
    p.add_argument("--seed", type=int, default=7, help="generator seed (7, as the Makefile)")
    p.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="dataset folder to use or create (artifacts/data/marketplace-<scale>)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="models, export, package copy, engine data and event log "
        "(artifacts/demo/<dataset name>)",
    )
    p.add_argument(
        "--model",
        default="lightgcn",
        help="retrieval model: any registered model with 128-d user and item embeddings "
        "(lightgcn; bprmf trains faster and recommends worse)",
    )
    p.add_argument("--epochs", type=int, default=40, help="retrieval model epochs (40)")
    p.add_argument("--ranker-epochs", type=int, default=2, help="ranker epochs (2)")
    p.add_argument("--retrain", action="store_true", help="train and export again")
    p.add_argument("--host", default="127.0.0.1", help="storefront interface (127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="storefront port (5000)")
    p.add_argument("--engine-port", type=int, default=8080, help="embedded engine port (8080)")
    p.add_argument(
        "--prepare-only",
        action="store_true",
        help="stop after the export (steps 1-4): no engine, no web server",
    )
    return p


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def run(*argv: str | Path) -> None:
    """A child process in the project root; a failure stops the demo with its exit status.
    Its stdout lines that are JSON objects (the trainer's full metric dumps) are left out, as
    the Makefile does; stderr (progress bars) passes through."""
    command = [sys.executable, *map(str, argv)]
    print("$ " + " ".join(command[1:]), flush=True)
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if not line.startswith("{"):
                print(line, end="", flush=True)
    status = proc.returncode
    if status != 0:
        raise SystemExit(f"demo: step failed with exit status {status}: {' '.join(command[1:])}")


def prepare(
    scale: str = "small",
    seed: int = 7,
    dataset: Path | None = None,
    workdir: Path | None = None,
    epochs: int = 40,
    ranker_epochs: int = 2,
    retrain: bool = False,
    model: str = "lightgcn",
) -> tuple[Path, Path, Path]:
    """Steps 1-4: (dataset folder, export folder, package copy); see the module docstring."""
    dataset = dataset or ROOT / "artifacts" / "data" / f"marketplace-{scale}"
    if (dataset / "dataset.json").is_file():
        step(f"marketplace: reusing {dataset}")
    else:
        step(f"marketplace: generating scale {scale!r} (seed {seed}) into {dataset}")
        run("-m", "trainer", "generate", "--scale", scale, "--seed", seed, "--out", dataset)
    work = workdir or ROOT / "artifacts" / "demo" / dataset.name
    checkpoint, ranker = work / "retrieval.pt", work / "ranker.pt"
    export, package = work / "export", work / "package"
    manifest = export / "manifest.json"
    ready = (
        manifest.is_file()
        and (package / "models" / "ranker.onnx").is_file()
        and json.loads(manifest.read_text()).get("model") == model
    )
    if ready and not retrain:
        step(f"models: reusing {export} (--retrain to train again)")
        return dataset, export, package
    # Every epoch (patience 0): the temporal split's few hundred validation targets, mostly of
    # new shoppers, are too noisy to stop early by (BPR-MF stopped at epoch 2, barely trained;
    # LightGCN's validation NDCG@20 was still rising at 40 epochs on the small marketplace).
    step(f"retrieval model: {model}, {DIM}-d, {epochs} epochs")
    run("-m", "trainer", "train", "--model", model, "--dataset", dataset,
        "--set", f"dim={DIM}", "--set", f"epochs={epochs}", "--set", "patience=0",
        "--out", checkpoint, "--no-progress")  # fmt: skip
    step(f"ranker: a small residual transformer over the {model} vectors, {ranker_epochs} epochs")
    run("-m", "webapp.demo", "train-ranker", dataset, checkpoint, ranker,
        "--epochs", ranker_epochs)  # fmt: skip
    step(f"export: ONNX + embeddings, installed into a package copy at {package}")
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(PACKAGE, package)
    shutil.rmtree(export, ignore_errors=True)
    run("-m", "model_export", "--checkpoint", checkpoint, "--ranker", ranker, "--out", export,
        "--dataset", dataset, "--package", package, "--install")  # fmt: skip
    return dataset, export, package


def feed(export: Path, dataset: Path, package: Path, url: str) -> None:
    run("-m", "model_export", "feed", "--export", export, "--dataset", dataset, "--url", url,
        "--package", package)  # fmt: skip


def storefront_config(dataset: Path, export: Path, url: str, events_db: Path) -> dict:
    """create_app's configuration for the demo (the benchmark uses it too)."""
    return {
        "VESPA_URL": url,
        "EXPORT_DIR": str(export),
        "DATASET_DIR": str(dataset),
        "LOCATIONS": locations(dataset),
        "EVENTS_DB": str(events_db),
        "VESPA_TIMEOUT": 5.0,
    }


def train_ranker(argv: list[str]) -> int:
    """Step 3, in its own process (torch)."""
    p = argparse.ArgumentParser(prog="python -m webapp.demo train-ranker")
    p.add_argument("dataset", type=Path, help="dataset folder the checkpoint was trained on")
    p.add_argument("checkpoint", type=Path, help="retrieval checkpoint (python -m trainer train)")
    p.add_argument("out", type=Path, help="ranker checkpoint to write")
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from model_export.export import USER_STAGE
    from trainer.data.loaders import load_dataset
    from trainer.data.splits import split_dataset
    from trainer.models.base import load_checkpoint
    from trainer.models.ranker import Ranker, RankerConfig, save_ranker
    from trainer.models.registry import all_models

    all_models()  # registers every model, so the checkpoint's can be rebuilt
    torch.manual_seed(0)
    retrieval = load_checkpoint(args.checkpoint)
    data = split_dataset(load_dataset(args.dataset), retrieval.protocol)
    config = RankerConfig(
        history_len=50, dim=32, heads=2, blocks=1, hidden=64, negatives=16,
        epochs=args.epochs, max_impressions=30_000, max_targets=30_000, patience=0,
        valid_users=1000, time_budget=180.0,
    )  # fmt: skip
    # Residual on retrieval (docs/ranker.md): score = scorer + W * cos(retrieval user, item), the
    # scorer starting at zero, so a short training starts from retrieval order instead of
    # replacing it (a plain 2-epoch ranker reordered a grocery shopper's list into pet toys).
    users = retrieval.model.user_embeddings(data, USER_STAGE)
    ranker = Ranker(config, retrieval.model.item_embeddings(), user_embeddings=users)
    report = ranker.fit(data, progress=False)
    save_ranker(ranker, args.out, dataset_path=str(args.dataset), epochs=report["epochs"])
    print(f"ranker: {report['epochs']} epoch(s) -> {args.out}")
    return 0


class Engine:
    """``python -m vespa_app serve`` as a child process."""

    def __init__(self, package: Path, data: Path, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")  # noqa: SIM115 - open as long as the engine runs
        command = [
            sys.executable, "-m", "vespa_app", "serve", "--package", str(package),
            "--data", str(data), "--port", str(port), "--log-level", "WARNING",
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"demo: the engine exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(self.url + "/state/v1/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"demo: the engine did not answer in {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the engine flushes and snapshots
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def locations(dataset: Path) -> tuple[str, ...]:
    """The ranker's location vocabulary: the sorted location names of the dataset's events."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = pq.read_table(dataset / "events.parquet", columns=["location"]).column("location")
    return tuple(sorted(v for v in pc.unique(column).to_pylist() if v is not None))


def banner(url: str) -> str:
    line = "=" * (len(url) + 30)
    stop = "(Ctrl-C stops the storefront and the engine)"
    return f"\n{line}\n  Storefront ready:  {url}\n{line}\n{stop}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train-ranker"]:
        return train_ranker(argv[1:])
    args = parser().parse_args(argv)
    dataset, export, package = prepare(
        args.scale, args.seed, args.dataset, args.workdir, args.epochs, args.ranker_epochs,
        args.retrain, args.model,
    )  # fmt: skip
    if args.prepare_only:
        return 0
    work = export.parent
    # SIGTERM (e.g. `kill`) unwinds like Ctrl-C, so the engine below is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # A fresh start each run: the feed is the source of truth, and events of an earlier session
    # would otherwise exclude purchases that the re-fed user documents no longer show.
    shutil.rmtree(work / "vespa-data", ignore_errors=True)
    for name in ("events.sqlite3", "events.sqlite3-wal", "events.sqlite3-shm"):
        (work / name).unlink(missing_ok=True)
    step(f"engine: the embedded Vespa engine on port {args.engine_port}")
    engine = Engine(package, work / "vespa-data", args.engine_port, work / "engine.log")
    try:
        engine.wait_ready()
        step(f"feed: products, users and sellers into {engine.url}")
        feed(export, dataset, package, engine.url)
        step("storefront")
        from webapp import create_app

        app = create_app(storefront_config(dataset, export, engine.url, work / "events.sqlite3"))
        from vespa_app.gc_freeze import freeze_loaded_objects

        freeze_loaded_objects()  # what the storefront loaded stays out of every collection
        url = f"http://{args.host}:{args.port}"
        print(banner(url), flush=True)
        os.environ.setdefault("FLASK_DEBUG", "0")
        app.run(host=args.host, port=args.port, debug=False, threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
