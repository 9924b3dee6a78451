"""`python -m benchmarks` end to end at a tiny size (--quick): it builds the index, runs every
phase and writes every figure, the markdown table and the plot. Presence and sanity only:
speed is never asserted here (docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _matplotlib_or_skip() -> None:
    """matplotlib is in the test extra, so a test run without it has an out-of-date install
    (fail); skipped only when the extra does not list it."""
    if importlib.util.find_spec("matplotlib") is not None:
        return
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["test"]
    if any(dep.lower().startswith("matplotlib") for dep in extra):
        pytest.fail("matplotlib is in the test extra but not installed: pip install -e '.[test]'")
    pytest.skip("matplotlib is not installed")


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


@pytest.mark.timeout(240)
def test_one_command_writes_every_figure(server_url: str, tmp_path: Path) -> None:
    _matplotlib_or_skip()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--sizes", "300", "--quick",
         "--database-url", server_url, "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=230,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    written = sorted(p.name for p in tmp_path.iterdir())
    stems = {p.stem for p in tmp_path.glob("*-300-quick.*")}
    assert len(stems) == 1, written
    stem = tmp_path / stems.pop()
    for suffix in (".json", ".md", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0, written
    assert (tmp_path / "latest.md").read_text() == stem.with_suffix(".md").read_text()
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads(stem.with_suffix(".json").read_text())
    assert report["quick"] is True and report["postgres"]["server_version"]
    [size] = report["sizes"]
    assert size["persons"] == 300
    assert size["index_records"] >= 300
    load = size["bulk_load"]
    assert load["records"] == size["index_records"] and _positive(load["rate"])
    assert _positive(load["peak_rss_mb"]) and load["rejected"] == 0
    assert _positive(size["calibration"]["wall_s"])
    hl7, fhir = size["hl7"], size["fhir"]
    for rate in (hl7["iti8_1"], hl7["iti8_8"], fhir["iti104_create"], fhir["iti104_update"]):
        assert _positive(rate["rate"])
    assert _positive(hl7["pg_commit"]["1"]) and _positive(hl7["pg_commit"]["8"])
    for latency in (hl7["iti9"], hl7["iti21"], fhir["iti83"], fhir["iti78"], fhir["match"]):
        assert latency["n"] > 0
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    for figure in (hl7["iti8_1"], hl7["iti8_8"], hl7["iti9"], hl7["iti21"], fhir["iti83"],
                   fhir["iti78"], fhir["match"]):
        assert set(figure["cpu_ms"]) == {"server", "postgres", "client", "total"}
    assert hl7["iti8_1"]["cpu_ms"]["server"] > 0  # 40 A04s: whole clock ticks of CPU
    assert _positive(size["service_peak_rss_mb"])

    table = stem.with_suffix(".md").read_text()
    for label in ("ITI-8 A04 over MLLP, 8 connections", "ITI-9", "ITI-21", "ITI-83", "ITI-78",
                  "$match", "bulk load", "calibration", "durable single-row commits",
                  "service peak memory", "CPU per A04"):
        assert label in table
    assert "| — |" not in table  # every figure present
