"""evaluation.py: the units a split is cut into, how ranks share them, and the rules that pick the kept model."""
import pytest

from paddle_finetune.training.state import TrainState
from paddle_finetune.training.task import Scored
from paddle_finetune.evaluation.selection import is_better, should_stop_early, update_best
from hypothesis import given, settings
from hypothesis import strategies as st

from paddle_finetune.evaluation.sharding import Piece, assemble, deal_rows, evaluate_split, in_order_units, length_sorted_units


# ---------------------------------------------------------------------------- units and shards
def test_length_sorted_units_are_the_batches_one_process_cuts():
    lengths = [5, 9, 9, 1, 7, 3, 9]
    units = length_sorted_units(lengths, 3)
    assert units == [[1, 2, 6], [4, 0, 5], [3]]  # longest first; ties keep row order (a stable sort)
    assert sorted(i for u in units for i in u) == list(range(len(lengths)))


def test_ranks_get_whole_units_round_robin_and_together_all_of_them():
    units = length_sorted_units(list(range(100)), 8)  # 13 units, the longest first
    shares = deal_rows([len(u) for u in units], 2)
    rows = [sum(p.stop - p.start for p in share) for share in shares]
    assert rows == [50, 50]
    # whole units round-robin, the long ones spread: each rank gets 2 of the 4 longest units whole
    assert [sum(1 for p in share if p.unit < 4 and (p.start, p.stop) == (0, 8)) for share in shares] == [2, 2]


def test_the_reported_case_100_rows_in_batches_of_32_is_shared_50_50():
    """Whole batches gave 64 and 36 rows; the third batch is now cut between the ranks."""
    units = length_sorted_units(list(range(100)), 32)
    shares = deal_rows([len(u) for u in units], 2)
    assert shares == [[Piece(0, 0, 32), Piece(2, 0, 14), Piece(3, 0, 4)], [Piece(1, 0, 32), Piece(2, 14, 32)]]


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=0, max_size=30), world_size=st.integers(1, 9))
def test_every_rank_gets_within_one_row_of_an_even_share_and_every_row_once(sizes, world_size):
    shares = deal_rows(sizes, world_size)
    total = sum(sizes)
    rows = [sum(p.stop - p.start for p in share) for share in shares]
    assert len(shares) == world_size and sum(rows) == total
    assert max(rows) - min(rows) <= 1
    assert all(r > 0 for r in rows) or total < world_size  # a rank with nothing to do only when rows < ranks
    covered = sorted((p.unit, i) for share in shares for p in share for i in range(p.start, p.stop))
    assert covered == [(u, i) for u, size in enumerate(sizes) for i in range(size)]
    # reassembled, every unit's outputs are back in row order
    units = [[(u, i) for i in range(size)] for u, size in enumerate(sizes)]
    pieces = [(p, units[p.unit][p.start:p.stop]) for share in reversed(shares) for p in reversed(share)]
    assert assemble(units, pieces) == units


def test_in_order_units_keep_row_order():
    assert in_order_units(7, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert in_order_units(0, 3) == []


def test_single_process_evaluation_scores_every_unit_in_order():
    """One process: evaluate_split calls predict_fn on every unit in order and score_fn with the outputs in unit
    order (the same code path ranks share; the 2-rank run is in tests/runtime/)."""

    class Model:
        training = True

        def eval(self):
            self.training = False

        def train(self):
            self.training = True

    units = [[2, 0], [1]]
    seen = []

    def predict(model, split, unit, rows):
        assert not model.training and split == "dev" and rows == unit  # one process computes whole units
        return [{"row": i} for i in rows]

    def score(split, outputs, step):
        seen.append((split, outputs, step))
        return Scored({"n": sum(len(o) for o in outputs), "f": 1 / 3, "rouge_style": "chars"}, [{"row": 1}])

    model = Model()
    metrics, rows = evaluate_split(model, "dev", units, predict, score, step=7)
    # numbers rounded to 4 decimals; a string labels them and stays as it is
    assert metrics == {"n": 3.0, "f": 0.3333, "rouge_style": "chars"} and rows == [{"row": 1}]
    assert seen == [("dev", [[{"row": 2}, {"row": 0}], [{"row": 1}]], 7)]
    assert model.training, "the model is put back in training mode"


# ---------------------------------------------------------------------------- selection
@pytest.mark.parametrize("value, best, greater, threshold, expected", [
    (1.0, None, True, 0.0, True),  # the first evaluation is the best so far
    (float("nan"), None, True, 0.0, False),  # a NaN is never the best
    (2.0, 1.0, True, 0.0, True),
    (1.0, 1.0, True, 0.0, False),  # equal is not better: the earlier checkpoint stays the best
    (0.5, 1.0, False, 0.0, True),  # lower is better (perplexity)
    (1.05, 1.0, True, 0.1, False),  # not by more than the threshold
    (1.2, 1.0, True, 0.1, True),
    (0.85, 1.0, False, 0.1, True),
])
def test_is_better(value, best, greater, threshold, expected):
    assert is_better(value, best, greater, threshold) is expected


def test_update_best_tracks_every_evaluation_and_counts_patience():
    state = TrainState()
    history = [(3, 4.66), (6, 3.0), (9, 5.49), (12, 5.5), (15, 0.0)]
    improved = [update_best(state, {"rougeL": v}, step, "rougeL", True, threshold=0.1) for step, v in history]
    assert improved == [True, False, True, True, False]
    assert (state.best_step, state.best_metric) == (12, 5.5)  # 5.5 beats 5.49, by less than the threshold
    # patience counts evaluations that did not beat the best by more than the threshold: 12 (0.01) and 15 (worse)
    assert state.evals_without_improvement == 2
    assert should_stop_early(state, 2) and not should_stop_early(state, 3)
    assert not should_stop_early(state, 0), "patience 0 is off"


def test_lower_is_better_metrics():
    state = TrainState()
    for step, ppl in [(10, 50.0), (20, 40.0), (30, 45.0)]:
        update_best(state, {"perplexity": ppl}, step, "perplexity", False)
    assert (state.best_step, state.best_metric, state.evals_without_improvement) == (20, 40.0, 1)
