"""Resumable Parquet outputs.

While a run goes, finished rows are flushed to `OUT.parts/part-NNNNNNNN.parquet`, each written
to a temporary name and renamed (a killed process leaves only whole parts). At the end the
previous `OUT` (if any) and the parts are merged into a new `OUT` (temporary name + rename) and
the parts are removed. A rerun first reads the keys and errors of `OUT` and of any parts left by
a killed run: keys with a successful row are skipped, failed and missing ones are done again.
Merging keeps, per key, its successful row if there is one, else its latest failure: every key
ends up exactly once. Rows stream through in record batches (a slide's embeddings need not fit
in memory); only the key columns are read whole.

The run's settings are stored in the file's schema metadata (`vfm`); a rerun with different
settings (another task, another tile geometry) is refused unless the caller overwrites.
"""

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Hashable, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vfm_client.errors import RunError

log = logging.getLogger(__name__)

META_KEY = b"vfm"


class ResumableTable:
    """Rows keyed by `key` columns, written to `out` resumably. Use `pending`, `add`, `close`."""

    def __init__(self, out: Path, schema: pa.Schema, key: Sequence[str],
                 settings: Dict[str, Any], overwrite: bool = False, flush_rows: int = 256
                 ) -> None:
        """
        Args:
            out: the final Parquet file.
            schema: its columns (must include `key` and `error`).
            key: columns that identify a row (e.g. ["source"], ["x", "y"]).
            settings: JSON-able run settings; stored in the file, compared on resume.
            overwrite: drop an existing output instead of resuming it.
            flush_rows: rows buffered before a part file is written.

        Raises:
            RunError: `out` (or its parts) was written with other settings, or is unreadable.
        """
        self.out = Path(out)
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.key = list(key)
        self.settings = settings
        meta = dict(schema.metadata or {})
        meta[META_KEY] = json.dumps(settings, sort_keys=True).encode()
        self.schema = schema.with_metadata(meta)
        self.flush_rows = max(1, flush_rows)
        self._buffer: List[Dict[str, Any]] = []
        if overwrite:
            self._remove_outputs()
        self._sources = self._existing_sources()
        self._done, self._failed_before = self._scan()
        self._next_part = 1 + max((_part_number(p) for p in self._sources
                                   if p.parent == self.parts), default=0)

    # -- reading what is there ---------------------------------------------------------------
    def _remove_outputs(self) -> None:
        if self.out.exists():
            self.out.unlink()
        shutil.rmtree(self.parts, ignore_errors=True)

    def _existing_sources(self) -> List[Path]:
        files = [self.out] if self.out.exists() else []
        if self.parts.is_dir():
            files += sorted(self.parts.glob("part-*.parquet"), key=_part_number)
        return files

    def _scan(self) -> Tuple[Set[Hashable], Set[Hashable]]:
        done: Set[Hashable] = set()
        failed: Set[Hashable] = set()
        for path in self._sources:
            try:
                pf = pq.ParquetFile(path)
                self._check_settings(path, pf.schema_arrow)
                table = pf.read(columns=[*self.key, "error"])
            except (OSError, pa.ArrowException) as exc:
                raise RunError(f"cannot read {path} to resume it ({exc}); remove it or use "
                               "--overwrite") from exc
            for key, err in zip(self._keys(table), table.column("error").to_pylist(), strict=True):
                (failed if err is not None else done).add(key)
        failed -= done
        if done or failed:
            log.info("resuming %s: %d rows done, %d failed before (retried)", self.out,
                     len(done), len(failed))
        return done, failed

    def _check_settings(self, path: Path, schema: pa.Schema) -> None:
        stored = (schema.metadata or {}).get(META_KEY)
        theirs = json.loads(stored) if stored else None
        if theirs != json.loads(json.dumps(self.settings, sort_keys=True)):
            raise RunError(f"{path} was written by a different run ({theirs}) than this one "
                           f"({self.settings}); use another --out or --overwrite")

    def _keys(self, table: pa.Table) -> List[Hashable]:
        columns = [table.column(k).to_pylist() for k in self.key]
        return list(columns[0]) if len(columns) == 1 else list(zip(*columns, strict=True))

    # -- the run -----------------------------------------------------------------------------
    @property
    def done(self) -> Set[Hashable]:
        """Keys that already have a successful row."""
        return self._done

    @property
    def failed_before(self) -> Set[Hashable]:
        """Keys whose rows so far are all failures (they are done again)."""
        return self._failed_before

    def pending(self, keys: Iterable[Hashable]) -> List[Hashable]:
        """The keys among `keys` that still need work, in order."""
        return [k for k in keys if k not in self._done]

    def add(self, rows: Iterable[Dict[str, Any]]) -> None:
        """Buffer finished rows; writes a part file every `flush_rows` rows."""
        self._buffer.extend(rows)
        if len(self._buffer) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one part file (atomically)."""
        if not self._buffer:
            return
        self.parts.mkdir(parents=True, exist_ok=True)
        path = self.parts / f"part-{self._next_part:08d}.parquet"
        self._next_part += 1
        _write_atomic(rows_to_table(self._buffer, self.schema), path)
        self._sources.append(path)
        self._buffer = []

    def close(self) -> Tuple[int, int]:
        """Flush, merge everything into `out`, remove the parts. Returns (ok rows, failed rows).
        """
        self.flush()
        if self._sources == [self.out]:  # nothing new: leave the file as it is
            errors = pq.read_table(self.out, columns=["error"]).column("error")
            return errors.null_count, len(errors) - errors.null_count
        winners = self._winners()
        tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp")
        succeeded = failed = 0
        writer = pq.ParquetWriter(tmp, self.schema)
        try:
            for file_index, path in enumerate(self._sources):
                pf = pq.ParquetFile(path)
                row = 0
                for batch in pf.iter_batches(batch_size=512):
                    keep = [winners.get(k) == (file_index, row + j)
                            for j, k in enumerate(self._keys(pa.Table.from_batches([batch])))]
                    row += batch.num_rows
                    if any(keep):
                        kept = pa.Table.from_batches([batch]).filter(pa.array(keep))
                        good = kept.column("error").null_count
                        succeeded += good
                        failed += kept.num_rows - good
                        writer.write_table(kept.cast(self.schema))
        finally:
            writer.close()
        os.replace(tmp, self.out)
        shutil.rmtree(self.parts, ignore_errors=True)
        self._sources = [self.out]
        log.info("wrote %s: %d rows ok, %d failed", self.out, succeeded, failed)
        return succeeded, failed

    def _winners(self) -> Dict[Hashable, Tuple[int, int]]:
        """Per key: (file index, row) of its first successful row, else of its last failure."""
        best: Dict[Hashable, Tuple[int, int, bool]] = {}
        for file_index, path in enumerate(self._sources):
            table = pq.read_table(path, columns=[*self.key, "error"])
            errors = table.column("error").to_pylist()
            for row, key in enumerate(self._keys(table)):
                ok = errors[row] is None
                current = best.get(key)
                if current is None or not current[2]:
                    best[key] = (file_index, row, ok)
        return {k: (f, r) for k, (f, r, _) in best.items()}


def rows_to_table(rows: Sequence[Dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) -> a table of `schema`. list<float32> columns take numpy arrays (any shape,
    flattened in C order) or None, without going through Python floats."""
    columns = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        if pa.types.is_list(field.type) and field.type.value_type == pa.float32():
            columns.append(_float_lists(values))
        else:
            columns.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _float_lists(values: Sequence[Any]) -> pa.Array:
    flat = [np.asarray(v, dtype=np.float32).reshape(-1) for v in values if v is not None]
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    lengths = [0 if v is None else int(np.asarray(v).size) for v in values]
    offsets[1:] = np.cumsum(lengths)
    data = pa.array(np.concatenate(flat) if flat else np.zeros(0, np.float32))
    mask = pa.array([v is None for v in values])
    return pa.ListArray.from_arrays(pa.array(offsets), data, mask=mask)


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    writer = pq.ParquetWriter(tmp, table.schema)
    try:
        writer.write_table(table)
    finally:
        writer.close()
    os.replace(tmp, path)


def _part_number(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def read_settings(path: Path) -> Optional[Dict[str, Any]]:
    """The `vfm` settings stored in a Parquet file written by this package (None if absent)."""
    stored = (pq.ParquetFile(path).schema_arrow.metadata or {}).get(META_KEY)
    return json.loads(stored) if stored else None
