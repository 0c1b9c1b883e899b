"""The safety build end to end: a small real build on the shared corpora, its settings' checks, the CLI."""

import numpy as np
import pytest


# ---------------------------------------------------------------- a small real build (encoder + shared data)

SMALL = {"toxigen_annotated": 60, "implicit_hate": 60, "templates": 48, "stormfront": 40}


@pytest.mark.slow
def test_small_build_is_reproducible_leak_free_and_loadable(shared_data, tmp_path):
    from safetensors.numpy import load_file

    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier
    from simplesafe.safety.classifier import HateClassifier

    cfg = dict(data_dir=str(shared_data), limits=SMALL, finetune_epochs=0, heads=["logreg:1"], progress=False,
               corpus_weights={}, student=False,
               encoder_layers=None)
    a = build_safety_classifier(SafetyBuildConfig(out=str(tmp_path / "a"), **cfg))
    b = build_safety_classifier(SafetyBuildConfig(out=str(tmp_path / "b"), **cfg))
    wa, wb = load_file(str(tmp_path / "a" / "head.safetensors")), load_file(str(tmp_path / "b" / "head.safetensors"))
    np.testing.assert_array_equal(wa["w"], wb["w"])
    assert a["split_counts"] == b["split_counts"] and a["fingerprint"] == b["fingerprint"]
    for name, counts in a["split_counts"].items():
        assert counts["test"]["rows"] > 0 and counts["train"]["rows"] > 0, name
    assert set(a["operating_points"]) >= {"report", "recall_90", "fpr_05"}
    clf = HateClassifier(tmp_path / "a")
    p = clf.score(["I hate lesbian", "I am lesbian"])
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))


@pytest.mark.slow
def test_small_fine_tuned_build_stores_the_layers_and_scores_with_them(shared_data, tmp_path):
    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier
    from simplesafe.safety.classifier import ENCODER_FILE, HateClassifier

    cfg = dict(data_dir=str(shared_data), limits={**SMALL, "functional": 200}, finetune_epochs=1,
               finetune_batch_size=16, bf16=False, progress=False, student_dims=32, encoder_layers=None)
    meta = build_safety_classifier(SafetyBuildConfig(out=str(tmp_path / "ft"), **cfg))
    assert meta["head"] == "finetune:linear" and meta["encoder_weights"] == ENCODER_FILE
    assert (tmp_path / "ft" / ENCODER_FILE).exists()
    # the student and the cascade threshold are stored; the functional report covers every functionality
    assert (tmp_path / "ft" / "student" / "model.safetensors").exists() and meta["student"]["dims"] == 32
    assert 0 <= meta["cascade"]["student_below"] <= meta["threshold"]   # a settled part is never flagged
    from simplesafe.safety.functional import FUNCTIONALITY_LABELS

    assert set(meta["functional_test"]["functionalities"]) == set(FUNCTIONALITY_LABELS)
    assert meta["calibration"]["weighting"] == "balanced"
    assert not list(tmp_path.glob(".ft.*"))   # no staging folder left behind
    clf = HateClassifier(tmp_path / "ft")
    texts = ["I hate lesbian", "I am lesbian"]
    p = clf.score(texts)
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))
    # The scorer's encoder is the fine-tuned one, not the shared frozen encoder.
    from simplesafe.models.load import load_sentence_encoder
    from simplesafe.safety.classifier import encode_texts

    frozen = encode_texts(load_sentence_encoder("embedded:minilm"), texts, 128)
    assert not np.allclose(clf.embed(texts), frozen, atol=1e-4)
    # Test metrics were computed with the stored (float16) layers: rescoring the test texts reproduces them.
    again = build_safety_classifier(SafetyBuildConfig(out=str(tmp_path / "ft2"), **cfg))
    assert again["test_metrics"] == meta["test_metrics"]
    for name in (ENCODER_FILE, "head.safetensors", "student/model.safetensors", "student_head.safetensors"):
        assert (tmp_path / "ft" / name).read_bytes() == (tmp_path / "ft2" / name).read_bytes(), name


@pytest.mark.slow
def test_default_build_keeps_the_shipped_layers_and_fits_a_new_head(shared_data, tmp_path):
    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier
    from simplesafe.safety.classifier import ENCODER_FILE, HateClassifier, shipped_artifact_dir

    cfg = SafetyBuildConfig(out=str(tmp_path / "d"), data_dir=str(shared_data), limits={**SMALL, "functional": 120},
                            heads=["logreg:4"], progress=False, student_dims=32)
    assert cfg.finetune_epochs == 0 and cfg.encoder_layers == "shipped"
    meta = build_safety_classifier(cfg)
    assert (tmp_path / "d" / ENCODER_FILE).read_bytes() == (shipped_artifact_dir() / ENCODER_FILE).read_bytes()
    assert meta["encoder_weights"] == ENCODER_FILE and meta["head"] == "logreg:4"
    p = HateClassifier(tmp_path / "d").score(["Muslims are filthy rats.", "I am proud to be a Muslim."])
    assert p[0] > p[1]


def test_encoder_layers_cannot_be_fine_tuned_further(shared_data, tmp_path):
    from simplesafe.errors import ConfigError
    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier

    cfg = SafetyBuildConfig(out=str(tmp_path / "x"), data_dir=str(shared_data), limits={"templates": 40},
                            finetune_epochs=1, progress=False)
    with pytest.raises(ConfigError, match="encoder_layers"):
        build_safety_classifier(cfg)


def test_corpus_weights_must_name_loaded_corpora(shared_data, tmp_path):
    from simplesafe.errors import ConfigError
    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier

    cfg = SafetyBuildConfig(out=str(tmp_path / "x"), data_dir=str(shared_data), limits={"templates": 40},
                            corpus_weights={"implicit_hat": 2.0}, progress=False)
    with pytest.raises(ConfigError, match="implicit_hat"):
        build_safety_classifier(cfg)


@pytest.mark.slow
def test_build_safety_cli_writes_to_out_and_reuses_a_cached_build(shared_data, tmp_path):
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "simplesafe.cli", *args], capture_output=True, text=True)

    out = tmp_path / "cli"
    args = ["models", "build-safety", "--out", str(out), f"data_dir={shared_data}",
            "limits={toxigen_annotated: 60, templates: 60}", "heads=[logreg:1]", "finetune_epochs=0",
            "corpus_weights={}", "progress=false", "student=false", "encoder_layers=null"]
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert "AUROC" in res.stdout and (out / "safety.json").exists()
    again = cli(*args)
    assert again.returncode == 0 and "cached build" in again.stdout
    bad = cli("models", "build-safety", "--out", str(out), "data_dir=/nonexistent/x")
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr
