"""`identity import` measured: records/s, CPU seconds per record of the command and of the
PostgreSQL backends serving it, and the command's peak resident memory.

    python benchmarks/bench_import.py FILE --database-url postgresql://postgres@HOST/ \\
        [--populate FILE] [--mode bulk|feed] [--chunk N] [--workers N] [--json OUT]

A database of its own (``bulk_bench_<pid>``) is created on the server and dropped at the end
(``--keep`` keeps it). With ``--populate`` that file is imported first (with ``--bulk``, not
measured), so that FILE goes into a populated index. The command runs as a child process
(``python -m identity --config benchmarks/bench.toml import FILE --quiet --json``): its CPU
and peak RSS come from the kernel's accounting of the child (wait4); PostgreSQL's CPU is that
of the backends connected to the benchmark's database, read from /proc every half second
while the command runs (the server must be on this machine; the WAL writer and checkpointer,
shared with whatever else the server runs, are not counted). The load average before and
after is printed beside: on a shared machine the rate is noisy, CPU per record much less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = HERE / "bench.toml"
_TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(database: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to ``database`` (by pid)."""
    found: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ")
            if not title.startswith(b"postgres: ") or f" {database} ".encode() not in title:
                continue
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        found[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    return found


class BackendMeter:
    """The largest CPU figure seen of each backend of ``database``, sampled in a thread."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def sample(self) -> None:
        for pid, seconds in backend_cpu(self.database).items():
            self.seen[pid] = max(self.seen.get(pid, 0.0), seconds)

    def __enter__(self) -> BackendMeter:
        self.sample()
        self.start = dict(self.seen)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def seconds(self) -> float:
        return sum(v - self.start.get(pid, 0.0) for pid, v in self.seen.items())


def run_import(url: str, database: str, path: str, args: argparse.Namespace,
               mode: str) -> dict[str, Any]:
    env = {**os.environ, "IDENTITY_DATABASE__URL": f"{url.rstrip('/')}/{database}",
           "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "identity", "--config", str(CONFIG), "import", path,
               "--quiet", "--json", "--rejects", f"{path}.bench-rejects.csv"]
    if mode == "bulk":
        command += ["--bulk", "--workers", str(args.workers)]
        if args.chunk:
            command += ["--chunk", str(args.chunk)]
    else:
        command += ["--no-bulk", "--concurrency", str(args.concurrency)]
    load_before = os.getloadavg()
    started = time.perf_counter()
    with BackendMeter(database) as meter:
        child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE)
        assert child.stdout is not None
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"import failed ({child.returncode}): {' '.join(command)}")
    summary = json.loads(out)
    records = max(summary["read"], 1)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "mode": mode,
        "records": summary["read"],
        "wall_s": round(wall, 1),
        "rate": summary["rate"],
        "command_cpu_ms_per_record": round(1000 * cpu / records, 3),
        "postgres_cpu_ms_per_record": round(1000 * meter.seconds / records, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/")
    parser.add_argument("--database", default=f"bulk_bench_{os.getpid()}")
    parser.add_argument("--populate", default=None, metavar="FILE")
    parser.add_argument("--mode", choices=("bulk", "feed"), default="bulk")
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", default=None, metavar="OUT")
    args = parser.parse_args()
    host = args.database_url.split("@")[-1].split("/")[0]
    hostname, _, port = host.partition(":")
    pg = ["-h", hostname, "-p", port or "5432", "-U", "postgres"]
    subprocess.run(["createdb", *pg, args.database], check=True)
    results: dict[str, Any] = {}
    try:
        if args.populate:
            results["populate"] = run_import(args.database_url, args.database, args.populate,
                                             args, "bulk")
            print("populate:", json.dumps({k: v for k, v in results["populate"].items()
                                           if k != "summary"}), flush=True)
        results["import"] = run_import(args.database_url, args.database, args.file, args,
                                       args.mode)
        print("import:", json.dumps(results["import"]), flush=True)
    finally:
        if not args.keep:
            subprocess.run(["dropdb", *pg, args.database], check=False)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
