"""The fuzzing runner: every target (or those named) for its share of a time budget.

    python -m fuzz --seconds 600                       # every target, hypothesis
    python -m fuzz --seconds 120 --target hl7-mapping  # one target
    python -m fuzz --seconds 600 --engine atheris      # coverage-guided, where atheris exists
    python -m fuzz --list

The live targets (``hl7-door``, ``fhir-http``) need a PostgreSQL server: ``--database-url`` or
``IDENTITY_TEST_DATABASE_URL`` (a database of their own is created on it and dropped after);
without one they are skipped with a message. Per target the runner prints the inputs tried and
every distinct failure found, with its smallest input. Exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning

from fuzz.targets import TARGETS, Target

LIVE_TARGETS = {
    "hl7-door": "the HL7 door's handler over a real core (mutated messages, fresh MSH-10)",
    "fhir-http": "requests to the FHIR door over HTTP (search, $match, Bundle, PUT, PIXm, read)",
}
ARTIFACTS = Path(__file__).resolve().parent / ".artifacts"
HANG_SECONDS = 10.0
"""An input that a pure target takes longer than this over is reported as a hang."""
CHUNK = 100
"""Examples per hypothesis run; runs repeat until the target's share of the budget is spent."""


class Hang(Exception):
    """An input took longer than HANG_SECONDS."""


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread when the block runs longer than ``seconds``."""
    if seconds <= 0 or os.name != "posix":
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"input took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    outer, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:  # a timer set around us (pytest-timeout's): give it back what is left
            left = outer - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), interval)


@dataclass
class Report:
    target: str
    engine: str
    seconds: float = 0.0
    inputs: int = 0
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: str = ""

    def add_failure(self, exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):  # hypothesis found several distinct failures
            for inner in exc.exceptions:
                self.add_failure(inner)
            return
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "/hypothesis/" not in f.filename] or frames
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
        key = f"{type(exc).__name__} at {where}"
        first_line = str(exc).splitlines()[0][:300] if str(exc) else ""
        notes = "\n".join(getattr(exc, "__notes__", []))
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__,
                                                   limit=-8, chain=False))
        found = self.failures.setdefault(key, {"count": 0, "message": first_line,
                                               "example": notes[:2000], "traceback": trace})
        found["count"] += 1


def hypothesis_settings(max_examples: int, *, derandomize: bool = False) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.target, Phase.shrink, Phase.explain],
        print_blob=False,
    )


def _loop(
    report: Report,
    budget: float,
    strategy: st.SearchStrategy[Any],
    call: Callable[[Any], None],
) -> None:
    """Hypothesis runs of CHUNK examples until ``budget`` seconds are spent."""
    stop_at = time.monotonic() + budget
    started = time.monotonic()

    def body(value: Any) -> None:
        report.inputs += 1
        call(value)

    test = hypothesis_settings(CHUNK)(given(strategy)(body))
    while time.monotonic() < stop_at:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", HypothesisWarning)
                test()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure is a finding
            report.add_failure(exc)
    report.seconds = time.monotonic() - started


def run_pure(target: Target, budget: float) -> Report:
    report = Report(target.name, "hypothesis")

    def call(value: Any) -> None:
        with watchdog(HANG_SECONDS):
            target.check(value)

    _loop(report, budget, target.strategy(), call)
    return report


def run_live(names: list[str], budget: float, database_url: str | None) -> list[Report]:
    if not database_url:
        message = "no database: give --database-url or set IDENTITY_TEST_DATABASE_URL"
        return [Report(name, "hypothesis", skipped=message) for name in names]
    from fuzz import live, strategies
    from identity.loop import loop_factory

    factory = loop_factory()
    loop = factory() if factory is not None else asyncio.new_event_loop()
    reports = []
    try:
        async def start() -> tuple[Any, Any, Any]:
            core = live.scratch_core(database_url)
            mpi = await core.__aenter__()
            door = live.serve(mpi)
            return core, door, await door.__aenter__()

        core, door, served = loop.run_until_complete(start())
        try:
            checks = {
                "hl7-door": (strategies.hl7_messages(fresh_control_id=True),
                             lambda raw: live.check_hl7_door(served, raw)),
                "fhir-http": (strategies.http_requests(),
                              lambda request: live.check_fhir_http(served, request)),
            }
            for name in names:
                report = Report(name, "hypothesis")
                strategy, check = checks[name]

                def call(value: Any, check: Any = check) -> None:
                    loop.run_until_complete(asyncio.wait_for(check(value), 60))

                _loop(report, budget, strategy, call)
                reports.append(report)
        finally:
            loop.run_until_complete(door.__aexit__(None, None, None))
            loop.run_until_complete(core.__aexit__(None, None, None))
    finally:
        loop.close()
    return reports


# --- atheris ------------------------------------------------------------------------------------


def atheris_available() -> str | None:
    """None when atheris can be used, else why not."""
    try:
        import atheris  # noqa: F401
    except ImportError as exc:
        return (f"atheris is not installed ({exc}); `pip install atheris` (a binary wheel for "
                "CPython 3.11 on x86-64 Linux; elsewhere it needs clang and libFuzzer)")
    return None


def run_atheris(target: Target, budget: float, artifacts_root: Path) -> Report:
    report = Report(target.name, "atheris")
    if target.from_bytes is None:
        report.skipped = "no byte-level form of this target's input"
        return report
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{target.name}-"))
    corpus = work / "corpus"
    corpus.mkdir()
    for number, seed in enumerate(target.seed_bytes() if target.seed_bytes else []):
        (corpus / f"seed-{number}").write_bytes(seed)
    artifacts = artifacts_root.resolve() / target.name
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "fuzz.atheris_main", target.name,
               f"-max_total_time={max(1, int(budget))}", "-print_final_stats=1",
               f"-timeout={int(HANG_SECONDS)}", "-rss_limit_mb=4096",
               f"-artifact_prefix={artifacts}/", str(corpus)]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, errors="replace",
                            cwd=Path(__file__).resolve().parent.parent)
    report.seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    executed = re.findall(r"stat::number_of_executed_units:\s*(\d+)", output)
    if executed:
        report.inputs = int(executed[-1])
    else:
        runs = re.findall(r"#(\d+)\s", output)
        report.inputs = int(runs[-1]) if runs else 0
    if result.returncode != 0:
        crash = re.search(r"=== Uncaught Python exception: ===\n(.*?)(?:\n\n|==\d+==)",
                          output, re.S)
        text = crash.group(1) if crash else output[-2000:]
        lines = [line for line in text.strip().splitlines() if line.strip()]
        key = lines[-1][:200] if lines else f"exit status {result.returncode}"
        saved = re.findall(r"Test unit written to (\S+)", output)
        report.failures[key] = {"count": 1, "message": key,
                                "example": "\n".join(lines[-12:] + saved)}
    shutil.rmtree(work, ignore_errors=True)
    return report


# --- command line -------------------------------------------------------------------------------


def print_report(report: Report, verbose: bool = False) -> None:
    if report.skipped:
        print(f"{report.target:15} {report.engine:10} skipped: {report.skipped}", flush=True)
        return
    rate = report.inputs / report.seconds if report.seconds else 0.0
    print(f"{report.target:15} {report.engine:10} {report.seconds:7.1f} s  "
          f"{report.inputs:9d} inputs  ({rate:7.0f}/s)  failures: {len(report.failures)}",
          flush=True)
    for key, found in report.failures.items():
        message = f": {found['message']}" if found["message"] not in ("", key) else ""
        print(f"    FAIL x{found['count']}: {key}{message}")
        lines = found["example"].splitlines()
        if verbose:
            lines += found.get("traceback", "").splitlines()
        for line in lines if verbose else lines[:20]:
            print(f"        {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="total time budget, shared equally by the targets run")
    parser.add_argument("--target", action="append", default=[],
                        help="a target to run (repeatable); default every target")
    parser.add_argument("--engine", choices=["hypothesis", "atheris"], default="hypothesis")
    parser.add_argument("--database-url", default=os.environ.get("IDENTITY_TEST_DATABASE_URL"),
                        help="PostgreSQL server for the live targets")
    parser.add_argument("--no-live", action="store_true", help="skip the live targets")
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS,
                        help="atheris: where crash inputs are written (one folder per target)")
    parser.add_argument("--verbose", action="store_true",
                        help="print each failure's whole input and traceback")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    args = parser.parse_args(argv)

    logger = logging.getLogger("identity")  # the doors' warnings about bad input are expected
    logger.addHandler(logging.NullHandler())
    logger.setLevel(logging.ERROR)
    every = {name: t.description for name, t in TARGETS.items()} | LIVE_TARGETS
    if args.list:
        for name, description in every.items():
            print(f"{name:15} {description}")
        return 0
    names = args.target or list(every)
    unknown = [n for n in names if n not in every]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; --list shows them")
    live_names = [n for n in names if n in LIVE_TARGETS]
    if args.no_live or args.engine == "atheris":
        if args.engine == "atheris" and live_names:
            print("the live targets run with hypothesis only; skipped under --engine atheris")
        live_names = []
    pure_names = [n for n in names if n in TARGETS]
    if args.engine == "atheris":
        for name in [n for n in pure_names if TARGETS[n].from_bytes is None]:
            print(f"{name:15} atheris    skipped: no byte-level form of this target's input")
        pure_names = [n for n in pure_names if TARGETS[n].from_bytes is not None]
    share = args.seconds / max(1, len(pure_names) + len(live_names))
    if args.engine == "atheris":
        missing = atheris_available()
        if missing is not None:
            print(f"atheris unavailable: {missing}", file=sys.stderr)
            return 2
    print(f"fuzzing {len(pure_names) + len(live_names)} target(s) with {args.engine}, "
          f"{args.seconds:g} s in total ({share:.0f} s each)", flush=True)
    reports = []
    for name in pure_names:
        if args.engine == "atheris":
            report = run_atheris(TARGETS[name], share, args.artifacts)
        else:
            report = run_pure(TARGETS[name], share)
        print_report(report, args.verbose)
        reports.append(report)
    if live_names:
        for report in run_live(live_names, share, args.database_url):
            print_report(report, args.verbose)
            reports.append(report)
    total = sum(r.inputs for r in reports)
    failed = sum(len(r.failures) for r in reports)
    print(f"total: {total} inputs, {failed} distinct failure(s)")
    return 1 if failed else 0
