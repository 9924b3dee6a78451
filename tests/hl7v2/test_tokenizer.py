"""identity.hl7v2.tokenizer: addressing, MSH numbering, delimiters, escapes, charsets, builder."""

from __future__ import annotations

import pytest

from identity.hl7v2.errors import (
    CharsetDecodeError,
    CharsetEncodeError,
    EncodingCharactersError,
    ErrorLocation,
    LimitExceededError,
    MissingMSHError,
    ParseError,
    SegmentSyntaxError,
    UnsupportedCharsetError,
)
from identity.hl7v2.tokenizer import (
    DEFAULT_ENCODING,
    DEFAULT_MAX_REPETITIONS,
    DEFAULT_MAX_SEGMENTS,
    HL7_NULL,
    Encoding,
    Raw,
    build_message,
    build_segment,
    codec_for_charset,
    escape,
    parse_message,
    to_bytes,
    unescape,
)

MSH = "MSH|^~\\&|REG^1.2.3^ISO|HOSP|MPI|IHE|20260115083000||ADT^A04^ADT_A01|MSG0001|P|2.5"

ADT = (
    MSH + "\r"
    "EVN|A04|20260115083000\r"
    "PID|1||111^^^HOSP&1.2.3&ISO^MR~222^^^NHS&2.16.840&ISO^NH||Doe^John^Q^^Dr.~Roe^Jon"
    "|Smith|19700101|M|||1 Main St^Apt 2^Springfield^IL^62701^USA^H~PO Box 9^^Springfield\r"
    "PV1|1|O\r"
)


def test_msh_fields_are_numbered_with_msh1_as_the_field_separator() -> None:
    message = parse_message(ADT)
    msh = message.msh
    assert msh.field(1) == "|"
    assert msh.field(2) == "^~\\&"
    assert msh.field(3) == "REG^1.2.3^ISO"
    assert msh.value(9, 1, 2) == "A04"
    assert msh.field(10) == "MSG0001"
    assert msh.field(12) == "2.5"
    assert msh.value(2) == "^~\\&"  # MSH-2 is never split at its own delimiters
    assert msh.value(2, 1, 2) == ""
    assert [repetition.raw for repetition in msh.repetitions(2)] == ["^~\\&"]
    assert msh.raw == MSH


def test_message_header_accessors() -> None:
    message = parse_message(ADT)
    assert message.control_id == "MSG0001"
    assert message.message_type == "ADT"
    assert message.trigger_event == "A04"
    assert message.structure == "ADT_A01"
    assert message.version == "2.5"
    assert message.sending_application == "REG^1.2.3^ISO"
    assert message.sending_facility == "HOSP"
    assert message.receiving_application == "MPI"
    assert message.receiving_facility == "IHE"
    assert message.encoding == DEFAULT_ENCODING


def test_other_segments_number_fields_from_the_segment_name() -> None:
    pid = parse_message(ADT).segment("PID")
    assert pid is not None
    assert pid.field(0) == "PID"
    assert pid.field(1) == "1"
    assert pid.field(2) == ""
    assert pid.field(7) == "19700101"
    assert pid.field(8) == "M"
    assert pid.field(99) == ""
    assert len(pid) == 11


def test_repetition_component_subcomponent_addressing() -> None:
    pid = parse_message(ADT).segment("PID")
    assert pid is not None
    assert pid.value(3) == "111"
    assert pid.value(3, 1, 4) == "HOSP"
    assert pid.value(3, 1, 4, 2) == "1.2.3"
    assert pid.value(3, 2, 4, 2) == "2.16.840"
    assert pid.value(3, 2, 5) == "NH"
    assert pid.value(3, 3) == ""
    assert pid.value(3, 1, 4, 4) == ""
    assert pid.value(5, 1, 2) == "John"
    assert pid.value(5, 2, 1) == "Roe"
    assert pid.value(5, 2, 3) == ""
    assert pid.value(7, 1, 2) == ""  # no component separator in the field
    assert pid.value(8, 2) == ""
    assert pid.value(11, 2, 3) == "Springfield"
    repetitions = pid.repetitions(3)
    assert [repetition.value(1) for repetition in repetitions] == ["111", "222"]
    assert repetitions[0].component(4) == "HOSP&1.2.3&ISO"
    assert repetitions[0].subcomponents(4) == ["HOSP", "1.2.3", "ISO"]
    assert repetitions[1].components() == ["222", "", "", "NHS&2.16.840&ISO", "NH"]
    assert repetitions[1].value(4, 3) == "ISO"
    assert pid.repetitions(2) == []


def test_positions_below_one_are_refused() -> None:
    pid = parse_message(ADT).segment("PID")
    assert pid is not None
    with pytest.raises(ValueError):
        pid.value(3, 0)
    with pytest.raises(ValueError):
        pid.value(0)
    with pytest.raises(ValueError):
        pid.field(-1)


def test_segments_by_name_and_first_segment() -> None:
    message = parse_message(ADT + "NK1|1|Doe^Jane\rNK1|2|Doe^Jim\r")
    assert [segment.name for segment in message.segments()] == [
        "MSH", "EVN", "PID", "PV1", "NK1", "NK1",
    ]  # fmt: skip
    assert [segment.value(2, 1, 2) for segment in message.segments("NK1")] == ["Jane", "Jim"]
    assert message.segments("ZZZ") == []
    assert message.segment("MRG") is None
    pv1 = message.segment("PV1")
    assert pv1 is not None and pv1.field(2) == "O"


@pytest.mark.parametrize("terminator", ["\r", "\n", "\r\n"])
def test_cr_lf_and_crlf_terminators_and_blank_lines(terminator: str) -> None:
    text = terminator.join(["", MSH, "", "PID|1||42", "", "PV1|1|I", ""])
    message = parse_message(text)
    assert [segment.name for segment in message] == ["MSH", "PID", "PV1"]
    pid = message.segment("PID")
    assert pid is not None and pid.field(3) == "42"
    pv1 = message.segment("PV1")
    assert pv1 is not None and pv1.field(2) == "I"  # no stray CR or LF left in values
    assert parse_message(text.encode("ascii")).control_id == "MSG0001"


def test_custom_delimiters() -> None:
    text = "MSH$%~\\&$APP$FAC$$$20260101$$ADT%A04$C1$P$2.5\rPID$1$$7%%%A&1.2&ISO~8%%%B$$Li%Wei\r"
    message = parse_message(text)
    assert message.encoding == Encoding("$", "%", "~", "\\", "&")
    assert message.msh.field(1) == "$"
    assert message.msh.field(2) == "%~\\&"
    assert message.trigger_event == "A04"
    assert message.control_id == "C1"
    pid = message.segment("PID")
    assert pid is not None
    assert pid.value(3, 1, 4, 2) == "1.2"
    assert pid.value(3, 2, 4) == "B"
    assert pid.value(5, 1, 2) == "Wei"


def test_v27_truncation_character_and_short_msh2() -> None:
    message = parse_message("MSH|^~\\&#|A\rNTE|1||cut\\P\\here\r")
    assert message.encoding.truncation == "#"
    assert message.msh.field(3) == "A"
    nte = message.segment("NTE")
    assert nte is not None and nte.value(3) == "cut#here"
    short = parse_message("MSH|^~|A|B\rPID|1||x\\F\\y^z\r")
    assert short.encoding.escape == "" and short.encoding.subcomponent == ""
    pid = short.segment("PID")
    assert pid is not None
    assert pid.value(3) == "x\\F\\y"  # no escape character defined: nothing is unescaped
    assert pid.value(3, 1, 2) == "z"


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b", "a^b"),
        ("a\\T\\b", "a&b"),
        ("a\\R\\b", "a~b"),
        ("a\\E\\b", "a\\b"),
        ("line1\\.br\\line2", "line1\nline2"),
        ("\\X41\\\\X42\\", "AB"),
        ("x\\X0D0A\\y", "x\r\ny"),
        ("\\H\\bold\\N\\", "\\H\\bold\\N\\"),  # formatting kept literally
        ("\\Zlocal\\", "\\Zlocal\\"),  # unknown kept literally
        ("\\P\\", "\\P\\"),  # no truncation character defined
        ("\\XZZ\\", "\\XZZ\\"),  # not hex
        ("\\X4\\", "\\X4\\"),  # odd number of hex digits
        ("open\\F", "open\\F"),  # unterminated
        ("\\E\\F\\E\\", "\\F\\"),
        ("plain", "plain"),
    ],
)
def test_every_escape_sequence(escaped: str, plain: str) -> None:
    assert unescape(escaped) == plain


def test_escapes_are_decoded_in_values_but_kept_in_raw_fields() -> None:
    message = parse_message(MSH + "\rPID|1||A\\S\\1^^^H||O\\T\\Brien\\F\\Jr^Ann\\R\\Marie\r")
    pid = message.segment("PID")
    assert pid is not None
    assert pid.value(3) == "A^1"
    assert pid.value(3, 1, 4) == "H"
    assert pid.value(5) == "O&Brien|Jr"
    assert pid.value(5, 1, 2) == "Ann~Marie"
    assert pid.field(5) == "O\\T\\Brien\\F\\Jr^Ann\\R\\Marie"
    assert pid.repetitions(5)[0].subcomponents(1) == ["O&Brien|Jr"]


def test_escape_then_unescape_restores_every_delimiter() -> None:
    text = "a|b^c~d\\e&f#g\r\nh"
    encoding = Encoding(truncation="#")
    escaped = escape(text, encoding)
    for char in "|^~&#\r\n":
        assert char not in escaped
    assert unescape(escaped, encoding) == text
    assert escape(HL7_NULL) == HL7_NULL
    assert escape("a|b", Encoding("$", "%", "~", "\\", "&")) == "a|b"


def test_explicit_null_and_empty_fields() -> None:
    message = parse_message(MSH + '\rPID|1||""||Doe^""||""|\r')
    pid = message.segment("PID")
    assert pid is not None
    assert pid.is_null(3)
    assert pid.value(3) == HL7_NULL
    assert not pid.is_null(4)
    assert pid.value(4) == ""
    assert not pid.is_null(5)
    assert pid.repetitions(5)[0].is_null(2)
    assert pid.is_null(7)
    assert not pid.is_null(8)
    assert not pid.is_null(9)


def test_latin1_bytes_from_msh18() -> None:
    raw = (MSH + "||||||8859/1\rPID|1||1||Ren\xe9e^Zo\xe9\r").encode("latin-1")
    assert b"\xe9" in raw
    message = parse_message(raw)
    assert message.declared_charset == "8859/1"
    assert message.charset == "latin-1"
    pid = message.segment("PID")
    assert pid is not None and pid.value(5) == "Renée" and pid.value(5, 1, 2) == "Zoé"


def test_utf8_multibyte_names_from_msh18() -> None:
    raw = (MSH + "||||||UNICODE UTF-8\rPID|1||1||Müller^Łukasz~王^小明\r").encode("utf-8")
    message = parse_message(raw)
    assert message.charset == "utf-8"
    pid = message.segment("PID")
    assert pid is not None
    assert pid.value(5, 1, 1) == "Müller"
    assert pid.value(5, 1, 2) == "Łukasz"
    assert pid.value(5, 2, 1) == "王"


def test_msh18_first_repetition_counts_and_case_and_spaces_are_tolerated() -> None:
    raw = (MSH + "||||||unicode  utf-8~ISO IR87\rPID|1||1||Jos\xc3\xa9\r").encode("latin-1")
    message = parse_message(raw)
    assert message.charset == "utf-8"
    pid = message.segment("PID")
    assert pid is not None and pid.value(5) == "José"


def test_hex_escape_is_decoded_in_the_message_charset() -> None:
    utf8 = parse_message((MSH + "||||||UNICODE UTF-8\rPID|1||1||\\XC3A9\\\r").encode())
    latin1 = parse_message((MSH + "||||||8859/1\rPID|1||1||\\XE9\\\r").encode())
    undeclared = parse_message((MSH + "\rPID|1||1||\\XE9\\t\\X41\\\r").encode())
    for message, expected in ((utf8, "é"), (latin1, "é"), (undeclared, "ét" + "A")):
        pid = message.segment("PID")
        assert pid is not None and pid.value(5) == expected
    bad = parse_message(MSH + "||||||UNICODE UTF-8\rPID|1||1||\\XFF\\\r")
    pid = bad.segment("PID")
    assert pid is not None and pid.value(5) == "\\XFF\\"  # invalid in UTF-8: kept literally


def test_undeclared_charset_ascii_then_utf8_then_latin1() -> None:
    ascii_message = parse_message((MSH + "\rPID|1||1||Doe\r").encode())
    assert ascii_message.charset == "ascii" and ascii_message.declared_charset == ""
    utf8 = parse_message((MSH + "\rPID|1||1||Zoë\r").encode("utf-8"))
    assert utf8.charset == "utf-8"
    latin1 = parse_message((MSH + "\rPID|1||1||Zo\xeb\r").encode("latin-1"))
    assert latin1.charset == "latin-1"
    for message in (utf8, latin1):
        pid = message.segment("PID")
        assert pid is not None and pid.value(5) == "Zoë"


def test_unknown_charset_is_error_103_at_msh18() -> None:
    raw = (MSH + "||||||EBCDIC\rPID|1\r").encode()
    with pytest.raises(UnsupportedCharsetError) as caught:
        parse_message(raw)
    assert caught.value.code == 103
    assert caught.value.charset == "EBCDIC"
    assert caught.value.location.to_erl() == "MSH^1^18"
    with pytest.raises(UnsupportedCharsetError):
        parse_message(MSH + "||||||UNICODE UTF-16\r")


def test_bytes_invalid_in_the_declared_charset_are_error_at_msh18() -> None:
    raw = (MSH + "||||||UNICODE UTF-8\rPID|1||1||Zo").encode() + b"\xeb\r"
    with pytest.raises(CharsetDecodeError) as caught:
        parse_message(raw)
    assert caught.value.location == ErrorLocation("MSH", field=18)
    assert caught.value.offset == raw.index(b"\xeb")


@pytest.mark.parametrize("raw", [b"", "", "PID|1\r", b"\r\nEVN|A04\r", "MSA|AA|1"])
def test_message_not_starting_with_msh(raw: bytes | str) -> None:
    with pytest.raises(MissingMSHError) as caught:
        parse_message(raw)
    assert caught.value.code == 100
    assert caught.value.location.to_erl() == "MSH^1"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("MSH", 1),
        ("MSHA^~\\&", 1),
        ("MSH||", 2),
        ("MSH|^^\\&|A", 2),
        ("MSH|^~\\&#!|A", 2),
        ("MSH|^~\\&\\|A", 2),
        ("MSH|^a\\&|A", 2),
    ],
)
def test_bad_encoding_characters(text: str, field: int) -> None:
    with pytest.raises(EncodingCharactersError) as caught:
        parse_message(text)
    assert caught.value.location == ErrorLocation("MSH", field=field)
    assert isinstance(caught.value, ParseError)


def test_bad_segment_name_is_located() -> None:
    with pytest.raises(SegmentSyntaxError) as caught:
        parse_message(MSH + "\rPID|1\rP!D|2\r")
    assert caught.value.location == ErrorLocation("P!D", 1)
    with pytest.raises(SegmentSyntaxError) as caught:
        parse_message(MSH + "\rNTE|1\rNTE|2\rNTEE|3\r")
    assert caught.value.location == ErrorLocation("NTE", 3)
    with pytest.raises(SegmentSyntaxError):
        parse_message(MSH + "\rPIDX|1\r")
    assert len(parse_message(MSH + "\r   \rPID|1\r")) == 2  # whitespace-only line skipped


def test_segments_over_the_cap_are_code_207_at_the_first_one_over() -> None:
    text = MSH + "\rPID|1\r" + "NTE|x\r" * 3
    assert len(parse_message(text, max_segments=5)) == 5
    with pytest.raises(LimitExceededError) as caught:
        parse_message(text, max_segments=4)
    assert caught.value.location == ErrorLocation("NTE", 3)
    assert caught.value.code == 207 and caught.value.limit == 4
    # blank lines and line ends are no segments
    assert len(parse_message(text.replace("\r", "\r\n\r  \r"), max_segments=5)) == 5
    many = (MSH + "\r" + "NTE|x\r" * DEFAULT_MAX_SEGMENTS).encode()
    with pytest.raises(LimitExceededError) as caught:
        parse_message(many)  # the default cap
    assert caught.value.location == ErrorLocation("NTE", DEFAULT_MAX_SEGMENTS)


def test_repetitions_over_the_cap_are_code_207_at_the_first_one_over() -> None:
    pid3 = "~".join(f"{n}^^^HOSP" for n in range(1, 5))
    text = f"{MSH}\rPID|1\rPID|2||{pid3}|\rPV1|1\r"
    assert len(parse_message(text, max_repetitions=4).segments("PID")[1].repetitions(3)) == 4
    with pytest.raises(LimitExceededError) as caught:
        parse_message(text, max_repetitions=3)
    assert caught.value.location == ErrorLocation("PID", 2, 3, 4)
    assert caught.value.code == 207
    # escaped separators are data, MSH-2 is the delimiters; empty repetitions count
    escaped = "a\\R\\" * 9
    assert parse_message(f"{MSH}\rNTE|1||{escaped}\r", max_repetitions=1)
    with pytest.raises(LimitExceededError) as caught:
        parse_message(f"{MSH}\rNTE|1||x|{'~' * DEFAULT_MAX_REPETITIONS}\r".encode())
    assert caught.value.location == ErrorLocation("NTE", 1, 4, DEFAULT_MAX_REPETITIONS + 1)
    # many separators spread over fields, none over the cap
    spread = "|".join(["a~b"] * 60)
    assert len(parse_message(f"{MSH}\rNTE|{spread}\r", max_repetitions=2)) == 2


def test_builder_writes_msh1_msh2_and_nested_values() -> None:
    text = build_message(
        [
            ["MSH", None, None, "MPI", "IHE", "REG", "HOSP", "20260101", None,
             [["ACK", "A04", "ACK"]], "C-1", "P", "2.5"],
            ["MSA", "AA", "MSG0001"],
            ["PID", None, None,
             [["111", None, None, ["HOSP", "1.2.3", "ISO"], "MR"], ["222", "", "", ["NHS"]]],
             None, [None, ["", "", "", "", "", "", "S"]], None, 19700101],
        ]
    )  # fmt: skip
    assert text == (
        "MSH|^~\\&|MPI|IHE|REG|HOSP|20260101||ACK^A04^ACK|C-1|P|2.5\r"
        "MSA|AA|MSG0001\r"
        "PID|||111^^^HOSP&1.2.3&ISO^MR~222^^^NHS||~^^^^^^S||19700101\r"
    )


def test_builder_escapes_leaves_and_keeps_raw_and_null() -> None:
    segment = build_segment(["NTE", "1", "a|b^c~d&e\\f", Raw("x^y"), HL7_NULL, ["p~q", "r"]])
    assert segment == 'NTE|1|a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f|x^y|""|p\\R\\q~r'
    assert build_segment(["PV1", None, None]) == "PV1"
    assert build_segment(["MSH"]) == "MSH|^~\\&"
    with pytest.raises(ValueError):
        build_segment(["MSH", "$"])
    with pytest.raises(ValueError):
        build_segment(["PIDX", "1"])
    with pytest.raises(TypeError):
        build_segment(["PID", object()])
    with pytest.raises(ValueError):
        build_message([["PID", "1"]])


def test_builder_then_parser_round_trip_with_custom_delimiters() -> None:
    encoding = Encoding("$", "%", "~", "\\", "&", "#")
    names = ["O'Brien|Jr", "Anne^Marie", "100% & more", "tilde~here", "back\\slash", "a$b#c"]
    text = build_message(
        [
            ["MSH", None, None, "APP", None, None, None, None, None, [["ADT", "A04"]], "ID$1"],
            ["PID", "1", None, [[name, None, None, [name, "1.2"]] for name in names],
             None, [[names[0], "line1\nline2\r"]]],
        ],
        encoding,
    )  # fmt: skip
    assert text.startswith("MSH$%~\\&#$APP$")
    message = parse_message(text)
    assert message.encoding == encoding
    assert message.control_id == "ID$1"
    pid = message.segment("PID")
    assert pid is not None
    for index, name in enumerate(names, start=1):
        assert pid.value(3, index) == name
        assert pid.value(3, index, 4, 1) == name
        assert pid.value(3, index, 4, 2) == "1.2"
    assert pid.value(5, 1, 2) == "line1\nline2\r"
    assert message.to_text() == text


def test_to_bytes_uses_msh18_of_the_text() -> None:
    text = build_message([["MSH", None, None, "A"] + [None] * 14 + ["8859/1"], ["PID", "Zoé"]])
    raw = to_bytes(text)
    assert b"Zo\xe9" in raw
    assert parse_message(raw).segment("PID").value(1) == "Zoé"  # type: ignore[union-attr]
    assert to_bytes("MSH|^~\\&|A\rPID|1|王\r", "UNICODE UTF-8").endswith("王\r".encode())
    with pytest.raises(CharsetEncodeError):
        to_bytes("MSH|^~\\&|A\rPID|1|Zoé\r")
    with pytest.raises(UnsupportedCharsetError):
        to_bytes("MSH|^~\\&\r", "KLINGON")


def test_codec_for_charset() -> None:
    assert codec_for_charset("") == "ascii"
    assert codec_for_charset("ASCII") == "ascii"
    assert codec_for_charset("8859/1") == "latin-1"
    assert codec_for_charset("8859/15") == "iso8859-15"
    assert codec_for_charset("UNICODE UTF-8") == "utf-8"
    with pytest.raises(UnsupportedCharsetError):
        codec_for_charset("UNICODE")


def test_error_location_to_erl() -> None:
    assert ErrorLocation("MSH", 1, 9, 1, 2).to_erl() == "MSH^1^9^1^2"
    assert ErrorLocation("QPD", 1, 3, 1, 4).to_erl("%") == "QPD%1%3%1%4"
    assert ErrorLocation("PID").to_erl() == "PID^1"
