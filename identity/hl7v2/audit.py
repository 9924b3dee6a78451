"""What the HL7 v2 door puts in its audit records (ITI-20; docs/audit.md, *The HL7 v2 door*).

- the transaction a message is (``transaction_of``): ITI-8 for A01/A04/A05/A08 (and A40 in
  v2.3.1, ITI-8's version), ITI-30 for A28/A31/A47/A24/A37 (and A40 in v2.5 and later), ITI-9
  for QBP^Q23, ITI-21 for QBP^Q22; None for what is not audited (QCN^J01);
- the sender as a participant (``sender``): ``MSH-3|MSH-4`` (HD.1 of each) and the IP address
  of the connection it came on;
- patients as fully qualified CX (``patient_cx``, ``identifier_cx``): the domain's OID when the
  message or the configured domain gives one, else its namespace; an identifier with neither
  is left out. Only identifiers, never a name or another demographic;
- the query content of ITI-9 / ITI-21 (``query_content``): IHE asks for the whole QBP message;
  a PDQ query's demographics are replaced by ``*`` (``redact_pdq``), since issue 16 keeps
  patient data out of audit records but identifiers.
"""

from __future__ import annotations

from collections.abc import Iterable

from identity.audit.record import Action, Participant, cx, hl7_peer
from identity.hl7v2.errors import ErrorLocation, ParseError
from identity.hl7v2.mllp import Peer, current_peer
from identity.hl7v2.replies import ErrorDetail
from identity.hl7v2.tokenizer import Message, Segment
from identity.model import Identifier, IdentifierRef
from identity.mpi.domains import DomainRegistry

ITI8_EVENTS = frozenset({"A01", "A04", "A05", "A08"})
"""ITI-8 Patient Identity Feed (ITI TF-2 3.8.4): admit/register or update; A40 in v2.3.1."""
CREATE_EVENTS = frozenset({"A01", "A04", "A05", "A28"})
"""Events audited with action C (ITI TF-2 3.8.5.1: a create); the others are U (A40: D + U)."""

REDACTED = "*"
"""What replaces a searched demographic value in a PDQ query's audit copy."""


def feed_transaction(trigger: str, version: str) -> str:
    """ITI-8 or ITI-30 for an ADT event: an A40 is ITI-8 in v2.3.1 (the version ITI-8 is
    defined in), ITI-30 (PAM, v2.5) otherwise."""
    if trigger in ITI8_EVENTS:
        return "ITI-8"
    if trigger == "A40" and version.startswith("2.3"):
        return "ITI-8"
    return "ITI-30"


def feed_action(trigger: str) -> Action:
    """C for a create (A01, A04, A05, A28), U for the rest (A08, A31, A47, A24, A37; an A40's
    survivor, its retired patient being D)."""
    return Action.CREATE if trigger in CREATE_EVENTS else Action.UPDATE


def transaction_of(message: Message) -> str | None:
    """The audited IHE transaction of a message; None for one that is not audited."""
    kind = message.message_type
    if kind == "ADT":
        return feed_transaction(message.trigger_event, message.version)
    if kind == "QBP":
        return {"Q23": "ITI-9", "Q22": "ITI-21"}.get(message.trigger_event)
    return None


def peer_address(peer: Peer | None = None) -> str | None:
    """The IP address of the connection a message came on (``Peer.address`` is
    ``address:port``); None outside a connection."""
    if peer is None:
        peer = current_peer.get()
    if peer is None or not peer.address:
        return None
    host, sep, port = peer.address.rpartition(":")
    if not sep or not port.isdigit():
        return peer.address
    return host.strip("[]")


def sender(message: Message, peer: Peer | None = None) -> Participant:
    """The sending application as the source participant: ``MSH-3|MSH-4`` (HD.1 of each, as
    the domains' ``sources`` and ``[[mllp.clients]]`` name them) and its IP address."""
    msh = message.msh
    return hl7_peer(msh.value(3), msh.value(4), peer_address(peer), requestor=True)


def patient_cx(
    refs: Iterable[IdentifierRef], domains: DomainRegistry, source: str | None = None
) -> list[str]:
    """Identifiers as received (PID-3, MRG-1, QPD-3) as fully qualified CX: the configured
    domain's OID (or namespace) when the authority names one (or, without an authority, when
    ``source`` owns exactly one), else the OID or namespace the message gave; an identifier
    with neither is left out."""
    found: list[str] = []
    for ref in refs:
        domain = domains.known(ref.authority, source)
        if domain is not None:
            text = cx(ref.value, oid=domain.oid, namespace=domain.namespace)
        elif ref.authority.oid or ref.authority.namespace:
            text = cx(ref.value, oid=ref.authority.oid, namespace=ref.authority.namespace)
        else:
            continue
        if text not in found:
            found.append(text)
    return found


def identifier_cx(identifiers: Iterable[Identifier]) -> list[str]:
    """Resolved identifiers (a PIX or PDQ answer, an ITI-10 PID-3) as fully qualified CX."""
    return [cx(i.value, oid=i.oid, namespace=i.domain) for i in identifiers]


# --- reasons ------------------------------------------------------------------------------------


def _names_demographics(location: ErrorLocation | None, transaction: str) -> bool:
    """Whether an error at ``location`` may quote a demographic value: a PID field other
    than PID-3, or QPD-3 of a PDQ query (e.g. a malformed birth date, quoted as received)."""
    if location is None or location.field is None:
        return False
    if location.segment == "PID":
        return location.field != 3
    return location.segment == "QPD" and location.field == 3 and transaction == "ITI-21"


def error_reason(errors: Iterable[ErrorDetail], transaction: str) -> str:
    """An audit record's outcome description from the ERR segments of the answer: HL7 table
    0357 code, location and the diagnostic text, which is left out where it may quote a
    demographic value (only identifiers go into audit records)."""
    texts = []
    for error in errors:
        text = f"HL7 0357 {error.code}"
        if error.location is not None:
            text += f" at {error.location.to_erl()}"
        if error.diagnostic and not _names_demographics(error.location, transaction):
            text += f": {error.diagnostic}"
        texts.append(text)
    return "; ".join(texts)[:500]


def parse_reason(exc: ParseError, transaction: str) -> str:
    """The outcome description of a message refused for a missing or malformed field."""
    detail = ErrorDetail(exc.location, exc.code, exc.text)
    return f"{type(exc).__name__}, {error_reason([detail], transaction)}"[:500]


# --- query content ------------------------------------------------------------------------------


def _is_identifier_parameter(name: str) -> bool:
    path = name.lstrip("@").strip().upper()
    return path == "PID.3" or path.startswith("PID.3.")


def redact_pdq(message: Message) -> str:
    """The audit copy of a QBP^Q22 (ITI-21): MSH as received; QPD with QPD-1 (query name),
    QPD-2 (query tag) and QPD-8 (domains returned) kept and, in QPD-3, every ``@PID.x^value``
    parameter that is not a patient identifier (PID.3 and its components) with its value
    replaced by ``*``, its name kept (so an auditor sees what was searched, never the
    demographics); RCP and DSC as received; any other segment or field left out. Segments
    end with CR."""
    encoding = message.encoding
    fs, cs, rs = encoding.field, encoding.component, encoding.repetition
    lines: list[str] = []
    for segment in message:
        if segment.name in ("MSH", "RCP", "DSC"):
            lines.append(segment.raw)
        elif segment.name == "QPD":
            lines.append(_redact_qpd(segment, fs, cs, rs))
    return "".join(line + "\r" for line in lines)


def _redact_qpd(qpd: Segment, fs: str, cs: str, rs: str) -> str:
    parameters = []
    for rep in qpd.repetitions(3):
        parts = rep.components()
        if not parts:
            parameters.append("")
            continue
        name = parts[0]
        if _is_identifier_parameter(rep.value(1)):
            parameters.append(rep.raw)
        elif len(parts) > 1 and any(parts[1:]):
            parameters.append(name + cs + REDACTED)
        else:
            parameters.append(name)
    fields = ["QPD", qpd.field(1), qpd.field(2), rs.join(parameters), "", "", "", "",
              qpd.field(8)]  # fmt: skip
    while len(fields) > 1 and not fields[-1]:
        fields.pop()
    return fs.join(fields)


def query_content(message: Message) -> bytes:
    """What an ITI-9 / ITI-21 audit record holds as its query (ParticipantObjectQuery): a PIX
    query (identifiers only) as received, a PDQ query redacted (``redact_pdq``); in the
    message's character set."""
    if message.trigger_event == "Q22":
        text = redact_pdq(message)
    else:
        text = message.to_text()
    return text.encode(message.charset, errors="replace")
