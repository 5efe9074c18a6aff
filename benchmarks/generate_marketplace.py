"""Benchmark: generate a synthetic marketplace scale, chunked to Parquet; time, peak memory, rows.

    python -m benchmarks.generate_marketplace                 # medium, into a temporary folder
    python -m benchmarks.generate_marketplace --scale large   # the 1M-user target (< 24 GiB)

Peak memory is this process's maximum resident set size (ru_maxrss), covering generation and,
unless ``--no-load``, loading the folder back with full validation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.common import RESULTS_DIR, peak_rss_mib, write_results
from trainer.data.marketplace import INFO_FILE, load_marketplace
from trainer.data.schema import TABLES
from trainer.data.synthetic import SCALES, write_marketplace


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default="medium", choices=list(SCALES), help="named scale")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="dataset folder to write (default: a temporary folder, deleted afterwards)",
    )
    parser.add_argument(
        "--load",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="load the written folder back with load_marketplace (default: yes below 'large')",
    )
    return parser.parse_args()


def run(scale: str, seed: int, folder: Path, load: bool) -> dict:
    started = time.perf_counter()
    write_marketplace(scale, seed, folder, progress=True)
    generate_s = time.perf_counter() - started
    generate_rss = peak_rss_mib()
    rows = {t.name: pq.ParquetFile(folder / t.file_name).metadata.num_rows for t in TABLES}
    size_mib = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    counts = json.loads((folder / INFO_FILE).read_text())["extra"]["event_counts"]
    result = {
        "scale": scale,
        "seed": seed,
        "generate_s": round(generate_s, 2),
        "events_per_s": round(rows["events"] / generate_s),
        "peak_rss_generate_mib": round(generate_rss, 1),
        "folder_mib": round(size_mib, 1),
        "rows": rows,
        "event_counts": counts,
    }
    if load:
        started = time.perf_counter()
        market = load_marketplace(folder)
        result["load_s"] = round(time.perf_counter() - started, 2)
        result["loaded_events"] = len(market.events)
        result["peak_rss_with_load_mib"] = round(peak_rss_mib(), 1)
    return result


def main() -> None:
    args = _parse()
    load = args.load if args.load is not None else args.scale != "large"
    if args.out is not None:
        result = run(args.scale, args.seed, args.out, load)
    else:
        with tempfile.TemporaryDirectory(prefix=f"marketplace-{args.scale}-") as tmp:
            result = run(args.scale, args.seed, Path(tmp), load)
    lines = [
        f"synthetic marketplace '{result['scale']}' (seed {result['seed']})",
        f"  {'generate (s)':<26}{result['generate_s']:>14,.2f}",
        f"  {'events / s':<26}{result['events_per_s']:>14,}",
        f"  {'peak RSS generate (MiB)':<26}{result['peak_rss_generate_mib']:>14,.1f}",
        f"  {'folder size (MiB)':<26}{result['folder_mib']:>14,.1f}",
    ]
    if "load_s" in result:
        lines.append(f"  {'load + validate (s)':<26}{result['load_s']:>14,.2f}")
        lines.append(
            f"  {'peak RSS with load (MiB)':<26}{result['peak_rss_with_load_mib']:>14,.1f}"
        )
    lines.append("  rows")
    lines += [f"    {name:<24}{count:>14,}" for name, count in result["rows"].items()]
    lines.append("  events by type")
    lines += [f"    {name:<24}{count:>14,}" for name, count in result["event_counts"].items()]
    print("\n".join(lines))
    # One results file; each scale's latest run is kept beside the others.
    previous = RESULTS_DIR / "generate_marketplace.json"
    runs = json.loads(previous.read_text()).get("runs", {}) if previous.is_file() else {}
    result["command"] = (
        f"python -m benchmarks.generate_marketplace --scale {args.scale} --seed {args.seed}"
    )
    runs[args.scale] = result
    path = write_results("generate_marketplace", {"runs": runs})
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
