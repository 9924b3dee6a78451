"""ITI-21 Patient Demographics Query: QPD-3 fields, wildcards, QPD-8 domains, RCP-2 paging with
stateless DSC continuation, QCN^J01 cancel, approximate matches, character sets."""

from __future__ import annotations

import pytest

from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.hl7v2.tokenizer import Message
from identity.mpi import Envelope, Register
from tests.core.helpers import person
from tests.hl7v2.messages import adt, errs, msa, msh, pdq_query, pid3, qak, reply, strictly_valid

PATIENTS = [
    ("Q1^^^HOSPA", "SMITH^JOHN", "19800312", "M", "|||1 Main St^^Springfield^IL^62701||555-1234"),
    ("Q2^^^HOSPA", "SMITHSON^JANE", "19800401", "F", ""),
    ("Q3^^^HOSPA", "SMITH^ANNA", "19751224", "F", "|||9 Elm Rd^^Shelbyville^IL^62565"),
    ("Q4^^^HOSPA", "SMYTHE^PAUL", "19800312", "M", ""),
    ("Q5^^^HOSPA", "SMITH^PETER", "19620707", "M", ""),
    ("Q6^^^HOSPA", "SMITH^MARY", "19620708", "F", ""),
]


@pytest.fixture
async def seeded(service: Hl7Service, client: MLLPClient) -> None:
    for pid, name, dob, sex, extra in PATIENTS:
        answer = reply(await client.send(adt("A04", pid, name=name, dob=dob, sex=sex,
                                             extra_pid=extra, mother="BROWN" * (pid[1] == "1"))))
        assert msa(answer) == "AA", answer
    # John Smith also has a LAB record (same national ID: one person)
    for app, pid in (("ADT_A", "Q1^^^HOSPA~N9^^^NATIONAL"), ("LIS", "Q1L^^^LAB~N9^^^NATIONAL")):
        assert msa(reply(await client.send(adt("A08" if app == "ADT_A" else "A04", pid,
                                               app=app)))) == "AA"


def families(message: Message) -> list[str]:
    return [p.value(5, 1, 1) for p in message.segments("PID")]


async def query(client: MLLPClient, params: str, **kwargs: object) -> Message:
    return reply(await client.send(pdq_query(params, **kwargs)))  # type: ignore[arg-type]


async def test_family_given_birth_date_finds_the_patient_with_all_identifiers(
    seeded: None, client: MLLPClient
) -> None:
    answer = await query(client, "@PID.5.1.1^SMITH~@PID.5.2^JOHN~@PID.7^19800312")
    assert (msa(answer), qak(answer)) == ("AA", "OK")
    assert answer.msh.field(9) == "RSP^K22^RSP_K21"
    [pid] = answer.segments("PID")
    ids = pid3(pid)
    assert "Q1^^^HOSPA&1.2.3.4.5.1&ISO" in ids and "Q1L^^^LAB&1.2.3.4.5.3&ISO" in ids
    assert any("^^^MPI&" in i for i in ids)
    assert pid.field(5).startswith("SMITH^JOHN") and pid.value(7) == "19800312"
    assert pid.value(8) == "M" and pid.value(11, 1, 3) == "Springfield"
    qri = answer.segment("QRI")  # exact hits carry no weight
    assert qri is not None and qri.field(1) == "" and qri.value(3) == "EXACT"


async def test_a_given_name_of_several_words_is_an_exact_hit(client: MLLPClient) -> None:
    """PID-5.2 "JULIO CÉSAR" is kept as given JULIO and middle CESAR; asking for the whole
    given name finds the patient exactly (QRI-3 EXACT), not through the approximate search."""
    answer = reply(await client.send(adt("A04", "Q7^^^HOSPA", name="MAYA^JULIO CESAR",
                                         dob="19790921")))
    assert msa(answer) == "AA", answer
    answer = await query(client, "@PID.5.1.1^MAYA~@PID.5.2^JULIO CESAR~@PID.7^19790921")
    assert (msa(answer), qak(answer)) == ("AA", "OK")
    [pid] = answer.segments("PID")
    assert pid.field(5).startswith("MAYA^JULIO CESAR")
    qri = answer.segment("QRI")
    assert qri is not None and qri.value(3) == "EXACT"


async def test_further_given_names_without_a_given_name_stay_further_given_names(
    client: MLLPClient,
) -> None:
    """PID-5 LING^^LOUISE: no given name, a middle name. It is kept as such (not promoted to
    the given name the patient goes by) and answered back in XPN.3 with XPN.2 empty."""
    answer = reply(await client.send(adt("A04", "Q8^^^HOSPA", name="LING^^LOUISE",
                                         dob="19610228", sex="F")))
    assert msa(answer) == "AA", answer
    answer = await query(client, "@PID.5.1.1^LING~@PID.7^19610228")
    [pid] = answer.segments("PID")
    xpn = pid.field(5).split("~")[0].split("^")
    assert xpn[:3] == ["LING", "", "LOUISE"]


async def test_rsp_k22_parses_with_hl7apy(seeded: None, client: MLLPClient) -> None:
    raw = await client.send(pdq_query("@PID.5.1.1^SMITH~@PID.5.2^JOHN"))
    parsed = strictly_valid(raw)
    assert parsed.msh.msh_9.to_er7() == "RSP^K22^RSP_K21"
    assert parsed.qak.qak_2.to_er7() == "OK"


async def test_wildcard_on_family_name(seeded: None, client: MLLPClient) -> None:
    answer = await query(client, "@PID.5.1.1^SMITH*")
    assert sorted(families(answer)) == ["SMITH", "SMITH", "SMITH", "SMITH", "SMITHSON"]


QUERY_FIELD_CASES = [
    ("@PID.7^1980", {"Q1", "Q2", "Q4"}),
    ("@PID.7^198004", {"Q2"}),
    ("@PID.5^SMITH~@PID.8^F", {"Q3", "Q6"}),
    ("@PID.5.1^SMITH~@PID.5.2^PETER", {"Q5"}),
    ("@PID.11.3^Shelbyville", {"Q3"}),
    ("@PID.11.5^62701", {"Q1"}),
    ("@PID.13^555-1234", {"Q1"}),
    ("@PID.6.1.1^BROWN", {"Q1"}),
    ("@PID.3.1^Q5~@PID.3.4.1^HOSPA", {"Q5"}),
    ("@PID.3.1^Q5~@PID.3.4.2^1.2.3.4.5.1~@PID.3.4.3^ISO", {"Q5"}),
]


async def test_query_fields(seeded: None, client: MLLPClient) -> None:
    """One seeded index, every supported QPD-3 field (one case per query)."""
    for params, expected in QUERY_FIELD_CASES:
        answer = await query(client, params)
        found = {i.split("^")[0] for p in answer.segments("PID") for i in pid3(p)
                 if "^^^HOSPA&" in i}
        assert found == expected, params


async def test_no_match_is_AA_NF(seeded: None, client: MLLPClient) -> None:
    answer = await query(client, "@PID.5.1.1^NOBODY*")
    assert (msa(answer), qak(answer)) == ("AA", "NF") and answer.segments("PID") == []


async def test_identifier_without_authority_is_AE_101(seeded: None, client: MLLPClient) -> None:
    answer = await query(client, "@PID.5.1.1^SMITH~@PID.3.1^Q5")
    assert (msa(answer), qak(answer)) == ("AE", "AE")
    assert errs(answer) == [("QPD^1^3^2", "101")]


async def test_field_not_held_is_AE_103(seeded: None, client: MLLPClient) -> None:
    # the account number's authority is not held (only PID-18.1), nor is PID-20
    answer = await query(client, "@PID.5.1.1^SMITH~@PID.18.4.1^HOSPA")
    assert msa(answer) == "AE" and errs(answer) == [("QPD^1^3^2", "103")]
    answer = await query(client, "@PID.20^D123")
    assert msa(answer) == "AE" and errs(answer) == [("QPD^1^3^1", "103")]


ACCOUNTS = "||||||||||ACC-1^^^HOSPA&1.2.3.4.5.1&ISO^AN|||M77^^^HOSPB^MR"
"""PID-9..21 after PID-8: PID-18 account number, PID-21 mother's identifier (in HOSPB)."""


@pytest.fixture
async def accounts(service: Hl7Service, client: MLLPClient) -> None:
    for pid, name, extra in (
        ("R1^^^HOSPA", "ROE^RICHARD", ACCOUNTS),
        ("R2^^^HOSPA", "ROE^RITA", "||||||||||ACC-2|||M77^^^LAB"),  # same value, another domain
        ("R3^^^HOSPA", "ROE^ROBERT", ""),
    ):
        answer = reply(await client.send(adt("A04", pid, name=name, extra_pid=extra)))
        assert msa(answer) == "AA", answer


def hospa_ids(message: Message) -> set[str]:
    return {i.split("^")[0] for p in message.segments("PID") for i in pid3(p) if "^^^HOSPA&" in i}


async def test_account_number_and_mothers_identifier_are_searched_and_returned(
    accounts: None, client: MLLPClient
) -> None:
    cases = [
        ("@PID.18^ACC-1", {"R1"}),
        ("@PID.18.1^ACC-2~@PID.5.1.1^ROE", {"R2"}),
        ("@PID.18.1^ACC-3", set()),
        ("@PID.21.1^M77~@PID.21.4.1^HOSPB", {"R1"}),
        ("@PID.21^M77~@PID.21.4.2^1.2.3.4.5.2~@PID.21.4.3^ISO", {"R1"}),
        ("@PID.21.1^M77~@PID.21.4^LAB", {"R2"}),
        ("@PID.21.1^M77~@PID.21.4.1^HOSPA", set()),
    ]
    for params, expected in cases:
        assert hospa_ids(await query(client, params)) == expected, params
    raw = await client.send(pdq_query("@PID.18^ACC-1"))
    strictly_valid(raw)
    [pid] = reply(raw).segments("PID")
    assert pid.value(18) == "ACC-1" and pid.field(18) == "ACC-1"
    assert pid.field(21) == "M77^^^HOSPB&1.2.3.4.5.2&ISO^MR"
    [plain] = (await query(client, "@PID.5.1.1^ROE~@PID.5.2^ROBERT")).segments("PID")
    assert plain.field(18) == "" and plain.field(21) == ""


async def test_account_number_follows_updates_and_explicit_null(
    accounts: None, client: MLLPClient
) -> None:
    same = reply(await client.send(adt("A08", "R1^^^HOSPA", name="ROE^RICHARD")))
    assert msa(same) == "AA"  # PID-18/21 not sent: kept
    assert hospa_ids(await query(client, "@PID.18^ACC-1")) == {"R1"}
    cleared = adt("A08", "R1^^^HOSPA", name="ROE^RICHARD", extra_pid='||||||||||""|||""')
    assert msa(reply(await client.send(cleared))) == "AA"
    assert hospa_ids(await query(client, "@PID.18^ACC-1")) == set()
    assert hospa_ids(await query(client, "@PID.21.1^M77~@PID.21.4.1^HOSPB")) == set()


async def test_mothers_identifier_needs_a_known_authority(
    accounts: None, client: MLLPClient
) -> None:
    answer = await query(client, "@PID.5.1.1^ROE~@PID.21.1^M77")
    assert (msa(answer), qak(answer)) == ("AE", "AE") and errs(answer) == [("QPD^1^3^2", "101")]
    answer = await query(client, "@PID.21.1^M77~@PID.21.4.1^NOWHERE")
    assert msa(answer) == "AE" and errs(answer) == [("QPD^1^3", "204")]
    answer = await query(client, "@PID.21.4.1^HOSPB")
    assert msa(answer) == "AE" and errs(answer) == [("QPD^1^3", "101")]


async def test_what_domains_returned_filters_PID_3_and_drops_empty_PIDs(
    seeded: None, client: MLLPClient
) -> None:
    answer = await query(client, "@PID.5.1.1^SMITH", domains="^^^LAB")
    [pid] = answer.segments("PID")
    assert pid3(pid) == ["Q1L^^^LAB&1.2.3.4.5.3&ISO"]


async def test_unknown_what_domains_returned_is_AE_one_ERR_per_bad_domain(
    seeded: None, client: MLLPClient
) -> None:
    answer = await query(client, "@PID.5.1.1^SMITH", domains="^^^NOPE~^^^LAB~^^^&9.9.9&ISO")
    assert (msa(answer), qak(answer)) == ("AE", "AE")
    assert errs(answer) == [("QPD^1^8^1", "204"), ("QPD^1^8^3", "204")]
    assert answer.segments("PID") == []


async def test_quantity_limit_and_stateless_continuation(
    seeded: None, service: Hl7Service, start_service: object, client: MLLPClient
) -> None:
    first = await query(client, "@PID.5.1.1^SMITH*", limit=2, tag="PG")
    assert len(first.segments("PID")) == 2
    dsc = first.segment("DSC")
    assert dsc is not None and dsc.value(2) == "I"
    seen = families(first)
    pointer = dsc.value(1)
    pages = 1
    while pointer:
        page = await query(client, "@PID.5.1.1^SMITH*", limit=2, tag="PG", pointer=pointer)
        assert qak(page) == "OK" and len(page.segments("PID")) <= 2
        seen += families(page)
        next_dsc = page.segment("DSC")
        pointer = next_dsc.value(1) if next_dsc is not None else ""
        pages += 1
    assert pages == 3 and sorted(seen) == ["SMITH", "SMITH", "SMITH", "SMITH", "SMITHSON"]


async def test_continuation_pointer_of_another_query_is_refused(
    seeded: None, client: MLLPClient
) -> None:
    first = await query(client, "@PID.5.1.1^SMITH*", limit=2)
    pointer = first.segment("DSC").value(1)  # type: ignore[union-attr]
    answer = await query(client, "@PID.5.1.1^SMYTHE", limit=2, pointer=pointer)
    assert msa(answer) == "AE" and errs(answer) == [("DSC^1^1", "204")]


async def test_continuation_is_served_by_another_process(
    seeded: None, client: MLLPClient, start_service: object
) -> None:
    other = await start_service()  # type: ignore[operator]
    first = await query(client, "@PID.5.1.1^SMITH*", limit=4)
    pointer = first.segment("DSC").value(1)  # type: ignore[union-attr]
    async with MLLPClient("127.0.0.1", other.port) as elsewhere:
        page = reply(await elsewhere.send(pdq_query("@PID.5.1.1^SMITH*", limit=4,
                                                    pointer=pointer)))
    assert len(page.segments("PID")) == 1 and page.segment("DSC") is None


async def test_QCN_J01_cancel_is_acknowledged(client: MLLPClient) -> None:
    text = "\r".join([msh("QCN^J01^QCN_J01", app="PDQC"), "QID|PG|IHE PDQ Query"]) + "\r"
    answer = reply(await client.send(text))
    assert msa(answer) == "AA" and answer.msh.field(9) == "ACK^J01^ACK"


async def test_approximate_match_is_ranked_with_weight_in_QRI_1(
    seeded: None, client: MLLPClient
) -> None:
    # no exact hit for this spelling: the engine ranks candidates
    answer = await query(client, "@PID.5.1.1^SMITHE~@PID.5.2^JOHN~@PID.7^19800312")
    assert (msa(answer), qak(answer)) == ("AA", "OK")
    qris = answer.segments("QRI")
    assert qris and len(qris) == len(answer.segments("PID"))
    assert {q.value(3) for q in qris} == {"FS-WEIGHT"}
    weights = [float(q.value(1)) for q in qris]
    assert weights == sorted(weights, reverse=True)
    best = answer.segments("PID")[0]
    assert best.value(5, 1, 1) == "SMITH" and best.value(5, 1, 2) == "JOHN"


@pytest.mark.parametrize(
    ("charset", "codec"), [("UNICODE UTF-8", "utf-8"), ("8859/1", "latin-1")]
)
async def test_names_in_declared_character_sets_round_trip(
    service: Hl7Service, client: MLLPClient, charset: str, codec: str
) -> None:
    feed = adt("A04", f"U{codec}^^^HOSPA", name="MÜLLER^JÖRG", charset=charset)
    assert msa(reply(await client.send(feed.encode(codec)))) == "AA"
    text = pdq_query("@PID.5.1.1^MÜLLER").replace("|2.5\r", f"|2.5||||||{charset}\r", 1)
    raw = await client.send(text.encode(codec))
    answer = reply(raw)
    assert answer.declared_charset == charset
    assert "MÜLLER^JÖRG".encode(codec) in raw
    assert answer.segment("PID").value(5, 1, 2) == "JÖRG"  # type: ignore[union-attr]


async def test_identifier_in_unknown_domain_is_AE_204(seeded: None, client: MLLPClient) -> None:
    answer = await query(client, "@PID.3.1^Q5~@PID.3.4.1^NOWHERE")
    assert msa(answer) == "AE" and errs(answer) == [("QPD^1^3", "204")]


async def test_undeclared_request_gets_utf8_declared_reply_for_non_ascii_names(
    service: Hl7Service, client: MLLPClient
) -> None:
    feed = adt("A04", "U3^^^HOSPA", name="ÅSTRÖM^ÉLISE", charset="UNICODE UTF-8")
    assert msa(reply(await client.send(feed.encode("utf-8")))) == "AA"
    raw = await client.send(pdq_query("@PID.5.1.1^ÅSTRÖM").encode("utf-8"))  # no MSH-18
    answer = reply(raw)
    assert answer.declared_charset == "UNICODE UTF-8" and "ÅSTRÖM".encode() in raw


async def test_query_without_searchable_value_is_AE_101(client: MLLPClient) -> None:
    answer = await query(client, "@PID.5.3^MARIE~@PID.5.1.1^")
    assert (msa(answer), qak(answer)) == ("AE", "AE") and errs(answer) == [("QPD^1^3", "101")]


async def test_approximate_results_page_with_their_own_pointer(
    seeded: None, client: MLLPClient
) -> None:
    # no exact hit; Peter and Mary Smith are close (and born in 1962, as asked: an
    # approximate hit never contradicts the query's birth date)
    params = "@PID.5.1.1^SMYTH~@PID.7^1962"
    raw = await client.send(pdq_query(params, limit=1))
    strictly_valid(raw)  # RSP_K21 with PID, QRI and DSC
    first = reply(raw)
    assert len(first.segments("PID")) == 1 and len(first.segments("QRI")) == 1
    dsc = first.segment("DSC")
    assert dsc is not None and dsc.value(1).startswith("a1.")
    second = await query(client, params, limit=1, pointer=dsc.value(1))
    assert len(second.segments("QRI")) == 1
    assert pid3(second.segments("PID")[0]) != pid3(first.segments("PID")[0])
    assert float(second.segment("QRI").value(1)) <= float(first.segment("QRI").value(1))  # type: ignore[union-attr]


def qak_counts(message: Message) -> tuple[str, str, str]:
    """QAK-4 hit count total, QAK-5 this payload, QAK-6 hits remaining."""
    segment = message.segment("QAK")
    assert segment is not None
    return segment.value(4), segment.value(5), segment.value(6)


async def test_QAK_counts_persons_across_continuation_pages(
    seeded: None, client: MLLPClient
) -> None:
    # 5 records named SMITH*, one of them a second record of John Smith's: 5 persons
    first = await query(client, "@PID.5.1.1^SMITH*", limit=2)
    assert qak_counts(first) == ("5", "2", "3")
    pointer = first.segment("DSC").value(1)  # type: ignore[union-attr]
    second = await query(client, "@PID.5.1.1^SMITH*", limit=2, pointer=pointer)
    assert qak_counts(second) == ("5", "2", "1")
    pointer = second.segment("DSC").value(1)  # type: ignore[union-attr]
    last = await query(client, "@PID.5.1.1^SMITH*", limit=2, pointer=pointer)
    assert qak_counts(last) == ("5", "1", "0") and last.segment("DSC") is None
    strictly_valid(await client.send(pdq_query("@PID.5.1.1^SMITH*", limit=2)))


async def test_QAK_counts_after_QPD_8_filtering(seeded: None, client: MLLPClient) -> None:
    # only John Smith has a LAB identifier: every person was read, the total is known
    answer = await query(client, "@PID.5.1.1^SMITH*", domains="^^^LAB")
    assert qak_counts(answer) == ("1", "1", "0")
    # every person read in one chunk: known too
    paged = await query(client, "@PID.5.1.1^SMITH*", domains="^^^HOSPA", limit=1)
    assert qak_counts(paged) == ("5", "1", "4") and paged.segment("DSC") is not None


async def test_QAK_total_is_empty_when_filtering_stops_before_the_end(
    service: Hl7Service, client: MLLPClient
) -> None:
    # more persons than one filtered read (at least 100): the page fills before the end
    for n in range(110):
        record = person("HOSPA", f"W{n}", family="WIDE", given=f"G{n:03d}X",
                        birth_date=f"19{n % 90 + 10:02d}-01-01")
        await service.mpi.handle(Register(subject=record), Envelope(actor="test", source="ADT_A"))
    answer = await query(client, "@PID.5.1.1^WIDE", domains="^^^HOSPA", limit=2)
    assert qak_counts(answer) == ("", "2", "") and answer.segment("DSC") is not None
    unfiltered = await query(client, "@PID.5.1.1^WIDE", limit=2)
    assert qak_counts(unfiltered) == ("110", "2", "108")


async def test_exact_hits_are_read_without_a_query_per_person(
    seeded: None, service: Hl7Service, client: MLLPClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def per_hit(person_id: int) -> None:
        raise AssertionError("get_person called for a PDQ hit")

    monkeypatch.setattr(service.mpi, "get_person", per_hit)
    answer = await query(client, "@PID.5.1.1^SMITH")
    assert (msa(answer), qak(answer)) == ("AA", "OK") and len(answer.segments("PID")) == 4
    [john] = [p for p in answer.segments("PID") if p.value(5, 1, 2) == "JOHN"]
    assert {"Q1^^^HOSPA&1.2.3.4.5.1&ISO", "Q1L^^^LAB&1.2.3.4.5.3&ISO"} <= set(pid3(john))
