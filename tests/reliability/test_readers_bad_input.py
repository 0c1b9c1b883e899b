"""Every reader stops on bad input with an error naming file, line and field (or skips it
into rejects with a reason when asked); the CLI turns that into exit code 2."""

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from simplesafe.config import load_config, StageConfig
from simplesafe.errors import ConfigError, DataError
from simplesafe.io import check_unique_ids, read_lines, read_rows, require


@pytest.mark.parametrize("ext", ["jsonl", "csv", "tsv", "json"])
def test_empty_file_yields_nothing(tmp_path, ext):
    p = tmp_path / f"empty.{ext}"
    p.write_text("" if ext != "json" else "[]")
    assert list(read_rows(p)) == []


@pytest.mark.parametrize("ext", ["jsonl", "csv", "tsv"])
def test_non_utf8_names_file(tmp_path, ext):
    p = tmp_path / f"bad.{ext}"
    sep = "," if ext == "csv" else "\t"
    head = b"" if ext == "jsonl" else f"a{sep}b\n".encode()
    p.write_bytes(head + (b'{"a": "\xff"}\n' if ext == "jsonl" else b"1" + sep.encode() + b"\xff\n"))
    with pytest.raises(DataError) as e:
        list(read_rows(p))
    assert "bad." in str(e.value) and "UTF-8" in str(e.value)


def test_line_over_one_megabyte(tmp_path):
    p = tmp_path / "big.jsonl"
    p.write_text('{"a": 1}\n' + json.dumps({"a": "x" * 1_100_000}) + "\n")
    with pytest.raises(DataError, match=r"big.jsonl, line 2: line is .* over the"):
        list(read_rows(p))


def test_wrong_type_and_missing_field_named():
    with pytest.raises(DataError, match=r"f.jsonl, line 3, field 'question': missing required field"):
        require({}, "question", "f.jsonl", 3)
    with pytest.raises(DataError, match=r"field 'score': expected int"):
        require({"score": "high"}, "score", "f.jsonl", 4, kind=int)


def test_duplicate_ids(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n')
    with pytest.raises(DataError, match=r"d.jsonl, line 3, field 'id': duplicate id 'a' \(first seen on line 1\)"):
        check_unique_ids(read_rows(p), p)


def test_one_article_per_line_non_utf8(tmp_path):
    p = tmp_path / "wiki.txt"
    p.write_bytes(b"fine line\nbad \xc3\x28 line\n")
    with pytest.raises(DataError, match=r"wiki.txt, line 2"):
        list(read_lines(p))


def test_malformed_parquet(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read Parquet"):
        list(read_rows(p))


class _Cfg(StageConfig):
    n: int = 1


@pytest.mark.parametrize("text,needle", [
    ("- a\n- b\n", "expected a mapping"),
    ("n: [1,\n", "invalid YAML"),
    ("n: many\n", "bad value for 'n'"),
    ("m: 1\n", "unknown key 'm'"),
])
def test_bad_yaml_configs(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(_Cfg, p)


def test_non_utf8_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"n: \xff\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(_Cfg, p)


def test_cli_bad_config_exit_2_no_traceback(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("tiny_model: {hidden_size: -3}\n")
    res = subprocess.run([sys.executable, "-m", "simplesafe.cli", "models", "build-tiny", str(p)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "tiny_model.hidden_size" in res.stderr and "Traceback" not in res.stderr


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_jsonl_reader_never_crashes_unexpectedly(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("h") / "x.jsonl"
    p.write_text(text, encoding="utf-8")
    rejects = []
    try:
        list(read_rows(p, on_error="skip", rejects=rejects))
    except DataError:
        pytest.fail("skip mode must not raise on row-level problems")
