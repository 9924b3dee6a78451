"""Small builders for records in tests."""

from __future__ import annotations

from identity.model import AuthorityRef, Demographics, IdentifierRef, Name, RecordInput


def ref(domain: str, value: str) -> IdentifierRef:
    return IdentifierRef(value=value, authority=AuthorityRef(namespace=domain))


def person(
    domain: str,
    value: str,
    family: str | None = "Smith",
    given: str | None = "John",
    birth_date: str | None = "1980-03-12",
    sex: str | None = "M",
    others: tuple[IdentifierRef, ...] = (),
    **extra: object,
) -> RecordInput:
    names = None
    if family is not None or given is not None:
        names = (Name(family=family, given=(given,) if given else ()),)
    return RecordInput(
        identifier=ref(domain, value),
        demographics=Demographics(names=names, birth_date=birth_date, sex=sex, **extra),
        other_identifiers=others,
    )
