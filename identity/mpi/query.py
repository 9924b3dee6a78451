"""Read side of the MPI: cross-references (PIX), demographic search (PDQ), reads, history."""

from __future__ import annotations

from collections.abc import Sequence

from identity.errors import InvalidInput, UnknownIdentifier
from identity.model import (
    AuthorityRef,
    CrossReference,
    CrossReferences,
    Domain,
    Identifier,
    IdentifierRef,
    PersonStatus,
    SearchCriteria,
)
from identity.mpi.domains import DomainRegistry
from identity.mpi.matcher import sound
from identity.store.repository import Repository
from identity.store.search import SearchTerms
from identity.store.state import RecordIdentifiers, StoredRecord
from matching.normalize import (
    fold,
    normalize_address,
    normalize_family,
    normalize_given,
    normalize_phone,
    normalize_postal_code,
    normalize_sex,
    parse_birth_date,
)


async def cross_references(
    repo: Repository,
    domains: DomainRegistry,
    ref: IdentifierRef,
    targets: Sequence[AuthorityRef],
) -> CrossReferences:
    """Identifiers of the same person in ``targets`` (all domains when empty).

    Errors are distinct: UnknownDomain (source authority), UnknownTargetDomain (with the
    1-based position of the first bad target), UnknownIdentifier (known domain, no record).
    """
    domain = await domains.resolve(ref.authority)
    target_domains = await domains.resolve_targets(targets)
    wanted = {d.id for d in target_domains}

    # The usual case in one round trip: a record's own identifier, or an enterprise id.
    named = await repo.cross_references(None if domain.is_enterprise else domain.id, ref.value)
    records: Sequence[RecordIdentifiers | StoredRecord]
    if named is not None:
        if named.status != PersonStatus.ACTIVE:
            raise UnknownIdentifier(domain.namespace, ref.value)
        person_id, record_id = named.person_id, named.record_id
        enterprise_id = named.enterprise_id
        records = named.records
    else:
        record_id = None
        if domain.is_enterprise:
            person = await repo.person_by_enterprise_id(ref.value)
            if person is None or person.status != PersonStatus.ACTIVE:
                raise UnknownIdentifier(domain.namespace, ref.value)
        else:
            # An identifier carried only as another identifier (e.g. a national ID in PID-19).
            found = await repo.records(await repo.records_with_identifier(domain.id, ref.value))
            persons = {r.person_id for r in found if r.person_id}
            if len(persons) != 1:
                raise UnknownIdentifier(domain.namespace, ref.value)
            person = await repo.person(persons.pop())
            assert person is not None
        person_id, enterprise_id = person.id, person.enterprise_id
        records = await repo.person_records([person_id])

    by_id = domains.by_id
    references: list[CrossReference] = []
    seen = {(domain.id, ref.value)}

    def add(target: Domain, value: str, rid: int | None, type_code: str | None = None) -> None:
        if (target.id, value) in seen or (wanted and target.id not in wanted):
            return
        seen.add((target.id, value))
        references.append(
            CrossReference(
                identifier=Identifier(
                    domain=target.namespace, value=value, oid=target.oid, type=type_code
                ),
                record_id=rid,
            )
        )

    add(domains.enterprise, enterprise_id, None)
    for record in records:  # the records' own identifiers first, then the others they carry
        add(by_id[record.domain_id], record.identifier, record.id)
    for record in records:
        for domain_id, value, type_code in record.others:
            other = by_id.get(domain_id)
            if other is not None:
                add(other, value, None, type_code)
    return CrossReferences(
        person_id=person_id,
        enterprise_id=enterprise_id,
        source_record_id=record_id,
        references=tuple(references),
    )


def _name_term(terms: SearchTerms, column: str, raw: str, mode: str, family: bool) -> None:
    wildcard = raw.endswith("*")
    text = raw.rstrip("*")
    value = normalize_family(text) if family else normalize_given(text)
    if not value:
        if wildcard:
            return  # "*" alone matches everything
        raise InvalidInput(f"{column}: empty name", field=column)
    prefix = wildcard or mode == "prefix"  # a wildcard wins over every mode
    if mode == "phonetic" and not prefix:
        terms.equals(f"{column}_phon", sound(value))
        return
    # A record keeps its first given name apart from the others (normalised: given "JULIO",
    # middle "CESAR" for "Julio César"), so a given name of several words is the first word
    # and then the rest, whole or as a prefix.
    first, _, rest = (value, "", "") if family else value.partition(" ")
    if not rest:
        (terms.prefix if prefix else terms.equals)(f"{column}_norm", value)
        return
    terms.equals(f"{column}_norm", first)
    if prefix:
        terms.normalized_prefix("middle", rest)
    else:
        terms.normalized_contains({"middle": rest})


async def build_search_terms(domains: DomainRegistry, criteria: SearchCriteria) -> SearchTerms:
    terms = SearchTerms()
    if not criteria.include_inactive:
        terms.active_only()
    for column, family in (("family", True), ("given", False)):
        value = getattr(criteria, column)
        if not value:
            continue
        if column in criteria.contains:
            text = (normalize_family if family else normalize_given)(value.strip("*"))
            if not text:
                raise InvalidInput(f"{column}: empty name", field=column)
            terms.inside(column, text)
        else:
            _name_term(terms, column, value, criteria.name_mode, family)
    if criteria.birth_date:
        parsed = parse_birth_date(criteria.birth_date)
        if parsed is None:
            raise InvalidInput(
                f"birth date {criteria.birth_date!r} is not a valid date", field="birth_date"
            )
        terms.birth_date(parsed.iso)
    terms.birth_date_range(criteria.birth_date_from, criteria.birth_date_to)
    if criteria.sex:
        sex = normalize_sex(criteria.sex)
        if sex is None:
            raise InvalidInput(f"unknown sex code {criteria.sex!r}", field="sex")
        terms.equals("sex", sex)
    if criteria.identifier is not None:
        domain = await domains.resolve(criteria.identifier.authority)
        terms.identifier(domain.id, criteria.identifier.value)
    if criteria.account_number:
        terms.account_number(criteria.account_number)
    if criteria.mothers_identifier is not None:
        mother = await domains.resolve(criteria.mothers_identifier.authority)
        terms.mothers_identifier(criteria.mothers_identifier.value, mother.namespace, mother.oid)
    if criteria.mothers_maiden_name:
        terms.equals("mothers_maiden_norm", normalize_family(criteria.mothers_maiden_name))
    if criteria.postal_code:
        terms.prefix("postal_code", normalize_postal_code(criteria.postal_code))
    if criteria.city:
        if "city" in criteria.contains:
            terms.inside("city", fold(criteria.city))
        else:
            terms.equals("city_norm", fold(criteria.city))
    if criteria.phone:
        terms.phone(normalize_phone(criteria.phone))
    if criteria.address_line:
        tokens = normalize_address({"lines": [criteria.address_line]})["tokens"]
        if tokens:
            terms.normalized_contains({"address_tokens": tokens})
    terms.updated(criteria.updated_from, criteria.updated_before)
    if criteria.sort:
        terms.sort(criteria.sort)
    if criteria.state:
        terms.normalized_contains({"addresses": [{"state": fold(criteria.state)}]})
    if criteria.country:
        terms.normalized_contains({"addresses": [{"country": fold(criteria.country)}]})
    return terms
