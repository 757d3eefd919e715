"""grain pipeline: padding, seeded per-epoch shuffling, process-count-independent batches, exact iterator resume."""
import numpy as np
import pytest

from distill_ret.data import pipeline


class IndexSource:
    """Example i is {"index": i, "tokens": [i] * (i % 3 + 1)}."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return {"index": np.int64(index), "tokens": np.full(index % 3 + 1, index, np.int32)}


def collate(examples):
    return pipeline.pad_and_stack(examples, {"tokens": 4}, pad_value=-1)


def test_pad_and_stack_pads_stacks_and_rejects_long_sequences():
    batch = pipeline.pad_and_stack(
        [{"ids": np.array([5, 6]), "label": np.int32(1)}, {"ids": np.array([7]), "label": np.int32(0)}], {"ids": 3},
    )
    np.testing.assert_array_equal(batch["ids"], [[5, 6, 0], [7, 0, 0]])
    np.testing.assert_array_equal(batch["label"], [1, 0])
    with pytest.raises(ValueError, match="feature 'ids' of example 0 has length 4 > 3"):
        pipeline.pad_and_stack([{"ids": np.arange(4)}], {"ids": 3})
    truncated = pipeline.pad_and_stack([{"ids": np.arange(4)}], {"ids": 3}, truncate=True)
    np.testing.assert_array_equal(truncated["ids"], [[0, 1, 2]])


def indices(dataset, count):
    return [list(dataset[t]["index"]) for t in range(count)]


def test_each_epoch_is_a_new_seeded_permutation():
    dataset = pipeline.batch_dataset(IndexSource(12), collate, global_batch_size=4, rows=slice(0, 4), seed=3)
    batches = indices(dataset, 6)
    first_epoch, second_epoch = sum(batches[:3], []), sum(batches[3:], [])
    assert sorted(first_epoch) == list(range(12)) and sorted(second_epoch) == list(range(12))
    assert first_epoch != second_epoch and first_epoch != list(range(12))
    again = pipeline.batch_dataset(IndexSource(12), collate, global_batch_size=4, rows=slice(0, 4), seed=3)
    assert indices(again, 6) == batches
    other = pipeline.batch_dataset(IndexSource(12), collate, global_batch_size=4, rows=slice(0, 4), seed=4)
    assert indices(other, 6) != batches


def test_process_rows_tile_the_global_batch():
    full = pipeline.batch_dataset(IndexSource(20), collate, global_batch_size=8, rows=slice(0, 8), seed=0)
    halves = [
        pipeline.batch_dataset(IndexSource(20), collate, global_batch_size=8, rows=slice(start, start + 4), seed=0)
        for start in (0, 4)
    ]
    for t in range(5):
        for name in ("index", "tokens"):
            np.testing.assert_array_equal(np.concatenate([half[t][name] for half in halves]), full[t][name])
    assert full[0]["tokens"].shape == (8, 4)


def test_iterator_state_resumes_the_exact_sequence():
    dataset = pipeline.batch_dataset(IndexSource(10), collate, global_batch_size=3, rows=slice(0, 3), seed=1)
    uninterrupted = pipeline.resumable_iterator(dataset, prefetch=2)
    expected = [next(uninterrupted)["index"] for _ in range(9)]
    interrupted = pipeline.resumable_iterator(dataset, prefetch=2)
    head = [next(interrupted)["index"] for _ in range(4)]
    state = interrupted.get_state()
    assert state == {"next_index": 4}
    resumed = pipeline.resumable_iterator(dataset, prefetch=2)
    resumed.set_state(state)
    tail = [next(resumed)["index"] for _ in range(5)]
    np.testing.assert_array_equal(np.stack(head + tail), np.stack(expected))


def test_finite_evaluation_batches_and_small_sources():
    dataset = pipeline.batch_dataset(
        IndexSource(10), collate, global_batch_size=4, rows=slice(0, 4), seed=0, shuffle=False, num_epochs=1,
    )
    assert [list(batch["index"]) for batch in pipeline.first_batches(dataset, 2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="asked for 3 batches, the dataset has 2"):
        list(pipeline.first_batches(dataset, 3))
    with pytest.raises(ValueError, match="fewer than one batch of 16"):
        pipeline.batch_dataset(IndexSource(10), collate, global_batch_size=16, rows=slice(0, 16), seed=0)
