"""What the HL7 v2 door puts in an audit record besides the patient: the transaction of each
message kind, and the redacted copy of a PDQ query (docs/audit.md, *The HL7 v2 door*)."""

from __future__ import annotations

from identity.hl7v2.audit import redact_pdq, transaction_of
from identity.hl7v2.tokenizer import parse_message
from tests.hl7v2.messages import msh


def test_redaction_of_a_pdq_query() -> None:
    query = "\r".join([
        "MSH|^~\\&|PDQC|FAC|IDENTITY|MPI|20260101120000||QBP^Q22^QBP_Q21|C1|P|2.5",
        "QPD|IHE PDQ Query^IHE PDQ Query|T9|@PID.5.1.1^SMITH~@PID.5.2^~@PID.3.1^X9"
        "~@PID.3.4.1^HOSPA~@PID.11.5^62701~@PID.21.1^M1|x|y|||^^^HOSPA~^^^LAB|z",
        "RCP|I|10^RD",
        "DSC|e10.abc|I",
        "NTE|1||SMITH JOHN",
    ]) + "\r"
    text = redact_pdq(parse_message(query))
    msh_line, qpd, rcp, dsc = text.split("\r")[:-1]
    assert msh_line == query.split("\r")[0]  # MSH as received
    assert qpd == ("QPD|IHE PDQ Query^IHE PDQ Query|T9|@PID.5.1.1^*~@PID.5.2~@PID.3.1^X9"
                   "~@PID.3.4.1^HOSPA~@PID.11.5^*~@PID.21.1^*|||||^^^HOSPA~^^^LAB")
    assert (rcp, dsc) == ("RCP|I|10^RD", "DSC|e10.abc|I")  # kept; NTE and QPD-4..7, 9 dropped
    assert "SMITH" not in text and "62701" not in text and "M1" not in text

    # the message's own delimiters are used
    odd = query.replace("^", "$")
    assert parse_message(odd).encoding.component == "$"
    redacted = redact_pdq(parse_message(odd))
    assert "@PID.5.1.1$*~@PID.5.2~@PID.3.1$X9" in redacted and "SMITH" not in redacted


def test_transaction_of_each_message_kind() -> None:
    def kind(text: str, version: str = "2.5") -> str | None:
        return transaction_of(parse_message(msh(text, version=version) + "\r"))

    assert kind("ADT^A04^ADT_A01") == kind("ADT^A08^ADT_A01") == "ITI-8"
    assert kind("ADT^A40^ADT_A39", version="2.3.1") == "ITI-8"
    assert kind("ADT^A40^ADT_A39") == kind("ADT^A28^ADT_A05") == kind("ADT^A37^ADT_A37") == (
        "ITI-30")
    assert (kind("QBP^Q23^QBP_Q21"), kind("QBP^Q22^QBP_Q21")) == ("ITI-9", "ITI-21")
    assert kind("QCN^J01^QCN_J01") is None
