"""The `toxicity:` section: accepted by every stage that scores text, validated, and turned into a scorer."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplesafe.errors import ConfigError
from simplesafe.text.toxicity_section import ToxicityConfig, scorer_from_config


def _stage_configs():
    from simplesafe.data.config import DataBuildConfig
    from simplesafe.eval.metrics import MetricsConfig
    from simplesafe.eval.run import EvalConfig
    from simplesafe.train.rewards import RewardSource

    return [(DataBuildConfig, {}), (MetricsConfig, {}), (EvalConfig, {}), (RewardSource, {"kind": "safety"})]


def _doc_sections():
    """Every YAML block of docs/safety.md that holds a `toxicity:` section."""
    import re

    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "safety.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]
    return [b["toxicity"] for b in blocks if isinstance(b, dict) and "toxicity" in b]


def test_docs_toxicity_sections_validate_in_every_stage():
    from simplesafe.config import validate

    sections = _doc_sections()
    assert len(sections) >= 3 and {s["backend"] for s in sections} >= {"ensemble", "detoxify", "hf"}
    for cls, base in _stage_configs():
        for section in sections:
            cfg = validate(cls, {**base, "toxicity": section})
            assert cfg.toxicity.backend == section["backend"], cls.__name__


def test_section_defaults_plain_name_and_old_key():
    from simplesafe.config import validate

    assert ToxicityConfig().model_type == "unbiased"  # the report's Detoxify model
    for cls, base in _stage_configs():
        assert validate(cls, base).toxicity.backend == "ensemble"
        assert validate(cls, {**base, "toxicity": "profanity-check"}).toxicity.backend == "profanity-check"
        old = validate(cls, {**base, "toxicity_backend": "profanity-check"})
        assert old.toxicity.backend == "profanity-check"
        both = validate(cls, {**base, "toxicity_backend": "hf", "toxicity": {"model_path": "/m"}})
        assert both.toxicity.backend == "hf" and both.toxicity.model_path == "/m"
        with pytest.raises(ConfigError, match="disagree"):
            validate(cls, {**base, "toxicity_backend": "hf", "toxicity": {"backend": "ensemble"}})
        with pytest.raises(ConfigError, match="unknown toxicity backend 'perspective'"):
            validate(cls, {**base, "toxicity": {"backend": "perspective"}})
        with pytest.raises(ConfigError, match="'checkpoint' is an option of the detoxify backend"):
            validate(cls, {**base, "toxicity": {"checkpoint": "x.ckpt"}})
        with pytest.raises(ConfigError, match="unknown key 'toxicity.model_typ'"):
            validate(cls, {**base, "toxicity": {"backend": "detoxify", "model_typ": "original"}})
        with pytest.raises(ConfigError, match="model_type"):
            validate(cls, {**base, "toxicity": {"backend": "detoxify", "model_type": "huge"}})


def test_older_import_path_still_works():
    import simplesafe.text.toxicity as toxicity

    assert toxicity.ToxicityConfig is ToxicityConfig and toxicity.scorer_from_config is scorer_from_config
    with pytest.raises(AttributeError):
        toxicity.NoSuchName


def test_full_dump_of_a_section_validates_again():
    cfg = ToxicityConfig(backend="hf", model_path="/m", benign_labels=["safe"])
    assert ToxicityConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_detoxify_section_builds_the_scorer_with_model_type(fake_detoxify):
    scorer = scorer_from_config(fake_detoxify.section)
    s = scorer.score(["you idiot", "hello"])
    assert fake_detoxify.built[-1]["model_type"] == "unbiased"
    assert fake_detoxify.built[-1]["checkpoint"] == fake_detoxify.section["checkpoint"]
    assert fake_detoxify.built[-1]["huggingface_config_path"] == fake_detoxify.section["config_path"]
    assert set(s) == {"toxic", "insult", "toxicity"} and s["toxicity"][0] > 0.5 > s["toxicity"][1]
    scorer_from_config({**fake_detoxify.section, "model_type": "original"})
    assert fake_detoxify.built[-1]["model_type"] == "original"


def test_section_threshold_replaces_the_stage_threshold_and_conflicts_are_errors():
    from simplesafe.config import validate
    from simplesafe.data.config import DataBuildConfig
    from simplesafe.eval.metrics import MetricsConfig

    assert validate(DataBuildConfig, {}).toxicity_threshold(0.1) == 0.1
    assert validate(DataBuildConfig, {"toxicity": {"threshold": 0.3}}).toxicity_threshold(0.1) == 0.3
    assert validate(MetricsConfig, {"toxicity": {"threshold": 0.2}, "toxicity_max": 0.2}).toxicity_threshold(0.2) == 0.2
    with pytest.raises(ConfigError, match="disagree"):
        validate(DataBuildConfig, {"max_toxicity": 0.2, "toxicity": {"threshold": 0.3}})
    with pytest.raises(ConfigError, match="disagree"):
        validate(MetricsConfig, {"toxicity_max": 0.2, "toxicity": {"threshold": "recall_90"}})
