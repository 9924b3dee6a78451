"""``identity import``: the files a site has, streamed into an empty or populated index with the
feed's decisions (docs/operations.md, *Bulk import*).

One path for every format. A reader turns a file into :class:`Item` s, one record at a time
(a CSV row read through a column mapping, an NDJSON line holding a FHIR Patient, an HL7 v2
message of a batch file); a record the reader cannot make sense of is an item with a reject
reason. :class:`Importer` registers each record through the core's ``Register`` command, as the
doors do (the CSV and FHIR records replace the stored demographics, as a FHIR ``PUT`` does; an
HL7 v2 message updates them as the feed does), for ``--source`` or else for the application
that assigns the record's domain (HL7 v2: MSH-3, as the feed), ``concurrency`` registrations in
flight at once, each on its own pooled connection, as that many MLLP senders would: the same
decisions, the same locks (concurrent registrations of one person never split it), the same
history and notifications. Nothing but a bounded queue of items is held, so memory does not
grow with the file. The planner's statistics are refreshed each time the index has doubled.

Resumable: a record is keyed by its (domain, identifier); registering it again with the same
content writes nothing (counted as ``skipped``); with other content it is an update (``updated``)
or, with ``update=False``, skipped without reading further.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from pydantic import ValidationError

from identity.batch import row_input
from identity.errors import IdentityError, InvalidInput, NotFound, StoreUnavailable
from identity.fhir.patient import body_identifiers, record_input, validate_patient
from identity.fhir.wire import FhirError
from identity.hl7v2.errors import ParseError
from identity.hl7v2.feed import REGISTER_EVENTS, FeedHandler
from identity.hl7v2.pid import identifiers as pid_identifiers
from identity.hl7v2.tokenizer import Message, parse_message
from identity.model import Decision, IdentifierRef, RecordInput
from identity.mpi import Envelope, Mpi, Register
from identity.mpi.bulk import CHUNK, Incoming, SetLoader
from identity.mpi.commands import Received
from identity.mpi.matcher import Prepared
from identity.store.bulk import BulkWriter, analyze, record_count, settle
from matching.columns import ColumnMapping, ColumnMappingError

log = logging.getLogger("identity.import")

FORMATS = ("csv", "ndjson", "hl7")

#: Records loaded before the planner's statistics are first refreshed (then each time the index
#: has doubled).
ANALYZE_EVERY = 1000

#: The generator's CSV layout (``identity generate``), the default mapping; ``matching.columns``
#: calls it ``synth``, which is accepted too.
GENERATOR_PRESET = "generator"

_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_NDJSON_SUFFIXES = {".ndjson", ".jsonl", ".json"}
_HL7_SUFFIXES = {".hl7", ".er7", ".mllp", ".bat"}


@dataclass(frozen=True, slots=True)
class Item:
    """One record of a file as read: ``position`` is its line (CSV, NDJSON) or its message
    number (HL7 v2); ``kind`` says what ``payload`` is (``record``: a RecordInput, ``patient``:
    a FHIR Patient as JSON, ``message``: an HL7 v2 Message); ``label`` identifies it in the
    rejects file (``domain|identifier``, nothing else of the patient); ``reject``: why it cannot
    be imported (then ``payload`` is None)."""

    position: int
    kind: str
    payload: Any
    label: str = ""
    reject: str | None = None


def reason_of(exc: BaseException) -> str:
    """Why a record was refused, without its demographics (pydantic's input values are cut)."""
    if isinstance(exc, ValidationError):
        text = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'record'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
    else:
        text = re.sub(r",?\s*input_value=.*?(?=, input_type=|\]|$)", "", str(exc), flags=re.M)
        text = re.sub(r"\s*For further information visit \S+", "", text)
    return f"{type(exc).__name__}: {' '.join(text.split())}"[:500]


# --- formats -------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """``csv``, ``ndjson`` or ``hl7`` from the file's name, else from its first bytes."""
    suffix = Path(path).suffix.lower()
    if suffix in _NDJSON_SUFFIXES:
        return "ndjson"
    if suffix in _HL7_SUFFIXES:
        return "hl7"
    with open(path, "rb") as handle:
        head = handle.read(64).lstrip(b"\xef\xbb\xbf\r\n\t ")
    if head[:1] == b"\x0b" or head[:3] in (b"MSH", b"FHS", b"BHS"):
        return "hl7"
    if head[:1] == b"{":
        return "ndjson"
    return "csv"


def column_mapping(text: str | None) -> ColumnMapping:
    """``--columns``: ``FIELD=COLUMN`` items and presets (matching.columns); ``generator``
    (the default) is the layout ``identity generate`` writes."""
    items = [
        "synth" if item.strip() == GENERATOR_PRESET else item
        for item in (text or GENERATOR_PRESET).split(",")
    ]
    return ColumnMapping.parse(",".join(items))


def read_csv(
    path: str | Path, mapping: ColumnMapping, *, domain: str | None = None
) -> Iterator[Item]:
    """The rows of a CSV read through ``mapping``; ``domain``: the namespace of rows whose
    mapping gives none (a file from one source). A file the mapping does not fit is refused
    before any row is read (InvalidInput)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        _check_header(mapping, header, path, domain)
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            row = mapping.row(dict(zip(header, values, strict=False)))
            if domain and not row["source_domain"]:
                row["source_domain"] = domain
            label = f"{row['source_domain']}|{row['mrn']}" if row["mrn"] else ""
            try:
                record = row_input(row)
            except (InvalidInput, ValueError) as exc:
                yield Item(reader.line_num, "record", None, label, reason_of(exc))
            else:
                yield Item(reader.line_num, "record", record, label)


def _check_header(
    mapping: ColumnMapping, header: list[str], path: str | Path, domain: str | None
) -> None:
    present = set(header)
    missing = [
        f"{column!r} (for {name})"
        for name, sources in mapping.columns.items()
        if name != "person_id" and name not in mapping.optional
        for column in sources
        if column not in present
    ]
    for name in ("source_domain", "mrn"):
        if name == "source_domain" and domain:
            continue
        if not any(c in present for c in mapping.columns.get(name, ())):
            missing.append(f"{'+'.join(mapping.columns.get(name, ())) or '(unmapped)'} "
                           f"(for {name}, required)")
    if missing:
        raise InvalidInput(
            f"{path}: column(s) {', '.join(dict.fromkeys(missing))} not in the file; its "
            f"columns are: {', '.join(header)} (map them with --columns FIELD=COLUMN,...; a "
            "file from one source may name its domain with --domain)"
        )


def read_ndjson(path: str | Path) -> Iterator[Item]:
    """One FHIR Patient per line (empty lines skipped)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                body = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield Item(number, "patient", None, "", f"not JSON: {exc}")
                continue
            if not isinstance(body, dict) or body.get("resourceType") != "Patient":
                kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
                yield Item(number, "patient", None, "", f"not a FHIR Patient ({kind})")
                continue
            label = next(
                (f"{i.get('system') or ''}|{i['value']}" for i in body.get("identifier") or ()
                 if isinstance(i, dict) and i.get("value")),
                "",
            )
            yield Item(number, "patient", body, label)


_BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")
_SEGMENT_END = re.compile(rb"[\r\n]+")


def hl7_messages(path: str | Path, block: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """The messages of an HL7 v2 file, numbered from 1: a batch (FHS/BHS ... BTS/FTS, the
    batch segments skipped) or messages one after the other, with or without MLLP framing
    (``<VT> ... <FS><CR>``), segments ended by CR, LF or CRLF. Read ``block`` bytes at a time.
    Segments before the first MSH that are not batch segments make a message of their own
    (refused by the tokenizer: no MSH)."""
    number = 0
    segments: list[bytes] = []
    rest = b""
    with open(path, "rb") as handle:
        first = True
        while True:
            chunk = handle.read(block)
            data = rest + chunk
            if first:
                data, first = data.removeprefix(b"\xef\xbb\xbf"), False
            data = data.replace(b"\x0b", b"\r").replace(b"\x1c", b"\r")
            parts = _SEGMENT_END.split(data)
            rest = parts.pop() if chunk else b""
            for segment in parts:
                if not segment.strip():
                    continue
                name = segment[:3]
                if name == b"MSH" or name in _BATCH_SEGMENTS:
                    if segments:
                        number += 1
                        yield number, b"\r".join(segments)
                    segments = [segment] if name == b"MSH" else []
                elif segments or name[:1].isalpha():
                    segments.append(segment)
            if not chunk:
                break
    if segments:
        number += 1
        yield number, b"\r".join(segments)


def read_hl7(path: str | Path) -> Iterator[Item]:
    """The registrations (ADT A01, A04, A05, A08, A28, A31) of an HL7 v2 file; any other
    message, or one that cannot be parsed, is a reject."""
    events = ", ".join(sorted(REGISTER_EVENTS))
    for number, raw in hl7_messages(path):
        try:
            message = parse_message(raw)
            kind, trigger = message.message_type, message.trigger_event
            pid = message.segment("PID")
            refs = pid_identifiers(pid, 3) if pid is not None else []
        except (ParseError, ValueError) as exc:
            yield Item(number, "message", None, "", reason_of(exc))
            continue
        label = _label(refs[0]) if refs else ""
        if kind != "ADT" or trigger not in REGISTER_EVENTS:
            yield Item(number, "message", None, label,
                       f"{kind}^{trigger} is not a registration (imported: ADT {events})")
            continue
        yield Item(number, "message", message, label)


def _label(ref: IdentifierRef) -> str:
    authority = ref.authority.namespace or ref.authority.oid or ""
    return f"{authority}|{ref.value}"


def read_file(
    path: str | Path,
    fmt: str | None = None,
    *,
    columns: ColumnMapping | None = None,
    domain: str | None = None,
) -> Iterator[Item]:
    """The items of one file in format ``fmt`` (None: :func:`detect_format`)."""
    fmt = fmt or detect_format(path)
    if fmt == "csv":
        return read_csv(path, columns or column_mapping(None), domain=domain)
    if fmt == "ndjson":
        return read_ndjson(path)
    if fmt == "hl7":
        return read_hl7(path)
    raise InvalidInput(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def count_records(path: str | Path, fmt: str) -> int:
    """About how many records a file holds (lines, or MSH segments), for the progress bar."""
    needle = b"MSH" if fmt == "hl7" else b"\n"
    count = 0
    tail = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            data = tail + chunk
            count += data.count(needle)
            tail = data[-2:] if needle == b"MSH" else b""
            count -= tail.count(needle)
    count += tail.count(needle)
    return max(count - (1 if fmt == "csv" else 0), 0)


# --- the run -------------------------------------------------------------------------------


@dataclass
class Summary:
    """What an import did, by record."""

    read: int = 0
    new_person: int = 0
    linked: int = 0
    review: int = 0
    updated: int = 0
    skipped: int = 0
    rejected: int = 0
    seconds: float = 0.0
    analyzed: int = 0  # planner statistics refreshed during the run
    steps: dict[str, float] = field(default_factory=dict)  # --bulk: seconds of each step
    rejects_files: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (
            f"{self.read} records in {self.seconds:.1f} s ({self.rate:.0f}/s): "
            f"{self.new_person} new person, {self.linked} linked, {self.review} review, "
            f"{self.updated} updated, {self.skipped} skipped, {self.rejected} rejected"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "rate": round(self.rate, 1)}

    def count_new(self, decision: Decision) -> None:
        """A record new to the index, by what became of it."""
        if decision == Decision.LINKED:
            self.linked += 1
        elif decision == Decision.REVIEW:
            self.review += 1
        else:
            self.new_person += 1


class Rejects:
    """The rejects file: one CSV row per refused record (file, line or message number, its
    identifier when it has one, why), written as they come."""

    HEADER = ("file", "position", "identifier", "reason")

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._handle: TextIO = open(  # noqa: SIM115 - closed by close()
            path, "w", newline="", encoding="utf-8", buffering=1
        )
        self._writer = csv.writer(self._handle)
        self._writer.writerow(self.HEADER)

    def add(self, file: str, item: Item, reason: str) -> None:
        self._writer.writerow((file, item.position, item.label, reason))

    def close(self) -> None:
        self._handle.close()


class Progress:
    """A tqdm bar on stderr (records, rate, ETA), or nothing when ``enabled`` is False."""

    def __init__(self, total: int | None, *, enabled: bool, description: str = "") -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, unit="rec", desc=description, file=sys.stderr,
                            smoothing=0.05, mininterval=0.5, dynamic_ncols=True)

    def advance(self, summary: Summary, count: int = 1) -> None:
        if self.bar is None:
            return
        self.bar.update(count)
        if count > 1 or summary.read % 500 == 0:
            self.bar.set_postfix(new=summary.new_person, linked=summary.linked,
                                 review=summary.review, skipped=summary.skipped,
                                 rejected=summary.rejected, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_wanted(quiet: bool, stream: TextIO | None = None) -> bool:
    """A bar unless ``--quiet`` or stderr is not a terminal."""
    stream = stream if stream is not None else sys.stderr
    return not quiet and stream.isatty()


_REJECTED = (IdentityError, FhirError, ParseError, ValueError)


@dataclass
class _Refusal:
    refused: bool = False


@dataclass
class _Staged:
    """A chunk read, resolved and normalised, ready for the set path."""

    count: int  # items of the chunk (rejects at resolution included)
    entries: list[tuple[Item, Register, str | None]] = field(default_factory=list)
    records: list[Incoming] = field(default_factory=list)  # aligned with entries
    prepared: list[Prepared] = field(default_factory=list)
    later: list[tuple[Item, Register, str | None]] = field(default_factory=list)


class Importer:
    """Registers the items of files through ``Register``, ``concurrency`` at a time."""

    def __init__(
        self,
        mpi: Mpi,
        *,
        source: str | None = None,
        update: bool = True,
        concurrency: int = 4,
        actor: str = "import",
        bulk: bool = False,
        workers: int = 1,
        chunk: int = CHUNK,
    ) -> None:
        self.mpi = mpi
        self.bulk = bulk
        self.chunk = max(1, chunk)
        self.loader = SetLoader(mpi.core, workers=workers) if bulk else None
        self.source = source
        self.update = update
        self.concurrency = max(1, concurrency)
        self.actor = actor
        self.feed = FeedHandler(mpi)
        self.summary = Summary()
        self._start_count = 0
        self._analyzed_at: int | None = None
        self._analysis: asyncio.Task[None] | None = None

    async def run(
        self,
        items: Iterable[Item],
        *,
        file: str,
        rejects: Rejects,
        progress: Progress | None = None,
    ) -> Summary:
        """Import ``items`` (of ``file``); rejects go to ``rejects``. A database that fails
        (StoreUnavailable) stops the run: what was committed stays, a re-run skips it."""
        started = time.perf_counter()
        if self._analyzed_at is None:
            async with self.mpi.db.connection() as conn:
                self._start_count = self._analyzed_at = await record_count(conn)
        if self.loader is not None:
            try:
                await self._run_sets(items, file, rejects, progress)
            finally:
                self.summary.seconds += time.perf_counter() - started
            return self.summary
        queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=self.concurrency * 8)

        async def produce() -> None:
            for item in items:
                await queue.put(item)
            for _ in range(self.concurrency):
                await queue.put(None)

        async def work() -> None:
            while (item := await queue.get()) is not None:
                await self._one(item, file, rejects)
                if progress is not None:
                    progress.advance(self.summary)
                if self._analysis is None and self._grown():
                    self._analysis = asyncio.create_task(self._analyze())

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                for _ in range(self.concurrency):
                    group.create_task(work())
        finally:
            if self._analysis is not None:
                await self._analysis
            self.summary.seconds += time.perf_counter() - started
        return self.summary

    def _created(self) -> int:
        s = self.summary
        return s.new_person + s.linked + s.review

    def _grown(self) -> bool:
        """The index has doubled (by at least ANALYZE_EVERY records) since its statistics were
        last refreshed: the plans of a registration must follow the tables as they grow."""
        assert self._analyzed_at is not None
        size = self._start_count + self._created()
        return size - self._analyzed_at >= max(ANALYZE_EVERY, self._analyzed_at)

    async def _analyze(self) -> None:
        size = self._start_count + self._created()
        async with self.mpi.db.connection() as conn:
            await analyze(conn)
        self._analyzed_at = size
        self._analysis = None
        self.summary.analyzed += 1

    # --- the set path (identity.mpi.bulk) ----------------------------------------------------

    async def _run_sets(
        self, items: Iterable[Item], file: str, rejects: Rejects, progress: Progress | None
    ) -> None:
        """Items a chunk at a time: the records new to the index matched and written as a set
        (one transaction per chunk), the others (already in the index, or repeated within the
        chunk) registered one by one through Register after it, as the feed would. While a
        chunk is written the next one is read and normalised (PostgreSQL works on the first
        meanwhile)."""
        batch: list[tuple[Item, Register, str | None]] = []
        loading: asyncio.Task[None] | None = None
        try:
            for count, item in enumerate(items, start=1):
                self.summary.read += 1
                if item.reject is not None:
                    self.summary.rejected += 1
                    rejects.add(file, item, item.reject)
                    if progress is not None:
                        progress.advance(self.summary)
                else:
                    with self._refusing(file, item, rejects) as refusal:
                        batch.append((item, *await self._command(item)))
                    if refusal.refused and progress is not None:
                        progress.advance(self.summary)
                if count % 256 == 0:
                    await asyncio.sleep(0)  # the chunk being written goes on
                if len(batch) >= self.chunk:
                    staged = await self._stage(batch, file, rejects)
                    if loading is not None:
                        await loading
                    loading = asyncio.create_task(self._load(staged, file, rejects, progress))
                    batch = []
            staged = await self._stage(batch, file, rejects)
            if loading is not None:
                await loading
            loading = None
            await self._load(staged, file, rejects, progress)
        finally:
            if loading is not None and not loading.done():
                loading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loading

    async def _stage(
        self, batch: list[tuple[Item, Register, str | None]], file: str, rejects: Rejects
    ) -> _Staged:
        """A chunk's records resolved as the feed resolves them (domain, source, other
        identifiers) and normalised; those the index holds, and those repeated in the chunk,
        put aside for Register."""
        assert self.loader is not None
        core = self.mpi.core
        fresh: dict[tuple[int, str], tuple[Item, Register, str | None, Incoming]] = {}
        staged = _Staged(count=len(batch))
        for item, command, source in batch:
            with self._refusing(file, item, rejects) as refusal:
                domain, record = await core.resolve_subject(command.subject, source)
                if isinstance(command.subject, RecordInput):
                    core.check_source(domain, source)
                others = await core.other_identifiers(record.other_identifiers, domain,
                                                      record.identifier.value)
            if refusal.refused:
                continue
            key = (domain.id, record.identifier.value)
            if key in fresh:
                staged.later.append((item, command, source))  # an update of the chunk's own
            else:
                fresh[key] = (item, command, source, Incoming(domain, record, others, source))
        async with self.mpi.db.connection() as conn:
            known = await BulkWriter(conn).existing(list(fresh))
        # already in the index: registered (updated, or skipped when unchanged) as the feed
        # does, after the chunk, as are the repeated ones
        staged.later[:0] = [entry[:3] for key, entry in fresh.items() if key in known]
        for key, entry in fresh.items():
            if key not in known:
                staged.entries.append(entry[:3])
                staged.records.append(entry[3])
        staged.prepared = await self.loader.prepare(staged.records)
        return staged

    async def _load(
        self, staged: _Staged, file: str, rejects: Rejects, progress: Progress | None
    ) -> None:
        assert self.loader is not None
        summary = self.summary
        loaded = await self.loader.load(staged.records, Envelope(actor=self.actor),
                                        staged.prepared)
        for step, seconds in loaded.seconds.items():
            summary.steps[step] = round(summary.steps.get(step, 0.0) + seconds, 3)
        if staged.count:
            log.info("event=import_chunk records=%d new=%d persons=%d reviews=%d pairs=%d "
                     "read_so_far=%d seconds=%s", len(staged.records), len(loaded.decisions),
                     loaded.persons, loaded.review_items, loaded.pairs, summary.read,
                     {k: round(v, 2) for k, v in loaded.seconds.items()})
        later = staged.later + [staged.entries[i] for i in loaded.known]  # loaded meanwhile
        for decision in loaded.decisions:
            summary.count_new(decision)
        if progress is not None:
            progress.advance(summary, staged.count - len(later))
        if self._grown():
            await self._analyze()
        for item, command, source in later:
            await self._register(item, file, rejects, command, source)
            if progress is not None:
                progress.advance(summary)

    @contextlib.contextmanager
    def _refusing(self, file: str, item: Item, rejects: Rejects) -> Iterator[_Refusal]:
        """A record refused in the block (a typed error, not the database failing) is a
        reject with its reason: ``refused`` says so after the block."""
        refusal = _Refusal()
        try:
            yield refusal
        except StoreUnavailable:
            raise
        except _REJECTED as exc:
            refusal.refused = True
            self.summary.rejected += 1
            rejects.add(file, item, reason_of(exc))

    def close(self) -> None:
        """Stop the set path's worker processes (if any)."""
        if self.loader is not None:
            self.loader.close()

    async def finish(self) -> None:
        """After the last file: what was loaded VACUUMed, with fresh statistics, and the name
        frequencies."""
        self.close()
        if self._created() or self.summary.updated:
            async with self.mpi.db.connection() as conn:
                await settle(conn)
            await self.mpi.refresh_term_frequencies()

    async def _one(self, item: Item, file: str, rejects: Rejects) -> None:
        summary = self.summary
        summary.read += 1
        if item.reject is not None:
            summary.rejected += 1
            rejects.add(file, item, item.reject)
            return
        with self._refusing(file, item, rejects) as refusal:
            command, source = await self._command(item)
        if not refusal.refused:
            await self._register(item, file, rejects, command, source)

    async def _register(
        self, item: Item, file: str, rejects: Rejects, command: Register, source: str | None
    ) -> None:
        """Register one record through the feed's Register command, counting what it did."""
        summary = self.summary
        with self._refusing(file, item, rejects) as refusal:
            if not self.update and await self._exists(command, source):
                summary.skipped += 1
                return
            result = await self.mpi.handle(command, Envelope(actor=self.actor, source=source))
        if refusal.refused:
            return
        if result.created:
            summary.count_new(result.decision)
        elif result.changed:
            summary.updated += 1
        else:
            summary.skipped += 1

    async def _command(self, item: Item) -> tuple[Register, str | None]:
        """The Register command of an item, and the source it is registered for."""
        if item.kind == "record":
            record: RecordInput = item.payload
            return Register(subject=record, replace=True), self._source_of([record.identifier])
        if item.kind == "patient":
            # as the FHIR door's update: the record's own identifier is the one the source may
            # assign in; the Patient replaces what is stored
            body = item.payload
            validate_patient(body)
            if not body.get("identifier"):
                raise FhirError(400, "required", "Patient.identifier is required (1..*)")
            if not body.get("name"):
                raise FhirError(400, "required", "Patient.name is required (1..*)")
            refs = body_identifiers(body)
            source = self._source_of(refs)
            primary = await self.mpi.own_identifier(refs, source)
            record = record_input(
                body, primary, enterprise_system=self.mpi.domains.enterprise.system
            )
            return Register(subject=record, replace=True), source
        message: Message = item.payload
        command, sender = self.feed.registration(message)
        return command, self.source or sender

    def _source_of(self, refs: Iterable[IdentifierRef]) -> str | None:
        """``--source``, else the first application the domain of the first identifier that is
        a record's own (not the enterprise's, not a national ID) names: the operator loads a
        file on behalf of the source that assigned its identifiers (None: a domain open to
        every source)."""
        if self.source is not None:
            return self.source
        for ref in refs:
            domain = self.mpi.domains.known(ref.authority)
            if domain is not None and not domain.is_enterprise and not domain.identifies_person:
                return domain.sources[0] if domain.sources else None
        return None

    async def _exists(self, command: Register, source: str | None) -> bool:
        subject = command.subject
        try:
            if isinstance(subject, Received):
                ref = await self.mpi.own_identifier(subject.identifiers, source)
            else:
                ref = subject.identifier
            await self.mpi.find_record(ref)
        except StoreUnavailable:
            raise
        except (NotFound, IdentityError):
            return False
        return True


__all__ = [
    "FORMATS",
    "GENERATOR_PRESET",
    "ColumnMappingError",
    "Importer",
    "Item",
    "Progress",
    "Rejects",
    "Summary",
    "column_mapping",
    "count_records",
    "detect_format",
    "hl7_messages",
    "progress_wanted",
    "read_file",
    "reason_of",
]
