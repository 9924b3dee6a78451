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
from matching.comparisons import PairView, encode, encode_row, stack_rows
from matching.model import SMALL_N, EncodingCache, MatchModel, term_frequencies_from
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
    person(birth="1980"),
    person(birth="1980-03"),
    person(sex=""),
    person(family="John", given="Smith"),
]


@pytest.fixture(scope="module")
def population() -> list[dict]:
    records = generate(1000, 0.3, 11, hard=True)
    return [normalize_record(r.demographics, r.identifiers) for r in records] + EXTRA


@pytest.fixture(scope="module", params=["plain", "term_frequencies"])
def model(request, population) -> MatchModel:
    base = MatchModel.default()
    if request.param == "plain":
        return base
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
                        encodings=base.encodings)
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
