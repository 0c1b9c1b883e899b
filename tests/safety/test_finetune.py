"""Fine-tuning the bundled MiniLM encoder: what changes, what is stored, and that it loads back."""

import numpy as np
import pytest
import torch

from simplesafe.errors import ModelLoadError
from simplesafe.safety.finetune import (TRAINED_PREFIX, FinetuneSettings, finetune_encoder, fresh_encoder,
                                        load_trained_state)

HATEFUL = ["I hate all of them, they are vermin.", "Those people should be thrown out of the country.",
           "They are animals and do not deserve rights.", "Nobody wants their kind living here.",
           "Their whole group is a disease on society.", "They should all be locked away forever."]
BENIGN = ["My neighbours cooked dinner for the whole street.", "The museum opens at nine on Sundays.",
          "She moved here to study chemistry.", "Many families celebrate the holiday with music.",
          "The river floods every spring after the snow melts.", "He teaches children to read."]
TEXTS = HATEFUL + BENIGN
LABELS = np.array([1] * len(HATEFUL) + [0] * len(BENIGN))


def _train(seed=0):
    enc = fresh_encoder("embedded:minilm")
    settings = FinetuneSettings(epochs=2, lr=1e-4, batch_size=4, seed=seed, bf16=False, progress=False)
    state, head = finetune_encoder(enc, TEXTS, LABELS, np.ones(len(TEXTS)), settings)
    return enc, state, head


@pytest.fixture(scope="module")
def trained():
    return _train()


def test_fine_tuning_changes_the_layers_only_and_never_the_shared_encoder(trained):
    from simplesafe.models.load import load_sentence_encoder

    enc, state, head = trained
    shared = load_sentence_encoder("embedded:minilm")[0].auto_model.state_dict()
    assert state and all(k.startswith(TRAINED_PREFIX) for k in state)
    changed = [k for k in state if not torch.equal(state[k], shared[k])]
    assert changed, "training moved no weight"
    own = enc[0].auto_model.state_dict()
    for k, v in own.items():
        if not k.startswith(TRAINED_PREFIX):
            assert torch.equal(v, shared[k]), k          # word/position embeddings stay frozen
    assert head["w"].shape == (enc.get_embedding_dimension(),) and head["b"].shape == (1,)


def test_the_head_separates_its_training_texts(trained):
    from simplesafe.safety.classifier import encode_texts, head_logits

    enc, _, head = trained
    z = head_logits(head, encode_texts(enc, TEXTS, 128))
    assert z[LABELS == 1].min() > z[LABELS == 0].max()


def test_fine_tuning_is_reproducible_for_a_seed(trained):
    _, state, head = trained
    _, state2, head2 = _train(seed=0)
    for k in state:
        assert torch.equal(state[k], state2[k]), k
    np.testing.assert_array_equal(head["w"], head2["w"])


def test_stored_layers_load_into_a_fresh_encoder(trained):
    from simplesafe.safety.classifier import encode_texts

    enc, state, _ = trained
    other = fresh_encoder("embedded:minilm")
    load_trained_state(other, state)
    np.testing.assert_allclose(encode_texts(other, TEXTS, 128), encode_texts(enc, TEXTS, 128), atol=1e-6)


def test_layers_that_do_not_fit_are_a_clear_error(trained):
    _, state, _ = trained
    other = fresh_encoder("embedded:minilm")
    missing = dict(state)
    missing.pop(next(iter(missing)))
    with pytest.raises(ModelLoadError, match="does not fit the encoder"):
        load_trained_state(other, missing, "x.safetensors")
    key = next(iter(state))
    bad = dict(state)
    bad[key] = torch.zeros(3)
    with pytest.raises(ModelLoadError, match=f"{key} has shape"):
        load_trained_state(other, bad, "x.safetensors")
