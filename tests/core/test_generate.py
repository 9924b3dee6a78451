"""`identity generate` writes data the demo configuration accepts, and `identity import` reads
what it writes (the import door's own CSV layout, identity/batch.py)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from hl7.client import read_stream

from identity.batch import NATIONAL_ID_OID, read_population_csv, record_input
from identity.cli import DEMO_SOURCES, main
from identity.config import Settings, load_settings
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.mpi import Mpi
from identity.store.db import Database
from matching import synth

DEMO_TOML = Path(__file__).resolve().parents[2] / "identity" / "demo" / "demo.toml"


def _generate(out: Path, *extra: str) -> None:
    assert main(["generate", "--persons", "60", "--seed", "4", "--out", str(out), *extra]) == 0


def test_demo_sources_are_the_demo_configurations() -> None:
    demo = {d.namespace: d for d in load_settings(DEMO_TOML).domains}
    for namespace, application, oid in DEMO_SOURCES:
        assert demo[namespace].oid == oid
        assert application in demo[namespace].sources
    assert any(d.oid == NATIONAL_ID_OID and d.namespace == "NATIONAL" for d in demo.values())


def test_generated_feed_is_mllp_framed_from_the_demo_sources(tmp_path: Path) -> None:
    _generate(tmp_path)
    allowed = {ns: set(d.sources) for ns, d in
               ((d.namespace, d) for d in load_settings(DEMO_TOML).domains)}
    rows = list(csv.DictReader(open(tmp_path / "population.csv", encoding="utf-8")))
    messages = list(read_stream(io.BytesIO((tmp_path / "adt.hl7").read_bytes())))
    assert len(messages) == len(rows)  # as python-hl7's mllp_send splits the file
    for message, row in zip(messages, rows, strict=True):
        msh, _, pid, _ = message.decode().split("\r")
        fields = msh.split("|")
        assert fields[2] in allowed[row["source_domain"]]  # MSH-3 may assign in the domain
        assert fields[3] == row["source_domain"]
        own = pid.split("|")[3].split("~")[0]
        assert own.startswith(f"{row['mrn']}^^^{row['source_domain']}&")
        if row["ssn"]:
            assert f"^^^NATIONAL&{NATIONAL_ID_OID}&ISO^SS" in pid
    assert {r["source_domain"] for r in rows} == {ns for ns, _, _ in DEMO_SOURCES}


def test_a_persons_records_go_to_different_domains(tmp_path: Path) -> None:
    _generate(tmp_path, "--duplicates", "0.5", "--formats", "csv")
    rows = list(csv.DictReader(open(tmp_path / "population.csv", encoding="utf-8")))
    generated = synth.generate(60, 0.5, 4)
    demo: dict[str, list[str]] = {}
    own: dict[str, list[str]] = {}
    for row, record in zip(rows, generated, strict=True):
        demo.setdefault(row["person_id"], []).append(row["source_domain"])
        own.setdefault(record.person_id, []).append(record.source_domain)
    assert any(len(domains) > 1 for domains in demo.values())
    for person, domains in demo.items():
        assert len(set(domains)) == min(len(set(own[person])), len(DEMO_SOURCES))
    keys = [(r["source_domain"], r["mrn"]) for r in rows]
    assert len(set(keys)) == len(keys)


def test_synthetic_domains_write_what_the_generator_writes(tmp_path: Path) -> None:
    _generate(tmp_path, "--domains", "synthetic", "--formats", "csv")
    expected = tmp_path / "expected.csv"
    synth.write_csv(synth.generate(60, 0.2, 4), expected)
    assert (tmp_path / "population.csv").read_bytes() == expected.read_bytes()


def test_import_reads_what_generate_writes(tmp_path: Path) -> None:
    _generate(tmp_path, "--domains", "synthetic", "--hard", "--formats", "csv")
    path = tmp_path / "population.csv"
    assert list(read_population_csv(path)) == [
        record_input(r) for r in synth.iter_csv(path)
    ]


def test_domains_list_names_applications(tmp_path: Path) -> None:
    _generate(tmp_path, "--domains", "A=APP1,B=APP2", "--formats", "hl7")
    messages = [m.decode() for m in read_stream(io.BytesIO((tmp_path / "adt.hl7").read_bytes()))]
    assert {m.split("|")[2] for m in messages} == {"APP1", "APP2"}
    assert all(f"^^^&{NATIONAL_ID_OID}&ISO^SS" in m for m in messages if "^SS" in m)


def test_bad_domains_spec_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--persons", "1", "--out", str(tmp_path), "--domains", "A"]) == 1
    assert "NAMESPACE=APPLICATION" in capsys.readouterr().err


def test_import_csv_missing_a_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("family,given\nDOE,JANE\n", encoding="utf-8")
    with pytest.raises(Exception, match="missing column"):
        list(read_population_csv(path))


async def test_generated_files_load_into_the_demo_configuration(
    tmp_path: Path, db: Database, make_settings: Callable[..., Settings]
) -> None:
    _generate(tmp_path, "--formats", "csv,hl7")
    demo = load_settings(DEMO_TOML)
    settings = make_settings(domains=[d.model_dump() for d in demo.domains],
                             mllp={"port": 0, "idle_timeout": 30.0})
    mpi = Mpi(db, settings)
    await mpi.start()
    messages = list(read_stream(io.BytesIO((tmp_path / "adt.hl7").read_bytes())))
    service = Hl7Service(mpi, db, settings)
    await service.start()
    try:
        async with MLLPClient("127.0.0.1", service.port, timeout=10.0) as client:
            for message in messages[:20]:
                reply = (await client.send(message)).decode()
                assert "\rMSA|AA|" in reply, reply
    finally:
        await service.stop(grace=2.0)
    rows = list(read_population_csv(tmp_path / "population.csv"))
    for record in rows[:20]:
        assert (await mpi.find_record(record.identifier)).identifier == record.identifier.value
