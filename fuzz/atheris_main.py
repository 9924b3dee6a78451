"""The atheris (libFuzzer) harness of one pure target: ``python -m fuzz.atheris_main NAME
[libFuzzer options] [corpus dir]``; the runner (``python -m fuzz --engine atheris``) starts it.

The identity and matching packages are instrumented for coverage; the fuzzer's bytes are turned
into the target's input by the target's ``from_bytes``. An exception the target lets through
is a crash: libFuzzer stops and writes the input under ``-artifact_prefix``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["identity", "matching"]):
    from fuzz.targets import TARGETS


def main() -> None:
    name = sys.argv.pop(1)
    target = TARGETS[name]
    convert = target.from_bytes
    check = target.check
    assert convert is not None, f"{name} has no byte-level input"

    def one_input(data: bytes) -> None:
        value = convert(data)
        if value is not None:
            check(value)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
