"""The heads of the safety build, on a hand-made separable problem."""

import numpy as np
import pytest

from simplesafe.safety.classifier import head_logits
from simplesafe.safety.heads import fit_head


@pytest.mark.parametrize("spec", ["logreg:1", "mlp:16"])
def test_heads_learn_a_separable_problem_and_numpy_forward_matches(spec):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    weights = fit_head(spec, x, y, np.ones(2000), seed=0)
    z = head_logits(weights, x)
    assert z.shape == (2000,)
    assert ((z > 0) == y).mean() > 0.9


def test_unknown_head_is_a_config_error():
    from simplesafe.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown head"):
        fit_head("forest:3", np.zeros((4, 2)), np.array([0, 1, 0, 1]), np.ones(4), 0)
