"""Builders of inbound test messages (text, CR-separated) and reply readers."""

from __future__ import annotations

import itertools
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse

from identity.hl7v2.tokenizer import Message, Segment, parse_message

_ids = itertools.count(1)


def next_id() -> str:
    return f"MSG{next(_ids):06d}"


def msh(
    kind: str,
    app: str = "ADT_A",
    facility: str = "FAC",
    control: str | None = None,
    version: str = "2.5",
    charset: str = "",
) -> str:
    control = control or next_id()
    tail = f"||||||{charset}" if charset else ""
    return (f"MSH|^~\\&|{app}|{facility}|IDENTITY|MPI|20260101120000||{kind}|{control}|P|"
            f"{version}{tail}")


def adt(
    trigger: str,
    pid3: str,
    name: str = "SMITH^JOHN",
    dob: str = "19800312",
    sex: str = "M",
    app: str = "ADT_A",
    control: str | None = None,
    version: str = "2.5",
    extra_pid: str = "",
    mrg: str | None = None,
    charset: str = "",
    pv1: bool = True,
    structure: str | None = None,
    mother: str = "",
) -> str:
    structure = structure or {"A40": "ADT_A39", "A47": "ADT_A30", "A28": "ADT_A05",
                              "A31": "ADT_A05"}.get(trigger, "ADT_A01")
    segments = [
        msh(f"ADT^{trigger}^{structure}", app=app, control=control, version=version,
            charset=charset),
        f"EVN|{trigger}|20260101120000",
        f"PID|1||{pid3}||{name}|{mother}|{dob}|{sex}{extra_pid}",
    ]
    if mrg is not None:
        segments.append(f"MRG|{mrg}")
    if pv1 and trigger not in ("A40", "A47"):
        segments.append("PV1|1|N")
    return "\r".join(segments) + "\r"


def pix_query(pid: str, domains: str = "", app: str = "PIXC", tag: str = "Q1") -> str:
    return "\r".join([
        msh("QBP^Q23^QBP_Q21", app=app),
        f"QPD|IHE PIX Query|{tag}|{pid}|{domains}",
        "RCP|I",
    ]) + "\r"


def pdq_query(
    params: str, domains: str = "", limit: int | None = None, pointer: str = "", tag: str = "P1"
) -> str:
    rcp = f"RCP|I|{limit}^RD" if limit else "RCP|I"
    qpd = f"QPD|IHE PDQ Query|{tag}|{params}" + (f"|||||{domains}" if domains else "")
    segments = [msh("QBP^Q22^QBP_Q21", app="PDQC"), qpd, rcp]
    if pointer:
        segments.append(f"DSC|{pointer}|I")
    return "\r".join(segments) + "\r"


def reply(raw: bytes) -> Message:
    return parse_message(raw)


def msa(message: Message) -> str:
    segment = message.segment("MSA")
    assert segment is not None
    return segment.value(1)


def errs(message: Message) -> list[tuple[str, str]]:
    """(ERR-2 raw, ERR-3.1) of every ERR segment."""
    return [(e.field(2), e.value(3)) for e in message.segments("ERR")]


def qak(message: Message) -> str:
    segment = message.segment("QAK")
    assert segment is not None
    return segment.value(2)


def pid3(segment: Segment) -> list[str]:
    return [rep.raw for rep in segment.repetitions(3)]


def strictly_valid(raw: bytes, charset: str = "ascii") -> Any:
    """The message parsed by hl7apy with strict validation and groups (its structure, required
    segments and fields, data types and lengths checked); fails when it is not valid.

    hl7apy knows only the generic QPD (QPD-1..3, no repetition), not the IHE query-specific
    parameters (QPD-3 repeating in PDQ, QPD-4 and QPD-8): the echoed QPD is replaced by its
    first three fields, first repetition, before validating. It also takes the single-space
    PID-5 that TF2 ITI-10 asks for as missing: that one is replaced by a name.
    """
    segments = []
    for segment in raw.decode(charset).split("\r"):
        fields = segment.split("|")
        if fields[0] == "QPD":
            segment = "|".join(f.split("~")[0] for f in fields[:4])
        elif fields[0] == "PID" and len(fields) > 5 and fields[5] == " ":
            fields[5] = "X"
            segment = "|".join(fields)
        segments.append(segment)
    parsed = hl7apy_parse("\r".join(segments), validation_level=VALIDATION_LEVEL.STRICT,
                          find_groups=True)
    assert parsed.validate()
    return parsed
