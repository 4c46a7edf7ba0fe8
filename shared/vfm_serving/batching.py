"""Micro-batching: split an ordered list into consecutive chunks. Never drops, never pads."""

from typing import Iterator, List, Sequence, TypeVar

from vfm_serving.errors import InvalidBatchSize

T = TypeVar("T")


def resolve_batch_size(requested: object, *, default: int, maximum: int) -> int:
    """Micro-batch size to use for a request.

    Args:
        requested: the client's `batch_size` (None -> `default`); must be an int >= 1.
        default: size used when the client names none.
        maximum: cap from settings; a larger request is lowered to it.

    Raises:
        InvalidBatchSize: not an integer (bools rejected) or below 1.
    """
    if requested is None:
        return min(default, maximum)
    if isinstance(requested, bool) or not isinstance(requested, int):
        raise InvalidBatchSize("batch_size must be an integer >= 1")
    if requested < 1:
        raise InvalidBatchSize("batch_size must be an integer >= 1")
    return min(requested, maximum)


def micro_batches(items: Sequence[T], size: int) -> Iterator[List[T]]:
    """Yield `items` in order as lists of at most `size`; together they hold every item once."""
    if size < 1:
        raise ValueError("micro-batch size must be >= 1")
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
