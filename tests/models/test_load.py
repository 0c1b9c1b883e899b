import pytest

from simplesafe.errors import ModelLoadError
from simplesafe.models.load import load_causal_lm, load_sentence_encoder


def test_unreachable_hub_id_says_how_to_use_a_local_copy():
    with pytest.raises(ModelLoadError) as e:
        load_causal_lm("no-such-org/no-such-model-xyz")
    msg = str(e.value)
    assert "local" in msg and "--local-dir" in msg and "no-such-org/no-such-model-xyz" in msg


def test_missing_local_dir_is_clear(tmp_path):
    with pytest.raises(ModelLoadError):
        load_causal_lm(str(tmp_path / "nothing-here" / "model"))


def test_embedded_encoder_embeds_offline():
    enc = load_sentence_encoder("embedded:minilm")
    v = enc.encode(["a cat", "a kitten", "tax law"], normalize_embeddings=True)
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])


def test_trust_remote_code_warns(tiny_model_dir, caplog):
    with caplog.at_level("WARNING"):
        load_causal_lm(str(tiny_model_dir), trust_remote_code=True)
    assert "trust_remote_code=True" in caplog.text


def test_saved_model_folder_follows_the_umask(tmp_path):
    """save_pretrained goes through a mkdtemp folder (0o700); the result is readable like a mkdir'd folder."""
    import os
    import stat

    from simplesafe.models.load import save_pretrained

    class FakeModel:
        def save_pretrained(self, path, safe_serialization=True):
            (path / "model.safetensors").write_bytes(b"x")

    old = os.umask(0o022)
    try:
        out = save_pretrained(FakeModel(), None, tmp_path / "model")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(out / "model.safetensors").st_mode) == 0o644
