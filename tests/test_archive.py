"""Elitist archive, hypervolume and reference point."""

import json

import pytest

from evostitch.errors import SearchError
from evostitch.evolution.archive import (
    Archive,
    dominates,
    hypervolume,
    reference_point_from,
)


def test_dominance() -> None:
    assert dominates((1, 2), (2, 2))
    assert not dominates((1, 2), (1, 2))
    assert not dominates((1, 3), (2, 2))


def test_archive_keeps_only_non_dominated() -> None:
    a = Archive()
    assert a.add((0, 0), (3.0, 3.0))
    assert a.add((0, 1), (1.0, 4.0))
    assert a.add((1, 0), (2.0, 2.0))  # dominates (3, 3)
    assert {s.objectives for s in a} == {(1.0, 4.0), (2.0, 2.0)}
    assert (0, 0) not in a
    assert not a.add((1, 1), (2.5, 2.5))  # dominated
    assert not a.add((1, 1), (2.0, 2.0))  # equal objectives: first one stays
    assert len(a) == 2


def test_archive_deduplicates_genotypes() -> None:
    a = Archive()
    assert a.add([1, 0, 1], (1.0, 2.0))
    assert not a.add((1, 0, 1), (0.0, 0.0))  # same genotype, whatever its objectives
    assert a.solutions == [((1, 0, 1), (1.0, 2.0))]


def test_floor_refuses_and_prunes() -> None:
    # objective 0 is the negated metric: metric 0.3 -> -0.3
    a = Archive(metric_index=0, floor=0.2)
    assert not a.add((0,), (-0.1, 1.0))  # metric 0.1 < floor 0.2
    assert a.add((1,), (-0.3, 1.0))
    assert a.add((2,), (-0.6, 5.0))
    assert a.set_floor(0.5) == 1
    assert [s.genotype for s in a] == [(2,)]
    assert (1,) not in a
    assert a.add((1,), (-0.9, 9.0))  # may come back once it clears the floor


def test_archive_json_round_trip() -> None:
    a = Archive(metric_index=0, floor=0.1)
    a.add((0, 1), (-0.5, 3.0))
    a.add((1, 1), (-0.7, 4.0))
    b = Archive.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b.solutions == a.solutions
    assert (b.metric_index, b.floor) == (0, 0.1)
    assert not b.add((0, 1), (-1.0, 0.0))


def test_hypervolume_matches_hand_computation() -> None:
    # staircase (1,3), (2,2), (3,1) under (4,4): 3*1 + 2*1 + 1*1 = 6
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == pytest.approx(6.0)
    # a dominated point and one beyond the reference change nothing
    assert hypervolume([(1, 3), (2, 2), (3, 1), (3, 3), (5, 0)], (4, 4)) == pytest.approx(6.0)
    assert hypervolume([], (4, 4)) == 0.0


def test_reference_point_rule() -> None:
    # parents: accuracy 0.8 and 0.6 (negated), MACs 2 and 3; ensemble 0.85 at 5
    refs = [(-0.8, 2.0), (-0.6, 3.0), (-0.85, 5.0)]
    ref = reference_point_from(refs)
    assert ref == pytest.approx((-0.54, 5.5))
    assert hypervolume(refs, ref) > 0
    with pytest.raises(SearchError):
        reference_point_from([])
