"""[[mllp.clients]]: a TLS client certificate may send only as the MSH-3/MSH-4 it is mapped to;
real handshakes with the certificates of test_tls.py (the client's CN is ADT_A)."""

from __future__ import annotations

import pytest

from identity.audit.record import DESTINATION, SOURCE, Action, Outcome
from identity.config import MllpClientSettings, load_settings
from identity.errors import ConfigError
from identity.hl7v2.senders import Peer, Senders, parse_dn
from identity.hl7v2.tokenizer import parse_message
from identity.store.audit import AuditStore

from ..hl7v2.messages import adt, errs, pix_query, reply
from .test_tls import Pki, StartService, _client, _records, _tls, pki, start_service  # noqa: F401


async def _ack(port: int, context: object, message: str) -> tuple[str, list[tuple[str, str]]]:
    from identity.hl7v2.mllp import MLLPClient

    async with MLLPClient("127.0.0.1", port, ssl_context=context, timeout=10.0) as client:
        answer = reply(await client.send(message))
    segment = answer.segment("MSA")
    assert segment is not None
    return segment.value(1), errs(answer)


async def test_a_certificate_sends_only_as_its_applications(
    start_service: StartService, pki: Pki  # noqa: F811
) -> None:
    clients = [{"subject": "CN=ADT_A", "applications": ["ADT_A"], "facilities": ["FAC"]}]
    service = await start_service(mllp={"tls": _tls(pki, "optional"), "clients": clients})
    assert service.hl7 is not None
    port = service.hl7.port
    mine = _client(pki, "client")

    assert await _ack(port, mine, adt("A04", "S1^^^HOSPA")) == ("AA", [])
    before = await _records(service)

    # the same certificate sending as another application (allowed in HOSPB's domain): AR
    code, err = await _ack(port, mine, adt("A04", "S2^^^HOSPB", app="ADT_B"))
    assert (code, err) == ("AR", [("MSH^1^3", "204")])
    # ... or from another facility
    other_facility = adt("A04", "S3^^^HOSPA").replace("|ADT_A|FAC|", "|ADT_A|ELSEWHERE|", 1)
    assert await _ack(port, mine, other_facility) == ("AR", [("MSH^1^4", "204")])
    # a connection without a certificate may send nothing
    assert await _ack(port, _client(pki), adt("A04", "S4^^^HOSPA")) == ("AR", [("MSH^1^3", "204")])
    assert await _records(service) == before  # nothing of the refused messages was applied

    # queries too: the mapping is about who is calling, not what (PIXC is not ADT_A's)
    assert await _ack(port, mine, pix_query("S1^^^HOSPA")) == ("AR", [("MSH^1^3", "204")])
    assert await _ack(port, mine, pix_query("S1^^^HOSPA", app="ADT_A")) == ("AA", [])


def test_matching_by_subject_and_by_subject_alt_name() -> None:
    senders = Senders([
        MllpClientSettings(subject="O=Hospital A, CN=adt.hospa.example",
                           applications=["ADT_A"]),
        MllpClientSettings(san="lis.lab.example", applications=["LIS"], facilities=["LAB"]),
    ])  # fmt: skip
    adt_cert = {"subject": ((("commonName", "adt.hospa.example"),),
                            (("organizationName", "Hospital A"),))}
    lis_cert = {"subject": ((("commonName", "Lab"),),),
                "subjectAltName": (("DNS", "lis.lab.example"),)}
    assert [c.applications for c in senders.entries(adt_cert)] == [["ADT_A"]]
    assert [c.applications for c in senders.entries(lis_cert)] == [["LIS"]]
    assert senders.entries({"subject": ((("commonName", "adt.hospa.example"),),)}) == []

    def refusal(cert: dict[str, object], app: str, facility: str) -> str | None:
        message = parse_message(adt("A04", "X^^^LAB", app=app).replace("|FAC|", f"|{facility}|"))
        detail = senders.refusal(message, Peer("127.0.0.1:1", cert))
        return None if detail is None else detail.location.to_erl()  # type: ignore[union-attr]

    assert refusal(lis_cert, "LIS", "LAB") is None
    assert refusal(lis_cert, "LIS", "FAC") == "MSH^1^4"
    assert refusal(lis_cert, "ADT_A", "LAB") == "MSH^1^3"
    assert refusal(adt_cert, "ADT_A", "ANY") is None  # no facilities listed: any


def test_distinguished_names() -> None:
    assert parse_dn("CN=a,O=b") == parse_dn("o=b, cn=a")
    assert parse_dn(r"CN=Smith\, John,O=x") == {("CN", "Smith, John"), ("O", "x")}
    with pytest.raises(ValueError):
        parse_dn("no equals sign")


def test_clients_need_tls_with_client_certificates(pki: Pki) -> None:  # noqa: F811
    clients = [{"subject": "CN=ADT_A", "applications": ["ADT_A"]}]
    with pytest.raises(ConfigError, match="needs \\[mllp.tls\\]"):
        load_settings(mllp={"clients": clients})
    with pytest.raises(ConfigError, match="needs \\[mllp.tls\\]"):
        load_settings(mllp={"clients": clients, "tls": _tls(pki)})
    with pytest.raises(ConfigError, match="exactly one of subject and san"):
        load_settings(mllp={"clients": [{"applications": ["X"]}], "tls": _tls(pki, "required")})
    assert load_settings(mllp={"clients": clients, "tls": _tls(pki, "required")}).mllp.clients


async def test_a_refused_sender_is_audited_as_the_transaction_it_tried(
    start_service: StartService, pki: Pki  # noqa: F811
) -> None:
    clients = [{"subject": "CN=ADT_A", "applications": ["ADT_A"], "facilities": ["FAC"]}]
    service = await start_service(mllp={"tls": _tls(pki, "optional"), "clients": clients})
    assert service.hl7 is not None and service.db is not None
    port = service.hl7.port
    mine = _client(pki, "client")

    refused = adt("A04", "S2^^^HOSPB", app="ADT_B", control="REFUSED-1")
    assert await _ack(port, mine, refused) == ("AR", [("MSH^1^3", "204")])
    assert await _ack(port, _client(pki), pix_query("S1^^^HOSPA")) == ("AR", [("MSH^1^3", "204")])
    cancel = "MSH|^~\\&|ADT_B|FAC|IDENTITY|MPI|20260101||QCN^J01^QCN_J01|C9|P|2.5\rQID|Q1|X\r"
    assert (await _ack(port, mine, cancel))[0] == "AR"  # not an audited transaction: no record

    await service.hl7.mpi.audit.flush()
    async with service.db.connection() as conn:
        found = [s.record for s in reversed(await AuditStore(conn).search(limit=100))]
    feed, query = found
    assert (feed.transaction, feed.event_id.code, feed.action, feed.outcome) == (
        "ITI-8", "110110", Action.CREATE, Outcome.MINOR_FAILURE)
    assert feed.outcome_description == (
        "the client certificate may not send as MSH-3 'ADT_B' (client certificate subject "
        "CN=ADT_A)")
    assert feed.patients == ("S2^^^&1.2.3.4.5.2&ISO",) and feed.message_id == "REFUSED-1"
    caller, us = feed.participants
    assert (caller.user_id, caller.network_id, caller.has_role(SOURCE)) == (
        "ADT_B|FAC", "127.0.0.1", True)
    assert us.user_id == "IDENTITY|MPI" and us.has_role(DESTINATION)

    assert (query.transaction, query.event_id.code, query.action, query.outcome) == (
        "ITI-9", "110112", Action.EXECUTE, Outcome.MINOR_FAILURE)
    assert query.outcome_description == (
        "the connection has no client certificate known to this service")
    assert query.patients == ("S1^^^&1.2.3.4.5.1&ISO",) and query.query is not None
    assert await _records(service) == 0  # nothing applied
