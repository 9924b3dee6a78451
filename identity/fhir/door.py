"""Request handlers of the FHIR door: FHIR in -> one Mpi command or query -> FHIR out."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from multidict import MultiDict

from identity.audit.record import (
    Action,
    Auditor,
    AuditRecord,
    Outcome,
    Participant,
    fhir_client,
    human_requestor,
    scope_roles,
)
from identity.config import Settings
from identity.errors import (
    AmbiguousDomain,
    InvalidInput,
    InvalidState,
    MpiError,
    NotFound,
    UnknownDomain,
    UnknownIdentifier,
    UnknownTargetDomain,
)
from identity.fhir import search as pdq
from identity.fhir.access import principal_of
from identity.fhir.auditing import (
    RequestAudit,
    identifier_cx,
    identifiers_cx,
    match_params,
    pix_params,
    record_cx,
    redacted_query,
    redacted_reason,
    ref_cx,
    request_audit,
)
from identity.fhir.capability import capability_statement
from identity.fhir.patient import (
    ROLE_CODE,
    authority_of,
    body_identifiers,
    contained_mother,
    demographics_of,
    etag,
    fhir_instant,
    identifier_ref,
    parse_token,
    patient_json,
    received_size,
    record_input,
    replaced_by,
    same_version,
    system_of,
    validate_patient,
    without_our_mother,
)
from identity.fhir.wire import (
    FhirError,
    Json,
    check_format,
    fhir_response,
    read_json,
    writing,
)
from identity.model import (
    AuthorityRef,
    CommandResult,
    CrossReferences,
    IdentifierRef,
    RecordStatus,
    RegisterResult,
    SearchCriteria,
    SourceRecord,
)
from identity.mpi import Envelope, Merge, Mpi, Register, Remove

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
MATCH_EXPLANATION = "https://identity.example.org/fhir/StructureDefinition/match-explanation"


@dataclass(frozen=True, slots=True)
class Change:
    """One patient a change touches, for its audit record: the action, the patient's
    identifiers (CX), the resource written when known."""

    action: Action
    patient: tuple[str, ...]
    resource: str | None = None


@dataclass
class Caller:
    """Who sent the request, and what its audit records need to say so."""

    client: str | None
    actor: str
    message_id: str
    address: str | None = None
    human: Participant | None = None
    endpoint: str | None = None
    auditor: Auditor | None = None
    state: RequestAudit | None = None
    transaction: str = "ITI-104"
    entry: int | None = None
    """PMIR: the index of the history entry being applied."""

    @property
    def participant(self) -> Participant:
        """BALP agent[client]: the client id and its address."""
        return _client_participant(self.client, self.address)

    @property
    def envelope(self) -> Envelope:
        """The envelope of the request's command: no sender, so no stored reply (a FHIR
        client retries a PUT, which is idempotent itself). No audit records: see ``feed``."""
        return Envelope(actor=self.actor, source=self.client, message_id=self.message_id)

    def feed(
        self,
        changes: Sequence[Change],
        of_result: Callable[[Any], tuple[Sequence[Change], Outcome, str | None]] | None = None,
    ) -> Envelope:
        """The envelope of a change to patients (ITI-104, ITI-93) with its audit records, one
        per Change: ``changes`` as attempted (the records of a refused or failed command, with
        its outcome and reason), ``of_result(result)`` those of the command that succeeded
        when they depend on its result (create or update; a merge that found nothing)."""
        auditor, state, entry = self.auditor, self.state, self.entry
        if auditor is None:
            return self.envelope

        def records(done: Sequence[Change], outcome: Outcome,
                    reason: str | None) -> list[AuditRecord]:  # fmt: skip
            if state is not None:
                state.recorded = True
            return [auditor.patient_feed(
                self.transaction, action=c.action, caller=self.participant, human=self.human,
                patient=c.patient, message_id=self.message_id, outcome=outcome,
                description=redacted_reason(reason), endpoint=self.endpoint,
                resource=c.resource)
                for c in done]  # fmt: skip

        def audit(outcome: Outcome, reason: str | None) -> list[AuditRecord]:
            if state is not None and entry is not None and outcome != Outcome.SUCCESS:
                state.failed_entries.add(entry)  # queued by the core: kept by a rollback
            return records(changes, outcome, reason)

        def audit_result(result: Any) -> list[AuditRecord]:
            assert of_result is not None
            return records(*of_result(result))

        return Envelope(actor=self.actor, source=self.client, message_id=self.message_id,
                        audit=audit, audit_result=audit_result if of_result else None)


CALLER_KEY = web.RequestKey("fhir_caller", Caller)


class FhirDoor:
    def __init__(self, mpi: Mpi, settings: Settings) -> None:
        self.mpi = mpi
        self.settings = settings

    # --- helpers ------------------------------------------------------------------------

    def base(self, request: web.Request) -> str:
        if self.settings.fhir.base_url:
            return self.settings.fhir.base_url.rstrip("/")
        return f"{request.scheme}://{request.host}/fhir"

    def caller(self, request: web.Request) -> Caller:
        """The client is the bearer token's (``[auth] mode = "jwt"``), else the client id
        header's; a token issued to a person (``Principal.person``) names that person as the
        human requestor of the audit records. One Caller per request."""
        found = request.get(CALLER_KEY)
        if found is not None:
            return found
        principal = principal_of(request)
        human = None
        if principal.authenticated:
            client = principal.client
            if principal.person and principal.subject and principal.subject != client:
                human = human_requestor(principal.subject, user_name=principal.person,
                                        roles=scope_roles(sorted(principal.scopes)))
        else:
            client = request.headers.get(self.settings.fhir.client_id_header) or None
        message_id = request.headers.get("X-Request-Id") or str(uuid.uuid4())
        who = Caller(client, f"fhir:{client or 'anonymous'}", message_id,
                     address=request.remote, human=human, endpoint=self.base(request),
                     auditor=self.mpi.audit.auditor, state=request_audit(request))
        request[CALLER_KEY] = who
        return who

    def enterprise_cx(self, body: Json, first: IdentifierRef | None = None) -> tuple[str, ...]:
        """A Patient's identifiers as CX (the conditional identifier ``first`` first), not the
        enterprise identifier."""
        return identifiers_cx(body.get("identifier") or (), skip=self.enterprise_system,
                              first=ref_cx(first) if first is not None else None)

    def queried(self, request: web.Request, name: str, query: str,
                patients: Callable[[], Sequence[Sequence[str]]]) -> None:  # fmt: skip
        """Queue the records of a query answered, one per patient returned (``patients()``:
        their identifiers); made by the audit writer, off the request's path."""
        who = self.caller(request)
        auditor, at = who.auditor, _now()
        assert auditor is not None
        self.mpi.audit.defer(lambda: auditor.query(
            name, caller=who.participant, human=who.human, query=query, patients=patients(),
            message_id=who.message_id, endpoint=who.endpoint, at=at))  # fmt: skip
        if who.state is not None:
            who.state.recorded = True

    def system_of(self, namespace: str) -> str:
        """The FHIR system of the domain named ``namespace`` (its namespace when unknown)."""
        domain = self.mpi.domains.known(AuthorityRef(namespace=namespace))
        return domain.system if domain is not None else namespace

    @property
    def enterprise_system(self) -> str:
        return self.mpi.domains.enterprise.system

    def patient(self, record: SourceRecord, **kw: Any) -> Json:
        mother = record.demographics.mothers_identifier
        if mother is not None:
            kw["mother_system"] = self.authority_system(mother.authority)
        return patient_json(record, self.mpi.domains.enterprise, **kw)

    def authority_system(self, authority: AuthorityRef) -> str | None:
        """The FHIR system of an assigning authority as received: its domain's when it names
        a configured one, else ``urn:oid:<oid>``, else the namespace (None: neither)."""
        domain = self.mpi.domains.known(authority)
        if domain is not None:
            return domain.system
        return f"urn:oid:{authority.oid}" if authority.oid else authority.namespace

    def same_authority(self, a: AuthorityRef, b: AuthorityRef) -> bool:
        """Whether two assigning authorities as received name one domain (or are the same)."""
        if a == b:
            return True
        domain = self.mpi.domains.known(a)
        return domain is not None and domain == self.mpi.domains.known(b)

    def mother_ref(self, mother: IdentifierRef) -> IdentifierRef:
        """The mother's identifier as the record keeps it (``Demographics.mothers_identifier``,
        PID-21): in a configured domain, named by its namespace and OID (so that a search by
        either finds it, as PDQ's ``@PID.21.4`` does); an unknown system as received, as the
        HL7 v2 door keeps an unknown PID-21 assigning authority."""
        domain = self.mpi.domains.known(mother.authority)
        if domain is None:
            return mother
        return mother.model_copy(update={
            "authority": AuthorityRef(namespace=domain.namespace, oid=domain.oid)})

    def record_headers(self, request: web.Request, record: SourceRecord) -> dict[str, str]:
        return {
            "ETag": etag(record),
            "Last-Modified": record.updated_at.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "Location": f"{self.base(request)}/Patient/{record.id}/_history/{record.version}",
        }

    def conditional_identifier(self, request: web.Request) -> IdentifierRef:
        """The single ``identifier=system|value`` of a conditional PUT or DELETE."""
        unknown = [k for k in request.query if k not in ("identifier", "_format")]
        if unknown:
            raise FhirError(400, "not-supported", "conditional update and delete take only the "
                            f"identifier parameter, not {unknown}")
        tokens = request.query.getall("identifier", [])
        if not tokens:
            raise FhirError(400, "required", "conditional update and delete need "
                            "identifier=system|value", expression="identifier")
        if len(tokens) > 1 or "," in tokens[0]:
            raise FhirError(412, "multiple-matches", "give exactly one identifier=system|value",
                            expression="identifier")
        system, value = parse_token(tokens[0])
        if not system or not value:
            raise FhirError(400, "required", "identifier needs both system and value",
                            expression="identifier")
        return identifier_ref(system, value)

    # --- capability ---------------------------------------------------------------------

    async def metadata(self, request: web.Request) -> web.StreamResponse:
        check_format(request)
        return fhir_response(capability_statement(self.base(request), self.settings))

    # --- read ---------------------------------------------------------------------------

    async def record_or_404(self, raw_id: str) -> SourceRecord:
        if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 18:
            raise FhirError(404, "not-found", f"Patient/{raw_id} is not known")
        try:
            record = await self.mpi.get_record(int(raw_id))
        except NotFound as exc:
            raise FhirError(404, "not-found", f"Patient/{raw_id} is not known") from exc
        if record.status == RecordStatus.REMOVED:
            raise FhirError(410, "deleted", f"Patient/{raw_id} was removed")
        return record

    async def _read_record(self, request: web.Request) -> SourceRecord:
        """The record of a read or vread; the audit of a failure knows its patient from here."""
        raw_id = request.match_info["id"]
        try:
            record = await self.record_or_404(raw_id)
        except FhirError as exc:
            if exc.status == 410:  # removed, but its identifiers are known
                record = await self.mpi.get_record(int(raw_id))
                request_audit(request).patients = [record_cx(record)]
            raise
        request_audit(request).patients = [record_cx(record)]
        return record

    def read_audited(self, request: web.Request, record: SourceRecord,
                     interaction: str = "read") -> None:
        """Queue the record of a Patient read, vread or history (BALP PatientRead, with the
        RESTful interaction as subtype)."""
        who = self.caller(request)
        auditor, at = who.auditor, _now()
        assert auditor is not None
        self.mpi.audit.defer(lambda: [auditor.read(
            caller=who.participant, human=who.human, patient=record_cx(record),
            resource=f"Patient/{record.id}", message_id=who.message_id,
            endpoint=who.endpoint, at=at, interaction=interaction)])  # fmt: skip
        if who.state is not None:
            who.state.recorded = True

    async def read(self, request: web.Request) -> web.StreamResponse:
        check_format(request)
        with self.mpi.query_for(self.caller(request).actor):  # the replica, when it may serve
            return await self._read(request)

    async def _read(self, request: web.Request) -> web.StreamResponse:
        record = await self._read_record(request)
        see_also: tuple[int, ...] = ()
        if record.status == RecordStatus.ACTIVE and record.person_id is not None:
            person = await self.mpi.get_person(record.person_id)
            see_also = tuple(
                r.id for r in person.records if r.id != record.id and r.status == "active"
            )
        summary, elements = pdq.parse_subset(request.query)
        headers = self.record_headers(request, record)
        del headers["Location"]
        response = fhir_response(pdq.subset(self.patient(record, see_also=see_also), summary,
                                            elements), headers=headers)
        self.read_audited(request, record)
        return response

    async def vread(self, request: web.Request) -> web.StreamResponse:
        check_format(request)
        vid = request.match_info["vid"]
        try:
            record = await self._read_record(request)
        except FhirError as exc:
            if exc.status != 410:
                raise
            record = await self.mpi.get_record(int(request.match_info["id"]))
            if vid == str(record.version):
                raise
        if vid != str(record.version):
            from identity.fhir.rest import older_version  # rest imports this module

            record = await older_version(self, record, vid)
        headers = self.record_headers(request, record)
        del headers["Location"]
        response = fhir_response(self.patient(record), headers=headers)
        self.read_audited(request, record, "vread")
        return response

    # --- ITI-83 $ihe-pix ----------------------------------------------------------------

    async def ihe_pix(self, request: web.Request) -> web.StreamResponse:
        check_format(request)
        with self.mpi.query_for(self.caller(request).actor):  # the replica, when it may serve
            return await self._ihe_pix(request)

    async def _ihe_pix(self, request: web.Request) -> web.StreamResponse:
        state = request_audit(request)
        if request.method == "POST":
            body = await read_json(request)
            source, targets = pix_parameters(body)  # checked first: the body's shape is known
            state.query = redacted_query("POST", request.path, request.query.items(),
                                         pix_params(body))
        else:
            state.query = redacted_query("GET", request.path, request.query.items())
            tokens = request.query.getall("sourceIdentifier", [])
            if len(tokens) > 1:
                raise FhirError(400, "invalid", "sourceIdentifier is 1..1",
                                expression="sourceIdentifier")
            source = parse_token(tokens[0], "sourceIdentifier") if tokens else None
            targets = [t for raw in request.query.getall("targetSystem", [])
                       for t in raw.split(",") if t]
        if source is None or not source[1]:
            raise FhirError(400, "required", "sourceIdentifier=system|value is required",
                            expression="sourceIdentifier")
        if not source[0]:
            raise FhirError(400, "code-invalid", "sourceIdentifier Assigning Authority not found")
        ref = IdentifierRef(value=source[1], authority=authority_of(source[0]))
        queried = identifier_cx(source[0], source[1])
        state.patients = [(queried,) if queried else ()]
        try:
            xrefs = await self.mpi.cross_references(ref, [authority_of(t) for t in targets])
        except UnknownTargetDomain as exc:
            raise FhirError(403, "code-invalid", "targetSystem not found") from exc
        except (UnknownDomain, AmbiguousDomain, InvalidInput) as exc:
            raise FhirError(400, "code-invalid",
                            "sourceIdentifier Assigning Authority not found") from exc
        except UnknownIdentifier as exc:
            raise FhirError(404, "not-found",
                            "sourceIdentifier Patient Identifier not found") from exc
        parameters: list[Json] = []
        target_ids: list[Json] = []
        for xref in xrefs.references:
            ident = xref.identifier
            value: Json = {"system": system_of(ident.domain, ident.oid), "value": ident.value}
            parameters.append({"name": "targetIdentifier", "valueIdentifier": value})
            if xref.record_id is not None:
                target_ids.append({"name": "targetId",
                                   "valueReference": {"reference": f"Patient/{xref.record_id}"}})
        body_out: Json = {"resourceType": "Parameters"}
        if parameters or target_ids:
            body_out["parameter"] = parameters + target_ids
        response = fhir_response(body_out)
        assert state.query is not None
        self.queried(request, "ITI-83", state.query, lambda: [pix_patient(queried, xrefs)])
        return response

    # --- ITI-104 feed -------------------------------------------------------------------

    async def conditional_update(self, request: web.Request) -> web.StreamResponse:
        check_format(request)
        ref = self.conditional_identifier(request)
        who = self.caller(request)
        if who.state is not None:
            who.state.patients = [tuple(c for c in (ref_cx(ref),) if c)]
        body = await read_json(request)
        validate_patient(body)
        link = replaced_by(body)
        if link is not None:
            record, status = await self.merge(ref, body, link, who)
        else:
            record, status = await self.update(ref, body, who,
                                               if_match=request.headers.get("If-Match"))
        headers = self.record_headers(request, record)
        if status == 200:
            del headers["Location"]
        headers["X-Request-Id"] = who.message_id
        return fhir_response(self.patient(record), status, headers)

    async def update(
        self, ref: IdentifierRef, body: Json, who: Caller, *, if_match: str | None = None,
        mother: IdentifierRef | None = None,
    ) -> tuple[SourceRecord, int]:
        """Create or replace the record ``ref`` names with the Patient ``body`` (ITI-104,
        PMIR, plain REST create and update); ``if_match``: the ETag the client saw (412 when
        it is not the current one); ``mother``: her identifier as a PMIR message gives it (a
        RelatedPerson entry), else the Patient's contained mother's (:func:`contained_mother`).
        A Patient without a name is a newborn not yet named: accepted when it names its
        mother, as over HL7 v2 (PID-21 or an NK1 mother)."""
        if body.get("active") is False:
            raise FhirError(422, "business-rule", "active=false needs a replaced-by link (merge);"
                            " to remove a patient use DELETE", expression="Patient.active")
        if not body.get("identifier"):
            raise FhirError(400, "required", "Patient.identifier is required (1..*)",
                            expression="Patient.identifier")
        if mother is None:
            found = contained_mother(body)
            mother = found[1] if found is not None else None
        if not body.get("name") and mother is None:
            raise FhirError(
                400, "required", "Patient.name is required (1..*) unless the Patient names its "
                "mother (a newborn not yet named): a RelatedPerson with relationship MTH "
                f"({ROLE_CODE}) and an identifier, contained in the Patient with patient '#' or "
                "referenced from Patient.link, or (ITI-93) an entry of the history Bundle whose "
                "patient references this Patient", expression="Patient.name")
        if if_match:
            current = await self.mpi.find_record(ref)
            if not same_version(if_match, current):
                raise FhirError(412, "conflict", f"version mismatch: the current ETag is "
                                f"{etag(current)}")
        record = record_input(body, ref, enterprise_system=self.enterprise_system)
        if mother is not None:
            held = self.mother_ref(mother)
            current = await self._found(ref)
            was = current.demographics.mothers_identifier if current is not None else None
            if was is not None and was.value == held.value and self.same_authority(
                    was.authority, held.authority):
                held = was  # the same mother, as the record holds her (an HL7 v2 PID-21)
            kept = without_our_mother(record.demographics.received, held,
                                      self.authority_system(held.authority))
            record = record.model_copy(update={"demographics": record.demographics.model_copy(
                update={"mothers_identifier": held, "received": kept})})
        limit = self.settings.mllp.max_message_bytes
        if received_size(record.demographics.received) > limit:
            # kept in the record and in each version of its history: no more of it than the
            # largest patient message the HL7 v2 door takes
            raise FhirError(413, "too-long", "the elements of this Patient the registry keeps "
                            f"as sent (contact, photo, extensions, ...) exceed {limit} bytes")
        patient = self.enterprise_cx(body, ref)

        def done(result: RegisterResult) -> tuple[list[Change], Outcome, None]:
            action = Action.CREATE if result.created else Action.UPDATE
            return [Change(action, patient, f"Patient/{result.record.id}")], Outcome.SUCCESS, None

        envelope = who.feed([Change(Action.UPDATE, patient)], done)
        writing()  # the deadline stops here: see wire.writing
        try:
            result = await self.mpi.handle(Register(subject=record, replace=True), envelope)
        except InvalidState as exc:
            current = await self._found(ref)
            if current is None or current.status != RecordStatus.MERGED:
                raise
            raise FhirError(422, "business-rule", f"the Patient {self.token(ref)} was merged "
                            "into another Patient (replaced-by) and unmerge is not supported: "
                            "feed a new identifier instead",
                            expression="Patient.identifier") from exc
        return result.record, 201 if result.created else 200

    def token(self, ref: IdentifierRef) -> str:
        """An identifier as FHIR writes it: ``system|value``."""
        domain = self.mpi.domains.known(ref.authority)
        system = domain.system if domain is not None else (
            f"urn:oid:{ref.authority.oid}" if ref.authority.oid else ref.authority.namespace)
        return f"{system or ''}|{ref.value}"

    async def _found(self, ref: IdentifierRef) -> SourceRecord | None:
        try:
            return await self.mpi.find_record(ref)
        except MpiError:
            return None

    async def merge(
        self, ref: IdentifierRef, body: Json, other: Json, who: Caller
    ) -> tuple[SourceRecord, int]:
        """ITI-104 merge: the retired identifier, active=false, link replaced-by the survivor."""
        if body.get("active") is not False:
            raise FhirError(400, "business-rule", "a replaced-by link needs active=false",
                            expression="Patient.active")
        survivor = await self.survivor_identifier(other)
        if survivor.authority != ref.authority:
            retired_domain = await self.mpi.domains.resolve(ref.authority)
            survivor_domain = await self.mpi.domains.resolve(survivor.authority)
            if retired_domain.id != survivor_domain.id:
                raise FhirError(422, "business-rule", "merge is only supported within one "
                                "identifier domain", expression="Patient.link.other")
        retired_cx = self.enterprise_cx(body, ref)
        survivor_cx = tuple(c for c in (ref_cx(survivor),) if c)
        attempted = [Change(Action.DELETE, retired_cx), Change(Action.UPDATE, survivor_cx)]

        def done(result: CommandResult) -> tuple[list[Change], Outcome, str | None]:
            if not result.applied:  # nothing merged (a retry of a merge done, or no record)
                return attempted, Outcome.MINOR_FAILURE, f"not merged: {result.note}"[:500]
            ids = {r.identifier: r.id for r in result.records}
            return [
                Change(Action.DELETE, retired_cx, _patient_ref(ids.get(ref.value))),
                Change(Action.UPDATE, survivor_cx, _patient_ref(ids.get(survivor.value))),
            ], Outcome.SUCCESS, None

        writing()  # the deadline stops here: see wire.writing
        try:
            result = await self.mpi.handle(
                Merge.within(ref.authority, ref.value, survivor.value), who.feed(attempted, done)
            )
        except InvalidState as exc:
            target = IdentifierRef(value=survivor.value, authority=ref.authority)
            found = await self._found(target)
            if found is not None and found.status == RecordStatus.ACTIVE:
                raise
            raise FhirError(422, "business-rule", f"the surviving Patient {self.token(target)} "
                            "is not active (it was removed or merged)",
                            expression="Patient.link.other") from exc
        if not result.applied:
            # A repeated merge (e.g. a client retry) finds the retired record already merged.
            try:
                current = await self.mpi.find_record(ref)
            except UnknownIdentifier:
                current = None
            if current is not None and current.status == RecordStatus.MERGED:
                return current, 200
            raise FhirError(404, "not-found", result.note or "nothing to merge")
        retired = next((r for r in result.records if r.identifier == ref.value), None)
        if retired is None:
            # Unknown survivor: the core changed the identifier (TF2 ITI-30 A40 as A47); the
            # record now carries the surviving identifier.
            retired = next(r for r in result.records if r.identifier == survivor.value)
        return retired, 200

    async def survivor_identifier(self, other: Json) -> IdentifierRef:
        ident = other.get("identifier")
        if ident and ident.get("value"):
            return identifier_ref(ident.get("system"), ident["value"])
        reference = other.get("reference") or ""
        rid = reference.rsplit("/", 1)[-1]
        if reference and rid.isascii() and rid.isdigit():
            record = await self.record_or_404(rid)
            return IdentifierRef(value=record.identifier,
                                 authority=AuthorityRef(namespace=record.domain.namespace))
        raise FhirError(400, "required", "link.other needs an identifier (or a reference to a "
                        "Patient of this server)", expression="Patient.link.other")

    async def conditional_delete(self, request: web.Request) -> web.StreamResponse:
        check_format(request)
        ref = self.conditional_identifier(request)
        who = self.caller(request)
        writing()  # the deadline stops here: see wire.writing
        await self.mpi.handle(Remove(identifier=ref), self.removal(who, ref))
        return fhir_response(None, 204, {"X-Request-Id": who.message_id})

    def removal(self, who: Caller, ref: IdentifierRef) -> Envelope:
        """The envelope of a Remove (ITI-104 DELETE, a PMIR DELETE entry) with its audit."""
        patient = tuple(c for c in (ref_cx(ref),) if c)

        def done(result: CommandResult) -> tuple[list[Change], Outcome, None]:
            resource = _patient_ref(result.records[0].id if result.records else None)
            return [Change(Action.DELETE, patient, resource)], Outcome.SUCCESS, None

        return who.feed([Change(Action.DELETE, patient)], done)

    # --- ITI-78 search ------------------------------------------------------------------

    async def search_get(self, request: web.Request) -> web.StreamResponse:
        check_format(request)
        request_audit(request).query = redacted_query("GET", request.path,
                                                      request.query.items())
        return await self.search(request, request.query)

    async def search_post(self, request: web.Request) -> web.StreamResponse:
        check_format(request)
        if request.content_type not in ("application/x-www-form-urlencoded", ""):
            raise FhirError(415, "not-supported",
                            "POST _search takes application/x-www-form-urlencoded")
        try:
            form = await request.post()
        except UnicodeDecodeError as exc:
            raise FhirError(400, "structure", f"the form body is not UTF-8: {exc}") from exc
        params: MultiDict[str] = MultiDict(request.query)
        body: list[tuple[str, str]] = []
        for key, value in form.items():
            if isinstance(value, str):
                params.add(key, value)
                body.append((key, value))
        request_audit(request).query = redacted_query("POST", request.path,
                                                      request.query.items(), body)
        return await self.search(request, list(params.items()))

    async def search(self, request: web.Request, params: Any) -> web.StreamResponse:
        with self.mpi.query_for(self.caller(request).actor):  # the replica, when it may serve
            return await self._search(request, params)

    async def _search(self, request: web.Request, params: Any) -> web.StreamResponse:
        fhir = self.settings.fhir
        strict = "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")
        parsed = pdq.parse_search(params, default_count=fhir.default_page_size,
                                  max_count=fhir.max_page_size, strict=strict)
        systems = await self.domains_to_return(parsed.systems)
        total, records = await self.run_search(parsed, systems)
        base = self.base(request)
        entries = []
        for record in records:
            entries.append({
                "fullUrl": f"{base}/Patient/{record.id}",
                "resource": pdq.subset(self.patient(record, systems=systems), parsed.summary,
                                       parsed.elements),
                "search": {"mode": "match"},
            })
        bundle: Json = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": fhir_instant(_now())},
            "type": "searchset",
            "total": total,
            "link": pdq.page_links(base, parsed.echo, parsed.offset, parsed.count, total),
        }
        fmt = request.query.get("_format")
        if fmt:  # the paging links keep the format the client asked for
            for link in bundle["link"]:
                link["url"] += "&" + urlencode({"_format": fmt})
        if parsed.asked_count is not None:
            entries.append(pdq.count_lowered(parsed.asked_count, parsed.count))
        if entries:
            bundle["entry"] = entries
        response = fhir_response(bundle)
        query = request_audit(request).query
        self.queried(request, "ITI-78", query or redacted_query(
            request.method, request.path, request.query.items()),
            lambda: [record_cx(r) for r in records])  # fmt: skip
        return response

    async def domains_to_return(self, systems: set[str]) -> frozenset[str] | None:
        if not systems:
            return None
        out = set()
        for system in systems:
            try:
                domain = await self.mpi.domains.resolve(authority_of(system))
            except (UnknownDomain, AmbiguousDomain, InvalidInput) as exc:
                raise FhirError(404, "not-found", "targetSystem not found",
                                expression="identifier") from exc
            out.add(domain.system)
        return frozenset(out)

    async def run_search(
        self, parsed: pdq.ParsedSearch, systems: frozenset[str] | None
    ) -> tuple[int, list[SourceRecord]]:
        combos = parsed.combinations()
        if any(pdq.identifier_any_domain(c) for c in combos):
            all_systems = [d.system for d in self.mpi.domains.all()]
            combos = pdq.expand_identifier_domains(combos, all_systems)
        await self.check_identifier_domains(combos)
        combos = [await self.enterprise_to_ids(c) for c in combos]
        combos = [self.unknown_mothers(c) for c in combos]
        limit = max(parsed.count, 1)
        if len(combos) == 1 and systems is None:
            criteria, ids, active = pdq.criteria_of(combos[0], limit, parsed.offset,
                                                    parsed.sort)
            if len(criteria) == 1 and ids is None and active is not False:
                if not pdq.has_filters(criteria[0]):
                    raise FhirError(400, "too-costly", "give at least one search parameter "
                                    "(a search of every patient is not supported)")
                result = await self.mpi.search(criteria[0])
                return result.total, list(result.records)[: parsed.count]
        found: dict[int, SourceRecord] = {}
        for combo in combos:
            criteria, ids, active = pdq.criteria_of(combo, pdq.EXPANDED_CAP, 0)
            for record in await self.conjunction(criteria, ids, active):
                found[record.id] = record
        ordered = [found[k] for k in sorted(found)]
        if parsed.sort:
            ordered = pdq.sort_records(ordered, parsed.sort)
        if systems is not None:
            ordered = [r for r in ordered if self.patient(r, systems=systems).get("identifier")]
        return len(ordered), ordered[parsed.offset: parsed.offset + parsed.count]

    async def check_identifier_domains(self, combos: list[list[pdq.Alternative]]) -> None:
        seen: set[str] = set()
        for combo in combos:
            for alternative in combo:
                if "identifier" in alternative and alternative["identifier"][0] not in seen:
                    system = alternative["identifier"][0]
                    seen.add(system)
                    try:
                        await self.mpi.domains.resolve(authority_of(system))
                    except (UnknownDomain, AmbiguousDomain, InvalidInput) as exc:
                        raise FhirError(404, "not-found", "targetSystem not found",
                                        expression="identifier") from exc

    async def enterprise_to_ids(self, combo: list[pdq.Alternative]) -> list[pdq.Alternative]:
        """``identifier=<enterprise system>|<EID>``: the person's records (the core's record
        search does not index enterprise identifiers)."""
        enterprise = self.mpi.domains.enterprise
        out = []
        for alternative in combo:
            ident = alternative.get("identifier")
            if ident is not None and ident[0] is not None:
                domain = await self.mpi.domains.resolve(authority_of(ident[0]))
                if domain.id == enterprise.id:
                    try:
                        person = await self.mpi.get_person_by_enterprise_id(ident[1])
                        ids = frozenset(r.id for r in person.records if r.status == "active")
                    except NotFound:
                        ids = frozenset()
                    alternative = {k: v for k, v in alternative.items() if k != "identifier"}
                    alternative["_ids"] = ids
            out.append(alternative)
        return out

    def unknown_mothers(self, combo: list[pdq.Alternative]) -> list[pdq.Alternative]:
        """``link:RelatedPerson.identifier`` in a system that names no configured domain
        matches no Patient (the core searches a mother's identifier by its domain)."""
        out = []
        for alternative in combo:
            mother = alternative.get("mothers_identifier")
            if mother is not None and self.mpi.domains.known(authority_of(mother[0])) is None:
                alternative = {k: v for k, v in alternative.items() if k != "mothers_identifier"}
                alternative["_id"] = 0
            out.append(alternative)
        return out

    async def conjunction(
        self, criteria: list[SearchCriteria], ids: set[int] | None, active: bool | None
    ) -> list[SourceRecord]:
        result: dict[int, SourceRecord] | None = None
        if ids is not None:
            result = {}
            for rid in ids:
                try:
                    record = await self.mpi.get_record(rid)
                except NotFound:
                    continue
                result[record.id] = record
        for item in criteria:
            if ids is not None and not pdq.has_filters(item):
                continue
            if not pdq.has_filters(item):
                raise FhirError(400, "too-costly", "give at least one search parameter "
                                "(a search of every patient is not supported)")
            found = await self.mpi.search(item)
            if found.total > pdq.EXPANDED_CAP:
                raise FhirError(400, "too-costly", f"a part of this query matches {found.total} "
                                f"patients; narrow it (at most {pdq.EXPANDED_CAP})")
            these = {r.id: r for r in found.records}
            result = these if result is None else {k: v for k, v in result.items() if k in these}
        return [r for r in (result or {}).values() if pdq.keep(r, ids, active)]

    def match_identifiers(self, patient: Json) -> list[IdentifierRef]:
        """The query Patient's identifiers with a system (others cannot be resolved)."""
        return [ref for ref in body_identifiers(patient)
                if ref.authority.namespace or ref.authority.oid]

    # --- ITI-119 $match -----------------------------------------------------------------

    async def match(self, request: web.Request) -> web.StreamResponse:
        check_format(request)
        with self.mpi.query_for(self.caller(request).actor):  # the replica, when it may serve
            return await self._match(request)

    async def _match(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        patient, only_certain, count = match_request(body)  # checked first: shape is known
        query = redacted_query("POST", request.path, request.query.items(), match_params(body))
        request_audit(request).query = query
        asked, count = count, max(1, min(count, self.settings.fhir.max_page_size))
        candidates = await self.mpi.match(
            demographics_of(patient, keep=False), self.match_identifiers(patient), limit=count
        )
        candidates = [c for c in candidates if c.record.status == RecordStatus.ACTIVE]
        if only_certain:
            certain = [c for c in candidates if c.grade == "certain"]
            candidates = certain if len(certain) == 1 else []
        base = self.base(request)
        entries = []
        for candidate in candidates[:count]:
            entries.append({
                "fullUrl": f"{base}/Patient/{candidate.record.id}",
                "resource": self.patient(candidate.record),
                "search": {
                    "extension": [{"url": MATCH_GRADE, "valueCode": str(candidate.grade)}],
                    "mode": "match",
                    "score": round(float(candidate.probability), 6),
                },
            })
            entries[-1]["search"]["extension"].append(
                explanation_extension(candidate.weight, candidate.explanation))
        bundle: Json = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": fhir_instant(_now())},
            "type": "searchset",
            "total": len(entries),
        }
        if asked > count:
            entries.append(pdq.count_lowered(asked, count, "count"))
        if entries:
            bundle["entry"] = entries
        response = fhir_response(bundle)
        shown = [c.record for c in candidates[:count]]
        self.queried(request, "ITI-119", query, lambda: [record_cx(r) for r in shown])
        return response


def _parameters(body: Json) -> list[Json]:
    params = body.get("parameter") or []
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        raise FhirError(400, "structure", "Parameters.parameter must be a list of objects",
                        expression="Parameters.parameter")
    return params


def _text(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise FhirError(400, "structure", f"{where} must be a string", expression=where)
    return value


def pix_parameters(body: Json) -> tuple[tuple[str | None, str | None] | None, list[str]]:
    """The ITI-83 POST input: (sourceIdentifier as (system, value), targetSystem URIs)."""
    if body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", "expected a Parameters resource")
    source: tuple[str | None, str | None] | None = None
    targets: list[str] = []
    for param in _parameters(body):
        if param.get("name") == "sourceIdentifier":
            ident = param.get("valueIdentifier")
            if ident is not None:
                if not isinstance(ident, dict):
                    raise FhirError(400, "structure", "valueIdentifier must be an Identifier",
                                    expression="Parameters.parameter.valueIdentifier")
                source = (_text(ident.get("system"), "Identifier.system"),
                          _text(ident.get("value"), "Identifier.value"))
            elif param.get("valueString") or param.get("valueToken"):
                token = param.get("valueString") or param["valueToken"]
                source = parse_token(_text(token, "Parameters.parameter.valueString") or "")
        elif param.get("name") == "targetSystem":
            uri = param.get("valueUri") or param.get("valueString")
            if uri:
                targets.append(_text(uri, "Parameters.parameter.valueUri") or "")
    return source, targets


def match_request(body: Json) -> tuple[Json, bool, int]:
    """The ITI-119 input: (the Patient, onlyCertainMatches, count), the Patient validated."""
    only_certain = False
    count = 10
    if body.get("resourceType") == "Parameters":
        patient = None
        for param in _parameters(body):
            name = param.get("name")
            if name == "resource":
                patient = param.get("resource")
            elif name == "onlyCertainMatches":
                only_certain = bool(param.get("valueBoolean"))
            elif name == "count":
                value = param.get("valueInteger")
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                    raise FhirError(400, "structure", "count needs a valueInteger",
                                    expression="Parameters.parameter.valueInteger")
                count = value or count
        if not isinstance(patient, dict):
            raise FhirError(400, "required", "the resource parameter (a Patient) is required",
                            expression="Parameters.parameter.resource")
    elif body.get("resourceType") == "Patient":
        patient = body
    else:
        raise FhirError(400, "invalid", "$match takes Parameters or a Patient")
    validate_patient(patient)
    for ext in patient.get("modifierExtension") or ():
        raise FhirError(400, "not-supported", f"unknown modifierExtension {ext.get('url')!r}",
                        expression="Patient.modifierExtension")
    return patient, only_certain, count


def explanation_extension(weight: float, explanation: dict[str, Any]) -> Json:
    """Our own extension: the match weight and, per compared field, its level and weight."""
    return {
        "url": MATCH_EXPLANATION,
        "extension": [
            {"url": "weight", "valueDecimal": round(float(weight), 4)},
            {"url": "detail", "valueString": orjson.dumps(
                explanation, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
            ).decode()},
        ],
    }


def _now() -> datetime:
    return datetime.now(UTC)


@functools.lru_cache(maxsize=1024)
def _client_participant(client: str | None, address: str | None) -> Participant:
    """``fhir_client`` of a client at an address (frozen, so shared): made once, not for
    every record of every request."""
    return fhir_client(client, address)


def pix_patient(queried: str | None, xrefs: CrossReferences) -> tuple[str, ...]:
    """The patient of an ITI-83 record: the queried identifier, then those returned."""
    out = [queried] if queried else []
    for xref in xrefs.references:
        ident = xref.identifier
        found = identifier_cx(system_of(ident.domain, ident.oid), ident.value)
        if found and found not in out:
            out.append(found)
    return tuple(out)


def _patient_ref(record_id: int | None) -> str | None:
    return f"Patient/{record_id}" if record_id is not None else None
