"""The service path of MatchModel.score: the plain-Python small-candidate path and the
encoding cache (``keys=``) must give exactly the vectorised results."""

from __future__ import annotations

import copy
import pickle
import threading
from collections import defaultdict

import numpy as np
import pytest

import matching.comparisons as comparisons_module
import matching.model as model_module
from matching.blocking import blocking_keys
from matching.comparisons import (
    LEVEL_KINDS,
    Always,
    Level,
    LevelKind,
    PairView,
    RowPair,
    default_comparisons,
    encode,
    encode_row,
    level_kind,
    register_level_kind,
    stack_rows,
)
from matching.model import (
    SMALL_N,
    ConditionalU,
    EncodingCache,
    MatchModel,
    term_frequencies_from,
)
from matching.normalize import normalize_record
from matching.synth import generate


def person(family="Smith", given="John", birth="1980-03-12", sex="M", line="12 Main Street",
           phone="555 123 4567", postal="62701"):
    return normalize_record({
        "names": [{"family": family, "given": [given]}],
        "birth_date": birth,
        "sex": sex,
        "addresses": [{"lines": [line], "postal_code": postal}] if line else [],
        "phones": [{"value": phone}] if phone else [],
    })


# hand-made pairs for levels a generated population does not reach (missing names, same house
# and street with another address line)
EXTRA = [
    person(family=""),
    person(given=""),
    person(family="", given=""),
    person(line="12 Main Street Apt 4", phone=""),
    person(line="12 Main St", phone="555 999 0000"),
    person(birth="1980-12-03"),
    person(birth="1908-03-12"),  # two digits of the year swapped
    person(birth="1980"),
    person(birth="1980-03"),
    person(sex=""),
    person(family="John", given="Smith"),
    person(birth="2090-03-12"),  # after today: kept, and the same on two records
    person(birth="2090-03-12", given="Jon"),
    person(line="99 Other Road", phone="555 000 1111"),  # the same postal code only
]


@pytest.fixture(scope="module")
def population() -> list[dict]:
    records = generate(1000, 0.3, 11, hard=True)
    return [normalize_record(r.demographics, r.identifiers) for r in records] + EXTRA


HOUSEHOLD = ConditionalU(
    "contact", "family_name", ("exact", "jaro-winkler >= 0.94", "phonetic"),
    [0.0, 0.02, 0.003, 0.0001, 0.004, 0.01, 0.963],
)


@pytest.fixture(scope="module", params=["plain", "term_frequencies", "household"])
def model(request, population) -> MatchModel:
    base = MatchModel.default()
    if request.param == "plain":
        return base
    if request.param == "household":  # a conditional u: both paths must apply it alike
        return MatchModel(base.comparisons, base.prior, conditional_u=[HOUSEHOLD])
    return base.with_term_frequencies(term_frequencies_from(population))


@pytest.fixture(scope="module")
def blocks(population) -> list[tuple[int, list[int]]]:
    """(query, 200 candidate rows): blocked candidates first, then random records."""
    keys = [blocking_keys(r) for r in population]
    index: dict[str, list[int]] = defaultdict(list)
    for row, record_keys in enumerate(keys):
        for key in record_keys:
            index[key].append(row)
    rng = np.random.default_rng(5)
    extra = range(len(population) - len(EXTRA), len(population))
    queries = [int(q) for q in rng.integers(0, len(population), 30)] + list(extra)
    out = []
    for query in queries:
        rows = dict.fromkeys(r for key in keys[query] for r in index[key] if r != query)
        rows.update(dict.fromkeys(extra))
        picked = list(rows)[:150]
        picked += [int(r) for r in rng.integers(0, len(population), 200 - len(picked))]
        out.append((query, picked))
    return out


def reference(model: MatchModel, record: dict, candidates: list[dict]):
    """The vectorised path: weights and levels from encoded columns."""
    tf = model.term_frequencies
    left, right = encode([record], tf), encode(candidates, tf)
    view = PairView(left, right)
    levels = model.levels(view)
    return model._weights_from_levels(view, levels), levels


@pytest.mark.parametrize("n", [*range(1, 11), 200])
def test_small_path_gives_the_vectorised_levels_and_weights(model, population, blocks, n):
    for query, rows in blocks if n < 200 else blocks[::3]:
        record, candidates = population[query], [population[i] for i in rows[:n]]
        expected, expected_levels = reference(model, record, candidates)
        tf = model.term_frequencies
        left, right = encode_row(record, tf), [encode_row(c, tf) for c in candidates]
        levels = np.array(model._row_levels(left, right), dtype=np.int8)
        assert np.array_equal(levels, expected_levels)
        weights = np.array(model._score_rows(left, right))
        assert np.allclose(weights, expected, rtol=0, atol=1e-12)
        # the public entry point, with and without the cache
        assert np.allclose(model.score(record, candidates), expected, rtol=0, atol=1e-12)
        keys = [(i, 1) for i in rows[:n]]
        assert np.allclose(model.score(record, candidates, keys=keys), expected, rtol=0,
                           atol=1e-12)


def test_every_level_is_exercised(model, population, blocks):
    """The equality test above means something only if the pairs reach the levels."""
    reached = set()
    for query, rows in blocks:
        _, levels = reference(model, population[query], [population[i] for i in rows])
        for row in np.unique(levels, axis=0):
            reached.update(enumerate(row.tolist()))
    wanted = {(j, i) for j, c in enumerate(model.comparisons) for i in range(len(c.levels))}
    assert wanted - reached == set()


def test_encode_row_stacks_to_the_batch_encoding(population):
    tf = term_frequencies_from(population)
    whole = encode(population[:300], tf)
    model = MatchModel.default().with_term_frequencies(tf)
    rows = model.encodings.rows(population[:300], list(range(300)), tf)
    stacked = stack_rows(rows)
    for name, column in whole.ints.items():
        assert column.dtype == stacked.ints[name].dtype
        assert np.array_equal(column, stacked.ints[name])
    for name, column in whole.strings.items():
        assert list(column) == list(stacked.strings[name])
    for name, column in whole.tf.items():
        assert np.array_equal(column, stacked.tf[name], equal_nan=True)


def test_score_signature_stays_backward_compatible(population):
    model = MatchModel.default()
    record, candidates = population[0], population[1:4]
    positional = model.score(record, candidates)
    encoded = model.score(model.encode([record]), model.encode(candidates))
    assert np.array_equal(positional, encoded)
    assert model.score(record, []).shape == (0,)
    assert model.score(record, [], keys=[]).shape == (0,)


def test_cache_serves_the_same_weights_without_encoding_again(population, monkeypatch):
    model = MatchModel.default()
    record, candidates = population[0], population[1:31]
    keys = [(i, 1) for i in range(1, 31)]
    expected = model.score(record, candidates)
    assert np.array_equal(model.score(record, candidates, keys=keys), expected)
    assert model.encodings.misses == 30 and len(model.encodings) == 30

    calls = []
    real = model_module.encode_row
    monkeypatch.setattr(model_module, "encode_row",
                        lambda rec, tf=None: calls.append(rec) or real(rec, tf))
    again = model.score(record, candidates, keys=keys)
    assert np.array_equal(again, expected)
    assert calls == [record]  # only the incoming record; every candidate came from the cache
    assert model.encodings.hits == 30
    small = model.score(record, candidates[:3], keys=keys[:3])
    assert np.array_equal(small, expected[:3])


def test_cache_does_not_serve_a_stale_encoding_when_the_version_changes():
    model = MatchModel.default()
    record = person()
    before, after = person(given="Jon"), person(family="Jones", given="Mary", sex="F")
    fresh_after = model.score(record, [after])
    fresh_before = model.score(record, [before])
    assert not np.array_equal(fresh_after, fresh_before)
    for n in (1, SMALL_N + 1):  # plain-Python path and vectorised path
        filler = [person(given=f"X{k}") for k in range(n - 1)]
        filler_keys = [(1000 + k, 1) for k in range(n - 1)]
        assert np.array_equal(
            model.score(record, [before, *filler], keys=[(7, 1), *filler_keys])[:1],
            fresh_before,
        )
        # record 7 changed: the service passes its new version, so it must be encoded again
        got = model.score(record, [after, *filler], keys=[(7, 2), *filler_keys])[:1]
        assert np.array_equal(got, fresh_after)
        # the old version stays servable under its own key (another reader may hold it)
        assert np.array_equal(
            model.score(record, [before, *filler], keys=[(7, 1), *filler_keys])[:1],
            fresh_before,
        )
        model.encodings.clear()


def test_cache_is_bounded_lru():
    model = MatchModel.default()
    model.encodings = EncodingCache(size=3)
    record = person()
    candidates = [person(given=g) for g in ("A", "B", "C", "D")]
    model.score(record, candidates[:3], keys=["a", "b", "c"])
    model.score(record, candidates[:1], keys=["a"])  # a is now the most recently used
    model.score(record, candidates[3:], keys=["d"])  # evicts b, the least recently used
    assert len(model.encodings) == 3
    hits = model.encodings.hits
    model.score(record, [candidates[0], candidates[2], candidates[3]], keys=["a", "c", "d"])
    assert model.encodings.hits == hits + 3
    model.score(record, [candidates[1]], keys=["b"])
    assert model.encodings.hits == hits + 3  # b was evicted, encoded again
    off = MatchModel.default()
    off.encodings = EncodingCache(size=0)
    assert np.array_equal(off.score(record, candidates, keys=list("abcd")),
                          model.score(record, candidates))
    assert len(off.encodings) == 0


def test_cache_follows_the_term_frequency_table(population):
    base = MatchModel.default()
    record, candidates = population[0], population[1:6]
    keys = [(i, 1) for i in range(1, 6)]
    base.score(record, candidates, keys=keys)
    with_tf = base.with_term_frequencies(term_frequencies_from(population))
    assert with_tf.encodings is not base.encodings
    assert np.array_equal(with_tf.score(record, candidates, keys=keys),
                          with_tf.score(record, candidates))
    # a shared cache used with another table forgets the encodings made with the first
    shared = MatchModel(base.comparisons, base.prior, with_tf.term_frequencies,
                        encodings=base.encodings, conditional_u=base.conditional_u)
    assert np.array_equal(shared.score(record, candidates, keys=keys),
                          with_tf.score(record, candidates))
    # the prior does not change encodings: with_prior shares the cache
    assert base.with_prior(1e-6).encodings is base.encodings


def test_keys_must_match_the_candidates():
    model = MatchModel.default()
    with pytest.raises(ValueError):
        model.score(person(), [person(), person(given="Jon")], keys=[(1, 1)])


def test_cache_is_safe_under_threads(population):
    model = MatchModel.default()
    record = population[0]
    blocks = [population[k : k + 12] for k in range(1, 200, 12)]
    expected = [model.score(record, block) for block in blocks]
    errors: list[str] = []

    def work(offset: int) -> None:
        for round_ in range(20):
            k = (offset + round_) % len(blocks)
            keys = [(k * 12 + i, 1) for i in range(len(blocks[k]))]
            if not np.array_equal(model.score(record, blocks[k], keys=keys), expected[k]):
                errors.append(f"block {k}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_copied_or_pickled_model_starts_with_an_empty_cache():
    model = MatchModel.default()
    model.score(person(), [person(given="Jon")], keys=[(1, 1)])
    assert len(model.encodings) == 1
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert len(other.encodings) == 0 and other.encodings.size == model.encodings.size
        assert np.array_equal(other.score(person(), [person(given="Jon")], keys=[(1, 1)]),
                              model.score(person(), [person(given="Jon")]))


def test_large_sets_are_encoded_chunk_by_chunk_into_the_same_columns(population, monkeypatch):
    tf = term_frequencies_from(population)
    whole = stack_rows([encode_row(r, tf) for r in population[:50]])
    monkeypatch.setattr(comparisons_module, "_ENCODE_CHUNK", 7)
    chunked = encode(population[:50], tf)
    assert chunked.n == 50
    for name, column in whole.ints.items():
        assert chunked.ints[name].dtype == column.dtype
        assert np.array_equal(chunked.ints[name], column)
    for name, column in whole.strings.items():
        assert list(chunked.strings[name]) == list(column)
    for name, column in whole.tf.items():
        assert np.array_equal(chunked.tf[name], column, equal_nan=True)


# --------------------------------------------------------------------------------------------
# every level kind, on its own: both forms exist and agree on every pair (not only on the pairs
# that reach the kind's level in the shipped comparisons)

THRESHOLDS = (None, 0, 1, 3, 0.75, 0.85, 0.94)


def test_every_level_kind_has_both_forms():
    for name, kind in LEVEL_KINDS.items():
        assert isinstance(kind, LevelKind) and kind.name == name
        assert type(kind).vectorised is not LevelKind.vectorised, name
        assert type(kind).scalar is not LevelKind.scalar, name
    used = {lv.predicate for c in MatchModel.default().comparisons for lv in c.levels}
    used |= {lv.predicate for c in default_comparisons() for lv in c.levels}
    assert used <= set(LEVEL_KINDS)
    for comparison in MatchModel.default().comparisons:
        for level in comparison.levels:
            assert level.kind is LEVEL_KINDS[level.predicate]


def test_a_level_kind_cannot_lack_a_form():
    class OnlyVectorised(LevelKind):
        def vectorised(self, view, sel, level):
            return np.ones(len(sel), bool)

    class OnlyScalar(LevelKind):
        def scalar(self, pair, level):
            return True

    for half in (OnlyVectorised, OnlyScalar):
        with pytest.raises(TypeError):
            half("half_a_level")
    with pytest.raises(TypeError):  # a bare function is not a kind
        register_level_kind(lambda view, sel, level: np.ones(len(sel), bool))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        register_level_kind(Always("family_exact"))
    assert "half_a_level" not in LEVEL_KINDS


def test_a_level_resolves_its_kind_once_and_refuses_unknown_ones():
    level = Level("exact", "family_exact", 0.9, 0.01)
    assert level.kind is level_kind("family_exact")
    level.predicate = "given_exact"
    assert level.kind is LEVEL_KINDS["given_exact"]
    with pytest.raises(AttributeError):
        level.kind = LEVEL_KINDS["family_exact"]
    with pytest.raises(ValueError, match="unknown predicate"):
        Level("x", "no_such_predicate")
    with pytest.raises(ValueError, match="unknown predicate"):
        Level.from_dict({"label": "x", "predicate": "no_such_predicate"})
    for copied in (copy.deepcopy(level), pickle.loads(pickle.dumps(level))):
        assert copied == level and copied.kind is level.kind


@pytest.fixture(scope="module")
def kind_pairs(population, blocks):
    """Every pair of ``blocks`` as a pairwise view, the one-vs-many views, and RowPairs."""
    encoded = encode(population)
    rows = [encode_row(r) for r in population]
    li = np.array([q for q, picked in blocks for _ in picked])
    ri = np.array([r for _, picked in blocks for r in picked])
    singles = [
        (PairView(encoded.take(np.array([q])), encoded.take(np.array(picked))), len(picked))
        for q, picked in blocks
    ]
    pairs = [RowPair(rows[q], rows[r]) for q, r in zip(li.tolist(), ri.tolist(), strict=True)]
    return encoded, li, ri, singles, pairs


@pytest.mark.parametrize("name", sorted(LEVEL_KINDS))
def test_the_two_forms_of_every_level_kind_agree(name, kind_pairs):
    encoded, li, ri, singles, pairs = kind_pairs
    kind = LEVEL_KINDS[name]
    outcomes = set()
    for threshold in THRESHOLDS:
        level = Level("test", name, threshold=threshold)
        scalar = np.array([kind.scalar(pair, level) for pair in pairs], bool)
        outcomes.update(scalar.tolist())
        view = PairView(encoded, encoded, li, ri)
        everything = np.arange(view.n)
        every_third = everything[1::3]
        for sel in (every_third, everything):  # a part first: the view's caches fill in parts
            hit = np.broadcast_to(kind.vectorised(view, sel, level), sel.shape)
            assert np.array_equal(hit, scalar[sel]), (name, threshold)
        start = 0
        for view, n in singles:  # one record against its candidates (left side broadcast)
            sel = np.arange(n)
            hit = np.broadcast_to(kind.vectorised(view, sel, level), sel.shape)
            assert np.array_equal(hit, scalar[start : start + n]), (name, threshold)
            start += n
    if not isinstance(kind, Always):  # the comparison means something only if both outcomes occur
        assert outcomes == {True, False}, name
