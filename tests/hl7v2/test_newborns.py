"""Issue 18 item 6 over MLLP: newborns. A birth registration without PID-5, or with a placeholder
name (BABY GIRL ...), that carries the mother's identifier (PID-21, or NK1-33 of an NK1 whose
NK1-3 is MTH, HL7 table 0063) is accepted; PDQ finds it by the mother's identifier
(``@PID.21.1`` with ``@PID.21.4.*``); it is never linked automatically on demographics (twins
are born the same day to the same mother) unless it shares a person-identifying identifier.
Without a name and without a mother's identifier the message is refused as before. Real
sockets, real PostgreSQL."""

from __future__ import annotations

import pytest

from identity.errors import UnknownIdentifier
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.model import AuthorityRef, IdentifierRef
from tests.hl7v2.messages import (
    adt,
    errs,
    msa,
    pdq_query,
    pid3,
    pix_query,
    qak,
    reply,
    strictly_valid,
)

PID21 = "|" * 13  # after PID-8: the fourteenth field on is PID-21
HOME = "|||7 Cradle Ln^^Springfield^IL^62701||217-555-0142"  # PID-11, PID-13 after PID-8
NATIONAL = "^^^NATIONAL&2.16.840.1.113883.4.1&ISO^SS"


def nk1(relationship: str, identifier: str, set_id: int = 1) -> str:
    """NK1 with NK1-2 name, NK1-3 relationship (CE, table 0063) and NK1-33 identifiers."""
    return f"NK1|{set_id}|SMITH^JANE|{relationship}" + "|" * 30 + identifier


def with_segments(message: str, *segments: str) -> str:
    """``message`` with ``segments`` after PID (ADT_A01 / ADT_A05: PID [PD1] [NK1] PV1)."""
    head, _, tail = message.partition("\rPV1")
    return head + "".join("\r" + s for s in segments) + "\rPV1" + tail


def ref(namespace: str, value: str) -> IdentifierRef:
    return IdentifierRef(value=value, authority=AuthorityRef(namespace=namespace))


async def pdq_ids(client: MLLPClient, params: str) -> set[str]:
    raw = await client.send(pdq_query(params))
    answer = reply(raw)
    assert msa(answer) == "AA", raw
    if qak(answer) == "NF":
        return set()
    strictly_valid(raw)
    return {cx.split("&")[0] for pid in answer.segments("PID") for cx in pid3(pid)}


async def pix_ids(client: MLLPClient, query: str) -> set[str]:
    answer = reply(await client.send(pix_query(query)))
    assert msa(answer) == "AA"
    if qak(answer) == "NF":
        return set()
    return {cx.split("&")[0] for cx in pid3(answer.segments("PID")[0])}


async def test_nameless_newborn_with_PID_21_is_accepted_and_found_by_the_mothers_identifier(
    client: MLLPClient,
) -> None:
    a04 = adt("A04", "NB1^^^HOSPA", name="", dob="20261201", sex="F",
              extra_pid=f"{PID21}M100^^^HOSPB")
    answer = reply(await client.send(a04))
    assert msa(answer) == "AA", errs(answer)
    found = await pdq_ids(client, "@PID.21.1^M100~@PID.21.4.1^HOSPB")
    assert "NB1^^^HOSPA" in found
    assert "NB1^^^HOSPA" in await pdq_ids(
        client, "@PID.21.1^M100~@PID.21.4.2^1.2.3.4.5.2~@PID.21.4.3^ISO")
    assert await pdq_ids(client, "@PID.21.1^M100~@PID.21.4.1^LAB") == set()


async def test_placeholder_name_with_an_NK1_mother_is_accepted_and_found_by_her_identifier(
    service: Hl7Service, client: MLLPClient
) -> None:
    a28 = with_segments(
        adt("A28", "NB2^^^HOSPA", name="SMITH^BABY GIRL", dob="20261202", sex="F"),
        nk1("MTH^Mother^HL70063", "M200^^^HOSPB&1.2.3.4.5.2&ISO^MR"),
    )
    assert msa(reply(await client.send(a28))) == "AA"
    record = await service.mpi.find_record(ref("HOSPA", "NB2"))
    mother = record.demographics.mothers_identifier
    assert mother is not None and mother.value == "M200"
    assert "NB2^^^HOSPA" in await pdq_ids(client, "@PID.21.1^M200~@PID.21.4.1^HOSPB")


async def test_nameless_newborn_with_an_NK1_mother_is_accepted(client: MLLPClient) -> None:
    a01 = with_segments(
        adt("A01", "NB3^^^HOSPA", name="", dob="20261203", sex="M"),
        nk1("FTH^Father^HL70063", "F300^^^HOSPB", 1),  # the father's identifier is not hers
        nk1("mth", "M300^^^HOSPB", 2),
    )
    answer = reply(await client.send(a01))
    assert msa(answer) == "AA", errs(answer)
    assert "NB3^^^HOSPA" in await pdq_ids(client, "@PID.21.1^M300~@PID.21.4.1^HOSPB")
    assert await pdq_ids(client, "@PID.21.1^F300~@PID.21.4.1^HOSPB") == set()


async def test_no_name_and_no_mother_is_still_AE_101_at_PID_5(
    service: Hl7Service, client: MLLPClient
) -> None:
    plain = adt("A04", "NB4^^^HOSPA", name="", dob="20261204")
    father_only = with_segments(adt("A04", "NB5^^^HOSPA", name="", dob="20261204"),
                                nk1("FTH", "F500^^^HOSPB"))
    mother_without_id = with_segments(adt("A04", "NB6^^^HOSPA", name="", dob="20261204"),
                                      nk1("MTH", ""))
    for message in (plain, father_only, mother_without_id):
        answer = reply(await client.send(message))
        assert msa(answer) == "AE" and errs(answer) == [("PID^1^5", "101")]
    for value in ("NB4", "NB5", "NB6"):
        with pytest.raises(UnknownIdentifier):
            await service.mpi.find_record(ref("HOSPA", value))


async def test_invalid_NK1_33_authority_is_AE_102_there(client: MLLPClient) -> None:
    a04 = with_segments(adt("A04", "NB7^^^HOSPA", name="", dob="20261205"),
                        nk1("MTH", "M700^^^&&ISO"))
    answer = reply(await client.send(a04))
    assert msa(answer) == "AE" and errs(answer) == [("NK1^1^33^1^4", "102")]


async def test_placeholder_twins_are_never_linked_on_demographics(
    service: Hl7Service, client: MLLPClient
) -> None:
    """The same placeholder name, birth date, sex, home and mother from two sources: the same
    baby or her twin sister; a steward decides."""
    for pid, app in (("NT1^^^HOSPA", "ADT_A"), ("NT2^^^HOSPB", "ADT_B")):
        a04 = adt("A04", pid, name="SMITH^BABY GIRL", dob="20261206", sex="F", app=app,
                  extra_pid=f"{HOME}{'|' * 8}M800^^^HOSPB")
        assert msa(reply(await client.send(a04))) == "AA"
    assert "NT2^^^HOSPB" not in await pix_ids(client, "NT1^^^HOSPA")
    record = await service.mpi.find_record(ref("HOSPB", "NT2"))
    items = [i for i in await service.mpi.review_items() if i.record_id == record.id]
    assert any("newborn" in item.reason for item in items), [i.reason for i in items]


async def test_nameless_twins_are_never_linked_on_demographics(client: MLLPClient) -> None:
    for pid, app in (("NT3^^^HOSPA", "ADT_A"), ("NT4^^^HOSPB", "ADT_B")):
        a04 = adt("A04", pid, name="", dob="20261207", sex="M", app=app,
                  extra_pid=f"{HOME}{'|' * 8}M900^^^HOSPB")
        assert msa(reply(await client.send(a04))) == "AA"
    assert "NT4^^^HOSPB" not in await pix_ids(client, "NT3^^^HOSPA")


async def test_placeholder_newborns_sharing_a_national_id_are_linked(client: MLLPClient) -> None:
    """One identifier, one person: the rule forbids a link on demographics only."""
    for pid, app in ((f"NT5^^^HOSPA~111990001{NATIONAL}", "ADT_A"),
                     (f"NT6^^^HOSPB~111990001{NATIONAL}", "ADT_B")):
        a04 = adt("A04", pid, name="SMITH^BABY BOY", dob="20261208", sex="M", app=app,
                  extra_pid=f"{HOME}{'|' * 8}M950^^^HOSPB")
        assert msa(reply(await client.send(a04))) == "AA"
    assert "NT6^^^HOSPB" in await pix_ids(client, "NT5^^^HOSPA")


async def test_a_site_names_its_own_placeholders(start_service) -> None:
    """`[matching] placeholder_names`: a desk that writes BÉBÉ for a newborn not yet named
    (folded, case ignored) keeps such twins apart; the default list has no BEBE."""
    service = await start_service(matching={"placeholder_names": ["Bébé", "Nouveau-né"]})
    async with MLLPClient("127.0.0.1", service.port, timeout=10.0) as client:
        for pid, app in (("NT7^^^HOSPA", "ADT_A"), ("NT8^^^HOSPB", "ADT_B")):
            a04 = adt("A04", pid, name="TREMBLAY^BEBE", dob="20261209", sex="F", app=app,
                      extra_pid=f"{HOME}{'|' * 8}M970^^^HOSPB")
            assert msa(reply(await client.send(a04))) == "AA"
        assert "NT8^^^HOSPB" not in await pix_ids(client, "NT7^^^HOSPA")
    assert service.mpi.settings.matching.placeholder_names == ["BEBE", "NOUVEAU NE"]


async def test_a_placeholder_then_the_real_name_goes_to_a_steward(
    service: Hl7Service, client: MLLPClient
) -> None:
    """BABY GIRL SMITH at birth, then EMMA SMITH from the clinic with the same birth date,
    home and mother: the baby named, or her twin; a review item, not a link, not refused."""
    for pid, name, app in (("NT9^^^HOSPA", "SMITH^BABY GIRL", "ADT_A"),
                           ("NT10^^^HOSPB", "SMITH^EMMA", "ADT_B")):
        a04 = adt("A04", pid, name=name, dob="20261210", sex="F", app=app,
                  extra_pid=f"{HOME}{'|' * 8}M990^^^HOSPB")
        assert msa(reply(await client.send(a04))) == "AA"
    assert "NT10^^^HOSPB" not in await pix_ids(client, "NT9^^^HOSPA")
    record = await service.mpi.find_record(ref("HOSPB", "NT10"))
    assert [i for i in await service.mpi.review_items() if i.record_id == record.id]
