import numpy as np

from matching.blocking import (
    KEY_FAMILIES,
    SWEEP_FAMILIES,
    blocking_keys,
    candidate_pairs,
    select_candidates,
    sweep_keys,
)
from matching.normalize import normalize_record


def record(family="Smith", given="John", birth="1980-03-12", postal="62701",
           phone="555 123 4567", identifiers=None):
    return normalize_record({
        "names": [{"family": family, "given": [given]}],
        "birth_date": birth,
        "addresses": [{"lines": ["1 Main St"], "postal_code": postal}],
        "phones": [{"value": phone}] if phone else [],
    }, identifiers)


def test_keys_are_short_prefixed_strings_of_every_family():
    keys = blocking_keys(record(identifiers=[{"domain": "HOSP", "value": "7", "type": "MR"}]))
    families = {k.split(":", 1)[0] for k in keys}
    assert families == set(KEY_FAMILIES)
    assert "fp_by:SNAT|1980" in keys
    assert all(len(k) < 80 for k in keys)
    assert len(keys) == len(set(keys))


def test_some_key_survives_each_single_error():
    base = set(blocking_keys(record()))
    variants = [
        record(given="Jhon"),                        # given typo
        record(family="Smyth-Jones"),               # family change
        record(birth="1980-12-03"),                  # day/month swap
        record(birth="1981-03-12"),                  # year typo
        record(postal="10001", phone=None),          # moved, no phone
        record(family="John", given="Smith"),        # swapped
    ]
    for variant in variants:
        assert base & set(blocking_keys(variant)), variant


def test_the_sweep_finds_one_name_replaced_and_the_other_misspelt():
    """COOKSNO MIKHAILI and COOKSON PETREECE, born the same day: no registration key in
    common (the family names sound different, the given names and initials differ); the
    calibration's sweep blocks them by the family initial and the birth date."""
    one = record(family="Cooksno", given="Mikhaili", phone=None, postal="")
    other = record(family="Cookson", given="Petreece", phone=None, postal="")
    assert not set(blocking_keys(one)) & set(blocking_keys(other))
    shared = set(sweep_keys(one)) & set(sweep_keys(other))
    assert shared == {"fi_dob:C|1980-03-12"}
    families = {k.split(":", 1)[0] for k in sweep_keys(record())}
    assert families == {*KEY_FAMILIES, *SWEEP_FAMILIES} - {"id"}  # no identifier given
    assert candidate_pairs([sweep_keys(one), sweep_keys(other)]).tolist() == [[0, 1]]
    assert not any(k.startswith(SWEEP_FAMILIES) for k in sweep_keys(record(birth="1980")))


def test_a_key_without_the_birth_date_exists():
    keys = blocking_keys(record(birth=None))
    assert any(k.startswith("fp_gp_pc:") for k in keys)
    assert not any("1980" in k for k in keys)


def test_candidate_cap_skips_huge_blocks_and_ranks_by_shared_keys():
    found = {
        "fp_by:SNAT|1980": list(range(1000)),        # too common: skipped
        "gp_dob:JAN|1980-03-12": [5, 6, 7],
        "dob_pc:1980-03-12|62701": [6, 7],
        "id:HOSP|7": [42],
    }
    chosen = select_candidates(found, max_block=100, max_candidates=3)
    assert chosen == [42, 6, 7]
    only_big = select_candidates({"a": list(range(10)), "b": list(range(500))}, max_block=5)
    assert only_big == list(range(10))


def test_the_margin_drops_candidates_far_behind_the_best_but_never_a_shared_identifier():
    found = {
        "fp_by:SNAT|1980": [1, 2, 3, 9],           # 1, 2, 3: one weak key each
        "gp_dob:JAN|1980-03-12": [9],
        "dob_pc:1980-03-12|62701": [9, 4],
        "nm_dob:JAN|SNAT|1980-03-12": [9],
        "ini_dob:JS|1980-03-12": [9, 4],
        "nm:SNAT|JAN": [9],
        "id:SSN|123": [3],                          # 3 shares an identifier as well
    }
    # 9 shares 6 keys, 4 shares 2, 1 and 2 share 1, 3 shares 1 and the identifier
    assert select_candidates(found) == [3, 9, 4, 1, 2]
    assert select_candidates(found, margin=4) == [3, 9, 4]
    assert select_candidates(found, margin=3) == [3, 9]
    assert select_candidates(found, margin=0) == [3, 9]
    assert select_candidates(found, margin=5) == [3, 9, 4, 1, 2]
    assert select_candidates(found, margin=4, max_candidates=2) == [3, 9]


def test_the_floor_drops_candidates_sharing_one_key_unless_none_shares_more():
    found = {
        "fp_by:SNAT|1980": [1, 2, 9],
        "fp_pc:SNAT|62701": [9, 4],
        "gp_pc:JAN|62701": [9],
        "id:SSN|123": [3],
    }
    # 9 shares 3 keys, 4 shares 1, 1 and 2 share 1, 3 shares the identifier only
    assert select_candidates(found, min_keys=2) == [3, 9]
    assert select_candidates(found, min_keys=2, margin=0) == [3, 9]
    assert select_candidates(found, min_keys=1) == [3, 9, 1, 2, 4]
    # nobody shares two keys: only the identifier is left
    lonely = {"fp_by:SNAT|1980": [1, 2], "fp_pc:SNAT|62701": [4], "gp_pc:JAN|62701": [7],
              "id:SSN|123": [3]}
    assert select_candidates(lonely, min_keys=2) == [3]
    assert select_candidates(lonely) == [3, 1, 2, 4, 7]
    # one key is enough when its block is rare
    assert select_candidates(lonely, min_keys=2, rare_block=1) == [3, 4, 7]
    assert select_candidates(lonely, min_keys=2, rare_block=2) == [3, 1, 2, 4, 7]
    # a sparse record (one usable demographic key) keeps the ones sharing it
    sparse = {"nm:SNAT|JAN": [5, 6], "fp_by:SNAT|1980": list(range(1000)), "id:SSN|123": [3]}
    assert select_candidates(sparse, min_keys=2, max_block=400) == [3, 5, 6]
    assert select_candidates(sparse, min_keys=2, margin=6, max_block=400) == [3, 5, 6]


def test_candidate_pairs_are_unique_and_ordered():
    keys = [["a", "b"], ["a", "b"], ["b"], ["c"]]
    pairs = candidate_pairs(keys)
    assert pairs.tolist() == [[0, 1], [0, 2], [1, 2]]
    assert candidate_pairs(keys, max_block=2).tolist() == [[0, 1]]
    assert candidate_pairs([["x"]]).shape == (0, 2)
    assert isinstance(pairs, np.ndarray)
