"""The steward's console at /steward/: server-rendered pages (aiohttp-jinja2) over the same
core reads as the JSON API, and a little JavaScript for the keys, the decisions and undo.

- Pages (GET): the queue, a review item with both records aligned and the waterfall of its
  explanation, a person, a record, search, the dashboard and the decisions log. Errors are
  pages too.
- Actions (POST under /steward/act/): decide, merge, unlink and undo, answered as the API's
  own handlers answer them (identity.steward.api), problem JSON included. The console's
  script calls them with JSON bodies; a request from another origin is refused.
- Who: with ``[auth] mode = "jwt"``, a bearer token granting ``steward``, from the
  ``Authorization`` header (set by a signing-in proxy in front of the service) or from a
  cookie the sign-in page sets after checking a pasted token; without one, pages send the
  browser to the sign-in page. With ``mode = "none"`` (loopback only), the name the steward
  gives on the sign-in page, or ``anonymous``.

Every asset (templates, CSS, JavaScript) is in the package; nothing is fetched at run time.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web
from pydantic import ValidationError

from identity import __version__
from identity.auth import STEWARD, AuthError, TokenVerifier
from identity.config import Settings
from identity.errors import IdentityError, InvalidInput, NotFound, StoreUnavailable
from identity.model import (
    QueueCountsWanted,
    QueueFilter,
    QueuePage,
    ReviewStatus,
    StewardKind,
    StewardSearch,
)
from identity.mpi import Mpi
from identity.steward.access import STEWARD_HEADER, STEWARD_KEY, Steward, steward_name
from identity.steward.api import StewardApi
from identity.steward.auditing import audit_view
from identity.steward.present import align, chart, probability_of, record_fields, waterfall
from identity.steward.problems import Problem, error_middleware, problem_for
from identity.steward.schemas import QueueQuery, SearchQuery
from identity.steward.text import age

log = logging.getLogger("identity.steward.console")

HERE = Path(__file__).parent
TOKEN_COOKIE = "identity_steward_token"
NAME_COOKIE = "identity_steward_name"
PAGE = 50
AGES = {  # the queue's age filter: (min_age_hours, max_age_hours)
    "under_1_day": (None, 24.0),
    "1_to_7_days": (24.0, 168.0),
    "over_7_days": (168.0, None),
}
QUEUE_KEYS = ("status", "min_probability", "max_probability", "rule", "domain", "age", "sort")
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONSOLE_KEY = web.AppKey("steward_console", "Console")


# --- the queue's context, carried from the queue to the items it opens -------------------------


def queue_context(query: Any) -> dict[str, str]:
    """The queue parameters of a request (filters and sort), as given."""
    return {k: query[k] for k in QUEUE_KEYS if query.get(k)}


def queue_filter(params: dict[str, str]) -> tuple[QueueFilter, QueueQuery]:
    """The core's filter for the console's queue parameters (the API's, with ``age`` as one
    of AGES); InvalidInput for a value that does not validate."""
    wanted = dict(params)
    age = wanted.pop("age", None)
    if age:
        if age not in AGES:
            raise InvalidInput(f"age must be one of {', '.join(AGES)}", field="age")
        low, high = AGES[age]
        if low is not None:
            wanted["min_age_hours"] = str(low)
        if high is not None:
            wanted["max_age_hours"] = str(high)
    try:
        q = QueueQuery.model_validate(wanted)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from None
    return q.filter(), q


def _age(at: datetime | None) -> str:
    return "–" if at is None else age(at)


def _page_int(raw: str | None, name: str, default: int = 0, high: int = 1_000_000) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) > high:
        raise InvalidInput(f"{name} must be a whole number from 0 to {high}", field=name)
    return int(raw)


def _id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"no such {name}: {raw!r}")
    return int(raw)


# --- who is at the console -----------------------------------------------------------------------


class ConsoleAccess:
    """Names the steward of each request (module docstring); pages without a valid token go
    to the sign-in page, actions get the API's 401/403."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.verifier = TokenVerifier(settings.auth) if settings.auth.mode == "jwt" else None

    async def on_startup(self, app: web.Application) -> None:
        if self.verifier is not None:
            await self.verifier.start()

    async def steward(self, request: web.Request) -> Steward:
        if self.verifier is None:
            name = steward_name(request.cookies.get(NAME_COOKIE)) or steward_name(
                request.headers.get(STEWARD_HEADER)
            )
            return Steward(name or "anonymous", False)
        authorization = request.headers.get("Authorization")
        if not authorization and request.cookies.get(TOKEN_COOKIE):
            authorization = "Bearer " + request.cookies[TOKEN_COOKIE]
        principal = await self.verifier.verify(authorization)
        if not principal.grants(STEWARD):
            raise AuthError(403, "insufficient_scope", f"the token does not grant {STEWARD}",
                            scope=STEWARD)
        name = steward_name(principal.subject) or steward_name(principal.client) or "anonymous"
        return Steward(name, True)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is not None or request.path.startswith(
            ("/steward/static/", "/steward/login", "/steward/logout")
        ):
            return await handler(request)
        if request.method not in ("GET", "HEAD"):
            _same_origin(request)
        try:
            request[STEWARD_KEY] = await self.steward(request)
        except AuthError as exc:
            log.info("event=steward_access_refused status=%d error=%s method=%s path=%s",
                     exc.status, exc.error or "no_token", request.method, request.path)
            if request.path.startswith("/steward/act/") or exc.status == 403:
                raise
            target = request.path_qs
            raise web.HTTPSeeOther("/steward/login?" + urlencode({"next": target})) from None
        return await handler(request)


def _same_origin(request: web.Request) -> None:
    """A state-changing request must come from the console's own pages (CSRF): its Origin,
    when the browser sends one, names this host."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if origin == "null" or urlsplit(origin).netloc != request.host:
        raise Problem(403, "the request does not come from the console's own origin",
                      kind="forbidden")


def _safe_next(target: str | None) -> str:
    """Only a path of the console itself (no other host) to go to after signing in."""
    if not target or not target.startswith("/steward/") or target.startswith("//"):
        return "/steward/"
    return target


# --- the pages ------------------------------------------------------------------------------------


class Console:
    def __init__(self, mpi: Mpi, settings: Settings, api: StewardApi,
                 access: ConsoleAccess) -> None:  # fmt: skip
        self.mpi = mpi
        self.settings = settings
        self.api = api
        self.access = access

    def context(self, request: web.Request, **values: Any) -> dict[str, Any]:
        steward = request.get(STEWARD_KEY)
        return {
            "steward": steward,
            "auth_mode": self.settings.auth.mode,
            "version": __version__,
            "path": request.path,
            **values,
        }

    async def open_counts(self) -> QueuePage:
        return await self.mpi.review_queue(QueueFilter(), limit=1, counts=QueueCountsWanted.OPEN)

    async def queue(self, request: web.Request) -> web.Response:
        params = queue_context(request.query)
        filters, q = queue_filter(params)
        offset = _page_int(request.query.get("offset"), "offset")
        page = await self.mpi.review_queue(filters, q.sort, PAGE, offset, QueueCountsWanted.OPEN)
        audit_view(request, self.mpi, page)
        rows = [
            {"item": item, "pos": offset + i, "age": _age(item.created_at)}
            for i, item in enumerate(page.items)
        ]
        return self.render(request, "queue.html", page=page, rows=rows, params=params,
                           query=q, ages=AGES, sorts=_SORTS, statuses=_STATUSES,
                           link=functools.partial(_link, params),
                           oldest=_age(page.counts.oldest_open if page.counts else None))

    async def next_item(self, request: web.Request) -> web.Response:
        """The item at ``pos`` of the queue the parameters describe (the next one after a
        decision or a skip); the queue itself when there is none."""
        params = queue_context(request.query)
        filters, q = queue_filter(params)
        pos = _page_int(request.query.get("pos"), "pos")
        page = await self.mpi.review_queue(filters, q.sort, 1, pos, QueueCountsWanted.NONE)
        if not page.items:
            if pos > 0 and page.total > 0:  # past the end: the last one
                pos = page.total - 1
                page = await self.mpi.review_queue(filters, q.sort, 1, pos,
                                                   QueueCountsWanted.NONE)
            if not page.items:
                raise web.HTTPSeeOther(_link(params, "/steward/", end="1"))
        raise web.HTTPSeeOther(
            _link(params, f"/steward/review/{page.items[0].id}", pos=str(pos))
        )

    async def item(self, request: web.Request) -> web.Response:
        item_id = _id(request)
        params = queue_context(request.query)
        queue_filter(params)  # a bad context is refused here, not on the next key
        pos_raw = request.query.get("pos")
        pos = _page_int(pos_raw, "pos") if pos_raw else None
        detail = await self.mpi.review_detail(item_id)
        audit_view(request, self.mpi, detail)
        counts = (await self.open_counts()).counts
        record, other = detail.record.record, detail.other.record if detail.other else None
        explanation = detail.explanation or {}
        steps = waterfall(explanation)
        probability = float(explanation.get("probability", detail.item.score or 0.0))
        in_service = self.mpi.matcher.settings  # the thresholds of the version in service
        layout = chart(steps, probability, (("review", in_service.review),
                                            ("auto-link", in_service.auto_link)))
        own = None
        if record.person_id is not None and detail.person is not None and \
                record.person_id != detail.person.id:
            own = await self.mpi.get_person(record.person_id)
        merge = None
        if own is not None and detail.person is not None:
            merge = {
                "url": f"/steward/act/persons/{detail.person.id}/merge",
                "body": {"merged": own.id, "version": detail.person.version,
                         "merged_version": own.version},
            }
        at = pos or 0
        stays = (params.get("status") or "open") == "open"  # a decided item leaves the queue
        urls = {
            "after": _link(params, "/steward/next", pos=str(at if stays else at + 1)),
            "skip": _link(params, "/steward/next", pos=str(at + 1)),
            "prev": _link(params, "/steward/next", pos=str(at - 1)) if at > 0 else "",
            "queue": _link(params, "/steward/", offset=str(at // PAGE * PAGE) if at else None),
            "self": request.path_qs,
        }
        decided = None
        if detail.item.status != ReviewStatus.OPEN:
            log_ = await self.mpi.decisions(review_item_id=item_id, limit=1)
            decided = log_.entries[0] if log_.entries else None
        return self.render(
            request, "item.html", detail=detail, item=detail.item, record=record, other=other,
            fields=align(record, other, detail.explanation), chart=layout,
            comparisons=explanation.get("comparisons") or (),
            decision=explanation.get("decision") or {},
            merge=merge, urls=urls, decided=decided, counts=counts,
            normalised=_normalised(detail.record.normalized,
                                   detail.other.normalized if detail.other else None),
            oldest=_age(counts.oldest_open if counts else None), age=_age(detail.item.created_at),
            params=params, pos=pos, link=functools.partial(_link, params),
        )

    async def person(self, request: web.Request) -> web.Response:
        view = await self.mpi.person_view(_id(request))
        audit_view(request, self.mpi, view)
        return self.render(request, "person.html", view=view, person=view.person)

    async def merge_preview(self, request: web.Request) -> web.Response:
        """Another person (``other``: an enterprise ID or ``#<person id>``) beside this one,
        with the key that merges it into this one."""
        survivor = await self.mpi.person_view(_id(request))
        other = (request.query.get("other") or "").strip()
        if not other:
            raise InvalidInput("name the person to merge: an enterprise ID or #<person id>",
                               field="other")
        if other.startswith("#") and other[1:].isdigit():
            found = await self.mpi.get_person(int(other[1:]))
        else:
            found = await self.mpi.get_person_by_enterprise_id(other)
        merged = await self.mpi.person_view(found.id)
        if merged.person.id == survivor.person.id:
            raise InvalidInput("a person cannot be merged into itself", field="other")
        audit_view(request, self.mpi, survivor)
        audit_view(request, self.mpi, merged)
        s, m = survivor.person, merged.person
        merge = {
            "url": f"/steward/act/persons/{s.id}/merge",
            "body": {"merged": m.id, "version": s.version, "merged_version": m.version},
        }
        return self.render(request, "merge.html", survivor=survivor, merged=merged, merge=merge,
                           after=f"/steward/persons/{s.id}")

    async def record(self, request: web.Request) -> web.Response:
        view = await self.mpi.record_view(_id(request))
        audit_view(request, self.mpi, view)
        return self.render(request, "record.html", view=view, record=view.record,
                           fields=record_fields(view.record),
                           normalised=[(k, a) for k, a, _ in _normalised(view.normalized, None)])

    async def search(self, request: web.Request) -> web.Response:
        wanted = {k: v.strip() for k, v in request.query.items() if v.strip() and k != "offset"}
        offset = _page_int(request.query.get("offset"), "offset")
        hits, error = None, None
        if wanted:
            try:
                q = SearchQuery.model_validate({**wanted, "offset": offset})
                hits = await self.mpi.find_persons(StewardSearch(**q.model_dump()))
                audit_view(request, self.mpi, hits)
            except ValidationError as exc:
                first = exc.errors()[0]
                error = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            except InvalidInput as exc:
                error = str(exc)
        if hits is not None and hits.total == 1 and len(hits.persons) == 1 and offset == 0:
            raise web.HTTPSeeOther(f"/steward/persons/{hits.persons[0].id}")
        return self.render(request, "search.html", hits=hits, wanted=wanted, error=error,
                           offset=offset, limit=20)

    async def dashboard(self, request: web.Request) -> web.Response:
        days = _page_int(request.query.get("days"), "days", 14, 366) or 14
        board = await self.mpi.steward_dashboard(days)
        recent = await self.mpi.decisions(limit=10)
        per_steward: dict[tuple[str, str], int] = {}
        for entry in board.decisions_per_day:
            key = (entry.actor, entry.kind.value)
            per_steward[key] = per_steward.get(key, 0) + entry.count
        return self.render(request, "dashboard.html", board=board, recent=recent.entries,
                           per_steward=[(a, k, n) for (a, k), n in sorted(per_steward.items())],
                           bars=_day_bars(board, days), oldest=_age(board.oldest_open))

    async def decisions(self, request: web.Request) -> web.Response:
        steward = steward_name(request.query.get("steward"))
        kind_raw = request.query.get("kind") or None
        try:
            kind = StewardKind(kind_raw) if kind_raw else None
        except ValueError:
            raise InvalidInput(f"kind must be one of {', '.join(StewardKind)}",
                               field="kind") from None
        offset = _page_int(request.query.get("offset"), "offset")
        entries = await self.mpi.decisions(
            actor=f"steward:{steward}" if steward else None, kind=kind, limit=PAGE,
            offset=offset,
        )
        params = {k: v for k, v in (("steward", steward), ("kind", kind_raw)) if v}
        return self.render(request, "decisions.html", log=entries, offset=offset, limit=PAGE,
                           kinds=list(StewardKind), params=params,
                           link=functools.partial(_link, params))

    # --- signing in -------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.Response:
        return self.render(request, "login.html", next=_safe_next(request.query.get("next")),
                           error=None)

    async def login(self, request: web.Request) -> web.Response:
        _same_origin(request)
        form = await request.post()
        target = _safe_next(str(form.get("next") or ""))
        secure = self.settings.http.tls is not None
        response = web.HTTPSeeOther(target)
        if self.access.verifier is None:
            try:
                name = steward_name(str(form.get("name") or ""))
            except Problem as exc:
                return self.render(request, "login.html", next=target, error=exc.detail,
                                   status=400)
            if name:
                response.set_cookie(NAME_COOKIE, name, path="/steward", httponly=True,
                                    samesite="Strict", secure=secure, max_age=30 * 86400)
            else:
                response.del_cookie(NAME_COOKIE, path="/steward")
            raise response
        token = str(form.get("token") or "").strip()
        try:
            principal = await self.access.verifier.verify(f"Bearer {token}")
            if not principal.grants(STEWARD):
                raise AuthError(403, "insufficient_scope",
                                f"the token does not grant {STEWARD}")
        except AuthError as exc:
            log.info("event=steward_sign_in_refused error=%s", exc.error or "no_token")
            return self.render(request, "login.html", next=target, error=exc.text, status=401)
        expires = principal.expires_at
        max_age = max(60, int(expires - time.time())) if expires else 3600
        response.set_cookie(TOKEN_COOKIE, token, path="/steward", httponly=True,
                            samesite="Strict", secure=secure, max_age=max_age)
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        _same_origin(request)
        response = web.HTTPSeeOther("/steward/login")
        response.del_cookie(TOKEN_COOKIE, path="/steward")
        response.del_cookie(NAME_COOKIE, path="/steward")
        raise response

    def render(self, request: web.Request, template: str, status: int = 200,
               **values: Any) -> web.Response:  # fmt: skip
        response = aiohttp_jinja2.render_template(
            template, request, self.context(request, **values), status=status
        )
        return response


_SORTS = {
    "oldest": "oldest first",
    "newest": "newest first",
    "impact": "settles most other items",
    "probability_desc": "highest probability",
    "probability_asc": "lowest probability",
    "uncertain": "teaches the model most (least certain first)",
}
_STATUSES = ("open", "linked", "rejected", "dismissed", "all")


def _link(params: dict[str, str], path: str, **extra: str) -> str:
    """``path`` with the queue's parameters (and ``extra``) as its query."""
    merged = {**params, **{k: v for k, v in extra.items() if v is not None}}
    return path + ("?" + urlencode(merged) if merged else "")


def _shown(value: Any) -> str:
    """A value of the golden or normalised view as one line of text."""
    if value is None or value == "" or value == [] or value == {}:
        return ""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_shown(v)}" for k, v in value.items() if _shown(v))
    if isinstance(value, list | tuple):
        return " | ".join(_shown(v) for v in value if _shown(v))
    return str(value)


def _golden(value: Any) -> str:
    """A value of the golden view as the steward reads it: a name as "given family", an
    address on one line, a phone as its number."""
    if isinstance(value, list | tuple):
        return " | ".join(t for t in (_golden(v) for v in value) if t)
    if isinstance(value, dict):
        if "family" in value or "given" in value:
            given = value.get("given") or []
            parts = [value.get("prefix"), *(given if isinstance(given, list) else [given]),
                     value.get("family"), value.get("suffix")]
            return " ".join(str(p) for p in parts if p)
        if "lines" in value:
            lines = value.get("lines") or []
            place = " ".join(str(p) for p in (value.get("state"), value.get("postal_code")) if p)
            parts = [" ".join(lines), value.get("city"), place, value.get("country")]
            return ", ".join(str(p) for p in parts if p)
        if "value" in value:
            return str(value["value"]) + (f" ({value['use']})" if value.get("use") else "")
    return _shown(value)


def _normalised(
    left: dict[str, Any] | None, right: dict[str, Any] | None
) -> list[tuple[str, str, str]]:
    """The normalised forms of two records, key by key (what the comparisons read)."""
    a, b = left or {}, right or {}
    keys = sorted(set(a) | set(b))
    return [(k, _shown(a.get(k)), _shown(b.get(k))) for k in keys
            if _shown(a.get(k)) or _shown(b.get(k))]


def _day_bars(board: Any, days: int) -> dict[str, Any]:
    """Decisions per day as bars (one per day of the period, stacked by kind)."""
    today = datetime.now(UTC).date()
    per_day: dict[str, dict[str, int]] = {}
    for entry in board.decisions_per_day:
        per_day.setdefault(entry.day, {}).setdefault(entry.kind.value, 0)
        per_day[entry.day][entry.kind.value] += entry.count
    dates = [(today - timedelta(days=d)).isoformat() for d in range(days - 1, -1, -1)]
    top = max([sum(v.values()) for v in per_day.values()] + [1])
    width = max(8, min(40, 720 // max(days, 1)))
    bars = []
    for i, day in enumerate(dates):
        y = 130.0
        parts = []
        for kind, count in sorted(per_day.get(day, {}).items()):
            h = round(count / top * 110, 1)
            y -= h
            parts.append({"kind": kind, "count": count, "y": round(y, 1), "h": h})
        bars.append({"day": day, "x": 30 + i * width, "parts": parts,
                     "total": sum(p["count"] for p in parts)})
    return {"bars": bars, "width": 30 + days * width + 10, "bar": max(width - 2, 4),
            "top": top, "kinds": sorted({k for v in per_day.values() for k in v})}


# --- errors as pages ---------------------------------------------------------------------------


async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The actions' errors as problem JSON, those of the console's own checks (who, origin)
    included."""
    try:
        return await handler(request)
    except (Problem, AuthError) as exc:
        realm = request.app[CONSOLE_KEY].settings.auth.realm
        return problem_for(exc, realm).response(request.path)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A page that fails is a page that says why (the actions answer problem JSON)."""
    if request.path.startswith("/steward/act/"):
        return await _problems(request, handler)
    try:
        return await handler(request)
    except Problem as exc:
        status, title, detail = exc.status, exc.title, exc.detail
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        status, title = exc.status, exc.reason
        detail = {404: f"There is nothing at {request.path}.",
                  405: f"{request.method} is not allowed here."}.get(status, exc.text or "")
    except NotFound as exc:
        status, title, detail = 404, "Not found", str(exc)
    except InvalidInput as exc:
        status, title, detail = 400, "That request is not valid", str(exc)
    except AuthError as exc:
        status, title, detail = exc.status, "Not allowed", exc.text
    except StoreUnavailable:
        status, title = 503, "The database is not available"
        detail = "Nothing was changed. Try again in a moment."
    except IdentityError as exc:
        status, title, detail = 400, "That request is not valid", str(exc)
    response = aiohttp_jinja2.render_template(
        "error.html", request,
        {"status": status, "title": title, "detail": detail, "steward": request.get(STEWARD_KEY),
         "version": __version__, "path": request.path},
        status=status,
    )  # fmt: skip
    return response


@web.middleware
async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No framing, no sniffing, no caching of patient data, scripts only from the console."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        _secure(request, response)
        raise
    _secure(request, response)
    return response


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith("/steward/static/"):
        response.headers.setdefault("Cache-Control", "public, max-age=3600")
    else:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Content-Security-Policy", CSP)


# --- assembly ----------------------------------------------------------------------------------


def _filters() -> dict[str, Callable[..., Any]]:
    def p(value: float | None) -> str:
        if value is None:
            return "–"
        return f"{value:.6f}" if value >= 0.99995 and value < 1 else f"{value:.4f}"

    def when(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value else "–"

    def bits(value: float | None) -> str:
        return "–" if value is None or math.isnan(value) else f"{value:+.2f}"

    return {"p": p, "when": when, "bits": bits, "age": _age, "probability": probability_of,
            "golden": _golden}


def build_console_app(mpi: Mpi, settings: Settings, api: StewardApi) -> web.Application:
    """The console (mounted at /steward) with its actions sub-application (/steward/act)."""
    access = ConsoleAccess(settings)
    console = Console(mpi, settings, api, access)
    app = web.Application(middlewares=[headers, error_pages, access.middleware])
    app[CONSOLE_KEY] = console
    app.on_startup.append(access.on_startup)
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(_filters())
    env.globals["static"] = lambda name: f"/steward/static/{name}?v={__version__}"
    r = app.router
    r.add_get("/", console.queue, name="queue")
    r.add_get("/next", console.next_item)
    r.add_get("/review/{id}", console.item)
    r.add_get("/persons/{id}", console.person)
    r.add_get("/persons/{id}/merge", console.merge_preview)
    r.add_get("/records/{id}", console.record)
    r.add_get("/search", console.search)
    r.add_get("/dashboard", console.dashboard)
    r.add_get("/decisions", console.decisions)
    r.add_get("/login", console.login_form)
    r.add_post("/login", console.login)
    r.add_post("/logout", console.logout)
    r.add_static("/static/", HERE / "static", append_version=False)

    actions = web.Application(middlewares=[error_middleware(settings.auth.realm)])
    for path, handler in (
        ("/review/{id}/decision", StewardApi.decide),
        ("/persons/{id}/merge", StewardApi.merge_persons),
        ("/records/{id}/unlink", StewardApi.unlink_record),
        ("/commands/{command_id}/undo", StewardApi.undo),
    ):
        actions.router.add_post(path, functools.partial(handler, api))
    app.add_subapp("/act", actions)
    return app


__all__ = ["build_console_app", "queue_filter"]
