"""Reads from a streaming replica (``[database] replica_url``), with read-your-writes.

The shared test server allows no replication, so this module starts a primary and a streaming
replica of its own (``initdb``, ``pg_basebackup -R -X stream``) in a temporary directory, and
stops both with ``pg_ctl stop -m immediate`` at the end.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from identity.config import MllpSettings, Settings
from identity.errors import UnknownIdentifier
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.mpi import Envelope, Mpi, Register
from identity.store.db import Database
from identity.store.migrate import migrate
from tests.conftest import DEMO_DOMAINS
from tests.fhir.conftest import HOSPA, patient, serve
from tests.hl7v2.messages import adt, msa, pix_query, qak, reply
from tests.waiting import eventually

from .helpers import person, ref

WRITER = "hl7:ADT_A|HOSP"
OTHER = "fhir:someone-else"
DATABASE = "identity_replica"


def _bin_dir() -> str | None:
    """PostgreSQL's programs: pgserver's own (installed with the package, as in CI), else a
    server installed on the machine."""
    candidates = []
    try:
        import pgserver

        candidates.append(os.path.join(os.path.dirname(pgserver.__file__), "pginstall", "bin"))
    except ImportError:
        pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if all(os.path.exists(os.path.join(directory, p))
               for p in ("initdb", "pg_ctl", "pg_basebackup")):  # fmt: skip
            return directory
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A primary and its streaming replica, each on 127.0.0.1 and a port of its own."""

    bin_dir: str
    base: Path
    user: str | None
    primary_port: int
    replica_port: int

    def url(self, port: int, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    @property
    def primary_url(self) -> str:
        return self.url(self.primary_port)

    @property
    def replica_url(self) -> str:
        return self.url(self.replica_port)

    def run(self, program: str, *args: str) -> None:
        subprocess.run([os.path.join(self.bin_dir, program), *args], check=True,
                       capture_output=True, timeout=60, user=self.user)  # fmt: skip

    def start(self, name: str, port: int) -> None:
        data = str(self.base / name)
        self.run("pg_ctl", "-D", data, "-l", str(self.base / f"{name}.log"), "-w", "-t", "30",
                 "-o", f"-c port={port} -c listen_addresses=127.0.0.1 "
                       f"-c unix_socket_directories={self.base}",
                 "start")  # fmt: skip

    def stop(self, name: str) -> None:
        try:
            self.run("pg_ctl", "-D", str(self.base / name), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass  # not running


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL programs (initdb, pg_ctl, pg_basebackup)")
    user = None
    if os.geteuid() == 0:  # initdb refuses root: run the servers as pgserver's own user
        from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        user = "pgserver"
        ensure_user_exists(user)
        # that user must reach the programs (under /root when pip installed them as root), as
        # the embedded server arranges for itself: not only when it ran first
        ensure_prefix_permissions(Path(bin_dir) / "initdb")
    base = Path(tempfile.mkdtemp(prefix="identity-replica-"))
    if user is not None:
        shutil.chown(base, user)
    c = Cluster(bin_dir, base, user, _free_port(), _free_port())
    try:
        c.run("initdb", "-D", str(base / "primary"), "-U", "postgres", "--auth=trust",
              "--no-sync", "-E", "UTF8", "--locale=C")  # fmt: skip
        with open(base / "primary" / "postgresql.conf", "a") as conf:
            conf.write("wal_level = replica\nmax_wal_senders = 4\nfsync = off\n"
                       "shared_buffers = 32MB\nhot_standby = on\n")  # fmt: skip
        with open(base / "primary" / "pg_hba.conf", "a") as hba:
            hba.write("local replication all trust\n"
                      "host replication all 127.0.0.1/32 trust\n")  # fmt: skip
        c.start("primary", c.primary_port)
        c.run("pg_basebackup", "-D", str(base / "replica"), "-R", "-X", "stream", "-c", "fast",
              "-h", "127.0.0.1", "-p", str(c.primary_port), "-U", "postgres")  # fmt: skip
        c.start("replica", c.replica_port)
        yield c
    finally:
        c.stop("replica")
        c.stop("primary")
        shutil.rmtree(base, ignore_errors=True)


async def _lsn(url: str, function: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(f"SELECT pg_wal_lsn_diff({function}(), '0/0')::bigint"))
    finally:
        await conn.close()


async def caught_up(c: Cluster) -> None:
    """Wait until the replica has replayed all the primary has written."""
    target = await _lsn(c.url(c.primary_port, "postgres"), "pg_current_wal_lsn")
    replica = c.url(c.replica_port, "postgres")

    async def replayed() -> bool:
        return await _lsn(replica, "pg_last_wal_replay_lsn") >= target

    await eventually(replayed, within=10, what="the replica replayed the primary's WAL")


async def on_replica(c: Cluster, sql: str) -> Any:
    conn = await asyncpg.connect(c.url(c.replica_port, "postgres"))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def migrated(cluster: Cluster) -> Cluster:
    conn = await asyncpg.connect(cluster.url(cluster.primary_port, "postgres"))
    try:
        await conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(cluster.primary_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    assert await on_replica(cluster, "SELECT pg_is_in_recovery()")
    await caught_up(cluster)
    return cluster


async def _mpi(db: Database) -> Mpi:
    mpi = Mpi(db, Settings(domains=DEMO_DOMAINS))
    await mpi.start()
    return mpi


@pytest.fixture
async def replicated(migrated: Cluster) -> AsyncIterator[Mpi]:
    """An Mpi on the primary with the replica for the doors' queries (lag up to 60 s: replay
    is paused for seconds in these tests)."""
    db = await Database.connect(migrated.primary_url, min_size=1, max_size=4,
                                replica_url=migrated.replica_url, replica_max_lag=60)  # fmt: skip
    mpi = await _mpi(db)
    yield mpi
    await mpi.stop()
    await db.close()
    if await on_replica(migrated, "SELECT pg_is_wal_replay_paused()"):
        await on_replica(migrated, "SELECT pg_wal_replay_resume()")


async def test_the_settings_open_the_replica(migrated: Cluster) -> None:
    from identity.app import open_database

    settings = Settings(database={"url": migrated.primary_url, "min_connections": 1,
                                  "replica_url": migrated.replica_url, "replica_max_lag": 2.5,
                                  "replica_max_connections": 3})  # fmt: skip
    db, embedded = await open_database(settings)
    try:
        assert embedded is None and db.replica is not None
        assert (db.replica.max_lag, db.replica.pool.get_max_size()) == (2.5, 3)
        assert await db.query(lambda c: c.fetchval("SELECT pg_is_in_recovery()"), caller=None)
    finally:
        await db.close()
    plain, _ = await open_database(Settings(database={"url": migrated.primary_url,
                                                      "min_connections": 1}))  # fmt: skip
    try:
        assert plain.replica is None
    finally:
        await plain.close()


def served(mpi: Mpi) -> dict[str, int]:
    assert mpi.db.replica is not None
    return dict(mpi.db.replica.served)


async def test_queries_are_served_by_the_replica(replicated: Mpi, migrated: Cluster) -> None:
    mpi = replicated
    await mpi.handle(Register(subject=person("HOSPA", "R1")), Envelope(actor=WRITER,
                                                                        source="ADT_A"))
    await caught_up(migrated)
    before = served(mpi)
    with mpi.query_for(OTHER):
        xref = await mpi.cross_references(ref("HOSPA", "R1"))
        record = await mpi.find_record(ref("HOSPA", "R1"))
        person_ = await mpi.get_person(xref.person_id)
    assert record.person_id == person_.id == xref.person_id
    after = served(mpi)
    assert after["replica"] == before["replica"] + 3
    assert after["primary"] == before["primary"]
    # the replica's own view of who reads from it
    names = await on_replica(
        migrated, "SELECT array_agg(application_name) FROM pg_stat_activity "
                  f"WHERE datname = '{DATABASE}'")  # fmt: skip
    assert "identity-replica-reads" in names
    # reads outside a door's query (write paths, the steward) stay on the primary
    await mpi.find_record(ref("HOSPA", "R1"))
    assert served(mpi) == after


async def test_a_writer_reads_its_own_change_while_the_replica_is_behind(
    replicated: Mpi, migrated: Cluster
) -> None:
    mpi = replicated
    await caught_up(migrated)
    await on_replica(migrated, "SELECT pg_wal_replay_pause()")
    await mpi.handle(Register(subject=person("HOSPA", "R2")), Envelope(actor=WRITER,
                                                                        source="ADT_A"))
    before = served(mpi)

    # another caller reads the replica, which has not replayed the change
    with mpi.query_for(OTHER), pytest.raises(UnknownIdentifier):
        await mpi.cross_references(ref("HOSPA", "R2"))
    assert served(mpi)["replica"] == before["replica"] + 1

    # the writer reads its own change: from the primary, since the replica is behind it
    with mpi.query_for(WRITER):
        xref = await mpi.cross_references(ref("HOSPA", "R2"))
    assert xref.source_record_id is not None
    assert served(mpi)["primary"] == before["primary"] + 1

    # replay resumes: both read it from the replica
    await on_replica(migrated, "SELECT pg_wal_replay_resume()")
    await caught_up(migrated)
    middle = served(mpi)
    for caller in (OTHER, WRITER):
        with mpi.query_for(caller):
            again = await mpi.cross_references(ref("HOSPA", "R2"))
        assert again.person_id == xref.person_id
    assert served(mpi) == {"replica": middle["replica"] + 2, "primary": middle["primary"]}


async def _received_not_replayed(c: Cluster) -> None:
    """Wait until the replica has received WAL it has not replayed (replay paused)."""

    async def behind() -> bool:
        return bool(await on_replica(
            c, "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()"))  # fmt: skip

    await eventually(behind, within=10, what="the replica received WAL it has not replayed")


async def test_changes_of_an_atomic_block_are_the_writers_own(
    replicated: Mpi, migrated: Cluster
) -> None:
    mpi = replicated
    await caught_up(migrated)
    await on_replica(migrated, "SELECT pg_wal_replay_pause()")
    envelope = Envelope(actor=WRITER, source="ADT_A")
    async with mpi.atomic():
        await mpi.handle(Register(subject=person("HOSPA", "R3")), envelope)
        await mpi.handle(Register(subject=person("HOSPA", "R4", family="Jones")), envelope)
    with mpi.query_for(WRITER):
        assert (await mpi.find_record(ref("HOSPA", "R4"))).identifier == "R4"
    with mpi.query_for(OTHER), pytest.raises(UnknownIdentifier):
        await mpi.find_record(ref("HOSPA", "R4"))


async def test_a_replica_lagging_beyond_max_lag_serves_no_one(migrated: Cluster) -> None:
    db = await Database.connect(migrated.primary_url, min_size=1, max_size=4,
                                replica_url=migrated.replica_url,
                                replica_max_lag=0.001)  # fmt: skip
    try:
        mpi = await _mpi(db)
        await caught_up(migrated)
        await on_replica(migrated, "SELECT pg_wal_replay_pause()")
        await mpi.handle(Register(subject=person("HOSPA", "R5")), Envelope(actor=WRITER,
                                                                            source="ADT_A"))
        await _received_not_replayed(migrated)
        with mpi.query_for(OTHER):  # not the writer, yet it sees the change: the primary's
            assert (await mpi.find_record(ref("HOSPA", "R5"))).identifier == "R5"
        assert served(mpi) == {"replica": 0, "primary": 1}
        await mpi.stop()
    finally:
        await db.close()
        await on_replica(migrated, "SELECT pg_wal_replay_resume()")


async def test_an_unreachable_replica_leaves_reads_to_the_primary(
    migrated: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="identity.store")
    nowhere = migrated.url(_free_port())
    db = await Database.connect(migrated.primary_url, min_size=1, max_size=4,
                                replica_url=nowhere)  # starts: the replica's pool connects later
    try:
        mpi = await _mpi(db)
        await mpi.handle(Register(subject=person("HOSPA", "R6")), Envelope(actor=WRITER,
                                                                            source="ADT_A"))
        for caller in (OTHER, WRITER, OTHER):
            with mpi.query_for(caller):
                assert (await mpi.find_record(ref("HOSPA", "R6"))).identifier == "R6"
        assert served(mpi) == {"replica": 0, "primary": 3}
        warnings = [r for r in caplog.records if "replica_unused" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert await db.healthy() == (True, await db.pool.fetchval("SHOW server_version"))
        await mpi.stop()
    finally:
        await db.close()


async def test_the_doors_query_the_replica_for_others_and_the_primary_for_the_writer(
    replicated: Mpi, migrated: Cluster
) -> None:
    """Through the doors, on real sockets: an MLLP sender's PIX query right after its A04, a
    FHIR client's search, read and $ihe-pix right after its PUT, with replay paused."""
    mpi = replicated
    await caught_up(migrated)
    await on_replica(migrated, "SELECT pg_wal_replay_pause()")
    hl7 = Hl7Service(mpi, mpi.db, mpi.settings.model_copy(
        update={"mllp": MllpSettings(port=0, idle_timeout=30.0)}))  # fmt: skip
    await hl7.start()
    try:
        async with MLLPClient("127.0.0.1", hl7.port, timeout=10.0) as client:
            assert msa(reply(await client.send(adt("A04", "H1^^^HOSPA", app="ADT_A")))) == "AA"
            own = reply(await client.send(pix_query("H1^^^HOSPA", app="ADT_A")))
            other = reply(await client.send(pix_query("H1^^^HOSPA", app="PIXC")))
        assert qak(own) == "OK"  # the sender (ADT_A at FAC) sees its patient: the primary
        assert msa(other) == "AE"  # another sender reads the replica, not there yet
    finally:
        await hl7.stop(grace=2.0)

    async with serve(mpi) as fhir:
        status, _, _ = await fhir.put_patient(HOSPA, "F1", patient(HOSPA, "F1"), client="ADT_A")
        assert status == 201
        for client, total in (("ADT_A", 1), ("PORTAL", 0)):
            status, bundle, _ = await fhir.call("GET", "/Patient", client=client,
                                                params={"identifier": f"{HOSPA}|F1"})
            assert (status, bundle["total"]) == (200, total), client
        status, pix, _ = await fhir.call("GET", "/Patient/$ihe-pix", client="PORTAL",
                                         params={"sourceIdentifier": f"{HOSPA}|F1"})
        assert status == 404
        status, pix, _ = await fhir.call("GET", "/Patient/$ihe-pix", client="ADT_A",
                                         params={"sourceIdentifier": f"{HOSPA}|F1"})
        assert status == 200
        record = await mpi.find_record(ref("HOSPA", "F1"))
        for client, wanted in (("ADT_A", 200), ("PORTAL", 404)):
            status, _, _ = await fhir.call("GET", f"/Patient/{record.id}", client=client)
            assert status == wanted, client

        await on_replica(migrated, "SELECT pg_wal_replay_resume()")
        await caught_up(migrated)
        before = served(mpi)
        status, bundle, _ = await fhir.call("GET", "/Patient", client="PORTAL",
                                            params={"identifier": f"{HOSPA}|F1"})
        assert (status, bundle["total"]) == (200, 1)
        assert served(mpi)["replica"] > before["replica"]
        assert served(mpi)["primary"] == before["primary"]


async def test_a_replica_stopped_under_open_connections(
    replicated: Mpi, migrated: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Last in this module: it stops the replica (and starts it again)."""
    mpi = replicated
    await mpi.handle(Register(subject=person("HOSPA", "R7")), Envelope(actor=WRITER,
                                                                        source="ADT_A"))
    await caught_up(migrated)
    with mpi.query_for(OTHER):
        await mpi.find_record(ref("HOSPA", "R7"))  # a pooled connection to the replica
    assert served(mpi)["replica"] == 1
    migrated.stop("replica")
    try:
        assert mpi.db.replica is not None
        replica = mpi.db.replica
        replica.status_ttl, replica.checked = 3600.0, time.monotonic()  # believed fine:
        # the read itself, on a pooled connection the stop closed, fails and is run again
        caplog.set_level(logging.INFO, logger="identity.store")
        for caller in (OTHER, WRITER):
            with mpi.query_for(caller):
                assert (await mpi.find_record(ref("HOSPA", "R7"))).identifier == "R7"
        assert served(mpi) == {"replica": 1, "primary": 2}
        assert any("replica_unused" in r.getMessage() for r in caplog.records)
        # started again, it is found by a probe in the background and serves again
        replica.retry_after = 0.05
        migrated.start("replica", migrated.replica_port)
        await caught_up(migrated)

        async def served_by_replica() -> bool:
            before = served(mpi)["replica"]
            with mpi.query_for(OTHER):
                assert (await mpi.find_record(ref("HOSPA", "R7"))).identifier == "R7"
            return served(mpi)["replica"] > before

        await eventually(served_by_replica, within=10, interval=0.05,
                         what="the replica serves again")  # fmt: skip
        assert any("replica_back" in r.getMessage() for r in caplog.records)
    finally:
        if not await _running(migrated):
            migrated.start("replica", migrated.replica_port)


async def _running(c: Cluster) -> bool:
    try:
        return bool(await on_replica(c, "SELECT 1"))
    except (OSError, asyncpg.PostgresError):
        return False
