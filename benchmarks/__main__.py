"""Benchmarks in one command: at each index size, the bulk load, a calibration, the HL7 v2 and
FHIR doors as deployed, PostgreSQL's own durable-commit rate, CPU per operation and the
service's peak memory; written as JSON, a markdown table and PNG plots against index size.

    python -m benchmarks [--sizes 10000,100000,1000000] [--database-url URL] [--reuse] \
        [--quick] [--out benchmarks/results]

For each size N (persons of the generator, about 1.2 N records) it

1. builds the index in a database of its own (``identity_bench_<N>_<run>``; with ``--reuse``
   ``identity_bench_<N>``): ``identity generate
   --domains synthetic`` and ``identity import --bulk`` with benchmarks/bench.toml (the bulk-load
   rate, and the import's peak memory); with ``--reuse`` an index already there is kept (no
   bulk-load figure then) and kept at the end, else the database is dropped at the end;
2. times ``identity calibrate --dry-run`` on it (wall, and CPU of the command);
3. runs ``benchmarks/bench_hl7_door.py --index URL --workers 1``: ITI-8 A04 on 1 and 8
   connections with CPU per A04, PostgreSQL's durable single-row commits on 1 and 8
   connections, ITI-9 and ITI-21 latency;
4. runs ``benchmarks/bench_fhir_door.py --index URL --workers 1``: ITI-104 creates and
   updates, ITI-83, ITI-78 and $match latency with CPU per request.

The door scripts write their figures with ``--json FILE``; the service is ``identity serve``
(one worker process), whose peak resident memory they read before stopping it. The door
phases add their records to the index (a few thousand), so a reused index grows.

Without ``--database-url`` an embedded PostgreSQL (pgserver) runs in a temporary directory, or
in ``--embedded-dir DIR`` (kept, so that ``--reuse`` finds its indexes). ``--quick`` makes
every phase small (a smoke test of the command, not figures to report).

Writes ``<out>/<date>-<sizes>.json``, ``.md`` and ``.png``, and copies the last two to
``<out>/latest.md`` and ``<out>/latest.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = HERE / "bench.toml"
sys.path.insert(0, str(HERE))  # the scripts' own way of importing bench_common

from bench_common import _with_database  # noqa: E402

from identity.loop import run as run_loop  # noqa: E402

#: Per-phase counts: (A04s on 1 connection, twice as many on 8; queries per kind; FHIR
#: creates; FHIR updates).
FULL = {"single": 1000, "queries": 500, "persons": 1000, "updates": 500}
QUICK = {"single": 40, "queries": 30, "persons": 40, "updates": 20}


# --- running the pieces -------------------------------------------------------------------


def child_env(url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("IDENTITY_CONFIG", None)
    if url:
        env["IDENTITY_DATABASE__URL"] = url
    return env


def run_child(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` (output to ``log``): its wall seconds, CPU seconds and peak RSS (MB), from
    the kernel's accounting of the child (PostgreSQL's share is not counted: the backends
    serving the command exit with it, and /proc forgets their CPU). Raises on a non-zero
    exit."""
    start = time.perf_counter()
    with open(log, "ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:5])}... exited with {proc.returncode}:\n{tail}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def last_json(log: Path) -> Any:
    """The JSON document a command printed last in ``log`` (from its last line starting
    with ``{``)."""
    lines = log.read_text().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            return json.loads("\n".join(lines[i:]))
    raise RuntimeError(f"no JSON in {log}")


async def prepare(server: str, name: str, reuse: bool) -> tuple[str, int]:
    """The URL of database ``name`` (created; dropped first unless ``reuse``) and its
    records."""
    admin = await asyncpg.connect(server)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and not reuse:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        if not exists or not reuse:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_database(server, name)
    conn = await asyncpg.connect(url)
    try:
        has_table = await conn.fetchval("SELECT to_regclass('source_record') IS NOT NULL")
        records = await conn.fetchval("SELECT count(*) FROM source_record") if has_table else 0
    finally:
        await conn.close()
    return url, records


async def drop(server: str, name: str) -> None:
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def server_facts(server: str) -> dict[str, str]:
    conn = await asyncpg.connect(server)
    try:
        return {k: await conn.fetchval(f"SHOW {k}") for k in (
            "server_version", "synchronous_commit", "fsync", "autovacuum", "shared_buffers")}
    finally:
        await conn.close()


async def count_records(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM source_record"))
    finally:
        await conn.close()


def measure_size(persons: int, server: str, args: argparse.Namespace, work: Path,
                 counts: dict[str, int]) -> dict[str, Any]:
    # A run's own name, so that runs on one server do not meet; --reuse keeps a fixed one.
    name = f"identity_bench_{persons}" + ("" if args.reuse else f"_{uuid.uuid4().hex[:6]}")
    started = time.perf_counter()
    url, records = run_loop(prepare(server, name, args.reuse))
    py = sys.executable
    log = work / f"{persons}.log"
    result: dict[str, Any] = {"persons": persons, "database": name}
    print(f"== {persons:,} persons: database {name} (log {log})", flush=True)
    try:
        if records == 0:
            population = work / f"population-{persons}"
            run_child([py, "-m", "identity", "generate", "--persons", str(persons),
                       "--domains", "synthetic", "--formats", "csv", "--seed", "1",
                       "--out", str(population)], child_env(), log)
            # the set path (--bulk): a 1M-record population loads in minutes, not hours
            loaded = run_child([py, "-m", "identity", "--config", str(CONFIG), "import",
                                str(population / "population.csv"), "--bulk", "--quiet",
                                "--json",
                                "--rejects", str(work / f"rejects-{persons}.csv")],
                               child_env(url), log)
            summary = last_json(log)
            result["bulk_load"] = {
                **loaded, "records": summary["read"], "rate": summary["rate"],
                "new_person": summary["new_person"], "linked": summary["linked"],
                "review": summary["review"], "rejected": summary["rejected"],
            }
            print(f"   import: {summary['read']:,} records at {summary['rate']:,.0f}/s, "
                  f"peak {loaded['peak_rss_mb']:,.0f} MB", flush=True)
            shutil.rmtree(population, ignore_errors=True)
        else:
            result["bulk_load"] = None  # reused: nothing loaded
            print(f"   reusing the index of {records:,} records", flush=True)
        result["index_records"] = run_loop(count_records(url))

        calibrated = run_child([py, "-m", "identity", "--config", str(CONFIG), "calibrate",
                                "--dry-run", "--json", "--output-dir", str(work / "models")],
                               child_env(url), log)
        result["calibration"] = calibrated
        print(f"   calibration (dry run): {calibrated['wall_s']:.1f} s", flush=True)

        seed = "11" if not args.reuse else str(int(time.time()) % 1_000_000)
        hl7_json = work / f"hl7-{persons}.json"
        run_child([py, str(HERE / "bench_hl7_door.py"), "--index", url, "--workers", "1",
                   "--single", str(counts["single"]), "--queries", str(counts["queries"]),
                   "--seed", seed, "--json", str(hl7_json)], child_env(), log)
        result["hl7"] = json.loads(hl7_json.read_text())
        print(f"   HL7 door: A04 {result['hl7']['iti8_1']['rate']:.0f}/s on 1 connection, "
              f"{result['hl7']['iti8_8']['rate']:.0f}/s on 8", flush=True)

        fhir_json = work / f"fhir-{persons}.json"
        run_child([py, str(HERE / "bench_fhir_door.py"), "--index", url, "--workers", "1",
                   "--persons", str(counts["persons"]), "--updates", str(counts["updates"]),
                   "--queries", str(counts["queries"]), "--json", str(fhir_json)],
                  child_env(), log)
        result["fhir"] = json.loads(fhir_json.read_text())
        print(f"   FHIR door: $match p50 {result['fhir']['match']['p50']:.1f} ms", flush=True)
        result["service_peak_rss_mb"] = max(result["hl7"].get("service_peak_rss_mb", 0.0),
                                            result["fhir"].get("service_peak_rss_mb", 0.0))
    finally:
        if not args.reuse:
            run_loop(drop(server, name))
    result["wall_s"] = time.perf_counter() - started
    print(f"   {result['wall_s']:.0f} s for this size", flush=True)
    return result


# --- reporting ------------------------------------------------------------------------------


def _cpu(figure: dict[str, Any]) -> str:
    ms = figure.get("cpu_ms") or {}
    if not ms:
        return "—"
    return f"{ms['server'] + ms['postgres']:.2f} ({ms['server']:.2f} + {ms['postgres']:.2f})"


def _lat(figure: dict[str, Any]) -> str:
    return f"{figure['p50']:.1f} / {figure['p95']:.1f} / {figure['p99']:.1f}"


def markdown(report: dict[str, Any]) -> str:
    sizes = report["sizes"]
    head = "| measure | " + " | ".join(f"{s['persons']:,} persons" for s in sizes) + " |"
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Any) -> None:
        values = []
        for s in sizes:
            try:
                values.append(cell(s))
            except (KeyError, TypeError):
                values.append("—")
        rows.append((label, values))

    row("records in the index (before the doors)", lambda s: f"{s['index_records']:,}")
    row("bulk load (`identity import`), records/s",
        lambda s: f"{s['bulk_load']['rate']:,.0f} ({s['bulk_load']['wall_s']:.0f} s)")
    row("`identity import` CPU per record (the command, not PostgreSQL), ms",
        lambda s: f"{1000 * s['bulk_load']['cpu_s'] / s['bulk_load']['records']:.2f}")
    row("`identity import` peak memory, MB", lambda s: f"{s['bulk_load']['peak_rss_mb']:,.0f}")
    row("calibration (`identity calibrate --dry-run`), s wall (CPU of the command)",
        lambda s: f"{s['calibration']['wall_s']:.1f} ({s['calibration']['cpu_s']:.1f})")
    row("ITI-8 A04 over MLLP, 1 connection, msg/s", lambda s: f"{s['hl7']['iti8_1']['rate']:.0f}")
    row("ITI-8 A04 over MLLP, 8 connections, msg/s",
        lambda s: f"{s['hl7']['iti8_8']['rate']:.0f}")
    row("CPU per A04, 1 connection, ms (service + PostgreSQL)",
        lambda s: _cpu(s["hl7"]["iti8_1"]))
    row("CPU per A04, 8 connections, ms (service + PostgreSQL)",
        lambda s: _cpu(s["hl7"]["iti8_8"]))
    row("PostgreSQL durable single-row commits/s, 1 / 8 connections",
        lambda s: f"{s['hl7']['pg_commit']['1']:,.0f} / {s['hl7']['pg_commit']['8']:,.0f}")
    for key, label, door in (("iti9", "ITI-9 PIX query (MLLP)", "hl7"),
                             ("iti21", "ITI-21 PDQ query (MLLP)", "hl7"),
                             ("iti83", "ITI-83 $ihe-pix (HTTP)", "fhir"),
                             ("iti78", "ITI-78 family+birthdate (HTTP)", "fhir"),
                             ("match", "ITI-119 $match (HTTP)", "fhir")):
        row(f"{label}, p50 / p95 / p99 ms", lambda s, k=key, d=door: _lat(s[d][k]))
        row(f"{label}, CPU per request, ms", lambda s, k=key, d=door: _cpu(s[d][k]))
    row("ITI-104 update (HTTP, 8 clients), /s",
        lambda s: f"{s['fhir']['iti104_update']['rate']:.0f}")
    row("service peak memory (RSS of `identity serve`), MB",
        lambda s: f"{s['service_peak_rss_mb']:,.0f}")
    row("load average (1 min) after the doors",
        lambda s: f"{s['hl7']['load_average']:.1f} / {s['fhir']['load_average']:.1f}")
    row("wall time of this size, s", lambda s: f"{s['wall_s']:.0f}")
    lines = [
        f"# Benchmarks {report['date']} ({report['sizes_label']} persons)",
        "",
        f"`{report['command']}` at commit `{report['commit']}`, {report['cpus']} cores, "
        f"PostgreSQL {report['postgres']['server_version']} ({report['server']}, "
        f"synchronous_commit={report['postgres']['synchronous_commit']}, "
        f"fsync={report['postgres']['fsync']}, autovacuum={report['postgres']['autovacuum']});"
        f" {report['wall_s'] / 60:.1f} min in all"
        + (" (--quick: a smoke test, not figures to report)" if report["quick"] else "") + ".",
        "The service is `identity serve` with one worker; CPU per operation is the service's"
        " process tree plus PostgreSQL's processes (from /proc), in ms.",
        "",
        head,
        "| --- |" + " --- |" * len(sizes),
        *(f"| {label} | " + " | ".join(values) + " |" for label, values in rows),
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = report["sizes"]
    x = [s["index_records"] for s in sizes]

    def series(get: Any) -> list[float]:
        values = []
        for s in sizes:
            try:
                values.append(float(get(s)))
            except (KeyError, TypeError):
                values.append(float("nan"))
        return values

    fig, axes = plt.subplots(2, 4, figsize=(18, 8.5))
    ax = axes[0][0]
    ax.plot(x, series(lambda s: s["hl7"]["iti8_1"]["rate"]), "o-", label="A04, 1 connection")
    ax.plot(x, series(lambda s: s["hl7"]["iti8_8"]["rate"]), "o-", label="A04, 8 connections")
    ax.plot(x, series(lambda s: s["bulk_load"]["rate"]), "s--", label="bulk load (import)")
    ax.plot(x, series(lambda s: s["fhir"]["iti104_update"]["rate"]), "^-",
            label="ITI-104 update, 8 clients")
    ax.set_title("throughput (per second)")
    ax = axes[0][1]
    for key, door, label in (("iti8_1", "hl7", "A04, 1 conn."), ("iti8_8", "hl7", "A04, 8 conn."),
                             ("iti9", "hl7", "ITI-9"), ("iti21", "hl7", "ITI-21"),
                             ("iti83", "fhir", "ITI-83"), ("iti78", "fhir", "ITI-78"),
                             ("match", "fhir", "$match")):
        ax.plot(x, series(lambda s, k=key, d=door: s[d][k]["cpu_ms"]["server"]
                          + s[d][k]["cpu_ms"]["postgres"]), "o-", label=label)
    ax.set_title("CPU per operation, ms (service + PostgreSQL)")
    panels = [axes[0][2], axes[0][3], axes[1][0], axes[1][1], axes[1][2]]
    for ax, (key, door, label) in zip(panels, (
            ("iti9", "hl7", "ITI-9 PIX (MLLP)"), ("iti21", "hl7", "ITI-21 PDQ (MLLP)"),
            ("iti83", "fhir", "ITI-83 $ihe-pix"), ("iti78", "fhir", "ITI-78 search"),
            ("match", "fhir", "ITI-119 $match")), strict=True):
        for q in ("p50", "p95", "p99"):
            ax.plot(x, series(lambda s, k=key, d=door, q=q: s[d][k][q]), "o-", label=q)
        ax.set_title(f"{label} latency, ms")
    ax = axes[1][3]
    ax.plot(x, series(lambda s: s["service_peak_rss_mb"]), "o-", label="identity serve")
    ax.plot(x, series(lambda s: s["bulk_load"]["peak_rss_mb"]), "s--", label="identity import")
    ax.set_title("peak memory, MB")
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_xlabel("records in the index")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"identity benchmarks {report['date']} ({report['server']}, "
                 f"{report['cpus']} cores)" + (" — quick" if report["quick"] else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- the command ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="persons of each index, comma-separated")
    parser.add_argument("--database-url", metavar="URL",
                        help="a maintenance URL of the server to build the indexes on (its "
                        "`postgres` database); default: an embedded server")
    parser.add_argument("--embedded-dir", type=Path, metavar="DIR",
                        help="without --database-url: the embedded server's directory, kept "
                        "(default: a temporary one)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep an index of that size already built (and keep it at the end)")
    parser.add_argument("--quick", action="store_true",
                        help="small phases: a smoke test of the command, not figures")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    counts = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="identity-bench-")))
        if args.database_url:
            server, where = args.database_url, "server at " + args.database_url.split("@")[-1]
        else:
            from identity.store.embedded import EmbeddedPostgres

            directory = args.embedded_dir or work / "embedded"
            embedded = EmbeddedPostgres(directory)
            server = _with_database(embedded.start_sync(), "postgres")
            stack.callback(embedded.stop_sync)
            where = "embedded server (pgserver)"
        postgres = run_loop(server_facts(server))
        results = [measure_size(n, server, args, work, counts) for n in sizes]
    date = datetime.date.today().isoformat()
    label = "-".join(str(n) for n in sizes)
    report = {
        "date": date,
        "commit": git_commit(),
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpus": os.cpu_count(),
        "server": where,
        "postgres": postgres,
        "quick": args.quick,
        "counts": counts,
        "sizes_label": label,
        "wall_s": time.perf_counter() - started,
        "sizes": results,
    }
    stem = args.out / f"{date}-{label}{'-quick' if args.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    plot(report, stem.with_suffix(".png"))
    shutil.copyfile(stem.with_suffix(".md"), args.out / "latest.md")
    shutil.copyfile(stem.with_suffix(".png"), args.out / "latest.png")
    print(f"wrote {stem}.json, .md and .png ({report['wall_s']:.0f} s in all)")
    return stem.with_suffix(".json")


if __name__ == "__main__":
    main()
