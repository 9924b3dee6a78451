"""Plain-text views of the steward's data for the command line (`identity review`, `identity
person`): the queue as a table, an item with its two records side by side and the explanation
as a waterfall of weights, a person with its golden view."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from identity.model import (
    CommandResult,
    HistoryEvent,
    PersonView,
    QueueItem,
    QueuePage,
    RecordSummary,
    ReviewDetail,
    SourceRecord,
)
from identity.steward.present import CLOSE, DIFFERS, MISSING, SAME, align
from identity.steward.present import waterfall as weigh


def age(at: datetime, now: datetime | None = None) -> str:
    """How long ago ``at`` was: minutes, hours or days."""
    seconds = ((now or datetime.now(UTC)) - at).total_seconds()
    if seconds < 3600:
        return f"{max(0, int(seconds // 60))} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns as wide as their widest cell (at most 40 characters)."""
    cells = [[_cut("" if c is None else str(c), 40) for c in row] for row in rows]
    widths = [
        max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _who(summary: RecordSummary | None) -> str:
    if summary is None:
        return "-"
    name = " ".join(p for p in (summary.family, summary.given) if p) or "(no name)"
    return f"{summary.domain} {summary.identifier}: {name} {summary.birth_date or ''}".rstrip()


def queue_text(page: QueuePage) -> str:
    counts = page.counts
    head = f"{page.total} {'matching' if page.total != 1 else 'matches'}"
    if counts is not None:
        head = f"open {counts.open}"
        if counts.oldest_open is not None:
            head += f", oldest {age(counts.oldest_open)}"
        if counts.by_status:
            head += " · " + " · ".join(f"{s} {n}" for s, n in counts.by_status.items())
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(counts.open_by_rule.items()))
        if rules:
            head += f"\nopen by hard rule: {rules}"
    if not page.items:
        return head + "\nno review items match"
    rows = [
        (
            i.id, i.version, i.status.value, f"{i.score:.4f}" if i.score is not None else "-",
            age(i.created_at), ",".join(i.hard_rules) or "-", i.impact, _who(i.record),
            _who(i.other),
        )
        for i in page.items
    ]
    shown = f"items {page.offset + 1}-{page.offset + len(page.items)} of {page.total}, " \
            f"sort {page.sort.value}"
    return "\n".join([head, shown, "", table(
        ("id", "ver", "status", "p", "age", "hard rules", "impact", "record", "other record"),
        rows)])


# --- one item ----------------------------------------------------------------------------------


_MARKS = {SAME: "=", CLOSE: "≈", DIFFERS: "≠", MISSING: ""}


def side_by_side(
    a: SourceRecord, b: SourceRecord | None, explanation: dict[str, Any] | None = None
) -> str:
    """The two records field by field, each row marked as the comparison that scored it
    judged it (identity.steward.present): = same, ≈ close, ≠ different."""
    rows = [
        (f.name, f.left or "–", f.right or "–", _MARKS[f.state], f.level or "")
        for f in align(a, b, explanation)
        if f.name != "identifiers"
    ]
    rows.append(("identifiers", _identifiers(a), _identifiers(b) if b else "–", "", ""))
    rows.append(("person", a.enterprise_id or "-", (b.enterprise_id or "-") if b else "–", "",
                 ""))
    title_b = f"{b.domain.namespace} {b.identifier}" if b else "(no other record)"
    return table(("", f"{a.domain.namespace} {a.identifier}", title_b, "", "judged"), rows)


def _identifiers(record: SourceRecord | None) -> str:
    if record is None:
        return ""
    others = [f"{i.domain} {i.value}" for i in record.other_identifiers]
    return "; ".join([f"{record.domain.namespace} {record.identifier}", *others])


def waterfall(explanation: dict[str, Any] | None) -> str:
    """Each comparison's contribution from the prior to the total weight and probability."""
    steps = weigh(explanation)
    if not explanation or not steps:
        return "no explanation stored"
    lines = []
    for step in steps[:-1]:
        label = f"{step.label} ({step.detail})" if step.detail else step.label
        if step.kind == "prior":
            lines.append(f"{label:<36} {step.end:+8.2f}")
        else:
            lines.append(f"{_cut(label, 36):<36} {step.value:+8.2f} {step.end:+9.2f}")
    probability = float(explanation.get("probability", 0.0))
    lines.append(f"{'total':<36} {steps[-1].end:+8.2f}  → p = {probability:.6f}")
    decision = explanation.get("decision") or {}
    if decision.get("hard_rules"):
        lines.append("hard rules: " + ", ".join(decision["hard_rules"]))
    for reason in decision.get("reasons") or ():
        lines.append("  " + reason)
    return "\n".join(lines)


def _history(events: Sequence[HistoryEvent], limit: int = 15) -> str:
    shown = list(events)[-limit:]
    rows = [
        (e.at.strftime("%Y-%m-%d %H:%M"), e.event, f"{e.entity} {e.entity_id}", e.actor,
         e.command_id[:8])
        for e in shown
    ]
    more = f"\n({len(events) - limit} earlier events not shown)" if len(events) > limit else ""
    return table(("at", "event", "entity", "actor", "command"), rows) + more


def detail_text(detail: ReviewDetail) -> str:
    item = detail.item
    head = (
        f"review item {item.id} (version {item.version}) · {item.status.value} · "
        f"p = {item.score:.4f} · opened {age(item.created_at)} ago"
        if item.score is not None
        else f"review item {item.id} (version {item.version}) · {item.status.value}"
    )
    parts = [head, f"reason: {item.reason}"]
    if item.resolved_by:
        parts.append(f"decided by {item.resolved_by} at {item.resolved_at}")
    parts += [
        "",
        side_by_side(detail.record.record, detail.other.record if detail.other else None,
                     detail.explanation),
        "",
        "why" + (" (computed now: the item stored none)" if detail.explanation_computed else "")
        + ":",
        waterfall(detail.explanation),
    ]
    if detail.candidates:
        parts += ["", "other candidates of the record:"]
        parts.append(table(
            ("person", "enterprise id", "p", "engine", "review item"),
            [(c.person_id, c.enterprise_id, f"{c.probability:.4f}", c.decision,
              c.review_item_id or "-") for c in detail.candidates],
        ))
    if detail.other_items:
        parts += ["", "other review items of these records:"]
        parts.append(table(
            ("id", "status", "p", "record", "other record"),
            [(i.id, i.status.value, f"{i.score:.4f}" if i.score is not None else "-",
              _who(i.record), _who(i.other)) for i in detail.other_items],
        ))
    parts += ["", "history of both records:", _history(detail.history)]
    return "\n".join(parts)


def outcome_text(verb: str, result: CommandResult) -> str:
    persons = ", ".join(
        f"{p.enterprise_id} ({p.status.value}, {len(p.records)} records)" for p in result.persons
    )
    return (
        f"{verb}: command {result.command_id}\n"
        f"persons now: {persons or '-'}\n"
        f"undo with: identity review undo {result.command_id}"
    )


# --- a person ----------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(_value(v) for v in value)
    if isinstance(value, dict):
        if "family" in value or "given" in value:
            return " ".join([value.get("family") or "", *(value.get("given") or [])]).strip()
        if "lines" in value:
            return ", ".join(p for p in (" ".join(value.get("lines") or []),
                                         value.get("city") or "", value.get("postal_code") or "")
                             if p)
        if "value" in value:
            return str(value["value"])
        return ", ".join(f"{k}={v}" for k, v in value.items() if v)
    return str(value)


def person_text(view: PersonView, *, items: Sequence[QueueItem] = ()) -> str:
    p = view.person
    parts = [f"person {p.id} · enterprise id {p.enterprise_id} · {p.status.value} · "
             f"version {p.version}"]
    if p.merged_into:
        parts.append(f"merged into person {p.merged_into}")
    parts += ["", "identifiers:", table(
        ("domain", "value", "record"),
        [(r.identifier.domain, r.identifier.value, r.record_id or "-") for r in view.identifiers],
    )]
    if view.golden:
        parts += ["", "golden view (per field the most recently updated record's value):"]
        parts.append(table(
            ("field", "value", "from"),
            [(name, _value(g.value), f"{g.domain} record {g.record_id}")
             for name, g in view.golden.items()],
        ))
    if p.records:
        parts += ["", "records:", table(
            ("id", "domain", "identifier", "link", "by", "updated"),
            [(r.id, r.domain.namespace, r.identifier, r.link.kind.value if r.link else "-",
              r.link.actor if r.link else "-", r.updated_at.strftime("%Y-%m-%d %H:%M"))
             for r in p.records],
        )]
    open_items = items or view.review_items
    if open_items:
        parts += ["", "open review items:", table(
            ("id", "p", "record", "other record"),
            [(i.id, f"{i.score:.4f}" if i.score is not None else "-", _who(i.record),
              _who(i.other)) for i in open_items],
        )]
    parts += ["", "history:", _history(view.history)]
    return "\n".join(parts)
