"""grain input pipelines: seeded shuffling, global batches split per process, padding, a resumable iterator.

The order of examples is defined once for the whole job, independent of how many processes read it:
a seeded permutation of the record indices per epoch (reshuffled each epoch), cut into *global* batches.
Each process then loads only its own rows of every global batch (the rows its devices hold, from
`training.partitioning.process_batch_rows`). So the global batch at step t is the same on 1 process or 64, and
the iterator state -- the number of global batches consumed, grain's `{"next_index": t}` -- is the same on every
process: it is saved once, beside the model, and restoring it resumes the exact data order.
"""
from typing import Any, Callable, Iterator, Mapping, Sequence

import grain
import numpy as np

Example = Mapping[str, np.ndarray]


def pad_and_stack(
    examples: Sequence[Example], lengths: Mapping[str, int], *, pad_value: int = 0, truncate: bool = False,
) -> dict[str, np.ndarray]:
    """Pads each 1-D feature to its fixed length and stacks: {name: [len_i]} x batch -> {name: [batch, length]}.

    Features not in `lengths` are stacked as they are. A sequence longer than its length is an error unless
    `truncate` is set.
    """
    if not examples:
        raise ValueError("pad_and_stack needs at least one example")
    batch = {}
    for name in examples[0]:
        values = [np.asarray(example[name]) for example in examples]
        if name not in lengths:
            batch[name] = np.stack(values)
            continue
        length = lengths[name]
        padded = np.full((len(values), length), pad_value, dtype=values[0].dtype)  # [batch, length]
        for row, value in enumerate(values):
            if value.ndim != 1:
                raise ValueError(f"feature {name!r} of example {row} has shape {value.shape}; expected 1-D")
            if len(value) > length and not truncate:
                raise ValueError(f"feature {name!r} of example {row} has length {len(value)} > {length}")
            padded[row, : min(len(value), length)] = value[:length]
        batch[name] = padded
    return batch


def batch_dataset(
    source: Any,
    collate: Callable[[Sequence[Any]], Mapping[str, np.ndarray]],
    *,
    global_batch_size: int,
    rows: slice,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
) -> grain.MapDataset:
    """Global batches of `source` (shuffled per epoch by `seed`; None epochs = forever), this process's rows only.

    Element t is collate([source[i] for i in rows of global batch t]); incomplete final batches are dropped.
    """
    if len(source) < global_batch_size:
        raise ValueError(f"the data source has {len(source)} examples, fewer than one batch of {global_batch_size}")
    indices = grain.MapDataset.range(len(source))
    if shuffle:
        indices = indices.shuffle(seed=seed)
    indices = indices.repeat(num_epochs)
    batches = indices.batch(global_batch_size, drop_remainder=True)  # [global_batch] record indices
    return batches.map(lambda batch_indices: collate([source[int(i)] for i in batch_indices[rows]]))


def resumable_iterator(dataset: grain.MapDataset, *, prefetch: int = 2) -> grain.DatasetIterator:
    """An iterator with background prefetching whose get_state()/set_state() is {"next_index": batches consumed}."""
    read_options = grain.ReadOptions(num_threads=1 if prefetch else 0, prefetch_buffer_size=prefetch)
    return iter(dataset.to_iter_dataset(read_options))


def first_batches(dataset: grain.MapDataset, count: int) -> Iterator[Mapping[str, np.ndarray]]:
    """The first `count` elements of a dataset, in order (evaluation uses a fixed set of batches)."""
    if count > len(dataset):
        raise ValueError(f"asked for {count} batches, the dataset has {len(dataset)}")
    return (dataset[index] for index in range(count))
