"""The benchmarks: scripts run from the repository root (`python benchmarks/<script>.py`, they
import ``bench_common`` from their own folder), and ``python -m benchmarks``, which runs the
door benchmarks, a bulk load and a calibration at several index sizes in one command
(benchmarks/__main__.py)."""
