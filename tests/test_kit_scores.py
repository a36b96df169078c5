"""How the sensor search scores kits on held-out workers in rungs (harkd.search.kit_scores), on constructed tables of
per-fold scores: a kit stops only when a rival at no greater cost clearly beats it, so pruning keeps a kit that later
folds put on the front, and a stopped kit's score estimates its mean over every fold."""

import numpy as np
import pytest

from harkd.search.kit_scores import (KitScores, adjusted_means, beaten_by, clear_margin, rung_sizes, score_in_rungs,
                                     share_beaten)

FOLDS = [f"p{i}" for i in range(1, 9)]


def kit(name, scores, costs=(2, 6)):
    return KitScores(name, costs, dict(zip(FOLDS, scores)))


def replay(table, costs, rungs=(2, 4), confidence=0.95):
    """The search's scoring over a table of per-fold scores, kits in the table's order: {kit: (scores, stopped by)}."""
    done = {}
    for name, scores in table.items():
        lookup = dict(zip(FOLDS, scores))
        done[name] = score_in_rungs(KitScores(name, costs[name]), FOLDS, lookup.__getitem__,
                                    lambda: [s for s, _ in done.values()], rungs, confidence)
    return done


def front(kits):
    """The kits no other beats at no greater cost (mean over their folds, costs as tuples)."""
    return {k.kit for k in kits if not any(o.mean >= k.mean and o.costs_no_more_than(k) and
                                           (o.mean, o.costs) != (k.mean, k.costs) for o in kits)}


def test_rungs_end_with_every_fold():
    assert rung_sizes((2, 4), 8) == [2, 4, 8]
    assert rung_sizes((2, 4), 3) == [2, 3]
    assert rung_sizes((2, 4), 2) == [2]


def test_a_late_bloomer_is_kept_and_reaches_the_front_where_a_clear_loser_stops():
    # Two-position kits at one cost. `late` trails the leader a little on the first folds, where subjects differ
    # most, then wins clearly: its full mean puts it alone on the front. `poor` trails by far on every fold.
    costs = {"leader": (2, 6), "late": (2, 6), "poor": (2, 6)}
    table = {"leader": [0.80, 0.70, 0.75, 0.72, 0.78, 0.74, 0.76, 0.73],
             "late": [0.78, 0.71, 0.74, 0.70, 0.95, 0.93, 0.94, 0.96],
             "poor": [0.40, 0.35, 0.38, 0.36, 0.41, 0.39, 0.37, 0.40]}
    done = replay(table, costs)
    assert done["late"][1] is None and len(done["late"][0].by_fold) == 8
    assert done["poor"][1] is not None and len(done["poor"][0].by_fold) == 2  # stopped at the first rung
    exhaustive = [kit(name, scores, costs[name]) for name, scores in table.items()]
    kept = [scores for scores, rival in done.values() if rival is None]
    assert front(kept) == front(exhaustive) == {"late"}
    # a rule without the folds' spread (stop when the mean so far trails) would have dropped the late bloomer
    assert np.mean(table["late"][:2]) < np.mean(table["leader"][:2])


@pytest.mark.parametrize("costs, stops", [
    ((2, 6), True),   # as many positions and channels: a rival
    ((2, 9), True),   # the leader costs less: still a rival
    ((2, 3), False),  # the leader wears more channels: the cheap kit may be on the front
    ((1, 6), False),  # another number of positions: the best kit at each number is kept
])
def test_only_a_rival_at_as_many_positions_and_no_greater_cost_stops_a_kit(costs, stops):
    leader = kit("leader", [0.80, 0.82, 0.81, 0.79], (2, 6))
    poor = KitScores("poor", costs, {"p1": 0.40, "p2": 0.41})
    assert (beaten_by(poor, [leader], 0.95) is leader) is stops


def test_two_folds_that_disagree_stop_no_kit():
    leader = kit("leader", [0.80, 0.60])
    other = KitScores("other", (2, 6), {"p1": 0.50, "p2": 0.59})  # behind by 30 then by 1 point
    assert clear_margin(leader, other, 0.95) is None
    assert clear_margin(leader, KitScores("o", (2, 6), {"p1": 0.50, "p2": 0.31}), 0.95) > 0


def test_a_rival_must_hold_every_fold_the_kit_was_scored_on():
    assert clear_margin(KitScores("r", (2, 6), {"p1": 0.9}), KitScores("k", (2, 6), {"p1": 0.1, "p2": 0.1}),
                        0.95) is None


def test_adjusted_means_recover_kit_effects_and_equal_the_plain_mean_of_a_complete_kit():
    rng = np.random.default_rng(0)
    subject = rng.normal(0, 0.1, size=8)
    subject -= subject.mean()
    effects = {"a": 0.8, "b": 0.7, "c": 0.6}
    kits = [kit("a", effects["a"] + subject), kit("b", effects["b"] + subject),
            KitScores("c", (2, 6), dict(zip(FOLDS[:2], effects["c"] + subject[:2])))]
    estimate = adjusted_means(kits)
    assert estimate == pytest.approx(effects)
    noisy = [kit("a", effects["a"] + subject + rng.normal(0, 0.05, 8)), kits[1], kits[2]]
    assert adjusted_means(noisy)["a"] == pytest.approx(noisy[0].mean)
    # the stopped kit's plain mean over its two folds would be off by those folds' subject effects
    assert abs(kits[2].mean - effects["c"]) == pytest.approx(abs(subject[:2].mean()))


def test_share_of_folds_won_and_standard_error():
    a, b = kit("a", [0.9, 0.8, 0.7, 0.6]), kit("b", [0.8, 0.9, 0.6, 0.5])
    assert share_beaten(a, b) == (3, 4) and share_beaten(b, a) == (1, 4)
    assert a.standard_error == pytest.approx(np.std([0.9, 0.8, 0.7, 0.6], ddof=1) / 2)
    assert KitScores("c", (), {"p1": 0.5}).standard_error is None
