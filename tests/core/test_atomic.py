"""Several core commands as one transaction (``Mpi.atomic``), against a real PostgreSQL."""

from __future__ import annotations

import pytest

from identity.errors import SourceNotAuthorized, UnknownIdentifier
from identity.model import AuthorityRef
from identity.mpi import Envelope, Merge, Mpi, Register

from .helpers import person, ref

A = Envelope(source="ADT_A", actor="fhir:ADT_A")


async def test_all_commands_commit_together(mpi: Mpi) -> None:
    async with mpi.atomic():
        first = await mpi.handle(Register(subject=person("HOSPA", "T1")), A)
        # reads inside the block see its own writes
        assert (await mpi.find_record(ref("HOSPA", "T1"))).id == first.record.id
        await mpi.handle(
            Register(subject=person("HOSPA", "T2", given="Mary", birth_date="1950-01-01")), A
        )
        await mpi.handle(Merge.within(AuthorityRef(namespace="HOSPA"), "T2", "T1"), A)
    assert (await mpi.find_record(ref("HOSPA", "T1"))).id == first.record.id
    assert (await mpi.find_record(ref("HOSPA", "T2"))).status.value == "merged"


async def test_a_failure_rolls_back_every_command(mpi: Mpi) -> None:
    with pytest.raises(SourceNotAuthorized):
        async with mpi.atomic():
            await mpi.handle(Register(subject=person("HOSPA", "T3")), A)
            await mpi.handle(
                Register(subject=person("HOSPB", "T4")), A
            )  # ADT_A may not assign in HOSPB
    with pytest.raises(UnknownIdentifier):
        await mpi.find_record(ref("HOSPA", "T3"))
    # history and outbox rows of the rolled-back command are gone with it
    async with mpi.db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM history") == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0


async def test_a_caught_failure_inside_keeps_the_rest(mpi: Mpi) -> None:
    """Each command is a savepoint: one that fails and is handled leaves the block usable."""
    async with mpi.atomic():
        await mpi.handle(Register(subject=person("HOSPA", "T5")), A)
        with pytest.raises(SourceNotAuthorized):
            await mpi.handle(Register(subject=person("HOSPB", "T6")), A)
        with pytest.raises(ValueError):
            async with mpi.db.transaction() as conn:  # a savepoint of the block
                await conn.execute("INSERT INTO processed_message (sender, control_id, reply)"
                                   " VALUES ('X', '1', 'r')")
                raise ValueError("undo this savepoint only")
        await mpi.handle(
            Register(subject=person("HOSPA", "T7", given="Ann", birth_date="1990-05-05")), A
        )
    async with mpi.db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM processed_message") == 0
    assert (await mpi.find_record(ref("HOSPA", "T5"))).identifier == "T5"
    assert (await mpi.find_record(ref("HOSPA", "T7"))).identifier == "T7"


async def test_atomic_blocks_do_not_nest(mpi: Mpi) -> None:
    async with mpi.atomic():
        with pytest.raises(RuntimeError):
            async with mpi.atomic():
                pass
