"""`identity import` of the files sites have (identity/importer.py): CSV through a column
mapping, NDJSON of FHIR Patients, HL7 v2 batch files; into a populated index with the feed's
decisions; resumable; rejects with their reason. Each by both paths: record by record through
Register (``bulk`` False) and set at a time (``bulk`` True, identity.mpi.bulk, in chunks of 40
records so that the chunks find each other through the index)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

import pytest

from identity.cli import main
from identity.config import Settings, load_settings
from identity.errors import InvalidInput
from identity.importer import (
    Importer,
    Item,
    Progress,
    Rejects,
    Summary,
    column_mapping,
    hl7_messages,
    progress_wanted,
    read_file,
)
from identity.model import RecordStatus
from identity.mpi import Envelope, Mpi, Register
from identity.store.db import Database
from tests.conftest import migrated_schema

DEMO_TOML = Path(__file__).resolve().parents[2] / "identity" / "demo" / "demo.toml"


def _generate(out: Path, persons: int = 60, seed: int = 4) -> None:
    assert main(["generate", "--persons", str(persons), "--duplicates", "0.4", "--seed",
                 str(seed), "--out", str(out)]) == 0


@pytest.fixture
def demo_settings(make_settings: Callable[..., Settings]) -> Settings:
    demo = load_settings(DEMO_TOML)
    return make_settings(domains=[d.model_dump() for d in demo.domains])


@pytest.fixture
async def demo(db: Database, demo_settings: Settings) -> Mpi:
    mpi = Mpi(db, demo_settings)
    await mpi.start()
    return mpi


@pytest.fixture
async def other(run_database_url: str, demo_settings: Settings) -> AsyncIterator[Mpi]:
    """A second index, in a schema of its own, to compare with."""
    name = await migrated_schema(run_database_url)
    database = await Database.connect(
        run_database_url, min_size=1, max_size=10, server_settings={"search_path": name}
    )
    mpi = Mpi(database, demo_settings)
    await mpi.start()
    yield mpi
    await database.close()


async def _import(mpi: Mpi, path: Path, *, fmt: str | None = None, concurrency: int = 4,
                  update: bool = True, columns: str | None = None,
                  domain: str | None = None, bulk: bool = False, chunk: int = 40,
                  items: Iterable[Item] | None = None) -> Summary:
    importer = Importer(mpi, concurrency=concurrency, update=update, actor="import:test",
                        bulk=bulk, chunk=chunk)
    rejects = Rejects(f"{path}.rejects.csv")
    try:
        if items is None:
            items = read_file(path, fmt, columns=column_mapping(columns), domain=domain)
        summary = await importer.run(items, file=str(path), rejects=rejects)
    finally:
        rejects.close()
        importer.close()
    await importer.finish()
    return summary


def _rejects(path: Path) -> list[dict[str, str]]:
    return _rows(Path(f"{path}.rejects.csv"))


async def _persons(mpi: Mpi, keys: list[tuple[str, str]]) -> set[frozenset[tuple[str, str]]]:
    """The index's persons over ``keys`` (domain, identifier), as sets of those keys."""
    from identity.model import AuthorityRef, IdentifierRef

    by_person: dict[int, set[tuple[str, str]]] = {}
    for namespace, value in keys:
        record = await mpi.find_record(
            IdentifierRef(value=value, authority=AuthorityRef(namespace=namespace))
        )
        assert record.person_id is not None
        by_person.setdefault(record.person_id, set()).add((namespace, value))
    return {frozenset(v) for v in by_person.values()}


async def _state(mpi: Mpi, keys: list[tuple[str, str]]) -> list[tuple[int, int, int | None]]:
    from identity.model import AuthorityRef, IdentifierRef

    state = []
    for namespace, value in keys:
        record = await mpi.find_record(
            IdentifierRef(value=value, authority=AuthorityRef(namespace=namespace))
        )
        state.append((record.id, record.version, record.person_id))
    return state


async def _history_rows(mpi: Mpi) -> int:
    async with mpi.db.connection() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM history"))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _keys(path: Path) -> list[tuple[str, str]]:
    return [(r["source_domain"], r["mrn"]) for r in _rows(path)]


@pytest.mark.parametrize("bulk", [False, True])
async def test_csv_in_another_layout_through_a_mapping(
    tmp_path: Path, demo: Mpi, bulk: bool
) -> None:
    path = tmp_path / "site.csv"
    path.write_text(
        "patient_id,first_name,surname,dob,gender,street,town\n"
        "A1,JANE,DOE,19700102,F,1 Main St,Springfield\n"
        ",JOHN,ROE,1980-03-04,M,,\n"  # no identifier: a reject
        "A2,JANE,DOE,1970-01-02,F,1 Main St,Springfield\n"
        "A3,MARY,POE,1990-05-06,F,,\n",
        encoding="utf-8",
    )
    summary = await _import(
        demo, path, columns="mrn=patient_id,given=first_name,family=surname,birth_date=dob,"
        "sex=gender,address_line1=street,city=town", domain="HOSPA", bulk=bulk,
    )
    assert (summary.read, summary.rejected) == (4, 1)
    assert summary.new_person + summary.linked + summary.review == 3
    rejects = _rejects(path)
    assert [(r["position"], r["identifier"]) for r in rejects] == [("3", "")]
    assert "mrn" in rejects[0]["reason"] and "JOHN" not in rejects[0]["reason"]
    await _persons(demo, [("HOSPA", "A1"), ("HOSPA", "A2"), ("HOSPA", "A3")])
    # two records of one domain that look alike: a possible duplicate for a steward
    assert summary.review == 1
    record = await demo.find_record(_ref("HOSPA", "A1"))
    assert record.demographics.birth_date == "1970-01-02"


def _ref(namespace: str, value: str):  # type: ignore[no-untyped-def]
    from identity.model import AuthorityRef, IdentifierRef

    return IdentifierRef(value=value, authority=AuthorityRef(namespace=namespace))


def test_a_mapping_the_file_does_not_fit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_text("first_name,surname\nJANE,DOE\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="mrn"):
        list(read_file(path, columns=column_mapping("given=first_name,family=surname")))


@pytest.mark.parametrize("bulk", [False, True])
async def test_ndjson_of_fhir_patients(tmp_path: Path, demo: Mpi, bulk: bool) -> None:
    _generate(tmp_path)
    path = tmp_path / "patients.ndjson"
    path.write_text(path.read_text(encoding="utf-8")
                    + '{"resourceType": "Observation", "id": "x"}\nnot json\n', encoding="utf-8")
    summary = await _import(demo, path, bulk=bulk)
    keys = _keys(tmp_path / "population.csv")
    assert summary.rejected == 2 and summary.read == len(keys) + 2
    assert summary.new_person + summary.linked + summary.review == len(keys)
    assert summary.linked > 0
    reasons = [r["reason"] for r in _rejects(path)]
    assert "not a FHIR Patient (Observation)" in reasons and reasons[1].startswith("not JSON")
    await _persons(demo, keys)  # every record is there


def _hl7_messages(tmp_path: Path) -> list[bytes]:
    raw = (tmp_path / "adt.hl7").read_bytes()
    return [m.strip(b"\x0b\r") for m in raw.split(b"\x1c\r") if m.strip()]


@pytest.mark.parametrize("bulk", [False, True])
async def test_hl7_batch_with_file_and_batch_headers(
    tmp_path: Path, demo: Mpi, bulk: bool
) -> None:
    _generate(tmp_path)
    messages = _hl7_messages(tmp_path)
    merge = (b"MSH|^~\\&|ADT_A|HOSPA|IDENTITY|MPI|20260101||ADT^A40^ADT_A39|X1|P|2.5\r"
             b"EVN|A40|20260101\rPID|1||99^^^HOSPA||DOE^JANE\rMRG|98^^^HOSPA")
    body = b"\r".join([*messages[:10], merge, *messages[10:]])
    path = tmp_path / "batch.hl7"
    path.write_bytes(
        b"FHS|^~\\&|ADT_A|HOSPA|||20260101\rBHS|^~\\&|ADT_A|HOSPA|||20260101\r" + body
        + f"\rBTS|{len(messages) + 1}\rFTS|1\r".encode()
    )
    summary = await _import(demo, path, bulk=bulk)
    assert summary.read == len(messages) + 1 and summary.rejected == 1
    assert summary.new_person + summary.linked + summary.review == len(messages)
    [reject] = _rejects(path)
    assert reject["position"] == "11" and reject["identifier"] == "HOSPA|99"
    assert "ADT^A40 is not a registration" in reject["reason"]
    await _persons(demo, _keys(tmp_path / "population.csv"))


@pytest.mark.parametrize("bulk", [False, True])
async def test_hl7_concatenated_messages_with_and_without_mllp(
    tmp_path: Path, demo: Mpi, bulk: bool
) -> None:
    _generate(tmp_path)
    messages = _hl7_messages(tmp_path)
    half = len(messages) // 2
    plain = tmp_path / "plain.hl7"  # LF-separated segments, one message after the other
    plain.write_bytes(b"\n".join(m.replace(b"\r", b"\n") for m in messages[:half]) + b"\n")
    framed = tmp_path / "adt.hl7"  # as generated: MLLP-framed
    first = await _import(demo, plain, bulk=bulk)
    assert first.read == half and first.rejected == 0
    second = await _import(demo, framed, bulk=bulk)
    assert second.read == len(messages) and second.rejected == 0
    assert second.skipped == half  # the same messages again: nothing to write
    await _persons(demo, _keys(tmp_path / "population.csv"))


def test_hl7_messages_split_across_read_blocks(tmp_path: Path) -> None:
    path = tmp_path / "a.hl7"
    path.write_bytes(b"\xef\xbb\xbf\x0bMSH|^~\\&|A|B\rPID|1||1\r\x1c\r\x0bMSH|^~\\&|C|D\rPID|1||2"
                     b"\r\x1c\rFHS|x\nMSH|^~\\&|E\r\nPID|1||3\n")
    expected = [(1, b"MSH|^~\\&|A|B\rPID|1||1"), (2, b"MSH|^~\\&|C|D\rPID|1||2"),
                (3, b"MSH|^~\\&|E\rPID|1||3")]
    for block in (3, 7, 64, 1 << 20):
        assert list(hl7_messages(path, block=block)) == expected


@pytest.mark.parametrize("bulk", [False, True])
async def test_populated_index_gets_the_feeds_decisions(
    tmp_path: Path, demo: Mpi, other: Mpi, bulk: bool
) -> None:
    """The same records into the same populated index: imported from a file, or registered one
    by one through Register as a feed would: the same persons."""
    _generate(tmp_path, persons=80, seed=11)
    path = tmp_path / "population.csv"
    rows = _rows(path)
    head, tail = tmp_path / "head.csv", tmp_path / "tail.csv"
    _write_rows(head, rows[: len(rows) // 2])
    _write_rows(tail, rows[len(rows) // 2 :])
    for mpi in (demo, other):  # both populated alike
        await _import(mpi, head, concurrency=1)
    summary = await _import(demo, tail, concurrency=1, bulk=bulk)
    decisions: dict[str, int] = {}
    for item in read_file(tail):
        domain = other.domains.known(item.payload.identifier.authority)
        assert domain is not None
        result = await other.handle(Register(subject=item.payload, replace=True),
                                    Envelope(actor="feed", source=domain.sources[0]))
        decisions[result.decision.value] = decisions.get(result.decision.value, 0) + 1
    assert (summary.new_person, summary.linked, summary.review) == (
        decisions.get("new_person", 0), decisions.get("linked", 0), decisions.get("review", 0))
    assert summary.linked > 0
    keys = _keys(path)
    assert await _persons(demo, keys) == await _persons(other, keys)
    assert len(await demo.review_items(limit=1000)) == len(await other.review_items(limit=1000))


async def test_concurrent_import_never_splits_a_person(tmp_path: Path, demo: Mpi) -> None:
    _generate(tmp_path, persons=80, seed=11)
    path = tmp_path / "population.csv"
    summary = await _import(demo, path, concurrency=8)
    assert summary.rejected == 0
    truth: dict[str, set[tuple[str, str]]] = {}
    for row in _rows(path):
        truth.setdefault(row["person_id"], set()).add((row["source_domain"], row["mrn"]))
    persons = await _persons(demo, _keys(path))
    # each found person lies within one true person (no false link), as registered one by one
    assert all(any(p <= t for t in truth.values()) for p in persons)


@pytest.mark.parametrize("bulk", [False, True])
async def test_a_rerun_skips_everything_and_changes_nothing(
    tmp_path: Path, demo: Mpi, bulk: bool
) -> None:
    _generate(tmp_path)
    path = tmp_path / "population.csv"
    first = await _import(demo, path, bulk=bulk)
    keys = _keys(path)
    before = await _state(demo, keys)
    history = await _history_rows(demo)
    again = await _import(demo, path, bulk=bulk)
    assert again.skipped == again.read == first.read
    assert (again.new_person, again.linked, again.review, again.updated) == (0, 0, 0, 0)
    assert await _state(demo, keys) == before
    assert await _history_rows(demo) == history


@pytest.mark.parametrize("bulk", [False, True])
async def test_a_changed_record_is_updated_unless_no_update(
    tmp_path: Path, demo: Mpi, bulk: bool
) -> None:
    _generate(tmp_path)
    path = tmp_path / "population.csv"
    await _import(demo, path, bulk=bulk)
    rows = _rows(path)
    rows[0]["phone"] = "555-0100"
    _write_rows(path, rows)
    kept = await _import(demo, path, update=False, bulk=bulk)
    assert kept.skipped == len(rows) and kept.updated == 0
    updated = await _import(demo, path, bulk=bulk)
    assert updated.updated == 1 and updated.skipped == len(rows) - 1
    record = await demo.find_record(_ref(rows[0]["source_domain"], rows[0]["mrn"]))
    assert record.status == RecordStatus.ACTIVE
    assert [p.value for p in record.demographics.phones] == ["555-0100"]


def test_progress_bar_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_wanted(False, Tty()) and not progress_wanted(True, Tty())
    assert not progress_wanted(False, io.StringIO())
    bar = Progress(10, enabled=False)
    bar.advance(Summary(read=1))
    bar.close()
    assert bar.bar is None


async def test_set_path_on_an_empty_index_makes_the_feeds_persons(
    tmp_path: Path, demo: Mpi, other: Mpi
) -> None:
    """One file into two empty indexes: set at a time in chunks, or record by record through
    Register: the same persons and review items, and no false link."""
    _generate(tmp_path, persons=120, seed=23)
    path = tmp_path / "population.csv"
    by_sets = await _import(demo, path, bulk=True, chunk=40)
    one_by_one = await _import(other, path, concurrency=1)
    assert (by_sets.new_person, by_sets.linked, by_sets.review) == (
        one_by_one.new_person, one_by_one.linked, one_by_one.review)
    assert by_sets.linked > 0
    keys = _keys(path)
    persons = await _persons(demo, keys)
    assert persons == await _persons(other, keys)
    truth: dict[str, set[tuple[str, str]]] = {}
    for row in _rows(path):
        truth.setdefault(row["person_id"], set()).add((row["source_domain"], row["mrn"]))
    assert all(any(p <= t for t in truth.values()) for p in persons)
    reviews = await demo.review_items(limit=1000)
    assert len(reviews) == len(await other.review_items(limit=1000))
    assert all(item.explanation for item in reviews)  # a steward sees why


async def test_an_interrupted_set_import_resumes(tmp_path: Path, demo: Mpi, other: Mpi) -> None:
    """A run that dies in its third chunk keeps the chunks committed before; run again, it
    skips them and loads the rest: the index is the one an uninterrupted run makes."""
    _generate(tmp_path, persons=120, seed=29)
    path = tmp_path / "population.csv"

    def dying(items: Iterable[Item]) -> Iterator[Item]:
        for number, item in enumerate(items, start=1):
            if number > 100:
                raise RuntimeError("killed")
            yield item

    with pytest.raises(RuntimeError, match="killed"):
        await _import(demo, path, bulk=True, chunk=40, items=dying(read_file(path)))
    kept = len(await _state_of(demo))
    assert kept >= 40  # the first chunk at least was committed
    resumed = await _import(demo, path, bulk=True, chunk=40)
    assert resumed.skipped == kept
    assert resumed.new_person + resumed.linked + resumed.review == resumed.read - kept
    await _import(other, path, bulk=True, chunk=40)
    keys = _keys(path)
    assert await _persons(demo, keys) == await _persons(other, keys)
    assert len(await _state_of(demo)) == len(keys)


async def _state_of(mpi: Mpi) -> list[int]:
    async with mpi.db.connection() as conn:
        return [r["id"] for r in await conn.fetch("SELECT id FROM source_record")]


async def test_set_path_rejects_with_their_reason(tmp_path: Path, demo: Mpi) -> None:
    path = tmp_path / "site.csv"
    path.write_text(
        "source_domain,mrn,family,given,birth_date,sex\n"
        "HOSPA,A1,DOE,JANE,1970-01-02,F\n"
        "HOSPA,,ROE,JOHN,1970-03-04,M\n"  # no identifier
        "NOWHERE,A3,POE,MARY,1990-05-06,F\n"  # no such domain
        "HOSPB,B1,DOE,JANE,1970-01-02,F\n",
        encoding="utf-8",
    )
    summary = await _import(demo, path, bulk=True)
    assert (summary.read, summary.rejected) == (4, 2)
    assert summary.new_person + summary.linked + summary.review == 2
    rejects = _rejects(path)
    assert [(r["position"], r["identifier"]) for r in rejects] == [
        ("3", ""), ("4", "NOWHERE|A3")]
    assert "mrn" in rejects[0]["reason"] and "ROE" not in rejects[0]["reason"]
    assert "NOWHERE" in rejects[1]["reason"]
    assert len(await _persons(demo, [("HOSPA", "A1"), ("HOSPB", "B1")])) <= 2
