"""Generation: AlpacaEval-format output, several seeds, and a killed run that resumes."""

import json

import pytest

import simplesafe.eval.generate as gen_mod
from simplesafe.errors import DataError
from simplesafe.eval.generate import GenerateConfig, generate_answers, read_prompts


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "prompts.jsonl"
    rows = [{"id": f"p{i}", "prompt": f"Why is the sky blue {i}?", "reference": "Because of light."} for i in range(5)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _cfg(tiny_model_dir, prompts, out):
    return GenerateConfig(model=str(tiny_model_dir), prompts=str(prompts), out=str(out), seeds=[0, 1],
                          max_new_tokens=6, batch_size=2, generator="tiny")


def test_generate_and_resume_after_kill(tiny_model_dir, prompts, tmp_path, monkeypatch):
    out = tmp_path / "gen.jsonl"
    real = gen_mod._generate_batch
    calls = {"n": 0}

    def dies_after_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt  # the job is killed mid-run
        return real(*args, **kwargs)

    monkeypatch.setattr(gen_mod, "_generate_batch", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate_answers(_cfg(tiny_model_dir, prompts, out), progress=False)
    progress = out.with_name(out.name + ".progress.jsonl")
    assert len(progress.read_text().splitlines()) == 4 and not out.exists()
    with open(progress, "a") as fh:  # a kill during a write leaves a torn last line
        fh.write('{"id": "p4", "se')

    seen = []

    def counting(model, tok, batch, cfg, seed, **kw):
        seen.extend(batch)
        return real(model, tok, batch, cfg, seed, **kw)

    monkeypatch.setattr(gen_mod, "_generate_batch", counting)
    res = generate_answers(_cfg(tiny_model_dir, prompts, out), progress=False)
    assert res["n_resumed"] == 4 and res["n_generated"] == 6 and len(seen) == 6
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 10
    assert {(r["id"], r["seed"]) for r in rows} == {(f"p{i}", s) for i in range(5) for s in (0, 1)}
    for r in rows:
        assert set(r) >= {"instruction", "output", "generator", "id", "seed", "reference"}
        assert r["generator"] == "tiny" and isinstance(r["output"], str)
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    assert meta["params"]["max_new_tokens"] == 6 and meta["params"]["seeds"] == [0, 1]
    # every answer has its own seed: in fp32 the answers do not depend on the batch they were decoded in
    monkeypatch.setattr(gen_mod, "_generate_batch", real)
    outs = []
    for bs in (2, 3):
        f = tmp_path / f"fp32-{bs}.jsonl"
        generate_answers(_cfg(tiny_model_dir, prompts, f).model_copy(update={"batch_size": bs, "dtype": "float32"}),
                         progress=False)
        outs.append([json.loads(x)["output"] for x in f.read_text().splitlines()])
    assert outs[0] == outs[1]
    # a rerun is free
    monkeypatch.setattr(gen_mod, "_generate_batch", counting)
    seen.clear()
    assert generate_answers(_cfg(tiny_model_dir, prompts, out), progress=False)["n_generated"] == 0 and not seen


def test_prompt_file_errors(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"id": 1, "prompt": "a"}) + "\n" + json.dumps({"id": 1, "prompt": "b"}) + "\n")
    with pytest.raises(DataError, match="line 2.*duplicate"):
        read_prompts(p)
    p.write_text(json.dumps({"text": "a"}) + "\n")
    with pytest.raises(DataError, match="line 1.*prompt"):
        read_prompts(p)


def test_progress_from_other_settings_is_refused(tmp_path, prompts):
    from simplesafe.errors import ConfigError

    out = tmp_path / "g.jsonl"
    out.with_name(out.name + ".progress.jsonl").write_text(
        json.dumps({"id": "p0", "seed": 0, "output": "x", "_params": {"model": "other"}}) + "\n")
    with pytest.raises(ConfigError, match="other generation parameters"):
        generate_answers(GenerateConfig(model="unused", prompts=str(prompts), out=str(out)), progress=False)


def test_progress_written_under_the_older_q_template_still_resumes(prompts, tmp_path):
    """The default template moved from `{q}` to the report's `{question}` spelling; the prompt text is the same."""
    from simplesafe.runs import file_sha256

    out = tmp_path / "gen.jsonl"
    from simplesafe.text.prompt import REPORT_TEMPLATE

    cfg = GenerateConfig(model="no-model-needed", prompts=str(prompts), out=str(out), seeds=[0], generator="g",
                         template=REPORT_TEMPLATE)
    params = {**gen_mod.generation_params(cfg), "prompts_sha256": file_sha256(prompts)}
    old = {**params, "template": params["template"].replace("{question}", "{q}")}
    assert old != params
    progress = out.with_name(out.name + ".progress.jsonl")
    progress.write_text("".join(json.dumps({"id": f"p{i}", "seed": 0, "output": f"answer {i}", "_params": old}) + "\n"
                                for i in range(5)))
    res = generate_answers(cfg, progress=False)  # everything is done: no model is loaded
    assert res["n_resumed"] == 5 and res["n_generated"] == 0
    other = {**params, "temperature": 0.1}
    progress.write_text(json.dumps({"id": "p0", "seed": 0, "output": "x", "_params": other}) + "\n")
    from simplesafe.errors import ConfigError

    with pytest.raises(ConfigError, match="other generation parameters"):
        generate_answers(cfg, progress=False)
