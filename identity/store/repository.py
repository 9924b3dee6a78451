"""The MPI core's repository: every SQL the core runs, one method per question or change, on
the connection (and so the transaction) it was given. No decisions are made here, and the core
gets no rows back: the methods take and return the domain types of identity.model and
identity.store.state.

The methods live in one module per concern, composed here into the one object a unit of work
holds (``uow.repo``):

- :mod:`identity.store.registration` — the registration path's few round trips and the
  message's idempotency;
- :mod:`identity.store.records` — domains, source records, persons, links, no-match
  assertions, review items, history;
- :mod:`identity.store.search` — demographic search, PIX cross-references;
- :mod:`identity.store.steward` — the steward's queue, views and log of decisions;
- :mod:`identity.store.outbox` and :mod:`identity.store.bulk` — used on their own
  connections by the outbox workers and the initial load;
- :mod:`identity.store.state` — what the store returns where identity.model's public types do
  not fit (a record as stored, a link with its explanation, the registration functions'
  results);
- :mod:`identity.store.rows` — rows to those types and to identity.model's.
"""

from __future__ import annotations

import asyncpg

from identity.store.records import IndexQueries
from identity.store.registration import RegistrationQueries
from identity.store.search import SearchQueries
from identity.store.steward import StewardQueries


class Repository(RegistrationQueries, IndexQueries, SearchQueries, StewardQueries):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
