"""Cross-references (PIX) and demographic search (PDQ) in the MPI core."""

from __future__ import annotations

import pytest

from identity.errors import InvalidInput, UnknownDomain, UnknownIdentifier, UnknownTargetDomain
from identity.model import Address, AuthorityRef, IdentifierRef, Phone, SearchCriteria
from identity.mpi import Envelope, Mpi, Register, Remove
from identity.mpi.query import build_search_terms

from .helpers import person, ref

A = Envelope(source="ADT_A", actor="test")
B = Envelope(source="ADT_B", actor="test")


@pytest.fixture
async def linked(mpi: Mpi) -> Mpi:
    ssn = ref("NATIONAL", "123456789")
    await mpi.handle(Register(subject=person("HOSPA", "A1", others=(ssn,))), A)
    await mpi.handle(Register(subject=person("HOSPB", "B1")), B)
    await mpi.handle(Register(subject=person("LAB", "L1")), Envelope(actor="test", source="LIS"))
    return mpi


async def test_cross_references_return_other_domains_not_the_queried_id(linked: Mpi) -> None:
    xref = await linked.cross_references(ref("HOSPA", "A1"))
    found = {(r.identifier.domain, r.identifier.value) for r in xref.references}
    assert ("HOSPB", "B1") in found and ("LAB", "L1") in found
    assert ("NATIONAL", "123456789") in found
    assert ("MPI", xref.enterprise_id) in found
    assert ("HOSPA", "A1") not in found


async def test_cross_references_restricted_to_target_domains(linked: Mpi) -> None:
    xref = await linked.cross_references(
        ref("HOSPA", "A1"), [AuthorityRef(namespace="LAB"), AuthorityRef(oid="1.2.3.4.5.2")]
    )
    assert sorted(r.identifier.domain for r in xref.references) == ["HOSPB", "LAB"]
    lab = next(r for r in xref.references if r.identifier.domain == "LAB")
    assert lab.identifier.oid == "1.2.3.4.5.3" and lab.record_id is not None


async def test_cross_references_with_nothing_in_target_domain_is_empty(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    xref = await mpi.cross_references(ref("HOSPA", "A1"), [AuthorityRef(namespace="LAB")])
    assert xref.references == ()


async def test_enterprise_domain_is_queryable_both_ways(linked: Mpi) -> None:
    xref = await linked.cross_references(ref("HOSPA", "A1"))
    back = await linked.cross_references(ref("MPI", xref.enterprise_id))
    assert {r.identifier.value for r in back.references} >= {"A1", "B1", "L1"}
    assert "MPI" not in {r.identifier.domain for r in back.references}


async def test_query_by_other_identifier_finds_the_person(linked: Mpi) -> None:
    xref = await linked.cross_references(ref("NATIONAL", "123456789"))
    assert {r.identifier.value for r in xref.references} >= {"A1", "B1"}


async def test_unknown_identifier_in_known_domain(linked: Mpi) -> None:
    with pytest.raises(UnknownIdentifier):
        await linked.cross_references(ref("HOSPA", "NOPE"))


async def test_unknown_source_domain(linked: Mpi) -> None:
    with pytest.raises(UnknownDomain) as caught:
        await linked.cross_references(ref("ELSEWHERE", "A1"))
    assert not isinstance(caught.value, UnknownTargetDomain)


async def test_unknown_target_domain_reports_its_position(linked: Mpi) -> None:
    with pytest.raises(UnknownTargetDomain) as caught:
        await linked.cross_references(
            ref("HOSPA", "A1"), [AuthorityRef(namespace="LAB"), AuthorityRef(namespace="XX")]
        )
    assert caught.value.position == 2


async def _people(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person(
            "HOSPA",
            "A1",
            family="Smith",
            given="John",
            birth_date="1980-03-12",
            addresses=(
                Address(
                    lines=("12 Main Street",), city="Springfield", state="IL", postal_code="62701"
                ),
            ),
            phones=(Phone(value="(555) 123-4567"),),
            mothers_maiden_name="Doe",
        )), A)
    await mpi.handle(
        Register(subject=person(
            "HOSPA", "A2", family="Smyth", given="Jane", sex="F", birth_date="1980-07-01",
        )),
        A,
    )
    await mpi.handle(
        Register(subject=person(
            "HOSPA", "A3", family="Smithers", given="Waylon", birth_date="1955-01-01",
        )),
        A,
    )
    await mpi.handle(
        Register(subject=person("HOSPB", "B1", family="Jones", given="John", birth_date="1980")), B
    )


async def test_search_exact_family_is_case_and_accent_insensitive(mpi: Mpi) -> None:
    await _people(mpi)
    result = await mpi.search(SearchCriteria(family="smith"))
    assert [r.identifier for r in result.records] == ["A1"]
    assert result.total == 1


async def test_search_prefix_with_wildcard(mpi: Mpi) -> None:
    await _people(mpi)
    result = await mpi.search(SearchCriteria(family="SMI*"))
    assert sorted(r.identifier for r in result.records) == ["A1", "A3"]


async def test_search_by_a_given_name_of_several_words(mpi: Mpi) -> None:
    """A record keeps its first given name apart from the others ("Julio César": given JULIO,
    middle CESAR); a search by the whole given name finds it, exactly or as a prefix, and a
    different second word does not."""
    await mpi.handle(Register(subject=person("HOSPA", "C1", family="Maya", given="Julio César")), A)
    await mpi.handle(Register(subject=person("HOSPA", "C2", family="Maya", given="Julio")), A)
    await mpi.handle(
        Register(subject=person("HOSPA", "C3", family="Maya", given="Julio Alberto")), A
    )

    async def found(given: str, mode: str = "exact") -> list[str]:
        result = await mpi.search(SearchCriteria(family="Maya", given=given, name_mode=mode))
        return sorted(r.identifier for r in result.records)

    assert await found("Julio César") == ["C1"]
    assert await found("Ju*", "phonetic") == ["C1", "C2", "C3"]  # a wildcard wins
    assert await found("JULIO CESAR") == ["C1"]
    assert await found("Julio-César") == ["C1"]
    assert await found("Julio C*") == ["C1"]
    assert await found("Julio C", "prefix") == ["C1"]
    assert await found("Julio") == ["C1", "C2", "C3"]
    assert await found("Julio Césarine") == []


async def test_search_phonetic(mpi: Mpi) -> None:
    await _people(mpi)
    result = await mpi.search(SearchCriteria(family="Smythe", name_mode="phonetic"))
    assert {"A1", "A2"} <= {r.identifier for r in result.records}
    assert "B1" not in {r.identifier for r in result.records}


async def test_search_partial_birth_dates(mpi: Mpi) -> None:
    await _people(mpi)
    year = await mpi.search(SearchCriteria(birth_date="1980"))
    assert sorted(r.identifier for r in year.records) == ["A1", "A2", "B1"]
    month = await mpi.search(SearchCriteria(birth_date="1980-03"))
    assert [r.identifier for r in month.records] == ["A1"]
    day = await mpi.search(SearchCriteria(birth_date="19800312"))
    assert [r.identifier for r in day.records] == ["A1"]


async def test_search_by_given_sex_address_phone_and_identifier(mpi: Mpi) -> None:
    await _people(mpi)
    assert (await mpi.search(SearchCriteria(given="john", sex="M"))).total == 2
    assert (await mpi.search(SearchCriteria(sex="female"))).total == 1
    assert (await mpi.search(SearchCriteria(postal_code="62701"))).total == 1
    assert (await mpi.search(SearchCriteria(city="springfield"))).total == 1
    assert (await mpi.search(SearchCriteria(state="il"))).total == 1
    assert (await mpi.search(SearchCriteria(address_line="12 main st"))).total == 1
    assert (await mpi.search(SearchCriteria(phone="555-123-4567"))).total == 1
    assert (await mpi.search(SearchCriteria(mothers_maiden_name="DOE"))).total == 1
    by_id = await mpi.search(SearchCriteria(identifier=ref("HOSPB", "B1")))
    assert [r.identifier for r in by_id.records] == ["B1"]


async def test_search_paging_keeps_total(mpi: Mpi) -> None:
    await _people(mpi)
    first = await mpi.search(SearchCriteria(birth_date="1980", limit=2))
    second = await mpi.search(SearchCriteria(birth_date="1980", limit=2, offset=2))
    assert first.total == second.total == 3
    ids = [r.identifier for r in first.records + second.records]
    assert len(set(ids)) == 3


async def test_search_rejects_bad_values(mpi: Mpi) -> None:
    with pytest.raises(InvalidInput):
        await mpi.search(SearchCriteria(birth_date="1980-13-45"))
    with pytest.raises(InvalidInput):
        await mpi.search(SearchCriteria(sex="Q"))
    with pytest.raises(UnknownDomain):
        await mpi.search(SearchCriteria(identifier=ref("NOWHERE", "1")))


async def test_search_excludes_removed_records(mpi: Mpi) -> None:
    await _people(mpi)
    await mpi.handle(Remove(identifier=ref("HOSPA", "A1")), A)
    assert (await mpi.search(SearchCriteria(family="Smith"))).total == 0
    assert (await mpi.search(SearchCriteria(family="Smith", include_inactive=True))).total == 1


async def _accounts(mpi: Mpi) -> None:
    """A1 and B1 carry an account number and a mother's identifier (by namespace, by OID)."""
    await mpi.handle(
        Register(subject=person(
            "HOSPA", "A1", account_number="ACC-1", mothers_identifier=ref("HOSPA", "M1"),
        )),
        A,
    )
    mother_by_oid = IdentifierRef(value="M1", authority=AuthorityRef(oid="1.2.3.4.5.2"))
    await mpi.handle(Register(subject=person("HOSPB", "B1", family="Jones", account_number="ACC-2",
               mothers_identifier=mother_by_oid)), B)
    await mpi.handle(Register(subject=person("HOSPA", "A2", family="Doe")), A)


async def test_search_by_account_number_is_exact(mpi: Mpi) -> None:
    await _accounts(mpi)
    found = await mpi.search(SearchCriteria(account_number="ACC-1"))
    assert [r.identifier for r in found.records] == ["A1"]
    assert found.records[0].demographics.account_number == "ACC-1"
    assert (await mpi.search(SearchCriteria(account_number="ACC"))).total == 0


async def test_search_by_mothers_identifier_resolves_the_domain(mpi: Mpi) -> None:
    await _accounts(mpi)
    # the same value in two domains: the domain decides, whichever way it was named
    by_ns = await mpi.search(SearchCriteria(mothers_identifier=ref("HOSPA", "M1")))
    assert [r.identifier for r in by_ns.records] == ["A1"]
    by_oid = await mpi.search(
        SearchCriteria(
            mothers_identifier=IdentifierRef(value="M1", authority=AuthorityRef(oid="1.2.3.4.5.1"))
        )
    )
    assert [r.identifier for r in by_oid.records] == ["A1"]
    stored_by_oid = await mpi.search(SearchCriteria(mothers_identifier=ref("HOSPB", "M1")))
    assert [r.identifier for r in stored_by_oid.records] == ["B1"]
    assert (await mpi.search(SearchCriteria(mothers_identifier=ref("LAB", "M1")))).total == 0
    with pytest.raises(UnknownDomain):
        await mpi.search(SearchCriteria(mothers_identifier=ref("NOWHERE", "M1")))


async def test_account_number_and_mothers_identifier_follow_partial_updates(mpi: Mpi) -> None:
    await _accounts(mpi)
    # not sent: unchanged
    await mpi.handle(Register(subject=person("HOSPA", "A1", family="Smith")), A)
    assert (await mpi.search(SearchCriteria(account_number="ACC-1"))).total == 1
    # a new value replaces the old one
    await mpi.handle(Register(subject=person("HOSPA", "A1", account_number="ACC-9")), A)
    assert (await mpi.search(SearchCriteria(account_number="ACC-1"))).total == 0
    assert (await mpi.search(SearchCriteria(account_number="ACC-9"))).total == 1
    # explicitly cleared
    cleared = person("HOSPA", "A1").model_copy(
        update={"cleared": frozenset({"account_number", "mothers_identifier"})}
    )
    await mpi.handle(Register(subject=cleared), A)
    assert (await mpi.search(SearchCriteria(account_number="ACC-9"))).total == 0
    assert (await mpi.search(SearchCriteria(mothers_identifier=ref("HOSPA", "M1")))).total == 0


async def test_pdq_identifier_searches_use_the_migration_indexes(mpi: Mpi) -> None:
    await _accounts(mpi)
    cases = {
        "source_record_account_number": SearchCriteria(account_number="ACC-1"),
        "source_record_mothers_identifier": SearchCriteria(mothers_identifier=ref("HOSPA", "M1")),
    }
    async with mpi.db.connection() as conn:
        await conn.execute("SET enable_seqscan = off")  # the table is tiny: force the choice
        try:
            for index, criteria in cases.items():
                terms = await build_search_terms(mpi.domains, criteria)
                sql = "EXPLAIN SELECT r.id FROM source_record r WHERE " + " AND ".join(terms.where)
                plan = "\n".join(r[0] for r in await conn.fetch(sql, *terms.params))
                assert index in plan, plan
        finally:
            await conn.execute("RESET enable_seqscan")


async def test_search_persons_counts_and_pages_persons_not_records(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(
        Register(subject=person("HOSPB", "B1")), B
    )  # the same John Smith: linked to A1
    await mpi.handle(
        Register(subject=person("HOSPA", "A2", given="Anna", birth_date="1975-12-24", sex="F")), A
    )
    await mpi.handle(
        Register(subject=person("HOSPA", "A3", given="Peter", birth_date="1962-07-07")), A
    )
    assert (await mpi.search(SearchCriteria(family="Smith"))).total == 4

    total, persons = await mpi.search_persons(SearchCriteria(family="Smith"))
    assert total == 3
    assert [p.records[0].identifier for p in persons] == ["A2", "A1", "A3"]  # by given name
    john = persons[1]
    assert sorted(r.identifier for r in john.records) == ["A1", "B1"]
    assert tuple(sorted(john.records, key=lambda r: r.id)) == (
        await mpi.get_person(john.id)
    ).records

    total, page = await mpi.search_persons(SearchCriteria(family="Smith", limit=2, offset=1))
    assert total == 3 and [p.id for p in page] == [p.id for p in persons[1:]]
    total, beyond = await mpi.search_persons(SearchCriteria(family="Smith", offset=5))
    assert (total, beyond) == (3, [])
    assert await mpi.search_persons(SearchCriteria(family="Nobody")) == (0, [])


async def test_search_persons_puts_the_matching_record_first(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(Register(subject=person("HOSPB", "B1")), B)
    total, [found] = await mpi.search_persons(SearchCriteria(identifier=ref("HOSPB", "B1")))
    assert total == 1 and [r.identifier for r in found.records] == ["B1", "A1"]
    with pytest.raises(UnknownDomain):
        await mpi.search_persons(SearchCriteria(identifier=ref("NOWHERE", "1")))
