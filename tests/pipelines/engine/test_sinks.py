"""RankedTableWriter: rows in any order out in rank order, with a bounded buffer."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.engine.sinks import RankedTableWriter


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        row = {"clip_id": f"c{i:05d}", "start": i * 0.5, "text": f"t{i}"}
        if i % 3 == 0:  # a key only some rows have
            row["speaker"] = f"s{i % 7}"
        if i % 5 == 0:
            row["words"] = [{"word": "a", "start": 0.0, "end": 0.1}]
        else:
            row["words"] = []
        rows.append(row)
    return rows


@pytest.mark.parametrize("per_part", [4, 10, 1000])
def test_rows_out_in_rank_order_whatever_order_they_came(tmp_path, per_part):
    rows = _rows(103)
    order = list(range(len(rows)))
    random.Random(per_part).shuffle(order)
    out = tmp_path / "clips.parquet"
    writer = RankedTableWriter(
        str(out), len(rows), first=("clip_id", "start"), last=("words",), rows_per_part=per_part
    )
    for i in order:
        writer.add(i, rows[i])
        assert len(writer._rows) <= per_part  # the memory bound
    assert len(writer._spills) == (len(rows) - 1) // (per_part + 1)
    writer.close()
    table = pq.read_table(out)
    assert table.column_names == ["clip_id", "start", "speaker", "text", "words"]
    assert table["clip_id"].to_pylist() == [r["clip_id"] for r in rows]
    assert table["speaker"].to_pylist() == [r.get("speaker") for r in rows]
    assert table["words"].to_pylist()[5] == [{"word": "a", "start": 0.0, "end": 0.1}]
    assert table["words"].to_pylist()[1] == []
    assert not list(tmp_path.glob("*.tmp-*"))


def test_spilled_parts_unify_types_and_the_temporary_files_go(tmp_path):
    # A column null in one part and typed in another; an int that becomes a float.
    rows = [{"k": i, "a": None, "n": 1} for i in range(6)]
    rows += [{"k": i, "a": "x", "n": 1.5} for i in range(6, 12)]
    writer = RankedTableWriter(str(tmp_path / "t.parquet"), 12, first=("k",), rows_per_part=3)
    tmp = writer._tmp
    for i in reversed(range(12)):
        writer.add(i, rows[i])
    writer.close()
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.schema.field("a").type == pa.string()
    assert table.schema.field("n").type == pa.float64()
    assert table["k"].to_pylist() == list(range(12))
    assert table["a"].to_pylist() == [None] * 6 + ["x"] * 6
    assert tmp is not None and not (tmp_path / tmp).exists()


def test_empty_words_column_left_out_and_an_empty_table_keeps_its_first_columns(tmp_path):
    writer = RankedTableWriter(str(tmp_path / "a.parquet"), 2, first=("id",), last=("words",))
    writer.add(1, {"id": "b", "words": []})
    writer.add(0, {"id": "a", "words": []})
    writer.close()
    assert pq.read_table(tmp_path / "a.parquet").column_names == ["id"]
    empty = RankedTableWriter(str(tmp_path / "e.parquet"), 0, first=("id", "start"))
    empty.close()
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column_names == ["id", "start"] and table.num_rows == 0


def test_missing_or_repeated_ranks_are_errors_and_nothing_is_written(tmp_path):
    out = tmp_path / "x.parquet"
    writer = RankedTableWriter(str(out), 3)
    with pytest.raises(ValueError, match="outside"):
        writer.add(3, {"a": 1})
    writer.add(0, {"a": 1})
    with pytest.raises(ValueError, match="added twice"):
        writer.add(0, {"a": 2})
    with pytest.raises(ValueError, match="1 rows added, 3 announced"):
        writer.close()
    assert not out.exists()
