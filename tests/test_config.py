from typing import Literal

import pytest
from pydantic import Field

from simplesafe.config import StageConfig, load_config, parse_overrides
from simplesafe.errors import ConfigError


class Lora(StageConfig):
    r: int = Field(8, ge=1)


class Cfg(StageConfig):
    lr: float = 1e-4
    mode: Literal["full", "lora", "qlora"] = "lora"
    lora: Lora = Lora()


def test_overrides_parse_yaml_values_and_dotted_keys():
    assert parse_overrides(["lr=2e-5", "lora.r=16", "name=x", "flag=true"]) == {
        "lr": 2e-5, "lora": {"r": 16}, "name": "x", "flag": True}


def test_yaml_plus_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lr: 0.001\nlora: {r: 4}\n")
    cfg = load_config(Cfg, p, ["lora.r=32"])
    assert cfg.lr == 0.001 and cfg.lora.r == 32 and cfg.mode == "lora"


def test_unknown_key_names_key_and_allowed(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, None, ["lora.rank=4"])
    msg = str(e.value)
    assert "unknown key 'lora.rank'" in msg and "allowed keys here: r" in msg


def test_bad_literal_names_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, None, ["mode=fast"])
    assert "'mode'" in str(e.value) and "'full'" in str(e.value) and "'qlora'" in str(e.value)


def test_section_prefix_in_errors(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("sft:\n  lr: abc\n")
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, p, [], section="sft")
    assert "sft.lr" in str(e.value)


def test_invalid_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("a: 1\nb: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, p)
    assert "bad.yaml" in str(e.value) and "line" in str(e.value)


def test_override_without_equals():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])
