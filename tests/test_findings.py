"""The findings of `evostitch report` on hand-made runs, against values worked out by hand.

Metric and MACs (in MMACs) of the hand-made run on the search split (val)::

    parent-a 0.90 @ 30   parent-b 0.95 @ 40   ensemble 0.96 @ 70   ensemble-prob 0.97 @ 70
    offspring #5 0.92 @ 25, #6 0.96 @ 35, #7 0.975 @ 40, #8 0.98 @ 45, #9 0.97 @ 29, #10 0.90 @ 20

Its front: #10, #5, #9, #7, #8 (#6 is dominated by #9, the references by #5, #7, #8).
"""

from __future__ import annotations

import pytest

from evostitch.evolution.algorithms import make_algorithm
from evostitch.evolution.loop import run_search
from evostitch.evolution.store import EvaluationRecord, RunConfig
from evostitch.results.findings import (
    KEYS,
    compute_findings,
    dominating_offspring,
    ensemble_like,
    finding_texts,
    hypervolume_by_run,
    inactive_variables,
    scored_solutions,
    val_test_gap,
)
from evostitch.results.solutions import REFERENCE_NAMES, genotype_text
from toys import new_store, toy_canonical, toy_problem

M = 1e6
REFERENCES = {"parent-a": (1, 0.90, 30), "parent-b": (2, 0.95, 40)}
REFERENCES |= {"ensemble": (3, 0.96, 70), "ensemble-prob": (4, 0.97, 70)}
OFFSPRING = {5: (0.92, 25), 6: (0.96, 35), 7: (0.975, 40), 8: (0.98, 45), 9: (0.97, 29)}
OFFSPRING |= {10: (0.90, 20)}
# on test: (metric, ECE) of the front and the references, and #8 re-scored on val
TEST = {1: (0.89, 0.06), 2: (0.93, 0.05), 3: (0.955, 0.04), 4: (0.96, 0.03)}
TEST |= {10: (0.88, 0.05), 5: (0.91, 0.03), 9: (0.95, 0.04), 7: (0.94, 0.08), 8: (0.97, 0.02)}
VAL_RESCORED = {8: 0.985}


def record(rid: int, metric: float, mmacs: float, name: str | None = None):
    """A stored evaluation: a reference genotype for `name`, else an offspring's."""
    canonical = (REFERENCE_NAMES.index(name), 0, 0, 0) if name else (0, 1, rid % 10, rid // 10)
    return EvaluationRecord(canonical, canonical, (-metric, mmacs * M), id=rid)


def ensemble_on_val(records: list[EvaluationRecord]) -> dict:
    split, solutions = scored_solutions(records)
    return ensemble_like(solutions, split)


def hand_made(references=REFERENCES, offspring=OFFSPRING) -> list[EvaluationRecord]:
    refs = [record(rid, m, c, name) for name, (rid, m, c) in references.items()]
    return refs + [record(rid, m, c) for rid, (m, c) in offspring.items()]


def reevaluation(records: list[EvaluationRecord], test=TEST) -> dict:
    """What `reevaluate` writes for the solutions in `test`: val (re-scored) and test."""
    rows = []
    for r in records:
        if r.id in test:
            name = REFERENCE_NAMES[r.canonical[0]] if not any(r.canonical[1:]) else None
            val = VAL_RESCORED.get(r.id, -r.objectives[0])
            metric, ece = test[r.id]
            rows.append(
                {
                    "label": name or str(r.id),
                    "id": r.id,
                    "name": name,
                    "genotype": genotype_text(r.canonical),
                    "val": {"accuracy": val, "ece": 0.01, "macs": r.objectives[1]},
                    "test": {"accuracy": metric, "ece": ece, "macs": r.objectives[1]},
                }
            )
    return {"split": "test", "search_split": "val", "metric": "accuracy", "solutions": rows}


def test_offspring_that_dominate_a_parent_on_val():
    split, solutions = scored_solutions(hand_made())
    found = dominating_offspring(solutions, split)
    # parent-a (0.90 @ 30): #5, #9 (#10 only equals its metric); parent-b (0.95 @ 40): #6, #7, #9
    assert found["split"] == "val" and found["offspring"] == 6
    assert found["count"] == 4 and found["solutions"] == ["7", "9", "6", "5"]
    assert found["by_parent"]["parent-a"]["solutions"] == ["9", "5"]
    assert found["by_parent"]["parent-b"]["count"] == 3
    assert found["by_parent"]["parent-b"]["parent"]["metric"] == 0.95
    assert found["best"] == {
        "label": "7",
        "id": 7,
        "metric": 0.975,
        "macs": 40 * M,
        "dominates": ["parent-b"],
        "against": "parent-b",
    }


def test_the_cheapest_offspring_as_good_as_the_better_ensemble():
    found = ensemble_on_val(hand_made())
    # the bar is ensemble-prob (0.97 > 0.96): #9 (equal, 29), #7 (40), #8 (45) reach it
    assert found["bar"]["name"] == "ensemble-prob" and found["bar"]["metric"] == 0.97
    assert set(found["ensembles"]) == {"ensemble", "ensemble-prob"}
    assert found["count"] == 3 and found["solutions"] == ["9", "7", "8"]
    assert found["solution"]["label"] == "9"
    assert found["saving_macs"] == pytest.approx(41 * M)
    assert found["saving_fraction"] == pytest.approx(41 / 70)


def test_the_mean_ensemble_is_the_bar_when_it_is_better():
    references = REFERENCES | {"ensemble": (3, 0.975, 60)}
    found = ensemble_on_val(hand_made(references))
    assert found["bar"]["name"] == "ensemble"
    assert found["solutions"] == ["7", "8"] and found["saving_macs"] == pytest.approx(20 * M)
    references = {k: v for k, v in REFERENCES.items() if k != "ensemble-prob"}
    found = ensemble_on_val(hand_made(references))
    assert found["bar"]["name"] == "ensemble" and found["solutions"] == ["9", "6", "7", "8"]


def test_no_offspring_dominates_a_parent_or_reaches_the_ensemble():
    # worse than both parents, equal to parent-a, better but dearer than parent-b
    offspring = {5: (0.89, 10), 6: (0.90, 30), 7: (0.99, 41)}
    references = REFERENCES | {"ensemble": (3, 0.995, 70)}
    findings = compute_findings(hand_made(references, offspring), metric="accuracy")
    dominating, ensemble = findings["dominating_offspring"], findings["ensemble_like"]
    assert dominating["count"] == 0 and dominating["best"] is None
    assert [p["count"] for p in dominating["by_parent"].values()] == [0, 0]
    assert dominating["text"].startswith("No offspring dominates a parent on val")
    assert ensemble["bar"]["name"] == "ensemble" and ensemble["solution"] is None
    assert ensemble["count"] == 0 and ensemble["saving_macs"] is None
    assert ensemble["best_offspring"]["label"] == "7"
    assert ensemble["text"].startswith("No offspring is as good as the ensemble")


def test_without_references_nothing_is_compared():
    findings = compute_findings(hand_made({}, OFFSPRING))
    assert findings["dominating_offspring"]["missing_parents"] == ["parent-a", "parent-b"]
    assert findings["dominating_offspring"]["count"] == 0
    assert findings["ensemble_like"]["bar"] is None


def test_a_run_not_reevaluated_is_measured_on_val():
    records = hand_made()
    findings = compute_findings(records, metric="accuracy")
    assert findings["split"] == "val"
    assert {findings[k]["split"] for k in KEYS} == {"val"}
    gap = findings["val_test_gap"]
    assert gap["count"] == 0 and gap["median_gap"] is None and gap["members"] == []
    assert gap["text"].startswith("Not re-evaluated")
    text = finding_texts(findings)[0]
    assert text.startswith("4 of 6 evaluated offspring dominate a parent on val")
    assert "#7, reaches accuracy 0.975 at 40 MMACs against parent-b's 0.95 at 40 MMACs" in text


def test_a_reevaluated_run_is_measured_on_test():
    records = hand_made()
    findings = compute_findings(records, reevaluation(records), metric="accuracy")
    assert findings["split"] == "test"
    dominating, ensemble = findings["dominating_offspring"], findings["ensemble_like"]
    # re-evaluated offspring only (#6 is off the front); on test parent-a is 0.89 @ 30,
    # parent-b 0.93 @ 40: #9 beats both, #5 parent-a, #7 parent-b; #10, #8 none
    assert dominating["split"] == "test" and dominating["offspring"] == 5
    assert dominating["solutions"] == ["9", "7", "5"]
    assert dominating["best"]["dominates"] == ["parent-a", "parent-b"]
    assert dominating["best"]["against"] == "parent-b" and dominating["best"]["metric"] == 0.95
    assert "on test" in dominating["text"] and "5 re-evaluated offspring" in dominating["text"]
    # the bar on test: ensemble-prob 0.96 @ 70; only #8 (0.97 @ 45) reaches it
    assert ensemble["split"] == "test" and ensemble["bar"]["metric"] == 0.96
    assert ensemble["solution"]["label"] == "8"
    assert ensemble["saving_macs"] == pytest.approx(25 * M)
    assert ensemble["saving_fraction"] == pytest.approx(25 / 70)


def test_the_gap_of_the_front_from_val_to_test():
    records = hand_made()
    gap = val_test_gap(records, reevaluation(records))
    # front #10, #5, #9, #7, #8: val - test = .02, .01, .02, .035, .985 - .97 = .015
    assert [m["label"] for m in gap["members"]] == ["10", "5", "9", "7", "8"]
    assert [m["gap"] for m in gap["members"]] == pytest.approx([0.02, 0.01, 0.02, 0.035, 0.015])
    assert gap["split"] == "test" and gap["search_split"] == "val" and gap["count"] == 5
    assert gap["median_gap"] == pytest.approx(0.02)
    assert gap["max_gap"] == pytest.approx(0.035) and gap["worst"] == "7"
    assert gap["median_ece"] == pytest.approx(0.04) and gap["max_ece"] == pytest.approx(0.08)
    assert gap["missing"] == []


def test_the_gap_shows_ece_before_and_after_temperature_scaling():
    records = hand_made()
    reeval = reevaluation(records)
    assert val_test_gap(records, reeval)["median_ece_calibrated"] is None  # not calibrated
    for row in reeval["solutions"]:  # calibration halves every ECE on test
        row["test"]["ece_calibrated"] = row["test"]["ece"] / 2
    gap = val_test_gap(records, reeval)
    # front #10, #5, #9, #7, #8 on test: ECE .05 .03 .04 .08 .02 -> .025 .015 .02 .04 .01
    assert gap["median_ece"] == pytest.approx(0.04)
    assert gap["median_ece_calibrated"] == pytest.approx(0.02)
    assert [m["ece_calibrated"] for m in gap["members"]] == pytest.approx(
        [0.025, 0.015, 0.02, 0.04, 0.01]
    )
    text = compute_findings(records, reeval, metric="accuracy")["val_test_gap"]["text"]
    assert "median ECE 0.0400 -> 0.0200 after temperature scaling fitted on val." in text


def test_front_members_not_reevaluated_are_named():
    records = hand_made()
    test = {k: v for k, v in TEST.items() if k != 8}
    gap = val_test_gap(records, reevaluation(records, test))
    assert gap["missing"] == ["8"] and gap["count"] == 4
    assert gap["max_gap"] == pytest.approx(0.035)


def test_cache_hits_and_inactive_variables_from_the_store_and_checkpoint():
    records = hand_made()[:5]
    # #11 and #12 were proposed with an inactive variable set; #12 failed
    records += [EvaluationRecord((0, 1, 1, 7), (0, 1, 1, 1), (-0.5, 10 * M), id=11)]
    records += [EvaluationRecord((5, 0, 0, 1), (5, 0, 0, 0), None, error="x", id=12)]
    records += [record(13, 0.6, 12)]
    checkpoint = {"rows": 6, "counters": {"requested": 10, "cache_hits": 4}}
    checkpoint["state"] = {"memo_hits": 5}
    found = inactive_variables(records, checkpoint, "val")
    # 8 rows, 2 stored after the checkpoint: 12 requests + 5 memo hits = 17 proposals
    assert found["evaluations"] == 8 and found["proposals"] == 17
    assert found["cache_hits"] == 4 and found["memo_hits"] == 5
    assert found["answered_from_cache"] == 9 and found["share"] == pytest.approx(9 / 17)
    assert found["noncanonical_evaluations"] == 2 and found["solutions"] == ["11", "12"]
    assert found["noncanonical_share"] == pytest.approx(2 / 8)
    without = inactive_variables(records, None, "val")
    assert without["proposals"] is None and without["share"] is None
    assert without["noncanonical_evaluations"] == 2
    text = compute_findings(records[:5], stored=records)["inactive_variables"]["text"]
    assert text.startswith("The run has no checkpoint")


def test_inactive_variables_match_what_a_search_counted(tmp_path):
    """On a real search (a toy problem whose bit 0 deactivates bits 6..), the numbers
    read back from the store and checkpoint are the loop's own counters."""
    problem = toy_problem()
    algorithm = make_algorithm("ga", problem, 0, pop_size=8, budget=60, steer_to=None)
    with new_store(tmp_path / "run", budget=60) as store:
        result = run_search(problem, algorithm, store, progress=False)
        stored, checkpoint = list(store.records()), store.load_checkpoint()
    found = inactive_variables(stored, checkpoint, "val")
    assert found["evaluations"] == result.performed == 60
    assert found["proposals"] == result.requested + result.memo_hits
    assert found["answered_from_cache"] == result.cache_hits + result.memo_hits > 0
    changed = [r for r in stored if toy_canonical(r.genotype) != tuple(r.genotype)]
    assert found["noncanonical_evaluations"] == len(changed)


def test_final_hypervolume_per_run_algorithm_and_seed():
    # reference point: metric 0.5 at 100 MACs; the box is (1 - 0.5) x 100 = 50
    ref_point = (-0.5, 100.0)
    one = [EvaluationRecord((1,), (1,), (-0.9, 20.0), id=1)]
    two = one + [EvaluationRecord((2,), (2,), (-0.7, 10.0), id=2)]
    two += [EvaluationRecord((3,), (3,), (-0.6, 30.0), id=3)]  # dominated
    runs = [
        ("ga, seed 0", RunConfig("ga", 10, seed=0), one),
        ("ga, seed 1", RunConfig("ga", 10, seed=1), two),
        ("rs, seed 0", RunConfig("rs", 10, seed=0), []),
    ]
    found = hypervolume_by_run(runs, ref_point)
    # one point: 0.4 x 80 = 32; two: 32 + 0.2 x 90 - 0.2 x 80 = 34
    volumes = [r["hypervolume"] for r in found["runs"]]
    assert volumes == pytest.approx([32 / 50, 34 / 50, 0.0])
    assert [r["evaluations"] for r in found["runs"]] == [1, 3, 0]
    assert [(r["algorithm"], r["seed"]) for r in found["runs"]] == [
        ("ga", 0),
        ("ga", 1),
        ("rs", 0),
    ]
    assert found["by_algorithm"]["ga"]["seeds"] == [0, 1]
    assert found["by_algorithm"]["ga"]["median_hypervolume"] == pytest.approx(33 / 50)
    findings = compute_findings(one, runs=runs[:1], ref_point=ref_point)
    assert findings["hypervolume"]["runs"][0]["hypervolume"] == pytest.approx(0.64)
    assert "ga, seed 0: 0.6400 after 1" in findings["hypervolume"]["text"]


def test_every_finding_has_a_split_and_a_sentence():
    records = hand_made()
    findings = compute_findings(records, reevaluation(records), metric="accuracy")
    assert set(KEYS) <= set(findings)
    assert (findings["format"], findings["version"]) == ("evostitch-findings", 1)
    assert all(findings[k]["split"] in ("val", "test") for k in KEYS)
    assert findings["inactive_variables"]["split"] == "val"  # proposals are the search's
    assert finding_texts(findings) == [findings[k]["text"] for k in KEYS]
    assert all(text.endswith(".") for text in finding_texts(findings))


def test_stitches_hold_is_the_figure_stored_at_stitch_time():
    from evostitch.evaluation.holding import hold_figure

    trained = {"parents": [0.9, 0.8], 0.02: [1.0, 0.9, 0.8], 0.1: [0.5, 0.6, 0.7]}
    untrained = {"parents": [0.9, 0.8], 0.02: [0.3, 0.2, 0.1], 0.1: [0.1, 0.1, 0.1]}
    figure = hold_figure(trained, untrained, metric="accuracy", images=64, samples=3)
    found = compute_findings(hand_made(), metric="accuracy", hold=figure)["stitches_hold"]
    assert found["measured"] and found["split"] == "val"
    assert [(r["p"], r["trained"]["median"], r["untrained"]["median"]) for r in found["p"]] == [
        (0.02, 0.9, 0.2),
        (0.1, 0.6, 0.1),
    ]
    assert "p=0.02: 0.900 [0.850, 0.950] (untrained 0.200)" in found["text"]
    missing = compute_findings(hand_made(), metric="accuracy")["stitches_hold"]
    assert not missing["measured"] and "not measured" in missing["text"]
