import json

import pytest

from simplesafe.errors import DataError
from simplesafe.io import append_jsonl, read_jsonl_tolerant, read_rows, require, write_rows


@pytest.mark.parametrize("ext", ["jsonl", "json", "csv", "tsv", "parquet"])
def test_round_trip(tmp_path, ext):
    rows = [{"id": "a", "text": "hello, \"world\"\tx"}, {"id": "b", "text": "second"}]
    p = tmp_path / f"rows.{ext}"
    write_rows(p, rows)
    got = [r for _, r in read_rows(p)]
    assert [r["id"] for r in got] == ["a", "b"]
    assert got[0]["text"] == rows[0]["text"]


def test_jsonl_error_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataError) as e:
        list(read_rows(p))
    assert "x.jsonl, line 2" in str(e.value)


def test_skip_mode_records_reject(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n\xff\xfe\n[1,2]\n{"a": 2}\n')
    rejects = []
    rows = list(read_rows(p, on_error="skip", rejects=rejects))
    assert [r["a"] for _, r in rows] == [1, 2]
    assert [r["line"] for r in rejects] == [2, 3]
    assert "UTF-8" in rejects[0]["reason"]


def test_csv_wrong_field_count(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match="line 3"):
        list(read_rows(p))


def test_require_names_field(tmp_path):
    with pytest.raises(DataError) as e:
        require({"q": 3}, "q", "f.jsonl", 7)
    assert str(e.value) == "f.jsonl, line 7, field 'q': expected str, got int"


def test_tolerant_reader_ignores_torn_last_line(tmp_path):
    p = tmp_path / "log.jsonl"
    append_jsonl(p, {"i": 1})
    with open(p, "a") as fh:
        fh.write('{"i": 2')  # a crash mid-write
    assert read_jsonl_tolerant(p) == [{"i": 1}]


def test_write_is_atomic_on_failure(tmp_path):
    p = tmp_path / "out.jsonl"
    write_rows(p, [{"a": 1}])

    class Boom:
        def __iter__(self):
            yield {"a": 2}
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_rows(p, Boom())
    assert [json.loads(l) for l in p.read_text().splitlines()] == [{"a": 1}]
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]


def test_hub_path_parsing_and_offline_error():
    from simplesafe.io import parse_hub_path

    assert parse_hub_path("hub:Anthropic/hh-rlhf?split=test&data_dir=harmless-base") == {
        "path": "Anthropic/hh-rlhf", "name": None, "data_dir": "harmless-base", "split": "test", "revision": None}
    with pytest.raises(DataError, match="unknown parameter"):
        parse_hub_path("hub:x/y?splt=train")
    # HF_HUB_OFFLINE=1 in the tests: the error says how to work offline
    with pytest.raises(DataError, match="export it where the hub is reachable"):
        list(read_rows("hub:no-such-org/no-such-dataset?split=train"))
