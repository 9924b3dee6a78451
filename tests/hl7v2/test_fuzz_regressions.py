"""Defects the fuzzers found in the HL7 v2 door (docs/fuzzing.md), each with the input that
showed it, over a real MLLP connection."""

from __future__ import annotations

from typing import Any

from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.tokenizer import escape, parse_message, unescape
from tests.hl7v2.messages import adt, msa, msh, pdq_query, reply


async def test_control_id_with_an_escaped_block_character_is_answered(
    client: MLLPClient,
) -> None:
    # MSH-10 escapes 0x1C (the MLLP end block): echoed unescaped in MSA-2, it made a reply that
    # could not be framed, and the connection was dropped without an ACK.
    for code, char in (("X1C", "\x1c"), ("X0B", "\x0b")):
        message = (f"MSH|^~\\&|A|B|C|D|2026||ADT^A04^ADT_A01|X\\{code}\\Y|P|2.1\r"
                   "PID|1||1^^^H\r").encode()
        answer = reply(await client.send(message))
        assert msa(answer) == "AR"  # version 2.1 is refused
        assert answer.segment("MSA").value(2) == f"X{char}Y"  # type: ignore[union-attr]


def test_escape_keeps_block_characters_out_of_values() -> None:
    escaped = escape("a\x0bb\x1cc")
    assert escaped == "a\\X0B\\b\\X1C\\c"
    assert unescape(escaped) == "a\x0bb\x1cc"


async def test_reply_to_other_delimiters_echoes_in_ours(client: MLLPClient) -> None:
    # A query with '#' as field separator had its QPD echoed as received ('QPD#...'): the
    # RSP did not parse. Echoed fields are now rewritten in the reply's delimiters.
    message = (b"\xef\xbb\xbfMSH#^~\\&#PIXC#FAC#IDENTITY#MPI#20260101120000##QBP^Q23^QBP_Q21#"
               b"MSG000001#P#2.5\rQPD#IHE PIX Query#Q1#HA1001^^^HOSPA#\rRCP#I\r")
    answer = reply(await client.send(message))
    qpd = answer.segment("QPD")
    assert qpd is not None and qpd.value(3) == "HA1001" and qpd.value(3, 1, 4) == "HOSPA"
    assert answer.segment("QAK").value(1) == "Q1"  # type: ignore[union-attr]
    # MSH-3 holding our field separator: ours escapes it
    message = (b"MSH#^~\\&#A|B#F^1.2.3^ISO#IDENTITY#MPI#20260101120000##ADT^A04^ADT_A01#M2#P#"
               b"2.1\r")
    answer = reply(await client.send(message))
    assert answer.msh.value(5) == "A|B" and answer.msh.value(6, 1, 2) == "1.2.3"
    assert answer.message_type == "ACK" and msa(answer) == "AR"


def test_a_repeated_msh_segment_keeps_its_encoding_characters() -> None:
    # A second MSH was split like any other segment: its field 1 was MSH-2, and its text
    # (to_text) lost the encoding characters.
    message = parse_message(b"\xef\xbb\xbfMSH|^~\\&|A|F|||2026||ADT^A04^ADT_A01|1|P|2.5\r"
                            b"MSH|^~\\&|B|G|||2026||ADT^A04^ADT_A01|2|P|2.5\rPID|1\r")
    second = message.segments("MSH")[1]
    assert second.value(3) == "B" and second.value(10) == "2"
    assert second.raw == "MSH|^~\\&|B|G|||2026||ADT^A04^ADT_A01|2|P|2.5"
    assert parse_message(message.to_text()).to_text() == message.to_text()


def _errors(answer: Any) -> list[tuple[str, str]]:
    return [(e.value(3), e.value(8)) for e in answer.segments("ERR")]


async def test_values_the_database_cannot_hold_are_refused(client: MLLPClient) -> None:
    # A NUL character (escaped \X00\ or sent as a byte) reached PostgreSQL, which refuses it
    # in text: an AE 207 "internal error". It is now the sender's error: AE 102.
    for pid3 in ("A\\X00\\B^^^HOSPA", "A\x00B^^^HOSPA"):
        answer = reply(await client.send(adt("A04", pid3).encode()))
        assert msa(answer) == "AE"
        [(code, text)] = _errors(answer)
        assert code == "102" and "internal error" not in text, text
    # in a name (jsonb refuses \u0000) too
    answer = reply(await client.send(adt("A04", "N1^^^HOSPA", name="SMITH\\X00\\^JOHN").encode()))
    assert msa(answer) == "AE" and _errors(answer)[0][0] == "102"
    # a query parameter is searched for (no match)
    answer = reply(await client.send(pdq_query("@PID.5.1^SM\\X00\\ITH").encode()))
    assert msa(answer) == "AA" and not _errors(answer)


async def test_unlink_of_a_record_from_itself_is_refused(client: MLLPClient) -> None:
    # ADT^A37 naming one record in both PID segments broke the no_match check constraint:
    # an AE 207 "internal error".
    assert msa(reply(await client.send(adt("A04", "U1^^^HOSPA").encode()))) == "AA"
    message = "\r".join([
        msh("ADT^A37^ADT_A37"), "EVN|A37|20260101120000",
        "PID|1||U1^^^HOSPA||SMITH^JOHN", "PID|2||U1^^^HOSPA||SMITH^JOHN"]) + "\r"
    answer = reply(await client.send(message.encode()))
    assert msa(answer) == "AE"
    [(code, text)] = _errors(answer)
    assert "internal error" not in text and "itself" in text, text


async def test_sender_the_database_cannot_hold_is_refused(client: MLLPClient) -> None:
    # A NUL byte in MSH-3: the sender keys the stored reply, which PostgreSQL refused while the
    # refusal was being stored: an AE 207 "internal error". The refusal is now sent unstored.
    message = adt("A04", "S1^^^HOSPA").replace("|ADT_A|", "|ADT\x00A|", 1).encode()
    answer = reply(await client.send(message))
    assert msa(answer) == "AE"
    [(code, text)] = _errors(answer)
    assert code == "102" and "internal error" not in text, text


async def test_version_with_a_non_ascii_digit_is_refused(client: MLLPClient) -> None:
    # MSH-12 "2.²": '²' is a digit to str.isdigit but not to int(), whose ValueError escaped
    # the handler; the connection was closed without an ACK.
    message = adt("A04", "V1^^^HOSPA", version="2.\u00b2").encode("utf-8")
    answer = reply(await client.send(message))
    assert msa(answer) == "AR" and _errors(answer)[0][0] == "203"


async def test_other_numbers_with_non_ascii_digits(client: MLLPClient) -> None:
    # The same '²' in RCP-2 (PDQ quantity limit) and PID-25 (birth order): AE 207 "internal
    # error" each. Now: no limit, and a multiple birth without an order.
    text = pdq_query("@PID.5.1^SMITH").replace("RCP|I", "RCP|I|\u00b2^RD")
    answer = reply(await client.send(text.encode("utf-8")))
    assert msa(answer) == "AA" and not _errors(answer)
    answer = reply(await client.send(
        adt("A04", "V2^^^HOSPA", extra_pid="|||||||||||||||||Y|\u00b2").encode("utf-8")))
    assert msa(answer) == "AA", _errors(answer)
