"""The load benchmark end to end on a tiny build: closed and open loop, the embedded engine it
starts and an engine given by URL (what a real Vespa deployment is measured through)."""

from __future__ import annotations

import json

import pytest

from benchmarks import common
from benchmarks import pipeline_load as load

TINY = ["--products", "300", "--users", "60", "--k", "10", "--warmup", "0.5"]


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline_load")
    assert load.main([*TINY, "--folder", str(folder), "--build-only"]) == 0
    return folder


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    return lambda name: json.loads((tmp_path / f"{name}.json").read_text())


def test_build_is_fed_once_and_recorded(tiny_build):
    info = json.loads((tiny_build / "build.json").read_text())
    assert info["fed"] is True and info["products"] == 300
    assert load.known_users(load._built(tiny_build, info), 1000)  # exported users exist


def test_open_loop_run_offers_the_rate_and_answers_every_request(tiny_build, results):
    argv = [*TINY, "--folder", str(tiny_build), "--clients", "2", "--duration", "4"]
    assert load.main([*argv, "--rate", "15", "--out", "open"]) == 0
    out = results("open")
    assert out["setup"]["load_model"] == "open" and out["setup"]["offered_rps"] == 15
    assert out["errors"] == 0 and out["requests"] > 0
    # Poisson arrivals at 15/s for 4 s: 60 expected; far outside 25-110 means a broken schedule
    assert 25 <= out["requests"] <= 110
    assert set(out["cpu_ms_per_request"]) == {"engine", "webapp", "clients"}
    assert out["end_to_end_ms"]["p50"] > 0


def test_external_engine_by_url_is_used_and_not_measured(tiny_build, results):
    info = json.loads((tiny_build / "build.json").read_text())
    built = load._built(tiny_build, info)
    port = load.free_port()
    engine = load.start_engine(built, port)
    try:
        url = f"http://127.0.0.1:{port}"
        argv = [*TINY, "--folder", str(tiny_build), "--clients", "1", "--duration", "2"]
        assert load.main([*argv, "--vespa-url", url, "--out", "external"]) == 0
    finally:
        load.stop(engine)
    out = results("external")
    assert out["setup"]["engine"] == url and out["setup"]["load_model"] == "closed"
    assert out["errors"] == 0 and out["requests"] > 0
    assert "engine" not in out["cpu_ms_per_request"]  # a remote engine's CPU is not ours


def test_rate_and_feed_are_checked(tiny_build, capsys):
    with pytest.raises(SystemExit):
        load.main([*TINY, "--folder", str(tiny_build), "--rate", "0"])
    assert "--rate must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load.main([*TINY, "--folder", str(tiny_build), "--feed"])
    assert "--feed needs --vespa-url" in capsys.readouterr().err
    with pytest.raises(ValueError, match="rate must be positive"):
        load.run_load("http://127.0.0.1:1", ["u"], 1, 0.0, 0.1, 10, rate=-1.0)
