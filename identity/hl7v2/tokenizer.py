"""A small, fast, lazy HL7 v2 tokenizer and builder for the inbound hot path.

Parsing splits a message into segments and fields at once; repetitions, components and
subcomponents are split, and escape sequences decoded, only when a value is asked for.

Positions are 1-based like HL7. For MSH, field 1 is the field separator and field 2 the
encoding characters, so ``msh.field(9)`` is MSH-9 exactly as in the standard.

Character sets (bytes input). MSH-18 is read from the raw bytes before decoding (MSH is ASCII):

- MSH-18 empty: ASCII. Bytes outside ASCII are not refused: the message is decoded as UTF-8 if
  it is valid UTF-8, otherwise as ISO 8859-1 (every byte is valid there). ``Message.charset``
  tells which codec was used, ``Message.declared_charset`` is ``""``. A front door that wants
  to be strict can refuse messages whose charset is not ``"ascii"`` in that case.
- MSH-18 in :data:`CHARSETS` (``8859/1``, ``UNICODE UTF-8``, ...): decoded strictly; invalid
  bytes raise :class:`CharsetDecodeError` (code 102 at MSH-18).
- any other MSH-18: :class:`UnsupportedCharsetError` (code 103 at MSH-18).

Only the first repetition of MSH-18 counts (further repetitions name ISO 2022 alternates, which
are not supported: ``\\C..\\`` and ``\\M..\\`` escapes are kept literally).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from identity.hl7v2.errors import (
    CharsetDecodeError,
    CharsetEncodeError,
    EncodingCharactersError,
    ErrorLocation,
    LimitExceededError,
    MissingMSHError,
    SegmentSyntaxError,
    UnsupportedCharsetError,
)

__all__ = [
    "CHARSETS",
    "DEFAULT_ENCODING",
    "DEFAULT_MAX_REPETITIONS",
    "DEFAULT_MAX_SEGMENTS",
    "HL7_NULL",
    "Encoding",
    "Message",
    "Raw",
    "Repetition",
    "Segment",
    "build_message",
    "build_segment",
    "codec_for_charset",
    "escape",
    "parse_message",
    "to_bytes",
    "unescape",
]

HL7_NULL = '""'
"""The HL7 explicit null: the receiver must delete the value it holds (TF2 C.2.6)."""

SEGMENT_TERMINATOR = "\r"

DEFAULT_MAX_SEGMENTS = 1000
"""Segments a message may have (``[hl7] max_segments``)."""
DEFAULT_MAX_REPETITIONS = 100
"""Repetitions one field may have (``[hl7] max_repetitions``)."""

CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
    # Not in HL7 table 0211 but sent by real feeds; unambiguous, so accepted.
    "UTF-8": "utf-8",
}
"""MSH-18 values (HL7 table 0211, upper case, single spaces) → Python codec.

Left out on purpose: ``UNICODE`` (deprecated, ambiguous), ``UNICODE UTF-16``/``UTF-32`` (MSH
itself would not be ASCII), the ISO 2022 sets ``ISO IR14/87/159`` and ``CNS 11643-1992``.
"""

_UNDECLARED_FALLBACK = ("ascii", "utf-8", "latin-1")

_TERMINATOR_CHARS = "\r\n"


@dataclass(frozen=True, slots=True)
class Encoding:
    """The delimiters of a message: MSH-1 and the characters of MSH-2.

    A delimiter that MSH-2 leaves out is ``""`` (for example ``truncation`` before v2.7).
    """

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    def __post_init__(self) -> None:
        problem = _encoding_problem(self)
        if problem is not None:
            raise EncodingCharactersError(problem[1], field=problem[0])

    @property
    def msh2(self) -> str:
        """The MSH-2 text: component, repetition, escape, subcomponent, truncation."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


def _encoding_problem(encoding: Encoding) -> tuple[int, str] | None:
    """(MSH field at fault, description) or None."""
    fs = encoding.field
    if len(fs) != 1 or fs.isalnum() or fs in _TERMINATOR_CHARS or not fs.isascii():
        return 1, f"MSH-1 field separator {fs!r} is not a single punctuation character"
    others = [
        encoding.component,
        encoding.repetition,
        encoding.escape,
        encoding.subcomponent,
        encoding.truncation,
    ]
    seen_empty = False
    for char in others:
        if char == "":
            seen_empty = True
            continue
        if seen_empty:
            return 2, "MSH-2 encoding characters have a gap"
        if len(char) != 1 or char.isalnum() or char in _TERMINATOR_CHARS or not char.isascii():
            return 2, f"MSH-2 encoding character {char!r} is not a single punctuation character"
    present = [fs] + [char for char in others if char]
    if len(set(present)) != len(present):
        return 2, "MSH-1 and MSH-2 delimiters are not all different"
    if not present[1:]:
        return 2, "MSH-2 encoding characters are missing"
    return None


@lru_cache(maxsize=64)
def _encoding_from_msh(field_separator: str, msh2: str) -> Encoding:
    if len(msh2) > 5:
        raise EncodingCharactersError(f"MSH-2 has {len(msh2)} characters, at most 5 are defined")
    chars = list(msh2) + [""] * (5 - len(msh2))
    return Encoding(field_separator, chars[0], chars[1], chars[2], chars[3], chars[4])


DEFAULT_ENCODING = Encoding()
"""``|^~\\&``: the delimiters used for every message this service builds."""


@lru_cache(maxsize=64)
def codec_for_charset(charset: str) -> str:
    """The Python codec for an MSH-18 value (``""`` = ASCII); unknown → UnsupportedCharsetError.

    Cached: a message with MSH-18 looks it up twice (bytes, then text), and it is on the hot
    path that the tokenizer's caps also add to (an unknown value raises, and is not cached)."""
    key = " ".join(charset.split()).upper()
    if not key:
        return "ascii"
    try:
        return CHARSETS[key]
    except KeyError:
        raise UnsupportedCharsetError(charset) from None


# ---------------------------------------------------------------------------------------------
# escape sequences


def unescape(text: str, encoding: Encoding = DEFAULT_ENCODING, charset: str | None = None) -> str:
    """Decode HL7 escape sequences in one leaf value.

    ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` (and ``\\P\\`` when MSH-2 defines a truncation character)
    become the delimiters, ``\\Xhh..\\`` the hex bytes decoded with ``charset`` (a Python codec;
    ``None`` tries ASCII, UTF-8 then ISO 8859-1), ``\\.br\\`` a newline. Any other sequence,
    an invalid hex sequence or an unterminated one is kept literally.
    """
    esc = encoding.escape
    if not esc or esc not in text:
        return text
    out: list[str] = []
    position = 0
    while True:
        start = text.find(esc, position)
        if start < 0:
            out.append(text[position:])
            break
        end = text.find(esc, start + 1)
        if end < 0:
            out.append(text[position:])
            break
        out.append(text[position:start])
        replacement = _translate(text[start + 1 : end], encoding, charset)
        out.append(text[start : end + 1] if replacement is None else replacement)
        position = end + 1
    return "".join(out)


def _translate(sequence: str, encoding: Encoding, charset: str | None) -> str | None:
    if len(sequence) == 1:
        if sequence == "F":
            return encoding.field
        if sequence == "S":
            return encoding.component
        if sequence == "T":
            return encoding.subcomponent
        if sequence == "R":
            return encoding.repetition
        if sequence == "E":
            return encoding.escape
        if sequence == "P" and encoding.truncation:
            return encoding.truncation
        return None
    if sequence == ".br":
        return "\n"
    if sequence[:1] == "X":
        digits = sequence[1:]
        if len(digits) % 2 or not (digits.isascii() and digits.isalnum()):
            return None
        try:
            data = bytes.fromhex(digits)
        except ValueError:
            return None
        if charset is not None:
            try:
                return data.decode(charset)
            except UnicodeDecodeError:
                return None
        return _decode_undeclared(data)[0]
    return None


def escape(text: str, encoding: Encoding = DEFAULT_ENCODING) -> str:
    """Escape delimiters in ``text`` so it can be one leaf value of a message.

    CR and LF become ``\\X0D\\`` and ``\\X0A\\`` (exact for every ASCII-based charset),
    so that a value never ends a segment; the MLLP block characters 0x0B and 0x1C become
    ``\\X0B\\`` and ``\\X1C\\``, so that a value never breaks the frame of a reply. The
    explicit null ``""`` passes unchanged.
    """
    esc = encoding.escape
    specials = (
        encoding.field,
        encoding.component,
        encoding.repetition,
        encoding.subcomponent,
        encoding.truncation,
        "\r",
        "\n",
        "\x0b",
        "\x1c",
    )
    if not esc:
        if any(char and char in text for char in specials):
            raise ValueError("text holds a delimiter but MSH-2 defines no escape character")
        return text
    if esc in text:
        text = text.replace(esc, f"{esc}E{esc}")
    codes = ("F", "S", "R", "T", "P", "X0D", "X0A", "X0B", "X1C")
    for char, code in zip(specials, codes, strict=True):
        if char and char in text:
            text = text.replace(char, f"{esc}{code}{esc}")
    return text


# ---------------------------------------------------------------------------------------------
# parsed message


class Repetition:
    """One repetition of a field, with lazy component and subcomponent access."""

    __slots__ = ("raw", "_encoding", "_charset")

    def __init__(self, raw: str, encoding: Encoding | None, charset: str | None) -> None:
        self.raw = raw
        self._encoding = encoding  # None: a literal (MSH-1, MSH-2), never split
        self._charset = charset

    def __str__(self) -> str:
        return self.raw

    def __repr__(self) -> str:
        return f"Repetition({self.raw!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Repetition):
            return self.raw == other.raw
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.raw)

    def component(self, comp: int) -> str:
        """Component ``comp`` raw (still escaped, subcomponents not split); missing → ``""``."""
        if comp < 1:
            raise ValueError("HL7 positions start at 1")
        encoding = self._encoding
        if encoding is None or not encoding.component:
            return self.raw if comp == 1 else ""
        parts = self.raw.split(encoding.component)
        return parts[comp - 1] if comp <= len(parts) else ""

    def components(self) -> list[str]:
        """All components raw (still escaped)."""
        encoding = self._encoding
        if not self.raw:
            return []
        if encoding is None or not encoding.component:
            return [self.raw]
        return self.raw.split(encoding.component)

    def subcomponents(self, comp: int) -> list[str]:
        """The unescaped subcomponents of component ``comp``."""
        raw = self.component(comp)
        if not raw:
            return []
        encoding = self._encoding
        if encoding is None:
            return [raw]
        parts = raw.split(encoding.subcomponent) if encoding.subcomponent else [raw]
        return [unescape(part, encoding, self._charset) for part in parts]

    def value(self, comp: int = 1, sub: int = 1) -> str:
        """The unescaped value at component ``comp``, subcomponent ``sub``; missing → ``""``."""
        if comp < 1 or sub < 1:
            raise ValueError("HL7 positions start at 1")
        encoding = self._encoding
        if encoding is None:
            return self.raw if comp == 1 and sub == 1 else ""
        return _leaf(self.raw, encoding, self._charset, comp, sub)

    def is_null(self, comp: int | None = None) -> bool:
        """True when the repetition (or component ``comp``) is the explicit null ``""``."""
        if comp is None:
            return self.raw == HL7_NULL
        return self.component(comp) == HL7_NULL


def _leaf(raw: str, encoding: Encoding, charset: str | None, comp: int, sub: int) -> str:
    sep = encoding.component
    if sep and sep in raw:
        parts = raw.split(sep)
        if comp > len(parts):
            return ""
        raw = parts[comp - 1]
    elif comp != 1:
        return ""
    sep = encoding.subcomponent
    if sep and sep in raw:
        parts = raw.split(sep)
        if sub > len(parts):
            return ""
        raw = parts[sub - 1]
    elif sub != 1:
        return ""
    esc = encoding.escape
    if esc and esc in raw:
        return unescape(raw, encoding, charset)
    return raw


class Segment:
    """One segment. ``field(n)`` is raw text; ``value(...)`` is unescaped."""

    __slots__ = ("name", "_fields", "_encoding", "_charset")

    def __init__(
        self, name: str, fields: list[str], encoding: Encoding, charset: str | None
    ) -> None:
        self.name = name
        self._fields = fields  # index = HL7 field number; index 0 is the segment name
        self._encoding = encoding
        self._charset = charset

    def __repr__(self) -> str:
        return f"Segment({self.raw!r})"

    def __len__(self) -> int:
        """The number of the last field present."""
        return len(self._fields) - 1

    @property
    def raw(self) -> str:
        """The segment text without its terminator."""
        fs = self._encoding.field
        if self.name == "MSH":
            return "MSH" + fs + fs.join(self._fields[2:])
        return fs.join(self._fields)

    def field(self, field: int) -> str:
        """Field ``field`` as raw text (escaped, not split); missing → ``""``."""
        if field < 0:
            raise ValueError("HL7 positions start at 1")
        fields = self._fields
        return fields[field] if field < len(fields) else ""

    def value(self, field: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
        """The unescaped value at ``field``-``rep``.``comp``.``sub``; missing → ``""``.

        The explicit null comes back as ``'""'`` (see :meth:`is_null`).
        """
        if field < 1 or rep < 1 or comp < 1 or sub < 1:
            raise ValueError("HL7 positions start at 1")
        fields = self._fields
        if field >= len(fields):
            return ""
        raw = fields[field]
        if not raw:
            return ""
        if field <= 2 and self.name == "MSH":
            return raw if rep == 1 and comp == 1 and sub == 1 else ""
        encoding = self._encoding
        sep = encoding.repetition
        if sep and sep in raw:
            parts = raw.split(sep)
            if rep > len(parts):
                return ""
            raw = parts[rep - 1]
        elif rep != 1:
            return ""
        return _leaf(raw, encoding, self._charset, comp, sub)

    def repetitions(self, field: int) -> list[Repetition]:
        """The repetitions of ``field``; an empty field has none."""
        raw = self.field(field)
        if not raw:
            return []
        if field in (1, 2) and self.name == "MSH":
            return [Repetition(raw, None, None)]
        encoding = self._encoding
        charset = self._charset
        if not encoding.repetition:
            return [Repetition(raw, encoding, charset)]
        return [Repetition(part, encoding, charset) for part in raw.split(encoding.repetition)]

    def is_null(self, field: int) -> bool:
        """True when the field is the explicit null ``""`` (delete the stored value)."""
        return self.field(field) == HL7_NULL


class Message:
    """A tokenized HL7 v2 message."""

    __slots__ = ("_segments", "_index", "encoding", "charset", "declared_charset")

    def __init__(
        self,
        segments: list[Segment],
        encoding: Encoding,
        charset: str,
        declared_charset: str,
    ) -> None:
        self._segments = segments
        self._index: dict[str, list[Segment]] | None = None
        self.encoding = encoding
        self.charset = charset
        """Python codec the text was decoded with (``"ascii"`` for str input without MSH-18)."""
        self.declared_charset = declared_charset
        """MSH-18 (first repetition) as sent; ``""`` when absent."""

    def __repr__(self) -> str:
        names = ",".join(segment.name for segment in self._segments)
        return f"Message({self.message_type}^{self.trigger_event} {names})"

    def __iter__(self) -> Iterator[Segment]:
        return iter(self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    def segments(self, name: str | None = None) -> list[Segment]:
        """All segments named ``name`` in order (all segments when ``name`` is None)."""
        if name is None:
            return list(self._segments)
        index = self._index
        if index is None:
            index = {}
            for segment in self._segments:
                index.setdefault(segment.name, []).append(segment)
            self._index = index
        return list(index.get(name, ()))

    def segment(self, name: str) -> Segment | None:
        """The first segment named ``name``, or None."""
        for segment in self._segments:
            if segment.name == name:
                return segment
        return None

    @property
    def msh(self) -> Segment:
        return self._segments[0]

    def to_text(self) -> str:
        """The message text, segments ended by CR."""
        return "".join(segment.raw + SEGMENT_TERMINATOR for segment in self._segments)

    @property
    def control_id(self) -> str:
        """MSH-10."""
        return self._segments[0].value(10)

    @property
    def message_type(self) -> str:
        """MSH-9.1, e.g. ``ADT``."""
        return self._segments[0].value(9, 1, 1)

    @property
    def trigger_event(self) -> str:
        """MSH-9.2, e.g. ``A04``."""
        return self._segments[0].value(9, 1, 2)

    @property
    def structure(self) -> str:
        """MSH-9.3, e.g. ``ADT_A01`` (``""`` when absent, as in v2.3.1 messages)."""
        return self._segments[0].value(9, 1, 3)

    @property
    def version(self) -> str:
        """MSH-12.1, e.g. ``2.5``."""
        return self._segments[0].value(12)

    @property
    def sending_application(self) -> str:
        """MSH-3, the whole HD raw."""
        return self._segments[0].field(3)

    @property
    def sending_facility(self) -> str:
        """MSH-4, the whole HD raw."""
        return self._segments[0].field(4)

    @property
    def receiving_application(self) -> str:
        """MSH-5, the whole HD raw."""
        return self._segments[0].field(5)

    @property
    def receiving_facility(self) -> str:
        """MSH-6, the whole HD raw."""
        return self._segments[0].field(6)


# ---------------------------------------------------------------------------------------------
# parsing


def _decode_undeclared(raw: bytes) -> tuple[str, str]:
    for codec in _UNDECLARED_FALLBACK:
        try:
            return raw.decode(codec), codec
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def _declared_charset_in_bytes(raw: bytes) -> str:
    """MSH-18 (first repetition) read from the raw bytes, before any decoding."""
    if raw[:3] != b"MSH":
        raise MissingMSHError()
    fs = raw[3:4]
    if not fs or fs in b"\r\n" or fs[0] >= 0x80 or fs.isalnum():
        raise EncodingCharactersError("MSH-1 field separator is missing or invalid", field=1)
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        found = raw.find(terminator, 0, end)
        if found >= 0:
            end = found
    parts = raw[:end].split(fs, 18)
    if len(parts) < 18:
        return ""
    value = parts[17]
    msh2 = parts[1]
    if len(msh2) >= 2 and msh2[1:2] in value:
        value = value.split(msh2[1:2], 1)[0]
    try:
        return value.decode("ascii").strip()
    except UnicodeDecodeError:
        raise UnsupportedCharsetError(value.decode("latin-1")) from None


def parse_message(
    raw: bytes | str,
    *,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
    max_repetitions: int = DEFAULT_MAX_REPETITIONS,
) -> Message:
    """Tokenize one HL7 v2 message given as bytes (charset from MSH-18) or text.

    Segment terminators CR, LF and CRLF are accepted; empty lines are skipped.
    Raises a :class:`~identity.hl7v2.errors.ParseError` subclass with the HL7 location;
    :class:`~identity.hl7v2.errors.LimitExceededError` for more than ``max_segments``
    segments or more than ``max_repetitions`` repetitions in a field.
    """
    if isinstance(raw, str):
        text = raw
        if text[:1] == "\ufeff":
            text = text[1:]
        charset: str | None = None
        codec_used = "ascii"
    else:
        if raw[:3] == b"\xef\xbb\xbf":
            raw = raw[3:]
        if raw[:1] in (b"\r", b"\n"):
            raw = raw.lstrip(b"\r\n")
        declared = _declared_charset_in_bytes(raw)
        if declared:
            codec_used = codec_for_charset(declared)
            try:
                text = raw.decode(codec_used)
            except UnicodeDecodeError as exc:
                raise CharsetDecodeError(declared, exc.start) from None
            charset = codec_used
        else:
            text, codec_used = _decode_undeclared(raw)
            charset = None if codec_used == "ascii" else codec_used
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    if text[:1] == "\r":
        text = text.lstrip("\r")
    if text[:3] != "MSH":
        raise MissingMSHError()
    fs = text[3:4]
    if not fs or fs == "\r":
        raise EncodingCharactersError("MSH-1 field separator is missing", field=1)
    lines = text.split("\r")
    if len(lines) > max_segments:  # blank lines count here: look closer
        _check_segment_count(lines, fs, max_segments)
    msh_fields = lines[0].split(fs)
    encoding = _encoding_from_msh(fs, msh_fields[1] if len(msh_fields) > 1 else "")
    msh_fields.insert(1, fs)
    declared_charset = ""
    if len(msh_fields) > 18:
        declared_charset = msh_fields[18]
        if encoding.repetition and encoding.repetition in declared_charset:
            declared_charset = declared_charset.split(encoding.repetition, 1)[0]
        declared_charset = declared_charset.strip()
        if declared_charset:
            declared_codec = codec_for_charset(declared_charset)
            if isinstance(raw, str):
                charset = codec_used = declared_codec
    segments = [Segment("MSH", msh_fields, encoding, charset)]
    for line in lines[1:]:
        if not line:
            continue
        fields = line.split(fs)
        name = fields[0]
        if len(name) != 3 or not (name.isalnum() and name.isascii()):
            if not line.strip():
                continue
            shown = name[:3]
            raise SegmentSyntaxError(
                f"segment {len(segments) + 1} has no valid segment name",
                segment=shown,
                sequence=1 + sum(1 for segment in segments if segment.name == shown),
            )
        if name == "MSH":  # a repeated MSH: numbered like the first (MSH-1 the separator)
            fields.insert(1, fs)
        segments.append(Segment(name, fields, encoding, charset))
    repetition = encoding.repetition
    # A field has one repetition more than it has separators, so with fewer separators in the
    # whole text than the cap (MSH-2's own included) no field can exceed it: one pass in C.
    if repetition and text.count(repetition) >= max_repetitions:
        _check_repetitions(segments, repetition, max_repetitions)
    return Message(segments, encoding, codec_used, declared_charset)


def _check_segment_count(lines: list[str], fs: str, limit: int) -> None:
    """LimitExceededError at the first segment beyond ``limit`` (blank lines are no segments)."""
    count = 0
    seen: dict[str, int] = {}
    for line in lines:
        if not line.strip():
            continue
        count += 1
        name = line.split(fs, 1)[0][:3]
        seen[name] = seen.get(name, 0) + 1
        if count > limit:
            raise LimitExceededError(
                f"the message has more than {limit} segments",
                location=ErrorLocation(name, seen[name]),
                limit=limit,
            )


def _check_repetitions(segments: list[Segment], separator: str, limit: int) -> None:
    """LimitExceededError at the first repetition beyond ``limit`` in any field."""
    seen: dict[str, int] = {}
    for segment in segments:
        name = segment.name
        seen[name] = seen.get(name, 0) + 1
        fields = segment._fields
        first = 3 if name == "MSH" else 1  # MSH-1 and MSH-2 are the delimiters themselves
        for number in range(first, len(fields)):
            if fields[number].count(separator) >= limit:
                raise LimitExceededError(
                    f"{name}-{number} has more than {limit} repetitions",
                    location=ErrorLocation(name, seen[name], number, limit + 1),
                    limit=limit,
                )


# ---------------------------------------------------------------------------------------------
# building


class Raw(str):
    """Text already in HL7 wire form (escaped, delimiters included): inserted unchanged."""

    __slots__ = ()


Leaf = str | int | float | None
Component = Leaf | Sequence[Leaf]
RepetitionValue = Leaf | Sequence[Component]
FieldValue = Leaf | Sequence[RepetitionValue]


def _leaf_text(value: object, encoding: Encoding) -> str:
    if value is None:
        return ""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str):
        return escape(value, encoding)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"cannot put a {type(value).__name__} into an HL7 message")
    return str(value)


def _join_trimmed(separator: str, parts: list[str]) -> str:
    while parts and parts[-1] == "":
        parts.pop()
    return separator.join(parts)


def _is_nested(value: object) -> bool:
    return isinstance(value, (list, tuple))


def _component_text(value: object, encoding: Encoding) -> str:
    if _is_nested(value):
        if not encoding.subcomponent:
            raise ValueError("MSH-2 defines no subcomponent separator")
        return _join_trimmed(
            encoding.subcomponent,
            [_leaf_text(part, encoding) for part in value],  # type: ignore[attr-defined]
        )
    return _leaf_text(value, encoding)


def _repetition_text(value: object, encoding: Encoding) -> str:
    if _is_nested(value):
        return _join_trimmed(
            encoding.component,
            [_component_text(part, encoding) for part in value],  # type: ignore[attr-defined]
        )
    return _leaf_text(value, encoding)


def _field_text(value: object, encoding: Encoding) -> str:
    if _is_nested(value):
        return _join_trimmed(
            encoding.repetition,
            [_repetition_text(part, encoding) for part in value],  # type: ignore[attr-defined]
        )
    return _leaf_text(value, encoding)


def build_segment(fields: Sequence[FieldValue], encoding: Encoding = DEFAULT_ENCODING) -> str:
    """One segment's text (no terminator) from ``[name, field1, field2, ...]``.

    Index = HL7 field number. A field is a leaf or a list of repetitions; a repetition a leaf
    or a list of components; a component a leaf or a list of subcomponents. Leaves are ``str``
    (escaped), :class:`Raw` (unchanged), numbers or None (empty). For MSH, items 1 and 2 are
    MSH-1 and MSH-2: give None (or the values of ``encoding``); the builder writes them.
    Trailing empty fields, repetitions, components and subcomponents are left out.
    """
    if not fields:
        raise ValueError("a segment needs a name")
    name = fields[0]
    if not isinstance(name, str) or len(name) != 3 or not (name.isalnum() and name.isascii()):
        raise ValueError(f"invalid segment name {name!r}")
    fs = encoding.field
    if name == "MSH":
        given = list(fields[1:3])
        for given_value, expected in zip(given, (fs, encoding.msh2), strict=False):
            if given_value is not None and given_value != expected:
                raise ValueError("MSH-1/MSH-2 must be None or match the encoding")
        body = _join_trimmed(fs, [_field_text(value, encoding) for value in fields[3:]])
        return f"MSH{fs}{encoding.msh2}" + (fs + body if body else "")
    body = _join_trimmed(fs, [_field_text(value, encoding) for value in fields[1:]])
    return name + (fs + body if body else "")


def build_message(
    segments: Sequence[Sequence[FieldValue]], encoding: Encoding = DEFAULT_ENCODING
) -> str:
    """A whole message (first segment MSH), every segment ended by CR. See build_segment."""
    if not segments or not segments[0] or segments[0][0] != "MSH":
        raise ValueError("a message starts with MSH")
    return "".join(build_segment(segment, encoding) + SEGMENT_TERMINATOR for segment in segments)


def to_bytes(text: str, charset: str | None = None) -> bytes:
    """Encode message text for the wire.

    ``charset`` is an MSH-18 value (``""`` = ASCII); None reads MSH-18 from the text itself.
    Raises UnsupportedCharsetError or CharsetEncodeError.
    """
    if charset is None:
        charset = _declared_charset_in_text(text)
    codec = codec_for_charset(charset)
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise CharsetEncodeError(charset or "ASCII", exc.start) from None


def _declared_charset_in_text(text: str) -> str:
    if text[:3] != "MSH" or len(text) < 4:
        raise MissingMSHError()
    fs = text[3]
    end = len(text)
    for terminator in _TERMINATOR_CHARS:
        found = text.find(terminator, 0, end)
        if found >= 0:
            end = found
    parts = text[:end].split(fs, 18)
    if len(parts) < 18:
        return ""
    value = parts[17]
    if len(parts[1]) >= 2 and parts[1][1] in value:
        value = value.split(parts[1][1], 1)[0]
    return value.strip()
