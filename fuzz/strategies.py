"""Hypothesis strategies: seeds mutated the way broken and hostile senders break them.

HL7 v2: a seed message (fuzz/seeds.py) with a few structural mutations: a field, component or
repetition replaced by a nasty value (delimiters, escape sequences, the explicit null, control
characters, non-ASCII text, huge numbers, invalid dates), delimiters inserted, the message
truncated, segments duplicated, dropped or swapped, MSH-1/MSH-2/MSH-12/MSH-18 variants, large
repetition counts, other segment terminators, odd encodings and raw bytes.

FHIR: seeds (PDQm queries, $match Parameters, PMIR Bundles) whose nodes are replaced by values
of the wrong type, deleted, duplicated, or given nasty strings.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from fuzz import seeds

# --- HL7 v2 ------------------------------------------------------------------------------------

HL7_SEEDS = seeds.hl7_seeds()

_ESCAPES = [
    "\\F\\", "\\S\\", "\\T\\", "\\R\\", "\\E\\", "\\P\\", "\\H\\", "\\N\\", "\\.br\\",
    "\\X00\\", "\\X0B\\", "\\X1C\\", "\\X0D0A\\", "\\XC3A9\\", "\\XFF\\", "\\XZZ\\", "\\X1\\",
    "\\C2842\\", "\\M2442\\", "\\Zcustom\\", "\\", "\\\\", "\\X", "\\.sp5\\",
]
_NASTY = [
    "", '""', '""""', " ", "|", "^", "~", "\\", "&", "#", "^^^^^^^^", "&&&", "~~~~",
    "\x00", "\x0b", "\x1c", "\x7f", "\t", "\ufeff", "\u00e9", "\u4e2d\u6587", "\U0001f600",
    "\ud800", "MSH", "PID", "-1", "0", "00", "9" * 40, "1e309", "NaN",
    "20260230", "00000000", "99999999", "2026", "202613", "19800312^", "19800312+2500",
    "A04", "Q22", "Q23", "J01", "ADT", "QBP", "2.5", "2.3.1", "2.9.9.9", "3.0", "2", "2.x",
    "@PID.3", "@PID.3.4.9", "@PID.99", "@", "@PID.5.1.1", "@PID.21.4.3", "@PID.18.2",
    "e0.", "a99999999999999999999.000000000000", "e-1.x",
    "HOSPA", "&1.2.3.4.5.1&ISO", "&1.2.3.4.5.1&DNS", "NATIONAL&2.16.840.1.113883.4.1&ISO",
    "UNICODE UTF-8", "8859/1", "UNICODE UTF-16", "ISO IR87", "8859/1~UNICODE UTF-8",
    "\u00b2", "2.\u00b2", "\u0661\u0662", "\uff11\uff12", "Y", "N", "e\u00b2.x",
]
_MSH2 = ["^~\\&", "^~\\&#", "^~\\", "^~", "^", "", "^~\\&#x", "^^\\&", "^~|&", "a~\\&",
         "^~\\&\r", "^~\\& ", "\u00e9~\\&", "^~&\\"]
_FIELD_SEPARATORS = ["|", "#", "!", "*", "\t", " ", "a", "\u00a6"]


def _nasty_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(_NASTY),
        st.sampled_from(_ESCAPES),
        st.text(max_size=12),
        st.text(alphabet="|^~\\&#\"XE0123456789ABCDEF.", max_size=16),
        st.builds(lambda a, b, c: a + b + c, st.sampled_from(_NASTY), st.sampled_from(_ESCAPES),
                  st.sampled_from(_NASTY)),
    )


def _split(text: str) -> list[list[str]]:
    return [segment.split("|") for segment in text.split("\r") if segment]


def _join(segments: list[list[str]]) -> str:
    return "".join("|".join(fields) + "\r" for fields in segments)


@st.composite
def _mutate(draw: st.DrawFn, text: str) -> tuple[str, str]:
    """One mutation of a message in ``|^~\\&`` form; returns (text, terminator)."""
    segments = _split(text)
    if not segments:
        return text, "\r"
    op = draw(st.sampled_from([
        "value", "value", "value", "component", "repetitions", "insert", "truncate",
        "duplicate", "drop", "swap", "msh2", "msh12", "msh18", "fields", "empty",
    ]))
    index = draw(st.integers(0, len(segments) - 1))
    fields = segments[index]
    if op in ("value", "component", "repetitions"):
        number = draw(st.integers(1, max(len(fields), 2) + 2))
        while len(fields) <= number:
            fields.append("")
        if op == "value":
            fields[number] = draw(_nasty_text())
        elif op == "component":
            parts = fields[number].split("^")
            at = draw(st.integers(0, len(parts)))
            parts[at:at + 1] = [draw(_nasty_text())]
            fields[number] = "^".join(parts)
        else:
            count = draw(st.sampled_from([2, 3, 50, 1000, 3000]))
            fields[number] = "~".join([fields[number][:20] or "X"] * count)
    elif op == "insert":
        joined = _join(segments)
        at = draw(st.integers(0, len(joined)))
        piece = draw(st.sampled_from(["|", "^", "~", "\\", "&", "\r", "\n", '""', "\x00"]))
        return joined[:at] + piece + joined[at:], "\r"
    elif op == "truncate":
        joined = _join(segments)
        return joined[: draw(st.integers(0, len(joined)))], "\r"
    elif op == "duplicate":
        segments.insert(index, list(fields))
    elif op == "drop" and len(segments) > 1:
        del segments[draw(st.integers(1, len(segments) - 1))]
    elif op == "swap" and len(segments) > 1:
        other = draw(st.integers(0, len(segments) - 1))
        segments[index], segments[other] = segments[other], segments[index]
    elif op == "msh2":
        segments[0][1:2] = [draw(st.sampled_from(_MSH2))]
    elif op == "msh12":
        while len(segments[0]) <= 11:
            segments[0].append("")
        segments[0][11] = draw(st.sampled_from(["2.5", "2.3.1", "2.3", "2.1", "2.5.1^^", "",
                                                "2.10", "2.5.1.1.1", "x.y", "2.a", "2.\u00b2",
                                                "\u0662.\u0665"]))
    elif op == "msh18":
        while len(segments[0]) <= 17:
            segments[0].append("")
        segments[0][17] = draw(st.sampled_from(_NASTY[-5:] + ["", "ASCII", "utf-8", "BIG-5",
                                                              "GB 18030-2000", "8859/15"]))
    elif op == "fields":
        if len(fields) < 5000:
            fields.extend(["x"] * draw(st.sampled_from([30, 300, 3000])))
    elif op == "empty":
        segments.insert(index + 1, [""] if draw(st.booleans()) else ["   "])
    return _join(segments), "\r"


@st.composite
def hl7_texts(draw: st.DrawFn, fresh_control_id: bool = False) -> str:
    """A mutated seed message as text. ``fresh_control_id``: MSH-10 replaced by a random one
    first, so that a live door applies the message instead of answering it as a re-send."""
    text = draw(st.sampled_from(HL7_SEEDS))
    if fresh_control_id:
        fields = text.split("|", 10)
        if len(fields) == 11:
            fields[9] = "F" + draw(st.text(alphabet="0123456789ABCDEF", min_size=12,
                                           max_size=12))
            text = "|".join(fields)
    for _ in range(draw(st.integers(0, 4))):
        text, _ = draw(_mutate(text))
    separator = draw(st.sampled_from(["|"] * 6 + _FIELD_SEPARATORS))
    if separator != "|" and separator not in text:
        text = text.replace("|", separator)
    terminator = draw(st.sampled_from(["\r"] * 4 + ["\n", "\r\n", ""]))
    if terminator != "\r":
        text = text.replace("\r", terminator)
    return text


@st.composite
def hl7_messages(draw: st.DrawFn, fresh_control_id: bool = False) -> bytes:
    """A mutated seed message as the bytes of one MLLP frame's payload."""
    text = draw(hl7_texts(fresh_control_id))
    codec = draw(st.sampled_from(["utf-8"] * 6 + ["latin-1", "utf-16", "cp1252", "gb18030"]))
    raw = text.encode(codec, errors="replace") if codec != "utf-8" else text.encode(
        "utf-8", errors="surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=8)) + raw[at:]
    if draw(st.integers(0, 19)) == 0:
        raw = b"\xef\xbb\xbf" + raw
    # a frame's payload never holds the block characters: the framer split on them
    return raw.replace(b"\x0b", b"").replace(b"\x1c", b"")


# --- MLLP --------------------------------------------------------------------------------------

SB, EB, CR = b"\x0b", b"\x1c", b"\r"


@st.composite
def mllp_streams(draw: st.DrawFn) -> tuple[list[bytes], int]:
    """Chunks of a byte stream of frames, junk, restarts and stray block characters, and a
    frame size limit."""
    pieces = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["frame", "frame", "junk", "sb", "eb", "cr", "open"]))
        if kind == "frame":
            pieces.append(SB + draw(hl7_messages()) + EB + draw(st.sampled_from([CR, b"", b"x"])))
        elif kind == "junk":
            pieces.append(draw(st.binary(max_size=40)))
        elif kind == "open":
            pieces.append(SB + draw(st.binary(max_size=40)))
        else:
            pieces.append({"sb": SB, "eb": EB, "cr": CR}[kind])
    stream = b"".join(pieces)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks, last = [], 0
    for cut in cuts + [len(stream)]:
        chunks.append(stream[last:cut])
        last = cut
    limit = draw(st.sampled_from([1, 16, 200, 1 << 20]))
    return chunks, limit


@st.composite
def mllp_clean_streams(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """Well-formed frames split at arbitrary points, and the messages they carry."""
    messages = draw(st.lists(hl7_messages(), min_size=1, max_size=4))
    stream = b"".join(SB + m + EB + CR for m in messages)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks, last = [], 0
    for cut in cuts + [len(stream)]:
        chunks.append(stream[last:cut])
        last = cut
    return chunks, messages


# --- escapes ------------------------------------------------------------------------------------

@st.composite
def encodings(draw: st.DrawFn) -> tuple[str, str]:
    """(MSH-1, MSH-2) of a valid encoding: distinct ASCII punctuation."""
    chars = draw(st.lists(st.sampled_from(list("|^~\\&#!$%*+/:;<=>?@_`{}")), min_size=2,
                          max_size=6, unique=True))
    return chars[0], "".join(chars[1:])


# --- FHIR --------------------------------------------------------------------------------------


def _text(max_size: int) -> st.SearchStrategy[str]:
    """Text a FHIR request can carry: no lone surrogates (JSON and URL decoding refuse them)."""
    return st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size)


_JSON_NASTY: list[Any] = [
    None, True, False, 0, -1, 1.5, 10**30, -(10**30), 1e308, "", " ", "\x00", "\x01",
    "Patient/\u00b2", "\ufffdx",
    "\u00e9", "a" * 300, "1980-02-30", "1980-13", "19800312", "male", "urn:oid:", "|", [],
    [None], [1, "a"], {}, {"resourceType": "Patient"}, {"value": None}, [[[]]],
]


def _json_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(_JSON_NASTY),
        _text(20),
        st.integers(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | _text(5),
            lambda inner: st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["value", "system", "name", "resource", "url",
                                               "family", "given", "resourceType", "x"]),
                              inner, max_size=3),
            max_leaves=6,
        ),
    )


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, path + (key,)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, path + (index,)))
    return out


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    node = root
    for key in path[:-1]:
        node = node[key]
    return node


@st.composite
def mutated_json(draw: st.DrawFn, seed_list: list[Any]) -> Any:
    """A seed resource with a few nodes replaced, deleted, duplicated or extended."""
    root = copy.deepcopy(draw(st.sampled_from(seed_list)))
    for _ in range(draw(st.integers(0, 4))):
        paths = _paths(root)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "delete", "duplicate", "add", "wrap"]))
        if not path:
            if op == "replace" and draw(st.integers(0, 9)) == 0:
                root = copy.deepcopy(draw(_json_values()))
            continue
        parent, key = _parent(root, path), path[-1]
        if op == "replace":
            parent[key] = copy.deepcopy(draw(_json_values()))
        elif op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "add" and isinstance(parent[key], dict):
            name = draw(st.sampled_from(["id", "resourceType", "extension", "modifierExtension",
                                         "link", "active", "identifier", "count", "x"]))
            parent[key][name] = copy.deepcopy(draw(_json_values()))
        elif op == "wrap":
            parent[key] = [parent[key]]
    return root


def match_bodies() -> st.SearchStrategy[Any]:
    return mutated_json(seeds.match_seeds())


def pix_bodies() -> st.SearchStrategy[Any]:
    return mutated_json(seeds.pix_seeds())


def bundle_bodies() -> st.SearchStrategy[Any]:
    return mutated_json(seeds.bundle_seeds())


_SEARCH_KEYS = sorted([
    "family", "given", "address", "address-city", "address-country", "address-postalcode",
    "address-state", "mothersMaidenName", "_id", "active", "gender", "identifier", "telecom",
    "birthdate", "_count", "_offset", "_format", "_total", "_pretty", "_summary", "name",
    "_sort", "",
])
_SEARCH_VALUES = [
    "", ",", ",,", "\\", "\\,", "a\\", "*", "**", "SMI*", "|", "||", "|x", "x|", "a|b|c",
    f"{seeds.HOSPA}|HA1001", f"{seeds.HOSPA}|", f"{seeds.ENTERPRISE}|0000000001",
    "urn:oid:|x", "urn:oid:1.2|", "male", "female,male", "http://hl7.org/fhir/administrative-gender|male",
    "x|male", "true", "false", "TRUE", "1980", "1980-02", "1980-02-29", "1981-02-29", "1980-13",
    "1980-00-01", "0000", "9999-12", "9999-12-31", "0001-01-01", "ge1980", "gt9999-12-31",
    "lt0001-01-01", "le9999", "sa9999-12-31", "eb0001", "ne1980", "ap1980", "xx1980", "gt",
    "1980-03-12T10:00", "T", "-1", "0", "1", "201", "99999999999999999999", "1e3", " 1",
    "\x00", "a\x00b", "\u00e9", "\U0001f600", "\u00b2", "\u0661", "phone|",
    "phone|217", "email|a@b", "sms|5",
]


@st.composite
def search_params(draw: st.DrawFn) -> list[tuple[str, str]]:
    """PDQm query parameters: a seed query, changed and extended."""
    params = list(draw(st.sampled_from(seeds.SEARCH_SEEDS)))
    for _ in range(draw(st.integers(0, 5))):
        op = draw(st.sampled_from(["add", "add", "replace", "delete", "modifier"]))
        if op == "add" or not params:
            key = draw(st.sampled_from(_SEARCH_KEYS) | _text(8))
            value = draw(st.sampled_from(_SEARCH_VALUES) | _text(12))
            if draw(st.booleans()):
                value = ",".join([value] * draw(st.integers(1, 12)))
            params.append((key, value))
            continue
        at = draw(st.integers(0, len(params) - 1))
        key, value = params[at]
        if op == "replace":
            params[at] = (key, draw(st.sampled_from(_SEARCH_VALUES) | _text(12)))
        elif op == "delete":
            del params[at]
        else:
            modifier = draw(st.sampled_from(["exact", "contains", "missing", "text", "not",
                                             "", "of-type", ":"]))
            params[at] = (f"{key.split(':')[0]}:{modifier}", value)
    return params


# --- FHIR over HTTP ----------------------------------------------------------------------------

_ACCEPT = [None, None, "application/fhir+json", "application/fhir+xml", "*/*", "text/html",
           "application/json;q=0.5, application/fhir+xml;q=0.9", "xml;q=x, ;;", "",
           "application/xml;q=1e9"]
_CONTENT_TYPES = ["application/fhir+json", "application/json", "application/fhir+xml",
                  "text/plain", "application/octet-stream", "multipart/form-data",
                  "application/x-www-form-urlencoded", ""]
_FORMATS = ["json", "xml", "application/fhir+xml", "text/turtle", "", "json;x", "+xml"]
_CLIENTS = [None, "ADT_A", "ADT_B", "LIS", "", "unknown", "x" * 300, "ADT_A ", "\u00e9"]
_IDS = ["1", "2", "0", "-1", "007", "99999999999999999999", "9" * 18, "abc", "1e3", " 1",
        "%00", "1%2F2", "$match", "\u00b2", "\u0661", "\uff11"]


def _json_bytes(value: Any) -> bytes:
    import json

    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def http_requests(draw: st.DrawFn) -> dict[str, Any]:
    """One request to the FHIR door: method, path, query pairs, headers, body."""
    from urllib.parse import quote, urlencode

    kind = draw(st.sampled_from(["search", "search", "search_post", "match", "match", "bundle",
                                 "bundle", "put", "delete", "read", "pix_get", "pix_post"]))
    query: list[tuple[str, str]] = []
    body: bytes | None = None
    content_type: str | None = "application/fhir+json"
    token = draw(st.sampled_from(_SEARCH_VALUES[12:24]) | _text(10))
    if kind == "search":
        method, path, content_type = "GET", "/Patient", None
        query = draw(search_params())
    elif kind == "search_post":
        method, path = "POST", "/Patient/_search"
        content_type = "application/x-www-form-urlencoded"
        body = urlencode(draw(search_params()), errors="surrogatepass").encode()
    elif kind == "match":
        method, path, body = "POST", "/Patient/$match", _json_bytes(draw(match_bodies()))
    elif kind == "bundle":
        method = "POST"
        path = draw(st.sampled_from(["/$process-message", "/Bundle", "/"]))
        body = _json_bytes(draw(bundle_bodies()))
    elif kind in ("put", "delete"):
        method, path = ("PUT", "/Patient") if kind == "put" else ("DELETE", "/Patient")
        value = draw(st.sampled_from(["HA1002", "HA1001", "", "x,y", "\x00"]))
        system = draw(st.sampled_from(seeds.SYSTEMS + ["", "urn:oid:"]))
        query = [("identifier", f"{system}|{value}")]
        if draw(st.integers(0, 4)) == 0:
            query.append(draw(st.sampled_from([("identifier", token), ("_format", "json"),
                                               ("family", "x")])))
        if kind == "put":
            body = _json_bytes(draw(mutated_json([seeds.patient()])))
        else:
            content_type = None
    elif kind == "read":
        method, content_type = "GET", None
        path = "/Patient/" + quote(draw(st.sampled_from(_IDS)), safe="%")
        if draw(st.booleans()):
            path += "/_history/" + quote(draw(st.sampled_from(_IDS)), safe="%")
    elif kind == "pix_get":
        method, path, content_type = "GET", "/Patient/$ihe-pix", None
        query = [("sourceIdentifier", draw(st.sampled_from(
            [f"{seeds.HOSPA}|HA1001", f"{seeds.HOSPB}|B-1", token, "|x", "HA1001"])))]
        for _ in range(draw(st.integers(0, 2))):
            query.append(("targetSystem", draw(st.sampled_from(seeds.SYSTEMS + [token, ","]))))
    else:
        method, path = "POST", "/Patient/$ihe-pix"
        body = _json_bytes(draw(pix_bodies()))
    headers: dict[str, str] = {}
    accept = draw(st.sampled_from(_ACCEPT))
    if accept is not None:
        headers["Accept"] = accept
    if draw(st.integers(0, 9)) == 0:
        query.append(("_format", draw(st.sampled_from(_FORMATS))))
    if body is not None and draw(st.integers(0, 9)) == 0:
        content_type = draw(st.sampled_from(_CONTENT_TYPES))
    if body is not None and draw(st.integers(0, 14)) == 0:
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(max_size=6)) + body[at:]
    if content_type:
        headers["Content-Type"] = content_type
    client = draw(st.sampled_from(_CLIENTS))
    if client is not None:
        headers["X-Client-Id"] = client
    if method == "PUT" and draw(st.integers(0, 4)) == 0:
        headers["If-Match"] = draw(st.sampled_from(['W/"1"', "*", "", 'W/"x"']))
    return {"method": method, "path": path, "query": query, "headers": headers, "body": body}
