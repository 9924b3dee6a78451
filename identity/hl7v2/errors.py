"""Typed errors of the HL7 v2 front door.

Parse errors carry the HL7 location they concern (an ERL: segment^sequence^field^...) and the
HL7 table 0357 error code, so that the caller can answer with an ERR segment and AR/AE
without inspecting error text.
"""

from __future__ import annotations

from dataclasses import dataclass

from identity.errors import IdentityError


@dataclass(frozen=True, slots=True)
class ErrorLocation:
    """An HL7 error location (data type ERL), 1-based like HL7 positions."""

    segment: str
    sequence: int = 1
    field: int | None = None
    repetition: int | None = None
    component: int | None = None
    subcomponent: int | None = None

    def to_erl(self, component_separator: str = "^") -> str:
        """The ERL text for ERR-2, e.g. ``MSH^1^18``; trailing empty positions are left out."""
        parts = [self.segment, str(self.sequence)]
        parts += [
            "" if position is None else str(position)
            for position in (self.field, self.repetition, self.component, self.subcomponent)
        ]
        while parts and parts[-1] == "":
            parts.pop()
        return component_separator.join(parts)


class HL7v2Error(IdentityError):
    """Base of every error raised on purpose by identity.hl7v2."""


class ParseError(HL7v2Error, ValueError):
    """An inbound message cannot be tokenized.

    ``location`` says where (for ERR-2), ``code`` is the HL7 table 0357 code (for ERR-3).
    """

    code: int = 100

    def __init__(self, text: str, *, location: ErrorLocation, code: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.location = location
        if code is not None:
            self.code = code


class MissingMSHError(ParseError):
    """The message does not start with an MSH segment (0357 code 100, segment sequence error)."""

    code = 100

    def __init__(self, text: str = "message does not start with an MSH segment") -> None:
        super().__init__(text, location=ErrorLocation("MSH"))


class EncodingCharactersError(ParseError):
    """MSH-1 or MSH-2 (the delimiters) are unusable (0357 code 102, data type error)."""

    code = 102

    def __init__(self, text: str, *, field: int = 2) -> None:
        super().__init__(text, location=ErrorLocation("MSH", field=field))


class SegmentSyntaxError(ParseError):
    """A line that is not a segment (its name is not three letters or digits), code 100."""

    code = 100

    def __init__(self, text: str, *, segment: str, sequence: int) -> None:
        super().__init__(text, location=ErrorLocation(segment, sequence))


class LimitExceededError(ParseError):
    """More segments, or more repetitions in one field, than the tokenizer's caps allow
    ([hl7] max_segments, max_repetitions). HL7 v2.5 table 0357 has no code for a local limit
    (104 "value too long" came with v2.7), so it is its catch-all 207, at the first segment or
    repetition over the cap."""

    code = 207

    def __init__(self, text: str, *, location: ErrorLocation, limit: int) -> None:
        super().__init__(text, location=location)
        self.limit = limit


class UnsupportedCharsetError(ParseError):
    """MSH-18 names a character set this service does not read (0357 code 103 at MSH-18)."""

    code = 103

    def __init__(self, charset: str) -> None:
        super().__init__(
            f"unsupported character set in MSH-18: {charset!r}",
            location=ErrorLocation("MSH", field=18),
        )
        self.charset = charset


class CharsetDecodeError(ParseError):
    """The bytes are not valid in the character set declared in MSH-18 (code 102 at MSH-18)."""

    code = 102

    def __init__(self, charset: str, offset: int) -> None:
        super().__init__(
            f"bytes at offset {offset} are not valid {charset!r} (MSH-18)",
            location=ErrorLocation("MSH", field=18),
        )
        self.charset = charset
        self.offset = offset


class CharsetEncodeError(HL7v2Error, ValueError):
    """Outbound text holds characters that the chosen character set cannot represent."""

    def __init__(self, charset: str, offset: int) -> None:
        super().__init__(f"character at offset {offset} cannot be encoded as {charset!r}")
        self.charset = charset
        self.offset = offset


class MLLPError(HL7v2Error):
    """Base of MLLP transport errors."""


class FrameTooLargeError(MLLPError):
    """A frame grew beyond max_message_bytes; the connection must be closed."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"MLLP frame of at least {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class MLLPConnectionError(MLLPError, ConnectionError):
    """The peer closed the connection, or it is not open, before a reply was read."""
