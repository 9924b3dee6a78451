"""Issue 18 item 8 over MLLP: records that share an identifier in a person-identifying domain
(a PID-3 repetition, or PID-19 mapped by ``[hl7] pid19_domain``) are one person, as a PIX
query shows; a hard rule against the link leaves a review item. Real sockets, real
PostgreSQL."""

from __future__ import annotations

from typing import Any

from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.model import AuthorityRef, IdentifierRef
from tests.conftest import DEMO_DOMAINS
from tests.hl7v2.messages import adt, msa, pid3, pix_query, qak, reply

NATIONAL = "^^^NATIONAL&2.16.840.1.113883.4.1&ISO^SS"
NHS_OID = "2.16.840.1.113883.2.1.4.1"
PID19 = "|" * 11  # after PID-8: the twelfth field on is PID-19


async def pix_ids(client: MLLPClient, query: str) -> list[str]:
    answer = reply(await client.send(pix_query(query)))
    assert msa(answer) == "AA"
    if qak(answer) == "NF":
        return []
    return [cx.split("&")[0] for cx in pid3(answer.segments("PID")[0])]


async def test_same_national_id_in_PID_3_links_a_married_name_and_a_date_typo(
    client: MLLPClient,
) -> None:
    a = adt("A04", f"NA1^^^HOSPA~111223333{NATIONAL}", name="SMITH^JOHN")
    b = adt("A04", f"NB1^^^HOSPB~111223333{NATIONAL}", name="JONES^JOHN", dob="19800321",
            app="ADT_B")
    assert msa(reply(await client.send(a))) == "AA"
    assert msa(reply(await client.send(b))) == "AA"
    assert "NB1^^^HOSPB" in await pix_ids(client, "NA1^^^HOSPA")


async def test_national_id_with_no_name_in_common_is_left_to_a_steward(
    service: Hl7Service, client: MLLPClient
) -> None:
    a = adt("A04", f"NA2^^^HOSPA~111224444{NATIONAL}", name="SMITH^JOHN")
    b = adt("A04", f"NB2^^^HOSPB~111224444{NATIONAL}", name="OKAFOR^CHIDI", dob="19710101",
            app="ADT_B")
    assert msa(reply(await client.send(a))) == "AA"
    assert msa(reply(await client.send(b))) == "AA"
    assert "NB2^^^HOSPB" not in await pix_ids(client, "NA2^^^HOSPA")
    record = await service.mpi.find_record(
        IdentifierRef(value="NB2", authority=AuthorityRef(namespace="HOSPB")))
    items = [i for i in await service.mpi.review_items() if i.record_id == record.id]
    assert any("neither family nor given name agrees" in item.reason for item in items)


async def test_PID_19_goes_to_the_configured_domain_and_links(start_service: Any) -> None:
    domains = [*DEMO_DOMAINS, {"namespace": "NHS", "oid": NHS_OID, "identifies_person": True}]
    service = await start_service(domains=domains, hl7={"pid19_domain": "NHS"})
    a = adt("A04", "NA3^^^HOSPA", name="SMITH^JOHN", extra_pid=f"{PID19}9434765919")
    b = adt("A04", "NB3^^^HOSPB", name="JONES^JOHN", dob="19800321",
            extra_pid=f"{PID19}9434765919", app="ADT_B")
    async with MLLPClient("127.0.0.1", service.port, timeout=10.0) as client:
        assert msa(reply(await client.send(a))) == "AA"
        assert msa(reply(await client.send(b))) == "AA"
        ids = await pix_ids(client, "NA3^^^HOSPA")
        assert "NB3^^^HOSPB" in ids and "9434765919^^^NHS" in ids
        assert "NA3^^^HOSPA" in await pix_ids(client, f"9434765919^^^&{NHS_OID}&ISO")


async def test_PID_19_goes_to_the_SSA_domain_by_default(client: MLLPClient) -> None:
    a = adt("A04", "NA4^^^HOSPA", extra_pid=f"{PID19}123-45-0004")
    assert msa(reply(await client.send(a))) == "AA"
    assert "123-45-0004^^^NATIONAL" in await pix_ids(client, "NA4^^^HOSPA")
