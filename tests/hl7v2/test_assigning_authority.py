"""Issue 18 item 4: an assigning authority (HD) that is present but not valid is refused with
ERR-3 102 at the HD's position, in every place an HD names a domain (ITI-8/30 PID-3, MRG-1,
PID-21; ITI-9 QPD-3, QPD-4; ITI-21 @PID.3.4, QPD-8); only an HD whose every part is empty is
completed from the sender's configuration. Real sockets, real PostgreSQL."""

from __future__ import annotations

import pytest

from identity.errors import NotFound, UnknownIdentifier
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.pid import authority_problem
from identity.hl7v2.service import Hl7Service
from identity.model import AuthorityRef, Domain, IdentifierRef
from tests.hl7v2.messages import adt, errs, msa, pdq_query, pix_query, qak, reply

HOSPA_OID = "1.2.3.4.5.1"
HOSPB_OID = "1.2.3.4.5.2"


def ref(domain: str, value: str) -> IdentifierRef:
    return IdentifierRef(value=value, authority=AuthorityRef(namespace=domain))


async def absent(service: Hl7Service, domain: str, value: str) -> bool:
    try:
        await service.mpi.find_record(ref(domain, value))
    except (NotFound, UnknownIdentifier):
        return True
    return False


INVALID_PID3 = [
    pytest.param("&&ISO", id="type-without-universal-id"),
    pytest.param("HOSPA&&ISO", id="namespace-and-type-without-universal-id"),
    pytest.param(f"HOSPA&{HOSPA_OID}&DNS", id="universal-id-type-not-ISO"),
    pytest.param(f"&{HOSPA_OID}&L", id="oid-typed-local"),
    pytest.param(f"HOSPA&{HOSPB_OID}&ISO", id="namespace-and-oid-of-two-domains"),
    pytest.param(f"HOSPB&{HOSPA_OID}&ISO", id="namespace-and-oid-of-two-domains-reversed"),
]


@pytest.mark.parametrize("hd", INVALID_PID3)
async def test_invalid_PID_3_4_is_AE_102_at_its_repetition_and_nothing_changes(
    service: Hl7Service, client: MLLPClient, hd: str
) -> None:
    answer = reply(await client.send(adt("A04", f"HD1^^^{hd}")))
    assert msa(answer) == "AE" and errs(answer) == [("PID^1^3^1^4", "102")]
    assert await absent(service, "HOSPA", "HD1")


async def test_invalid_HD_in_a_later_repetition_is_located_there(
    service: Hl7Service, client: MLLPClient
) -> None:
    pid3 = f"HD2^^^HOSPA&{HOSPA_OID}&ISO~N9^^^&&ISO^SS"
    answer = reply(await client.send(adt("A04", pid3)))
    assert msa(answer) == "AE" and errs(answer) == [("PID^1^3^2^4", "102")]
    assert await absent(service, "HOSPA", "HD2")


@pytest.mark.parametrize("hd", ["", "&&", "&"])
async def test_PID_3_4_with_every_part_empty_is_completed_from_the_sender(
    service: Hl7Service, client: MLLPClient, hd: str
) -> None:
    value = f"HD3{len(hd)}"  # ADT_B assigns in HOSPB only
    answer = reply(await client.send(adt("A04", f"{value}^^^{hd}", app="ADT_B")))
    assert msa(answer) == "AA"
    assert not await absent(service, "HOSPB", value)


async def test_namespace_of_a_domain_without_oid_takes_any_universal_id(
    start_service: object, make_settings: object
) -> None:
    domains = [{"namespace": "LOCAL", "sources": ["ADT_A"]}]
    service = await start_service(domains=domains)  # type: ignore[operator]
    async with MLLPClient("127.0.0.1", service.port, timeout=10.0) as client:
        answer = reply(await client.send(adt("A04", "HD4^^^LOCAL&hosp.example&DNS")))
    assert msa(answer) == "AA"
    assert not await absent(service, "LOCAL", "HD4")


async def test_invalid_MRG_1_4_is_AE_102_at_MRG(service: Hl7Service, client: MLLPClient) -> None:
    assert msa(reply(await client.send(adt("A04", "HD5^^^HOSPA")))) == "AA"
    assert msa(reply(await client.send(adt("A04", "HD6^^^HOSPA")))) == "AA"
    message = adt("A40", "HD5^^^HOSPA", mrg="HD6^^^HOSPA&&ISO")
    answer = reply(await client.send(message))
    assert msa(answer) == "AE" and errs(answer) == [("MRG^1^1^1^4", "102")]
    assert not await absent(service, "HOSPA", "HD6")  # not merged


async def test_invalid_PID_21_4_is_AE_102_at_PID_21(
    service: Hl7Service, client: MLLPClient
) -> None:
    message = adt("A04", "HD7^^^HOSPA", extra_pid="|||||||||||||M1^^^&&ISO")
    answer = reply(await client.send(message))
    assert msa(answer) == "AE" and errs(answer) == [("PID^1^21^1^4", "102")]
    assert await absent(service, "HOSPA", "HD7")


# --- ITI-9 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hd", ["&&ISO", f"HOSPA&{HOSPB_OID}&ISO", f"HOSPA&{HOSPA_OID}&DNS"]
)
async def test_pix_invalid_QPD_3_4_is_AE_102(
    service: Hl7Service, client: MLLPClient, hd: str
) -> None:
    assert msa(reply(await client.send(adt("A04", "HD8^^^HOSPA")))) == "AA"
    answer = reply(await client.send(pix_query(f"HD8^^^{hd}")))
    assert (msa(answer), qak(answer)) == ("AE", "AE")
    assert errs(answer) == [("QPD^1^3^1^4", "102")]


async def test_pix_invalid_QPD_4_is_AE_102_at_its_repetition(
    service: Hl7Service, client: MLLPClient
) -> None:
    assert msa(reply(await client.send(adt("A04", "HD9^^^HOSPA")))) == "AA"
    answer = reply(await client.send(pix_query("HD9^^^HOSPA", domains="^^^LAB~^^^&&ISO")))
    assert (msa(answer), qak(answer)) == ("AE", "AE")
    assert errs(answer) == [("QPD^1^4^2", "102")]


# --- ITI-21 ---------------------------------------------------------------------------------


async def test_pdq_invalid_identifier_authority_is_AE_102_at_its_parameter(
    service: Hl7Service, client: MLLPClient
) -> None:
    params = f"@PID.3.1^HDA~@PID.3.4.1^HOSPA~@PID.3.4.2^{HOSPB_OID}~@PID.3.4.3^ISO"
    answer = reply(await client.send(pdq_query(params)))
    assert (msa(answer), qak(answer)) == ("AE", "AE")
    assert errs(answer) == [("QPD^1^3^3", "102")]
    answer = reply(await client.send(pdq_query("@PID.3.1^HDA~@PID.3.4.3^ISO")))
    assert errs(answer) == [("QPD^1^3^2", "102")]


async def test_pdq_invalid_what_domains_returned_is_AE_102_at_QPD_8(
    service: Hl7Service, client: MLLPClient
) -> None:
    answer = reply(await client.send(pdq_query("@PID.5.1.1^SMITH", domains="^^^&&ISO")))
    assert (msa(answer), qak(answer)) == ("AE", "AE")
    assert errs(answer) == [("QPD^1^8^1", "102")]


# --- unit -----------------------------------------------------------------------------------

_DOMAINS = {
    "HOSPA": Domain(id=1, namespace="HOSPA", oid=HOSPA_OID),
    "HOSPB": Domain(id=2, namespace="HOSPB", oid=HOSPB_OID),
    "LOCAL": Domain(id=3, namespace="LOCAL"),
}


def _known(authority: AuthorityRef) -> Domain | None:
    if authority.namespace:
        return _DOMAINS.get(authority.namespace)
    return next((d for d in _DOMAINS.values() if d.oid == authority.oid), None)


@pytest.mark.parametrize(
    ("hd", "problem"),
    [
        (("", "", ""), False),
        (("HOSPA", "", ""), False),
        (("", HOSPA_OID, "ISO"), False),
        (("", HOSPA_OID, ""), False),  # HD.3 left out: taken as ISO
        (("HOSPA", HOSPA_OID, "iso"), False),
        (("UNKNOWN", "9.9.9", "ISO"), False),  # unknown, not invalid: 204 elsewhere
        (("LOCAL", "x.example", "DNS"), False),
        (("", "", "ISO"), True),
        (("HOSPA", "", "ISO"), True),
        (("HOSPA", HOSPA_OID, "DNS"), True),
        (("", "x.example", "DNS"), True),
        (("HOSPA", HOSPB_OID, "ISO"), True),
        (("HOSPA", "9.9.9", "ISO"), True),
        (("OTHER", HOSPA_OID, "ISO"), True),
    ],
)
def test_authority_problem(hd: tuple[str, str, str], problem: bool) -> None:
    assert (authority_problem(*hd, known=_known) is not None) is problem
