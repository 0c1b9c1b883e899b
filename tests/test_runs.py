import json

from simplesafe.runs import is_done, redact, stage


def test_stage_writes_manifest_and_marker_then_skips(tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_text("data")
    calls = []
    for _ in range(2):
        with stage(tmp_path / "run", "s1", {"lr": 1}, inputs=[inp], seed=3) as st:
            if st.skipped:
                continue
            calls.append(1)
            (st.dir / "out.txt").write_text("x")
    assert calls == [1]
    m = json.loads((tmp_path / "run" / "s1" / "manifest.json").read_text())
    assert m["seed"] == 3 and str(inp) in m["inputs"] and "torch" in m["packages"]
    assert is_done(tmp_path / "run", "s1")


def test_failed_stage_leaves_no_marker(tmp_path):
    try:
        with stage(tmp_path, "s", {}) as st:
            raise ValueError("boom")
    except ValueError:
        pass
    assert not is_done(tmp_path, "s")


def test_force_reruns(tmp_path):
    with stage(tmp_path, "s", {}):
        pass
    with stage(tmp_path, "s", {}, force=True) as st:
        assert not st.skipped


def test_redact_secrets():
    assert redact({"api_key": "sk-1", "api_key_env": "OPENAI_API_KEY", "n": {"token": "t"}}) == {
        "api_key": "<redacted>", "api_key_env": "OPENAI_API_KEY", "n": {"token": "<redacted>"}}


def test_stale_temp_files_from_a_kill_are_removed_on_rerun(tmp_path):
    sdir = tmp_path / "s"
    sdir.mkdir()
    (sdir / ".out.jsonl.abc123.tmp").write_text("half")
    with stage(tmp_path, "s", {}):
        pass
    assert not list(sdir.rglob("*.tmp"))
