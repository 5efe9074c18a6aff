"""``python -m trainer``: generate -> train -> evaluate end to end, and the user-error paths.

The end-to-end run goes through a real subprocess (the way users call it); the error paths call
:func:`trainer.cli.main` in-process, which is the same code without paying for a Python start-up
per case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import cli

ROOT = Path(__file__).resolve().parents[2]


def run_trainer(*args: str, artifacts: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, RECSYS_ARTIFACTS=str(artifacts), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data") / "tiny"
    artifacts = tmp_path_factory.mktemp("artifacts")
    done = run_trainer(
        "generate", "--scale", "tiny", "--seed", "3", "--out", str(folder), artifacts=artifacts
    )
    assert done.returncode == 0, done.stderr
    assert (folder / "dataset.json").is_file()
    return folder


def test_generate_train_evaluate_end_to_end(tiny, tmp_path):
    artifacts = tmp_path / "artifacts"
    trained = run_trainer(
        "train",
        "--model",
        "itemknn",
        "--dataset",
        str(tiny),
        "--set",
        "neighbours=20",
        "--no-progress",
        artifacts=artifacts,
    )
    assert trained.returncode == 0, trained.stderr
    checkpoint = artifacts / "trainer" / "tiny" / "itemknn" / "model.pt"
    assert checkpoint.is_file()
    assert f"checkpoint: {checkpoint}" in trained.stdout
    valid = json.loads(trained.stdout.strip().splitlines()[-1])
    assert {"HR@10", "NDCG@10", "Recall@20"} <= set(valid)

    evaluated = run_trainer(
        "evaluate",
        "--dataset",
        str(tiny),
        "--model",
        "itemknn",
        "--k",
        "5,10,20",
        "--no-progress",
        artifacts=artifacts,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    lines = evaluated.stdout.strip().splitlines()
    metrics = json.loads(lines[-1])
    for key in ("HR@5", "HR@10", "NDCG@10", "Recall@20", "NDCG@20", "MRR@10", "users"):
        assert key in metrics
        assert 0.0 <= metrics[key] <= (metrics["users"] if key == "users" else 1.0)
    assert metrics["users"] > 0
    # The readable table comes first and names the model and the metrics.
    assert any(line.startswith("HR@10") for line in lines[:-1])
    assert "itemknn" in lines[0]


def test_evaluate_sampled_protocol(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_ARTIFACTS", str(tmp_path))
    assert cli.main(["train", "--model", "mostpop", "--dataset", str(tiny), "--no-progress"]) == 0
    capsys.readouterr()
    code = cli.main(
        [
            "evaluate",
            "--dataset",
            str(tiny),
            "--model",
            "mostpop",
            "--protocol",
            "sampled",
            "--num-negatives",
            "20",
            "--sampling",
            "popularity",
            "--no-progress",
        ]
    )
    assert code == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= metrics["HR@10"] <= 1.0


def test_compare_tables_several_models_and_matches_evaluate(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_ARTIFACTS", str(tmp_path))
    for model in ("mostpop", "itemknn"):
        assert cli.main(["train", "--model", model, "--dataset", str(tiny), "--no-progress"]) == 0
    capsys.readouterr()
    assert (
        cli.main(["evaluate", "--dataset", str(tiny), "--model", "itemknn", "--no-progress"]) == 0
    )
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    code = cli.main(
        ["compare", "--dataset", str(tiny), "--models", "mostpop,itemknn", "--no-progress"]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    both = json.loads(lines[-1])
    assert set(both) == {"mostpop", "itemknn"}
    assert both["itemknn"]["NDCG@10"] == pytest.approx(alone["NDCG@10"])
    rows = {line.split()[0]: line for line in lines[:-1] if line.split()}
    assert "mostpop" in rows and "itemknn" in rows
    assert "HR@10" in lines[1] and "cold_users/HR@10" in lines[1]


def test_compare_without_a_checkpoint_says_how_to_train(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_ARTIFACTS", str(tmp_path))
    code = cli.main(["compare", "--dataset", str(tiny), "--models", "bprmf", "--no-progress"])
    assert code == 2
    assert "train one first with: python -m trainer train --model bprmf" in capsys.readouterr().err


def test_list_models_names_every_model_with_a_description(capsys):
    assert cli.main(["list-models"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = {line.split()[0]: line for line in out}
    for name in ("mostpop", "itemknn", "bprmf"):
        assert len(names[name].split()) > 2, f"{name} has no description"


def error_of(argv: list[str], capsys) -> str:
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    return captured.err


def test_unknown_model_is_a_clear_error(tiny, capsys):
    err = error_of(["train", "--model", "nosuch", "--dataset", str(tiny)], capsys)
    assert "unknown model 'nosuch'" in err and "bprmf" in err


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    err = error_of(["train", "--model", "mostpop", "--dataset", str(missing)], capsys)
    assert f"dataset folder not found: {missing}" in err


def test_unrecognised_dataset_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "notes.md").write_text("not a dataset")
    err = error_of(["train", "--model", "mostpop", "--dataset", str(tmp_path)], capsys)
    assert "unrecognised dataset folder" in err


def test_bad_config_key_is_a_clear_error(tiny, capsys):
    err = error_of(
        ["train", "--model", "bprmf", "--dataset", str(tiny), "--set", "learning_rate=0.1"], capsys
    )
    assert "unknown key 'learning_rate' for BPRMFConfig" in err


def test_bad_config_file_is_a_clear_error(tiny, tmp_path, capsys):
    config = tmp_path / "bpr.toml"
    config.write_text("[model]\ndim = 'wide'\n")
    err = error_of(
        ["train", "--model", "bprmf", "--dataset", str(tiny), "--config", str(config)], capsys
    )
    assert "'dim' must be int" in err and str(config) in err


def test_bad_config_value_is_a_clear_error(tiny, capsys):
    err = error_of(
        ["train", "--model", "itemknn", "--dataset", str(tiny), "--set", "neighbours=0"], capsys
    )
    assert "bad configuration for itemknn" in err and "neighbours" in err


def test_missing_checkpoint_tells_the_train_command(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_ARTIFACTS", str(tmp_path))
    err = error_of(["evaluate", "--dataset", str(tiny), "--model", "bprmf"], capsys)
    assert "no checkpoint at" in err
    assert f"python -m trainer train --model bprmf --dataset {tiny}" in err


def test_checkpoint_of_another_dataset_is_refused(tiny, tmp_path, monkeypatch, capsys):
    from tests.trainer.models.planted import planted_marketplace
    from trainer.data.marketplace import save_marketplace

    other = save_marketplace(planted_marketplace(split="temporal"), tmp_path / "other")
    monkeypatch.setenv("RECSYS_ARTIFACTS", str(tmp_path / "artifacts"))
    checkpoint = tmp_path / "pop.pt"
    assert (
        cli.main(
            [
                "train",
                "--model",
                "mostpop",
                "--dataset",
                str(other),
                "--out",
                str(checkpoint),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    err = error_of(
        ["evaluate", "--dataset", str(tiny), "--model", "mostpop", "--checkpoint", str(checkpoint)],
        capsys,
    )
    assert "different ids" in err


def test_generate_into_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "taken.txt"
    target.write_text("x")
    err = error_of(["generate", "--scale", "tiny", "--out", str(target)], capsys)
    assert f"--out must be a folder, but {target} is a file" in err


def test_bad_k_is_a_clear_error(tiny, capsys):
    err = error_of(["evaluate", "--dataset", str(tiny), "--model", "mostpop", "--k", "ten"], capsys)
    assert "--k must be comma-separated integers" in err


def test_every_option_has_help_text():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no --help text"
