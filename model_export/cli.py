"""``python -m model_export``: export a checkpoint, check it against the package, feed it.

Forms:

- ``python -m model_export --checkpoint PATH [--ranker RANKER] --out DIR [--package P] [--install]
  [--check-only]`` exports, checks the package and parity, optionally installs the ONNX models
  (with ``--ranker``: also the ranker's history_encoder.onnx and ranker.onnx);
- ``python -m model_export check --export DIR [--package P]`` checks an existing export;
- ``python -m model_export feed --export DIR --dataset PATH --url URL`` feeds Vespa.

Exit status: 0 ok; 1 parity or feed failure; 2 a user error or a contract mismatch (the message
names both sides).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from model_export.manifest import ExportError, Manifest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PACKAGE = PROJECT_ROOT / "vespa_app" / "package"
EXIT_FAILED = 1
EXIT_USAGE = 2


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_export",
        description=(
            "Export a trainer checkpoint for serving: product and user embeddings (.npy) with "
            "their id lists, single-file ONNX models where the model has an encoder, and "
            "manifest.json; then check the Vespa application package against the manifest and "
            "onnxruntime against PyTorch. Other commands: `python -m model_export check --help`, "
            "`python -m model_export feed --help`."
        ),
        epilog="Exit status: 0 ok, 1 parity failure, 2 bad input or a mismatch with the package.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="checkpoint written by python -m trainer train",
    )
    parser.add_argument(
        "--ranker",
        type=Path,
        help="ranker checkpoint (trainer.models.ranker.save_ranker) trained over --checkpoint's "
        "item embeddings: adds history_encoder.onnx (hist int64 = recent_item_idx + 1, ctx -> "
        "user_state) and ranker.onnx (user_state, cand -> score) to the export, checks them "
        "against the package's onnx-model blocks and for parity; --install copies them into "
        "the package's models/. A ranker trained with history_features / cand_features "
        "writes history_encoder_features.onnx and ranker_features.onnx instead, for the "
        "ranking_features profile (the manifest's ranker.profile)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="export folder, by convention artifacts/model_export/<dataset>/<model>/ "
        "(required unless --check-only)",
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        help="dataset folder the model was trained on (default: the path the checkpoint records)",
    )
    parser.add_argument(
        "--package",
        type=Path,
        default=DEFAULT_PACKAGE,
        help="Vespa application package to check against and install into "
        "(default: vespa_app/package)",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="copy the ONNX models that the package's onnx-model blocks reference "
        "(models/<name>.onnx) into the package, after every check passed",
    )
    parser.add_argument(
        "--check-only",
        action="store_true",
        help="export into a temporary folder and run every check; write nothing under --out "
        "and install nothing",
    )
    parser.add_argument(
        "--skip-package-check",
        action="store_true",
        help="do not compare with the package (for models not meant for this package)",
    )
    return parser


def check_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_export check",
        description="Check an existing export folder against an application package: embedding "
        "width, ONNX input/output names, types and shapes, single-file ONNX.",
    )
    parser.add_argument("--export", required=True, type=Path, help="export folder (manifest.json)")
    parser.add_argument(
        "--package",
        type=Path,
        default=DEFAULT_PACKAGE,
        help="application package (default: vespa_app/package)",
    )
    return parser


def feed_parser() -> argparse.ArgumentParser:
    from model_export.feed import DOC_TYPES

    parser = argparse.ArgumentParser(
        prog="python -m model_export feed",
        description="Feed products (embedding + attributes), users (embedding + recent history) "
        "and sellers to Vespa or the embedded engine through pyvespa, with a progress bar. "
        "Re-feeding is idempotent.",
    )
    parser.add_argument("--export", required=True, type=Path, help="export folder (manifest.json)")
    parser.add_argument(
        "--dataset",
        required=True,
        type=Path,
        help="dataset folder with the products, users, "
        "sellers, categories and events of the export",
    )
    parser.add_argument(
        "--url", default="http://127.0.0.1:8080", help="Vespa endpoint (default: %(default)s)"
    )
    parser.add_argument(
        "--types",
        default=",".join(DOC_TYPES),
        help="comma-separated document types to feed (default: %(default)s)",
    )
    parser.add_argument(
        "--embeddings-only",
        action="store_true",
        help="refresh only the embedding fields of existing products, users and sellers (the "
        "sellers' recomputed from the new product vectors), as partial updates (assign)",
    )
    parser.add_argument(
        "--package",
        type=Path,
        help="check the export against this package before feeding (embedding width)",
    )
    parser.add_argument(
        "--max-workers", type=int, default=8, help="concurrent requests (default: %(default)s)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_export(args: argparse.Namespace) -> int:
    from model_export import export, package, parity

    if not args.check_only and args.out is None:
        raise ExportError("--out is required (or pass --check-only)")
    if args.check_only and args.install:
        raise ExportError("--check-only installs nothing; drop --install or --check-only")
    loaded = export.load(args.checkpoint, args.dataset)
    ranked = None
    if args.ranker is not None:
        from model_export import ranker

        ranked = ranker.load(args.ranker)
    with tempfile.TemporaryDirectory(prefix="model_export-") as scratch:
        out = Path(scratch) if args.check_only else Path(args.out)
        manifest = export.export(loaded, out, ranked)
        print(
            f"exported {manifest.model} ({manifest.dimensions['embedding']}-d, "
            f"{manifest.dataset['num_items']} products, {manifest.dataset['num_users']} users, "
            f"{len(manifest.onnx)} ONNX model(s)) from {args.checkpoint}"
        )
        if not args.skip_package_check:
            blocks = package.check_package(out, manifest, args.package)
            print(f"package {args.package}: embedding width and ONNX names match")
            for name, found in blocks.items():
                if not found:
                    print(f"  {name}.onnx: no onnx-model block loads models/{name}.onnx")
        results = parity.check_export(loaded, out, manifest, ranked)
        for result in results:
            print(result.line())
        if not results:
            print("parity: no ONNX models in this export (embedding tables only)")
        manifest.parity = [
            {"model": r.model, "batch": r.batch, "length": r.length, "max_abs_diff": r.max_abs_diff}
            for r in results
        ]
        manifest.write(out)
        failed = [r for r in results if not r.ok]
        if failed:
            print(
                f"parity failed for {len(failed)} of {len(results)} checks "
                f"(tolerance {parity.TOLERANCE:g})",
                file=sys.stderr,
            )
            return EXIT_FAILED
        if args.install:
            for path in package.install(out, manifest, args.package):
                print(f"installed {path}")
        if not args.check_only:
            print(f"manifest: {out / 'manifest.json'}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from model_export import package

    manifest = Manifest.read(args.export)
    package.check_package(args.export, manifest, args.package)
    print(f"{args.export} matches {args.package}")
    return 0


def run_feed(args: argparse.Namespace) -> int:
    from model_export import feed, package
    from trainer.data.loaders import load_dataset

    types = tuple(t.strip() for t in args.types.split(",") if t.strip())
    unknown = [t for t in types if t not in feed.DOC_TYPES]
    if unknown or not types:
        raise ExportError(
            f"--types: unknown document type {unknown[:1]} ({', '.join(feed.DOC_TYPES)})"
        )
    manifest = Manifest.read(args.export)
    if args.package is not None:
        problems = package.check_dimensions(manifest, package.parse_package(args.package))
        if problems:
            raise ExportError(
                "export does not match the application package:\n  " + "\n  ".join(problems)
            )
    if not args.dataset.is_dir():
        raise ExportError(f"dataset folder not found: {args.dataset}")
    report = feed.feed(
        args.export,
        load_dataset(args.dataset),
        args.url,
        types=types,
        embeddings_only=args.embeddings_only,
        progress=not args.no_progress,
        max_workers=args.max_workers,
    )
    print(
        "fed " + ", ".join(f"{n} {t} documents" for t, n in report.sent.items()) + f" to {args.url}"
    )
    if report.failures:
        print(f"{len(report.failures)} operation(s) failed:", file=sys.stderr)
        for line in report.failures[:20]:
            print(f"  {line}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "feed":
        command, args = run_feed, feed_parser().parse_args(argv[1:])
    elif argv and argv[0] == "check":
        command, args = run_check, check_parser().parse_args(argv[1:])
    else:
        command, args = run_export, export_parser().parse_args(argv)
    try:
        return command(args)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
