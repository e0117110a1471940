"""The backbone adapter's hand-written forward against keras-hub's own, for every family.

`keras_space._backbones` re-runs each family's embedding stack and Transformer layers
piece by piece (P-tuning splices its prompt between the two). Here that forward is
compared with the backbone's own functional call on the same inputs: a test that fails
the day keras-hub changes a family's internals. In float64 the two run the same layers
in the same order, so they agree to rounding (1e-12 on hidden states of order 1).
"""

import keras
import keras_hub
import numpy as np
import pytest

from keras_space import _backbones
from tests.models.p_tuning_backbones_test import FAMILIES, LENGTH, rows, small_backbone

pytestmark = pytest.mark.all_backends


def keras_hub_forward(backbone, x):
    out = backbone(x)
    return out["sequence_output"] if isinstance(out, dict) else out


@pytest.mark.parametrize("kind", FAMILIES)
def test_hand_written_forward_equals_keras_hub(kind):
    backbone = small_backbone(kind, dtype="float64")
    rng = np.random.default_rng(3)
    for w in backbone.weights:   # every weight random (LayerNorms and biases too)
        w.assign(rng.normal(0, 0.5, w.shape))
    ids, mask = rows(0, left=kind == "gpt2")   # garbage ids at the padded positions
    x = {"token_ids": ids, "padding_mask": mask}
    segments = None
    if _backbones.has_segment_ids(backbone):
        segments = x["segment_ids"] = rng.integers(0, 2, ids.shape).astype("int32")
    hidden = _backbones.finish_embeddings(backbone, _backbones.embed_tokens(backbone, ids),
                                          segments)
    ours = _backbones.run_transformer(backbone, hidden, mask)
    assert tuple(ours.shape) == (len(ids), LENGTH, _backbones.hidden_dim(backbone))
    real = mask.astype(bool)   # keras-hub leaves padded positions unspecified too
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours)[real],
                               keras.ops.convert_to_numpy(keras_hub_forward(backbone, x))[real],
                               rtol=0, atol=1e-12)


def test_families_dispatch_on_keras_hub_classes():
    m = keras_hub.models
    xlmr = m.XLMRobertaBackbone(vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8,
                                intermediate_dim=16, max_sequence_length=32)
    assert _backbones.family(xlmr) == "roberta"   # a subclass counts as its parent
    assert [_backbones.family(small_backbone(k)) for k in FAMILIES] == [
        "bert", "bert", "bert", "roberta", "roberta", "gpt2"]
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert _backbones.family(plain) is None
    with pytest.raises(ValueError, match="backbone=Sequential"):
        _backbones.check_embedding_stack(plain)
