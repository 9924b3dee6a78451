"""What the steward sees of a review item, in the form both of its views use (the console's
templates and the command line's text): the two records aligned field by field, each row
judged by the comparison that scored it, and the explanation as the steps of a waterfall from
the prior to the total weight.

Pure functions of the core's view types; no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from identity.model import Demographics, SourceRecord
from matching.normalize import phone_number

# --- the records, field by field ---------------------------------------------------------------

SAME, CLOSE, DIFFERS, MISSING = "same", "close", "differs", "missing"
"""How a row's two values compare: the comparison's top level (or equal text), a lower level
that still counts for the pair, a level that counts against it, or a value absent on a side."""


@dataclass(frozen=True, slots=True)
class Field:
    """One row of the side-by-side view."""

    name: str
    left: str
    right: str
    state: str  # SAME, CLOSE, DIFFERS, MISSING
    comparison: str | None = None  # the comparison that judged the row
    level: str | None = None  # the level it reached ("day/month transposed")
    contribution: float | None = None  # its weight in bits


# The comparison that scores each field (matching.comparisons' names). Address and phone share
# ``contact``: each row takes that comparison's level and weight, and its state from the text.
FIELD_COMPARISONS = {
    "family": "family_name",
    "given": "given_name",
    "birth date": "birth_date",
    "sex": "sex",
    "suffix": "suffix",
    "address": "contact",
    "phone": "contact",
    "identifiers": "person_identifier",
}
FIELDS = ("family", "given", "suffix", "birth date", "sex", "address", "phone", "e-mail",
          "mother's maiden name", "multiple birth", "identifiers")


def _names(d: Demographics) -> tuple[str, str, str]:
    if not d.names:
        return "", "", ""
    name = d.names[0]
    return name.family or "", " ".join(g for g in name.given if g), name.suffix or ""


def _address(d: Demographics) -> str:
    if not d.addresses:
        return ""
    a = d.addresses[0]
    place = " ".join(p for p in (a.state or "", a.postal_code or "") if p)
    return ", ".join(p for p in (" ".join(a.lines), a.city or "", place) if p)


def record_fields(record: SourceRecord) -> dict[str, str]:
    """The record's values as the steward reads them (as received), one string per field."""
    d = record.demographics
    family, given, suffix = _names(d)
    multiple = d.multiple_birth
    return {
        "family": family,
        "given": given,
        "suffix": suffix,
        "birth date": d.birth_date or "",
        "sex": d.sex or "",
        "address": _address(d),
        "phone": ", ".join(p.value for p in d.phones or ()
                           if phone_number(p.model_dump()) is not None),
        "e-mail": ", ".join(p.email or p.value for p in d.phones or ()
                            if p.email or p.system == "email"),
        "mother's maiden name": d.mothers_maiden_name or "",
        "multiple birth": "" if multiple is None else str(multiple),
        "identifiers": ", ".join(f"{i.domain} {i.value}" for i in record.other_identifiers),
    }


def _text_state(left: str, right: str) -> str:
    if not left or not right:
        return MISSING
    fold = str.casefold
    return SAME if fold(" ".join(left.split())) == fold(" ".join(right.split())) else DIFFERS


def _judged(comparison: dict[str, Any], left: str, right: str) -> str:
    if not left or not right or comparison.get("label") in ("missing", "no common domain"):
        return MISSING
    if comparison.get("level") == 1 or comparison.get("label") in ("exact", "same"):
        return SAME
    contribution = float(comparison.get("contribution") or 0.0)
    return CLOSE if contribution > 0 else DIFFERS


def align(
    left: SourceRecord, right: SourceRecord | None, explanation: dict[str, Any] | None
) -> list[Field]:
    """The rows of the side-by-side view: each field's two values and how they compare, by
    the level of the comparison that scored the field where there is one (a birth date one
    digit off is CLOSE, not just different), by the text elsewhere."""
    a = record_fields(left)
    b = record_fields(right) if right is not None else {}
    comparisons = {c["comparison"]: c for c in (explanation or {}).get("comparisons") or ()}
    rows = []
    for name in FIELDS:
        x, y = a.get(name, ""), b.get(name, "")
        if not x and not y:
            continue
        comparison = comparisons.get(FIELD_COMPARISONS.get(name, ""))
        if comparison is None:
            rows.append(Field(name, x, y, _text_state(x, y)))
            continue
        if name in ("address", "phone"):
            rows.append(_contact_row(name, x, y, comparison))
            continue
        rows.append(Field(
            name, x, y, _judged(comparison, x, y),
            comparison=comparison["comparison"],
            level=comparison.get("label"),
            contribution=float(comparison.get("contribution") or 0.0),
        ))  # fmt: skip
    return rows


# What each level of the contact comparison says of the address row and of the phone row.
_CONTACT = {
    "same address and phone": (SAME, SAME),
    "same address": (SAME, None),
    "same house and street": (CLOSE, None),
    "same phone": (None, SAME),
    "same postal code": (CLOSE, None),
    "different": (DIFFERS, DIFFERS),
}


def _contact_row(name: str, x: str, y: str, comparison: dict[str, Any]) -> Field:
    """The address and phone rows share one comparison (``contact``, the best of the two): a
    row takes its level where the level speaks of it ("same phone" for the phone row), and is
    judged by its text where it does not."""
    label = str(comparison.get("label") or "")
    said = _CONTACT.get(label, (None, None))[0 if name == "address" else 1]
    if said is None or not x or not y:
        return Field(name, x, y, _text_state(x, y))
    return Field(name, x, y, said, comparison=str(comparison["comparison"]), level=label,
                 contribution=float(comparison.get("contribution") or 0.0))


# --- the explanation as a waterfall ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One bar of the waterfall: from ``start`` to ``end`` bits (log2 odds)."""

    label: str
    detail: str
    start: float
    end: float
    kind: str  # "prior", "for", "against", "none", "total"

    @property
    def value(self) -> float:
        return self.end - self.start if self.kind != "total" else self.end


def probability_of(weight: float) -> float:
    """The match probability of a total weight in bits."""
    if weight > 60:
        return 1.0
    if weight < -60:
        return 0.0
    odds = 2.0**weight
    return odds / (1.0 + odds)


def weight_of(probability: float) -> float:
    """The weight in bits of a probability (the thresholds on the waterfall's axis)."""
    probability = min(max(probability, 1e-12), 1 - 1e-12)
    return math.log2(probability / (1 - probability))


def waterfall(explanation: dict[str, Any] | None) -> list[Step]:
    """The prior, each comparison's contribution in the order of the model, and the total."""
    if not explanation or not explanation.get("comparisons"):
        return []
    running = float(explanation.get("prior_weight", 0.0))
    steps = [Step("prior", "", 0.0, running, "prior")]
    for c in explanation["comparisons"]:
        value = float(c.get("contribution", c.get("weight", 0.0)) or 0.0)
        kind = "for" if value > 0 else "against" if value < 0 else "none"
        detail = str(c.get("label", c.get("level", "")))
        tf = float(c.get("tf_adjustment") or 0.0)
        if tf:
            detail += f" (term frequency {tf:+.1f})"
        steps.append(Step(str(c["comparison"]), detail, running, running + value, kind))
        running += value
    total = float(explanation.get("total_weight", running))
    steps.append(Step("total", "", 0.0, total, "total"))
    return steps


@dataclass(frozen=True, slots=True)
class Chart:
    """A waterfall laid out for an SVG of ``width`` × ``height`` pixels: one row per step,
    bars from x(start) to x(end), and the thresholds as vertical lines."""

    width: int
    height: int
    row: int
    label_width: int
    rows: list[dict[str, Any]]
    axis: list[dict[str, Any]]
    thresholds: list[dict[str, Any]]
    probability: float


def chart(
    steps: Sequence[Step],
    probability: float,
    thresholds: Sequence[tuple[str, float]] = (),
    width: int = 760,
    row: int = 22,
    label_width: int = 300,
) -> Chart | None:
    """Lay the steps out on a shared axis in bits. ``thresholds``: (name, probability)."""
    if not steps:
        return None
    marks = [(name, weight_of(p)) for name, p in thresholds]
    values = [0.0] + [s.start for s in steps] + [s.end for s in steps] + [w for _, w in marks]
    low, high = min(values), max(values)
    span = max(high - low, 1.0)
    low, high = low - span * 0.04, high + span * 0.04
    plot = width - label_width - 70  # room on the right for the value

    def x(v: float) -> float:
        return round(label_width + (v - low) / (high - low) * plot, 1)

    rows = []
    for i, s in enumerate(steps):
        a, b = x(s.start), x(s.end)
        rows.append({
            "y": 24 + i * row, "x": min(a, b), "w": max(abs(b - a), 1.5),
            "end": b, "kind": s.kind, "label": s.label, "detail": s.detail,
            "value": s.value, "running": s.end,
        })  # fmt: skip
    height = 24 + len(steps) * row + 8
    step = _tick(high - low)
    first = math.ceil(low / step) * step
    axis = []
    v = first
    while v <= high:
        axis.append({"x": x(v), "value": v})
        v += step
    lines = [{"x": x(w), "name": name, "weight": w} for name, w in marks]
    return Chart(width, height, row, label_width, rows, axis, lines, probability)


def _tick(span: float) -> float:
    for step in (1, 2, 5, 10, 20, 25, 50):
        if span / step <= 8:
            return float(step)
    return 100.0
