"""The prompt template a model was trained with travels with its folder."""

import json

from simplesafe.models.templates import record_template, recorded_template, resolve_template
from simplesafe.train.common import REPORT_TEMPLATE


class Tok:
    def __init__(self, chat):
        self.chat_template = chat


def test_recorded_then_resolved(tmp_path):
    assert recorded_template(tmp_path) is None
    record_template(tmp_path, "chat")
    assert recorded_template(tmp_path) == "chat"
    assert resolve_template(None, tmp_path, Tok(None)) == "chat"
    assert resolve_template("Q: {question} A:", tmp_path, Tok(None)) == "Q: {question} A:"  # explicit wins


def test_adapter_folder_falls_back_to_its_base(tmp_path):
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir(), adapter.mkdir()
    record_template(base, REPORT_TEMPLATE)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    assert recorded_template(adapter) == REPORT_TEMPLATE


def test_default_is_chat_for_instruct_tokenizers(tmp_path):
    assert resolve_template(None, tmp_path / "nothing", Tok("{{ messages }}")) == "chat"
    assert resolve_template("auto", "hub/name", Tok(None)) == REPORT_TEMPLATE
