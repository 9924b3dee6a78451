"""ITI-9 PIX Query: the five cases of TF2 ITI-9, over real sockets, real PostgreSQL."""

from __future__ import annotations

import pytest

from identity.hl7v2.handler import Hl7Handler
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.model import AuthorityRef, IdentifierRef
from identity.mpi import Mpi
from identity.store.db import Database
from tests.hl7v2.messages import adt, errs, msa, pid3, pix_query, qak, reply, strictly_valid

NATIONAL = "^^^NATIONAL&2.16.840.1.113883.4.1&ISO"


@pytest.fixture
async def linked(service: Hl7Service, client: MLLPClient) -> str:
    """HOSPA X1 and LAB Y1 share the national ID N1 (person-identifying): one person."""
    for app, pid in (("ADT_A", f"X1^^^HOSPA~N1{NATIONAL}"), ("LIS", f"Y1^^^LAB~N1{NATIONAL}")):
        assert msa(reply(await client.send(adt("A04", pid, app=app)))) == "AA"
    xref = await service.mpi.cross_references(
        IdentifierRef(value="X1", authority=AuthorityRef(namespace="HOSPA")))
    return xref.enterprise_id


async def test_pix_known_id_returns_its_cross_references_fully_qualified(
    linked: str, client: MLLPClient
) -> None:
    answer = reply(await client.send(pix_query("X1^^^HOSPA", tag="T1")))
    assert msa(answer) == "AA" and qak(answer) == "OK"
    assert answer.segment("QAK").value(1) == "T1"  # type: ignore[union-attr]
    assert answer.msh.field(9) == "RSP^K23^RSP_K23"
    qpd = answer.segment("QPD")
    assert qpd is not None and qpd.field(3) == "X1^^^HOSPA"
    [pid] = answer.segments("PID")
    ids = pid3(pid)
    assert "Y1^^^LAB&1.2.3.4.5.3&ISO" in ids
    assert f"{linked}^^^MPI&1.3.6.1.4.1.21367.2026.1.1&ISO" in ids
    assert not any(i.startswith("X1^") for i in ids)  # never the queried identifier
    assert pid.field(5) == "~^^^^^^S"
    assert [i for i in range(1, len(pid) + 1) if pid.field(i)] == [3, 5]


async def test_pix_rsp_parses_as_hl7apy_RSP_K23(linked: str, client: MLLPClient) -> None:
    raw = await client.send(pix_query("X1^^^&1.2.3.4.5.1&ISO"))  # OID-only authority
    parsed = strictly_valid(raw)
    assert parsed.msh.msh_9.to_er7() == "RSP^K23^RSP_K23"
    assert parsed.qak.qak_2.to_er7() == "OK"


async def test_pix_target_domain_filter(linked: str, client: MLLPClient) -> None:
    answer = reply(await client.send(pix_query("X1^^^HOSPA", domains="^^^LAB")))
    [pid] = answer.segments("PID")
    assert pid3(pid) == ["Y1^^^LAB&1.2.3.4.5.3&ISO"]


async def test_pix_known_id_nothing_in_requested_domain_is_AA_NF(
    linked: str, client: MLLPClient
) -> None:
    answer = reply(await client.send(pix_query("X1^^^HOSPA", domains="^^^HOSPB")))
    assert (msa(answer), qak(answer)) == ("AA", "NF")
    assert answer.segments("PID") == [] and answer.segments("ERR") == []


async def test_pix_unknown_id_in_known_domain_is_AE_204_at_QPD_3_1_1(
    linked: str, client: MLLPClient
) -> None:
    answer = reply(await client.send(pix_query("NOPE^^^HOSPA")))
    assert (msa(answer), qak(answer)) == ("AE", "AE")
    assert errs(answer) == [("QPD^1^3^1^1", "204")]
    assert answer.segments("PID") == []


async def test_pix_unknown_source_domain_is_AE_204_at_QPD_3_1_4(client: MLLPClient) -> None:
    answer = reply(await client.send(pix_query("X1^^^NOWHERE")))
    assert (msa(answer), qak(answer)) == ("AE", "AE")
    assert errs(answer) == [("QPD^1^3^1^4", "204")]


async def test_pix_unknown_target_domain_is_AE_204_at_QPD_4_repetition(
    linked: str, client: MLLPClient
) -> None:
    raw = await client.send(pix_query("X1^^^HOSPA", domains="^^^LAB~^^^NOWHERE"))
    strictly_valid(raw)
    answer = reply(raw)
    assert (msa(answer), qak(answer)) == ("AE", "AE")
    assert errs(answer) == [("QPD^1^4^2", "204")]


async def test_pix_enterprise_domain_is_queryable(linked: str, client: MLLPClient) -> None:
    answer = reply(await client.send(pix_query(f"{linked}^^^MPI")))
    [pid] = answer.segments("PID")
    assert set(pid3(pid)) >= {"X1^^^HOSPA&1.2.3.4.5.1&ISO", "Y1^^^LAB&1.2.3.4.5.3&ISO"}


async def test_pix_sees_a_feed_at_once(client: MLLPClient) -> None:
    await client.send(adt("A04", "Z1^^^HOSPA"))
    answer = reply(await client.send(pix_query("Z1^^^HOSPA")))
    assert qak(answer) == "OK"
    assert [i.split("^^^")[1].split("&")[0] for i in pid3(answer.segment("PID"))] == ["MPI"]  # type: ignore[arg-type]


async def test_pix_accepts_namespace_and_oid_together(linked: str, client: MLLPClient) -> None:
    answer = reply(await client.send(pix_query("X1^^^HOSPA&1.2.3.4.5.1&ISO")))
    assert qak(answer) == "OK"


async def test_pix_with_database_unreachable_is_AE_AR_207(
    service: Hl7Service, run_database_url: str, schema: str
) -> None:
    broken_db = await Database.connect(run_database_url, min_size=1, max_size=2,
                                       server_settings={"search_path": schema})
    broken = Mpi(broken_db, service.settings)
    await broken.start()
    await broken_db.close()
    answer = reply(await Hl7Handler(broken, service.settings).handle(
        pix_query("X1^^^HOSPA").encode()))
    assert (msa(answer), qak(answer)) == ("AE", "AR") and errs(answer) == [("", "207")]
