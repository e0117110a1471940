"""Google-format BERT checkpoints into keras-hub (TensorFlow-only: the reader is
`tf.train.load_checkpoint`).

The original BERT release (and the Chinese BERT/RoBERTa-wwm checkpoints that
bert4keras users hold) is a `bert_config.json`, a TF1 checkpoint whose variables
are named `bert/embeddings/word_embeddings`, `bert/encoder/layer_N/...`,
`bert/pooler/dense/...` and, for the masked-LM head, `cls/predictions/...`, and a
`vocab.txt`.
"""

import collections
import json
import os

import keras
import numpy as np

from keras_space import _backbones
from keras_space.api_export import keras_space_export
from keras_space.utils import validation
from keras_space.utils._lazy import tensorflow as tf

BertCheckpoint = keras_space_export("keras_space.models.BertCheckpoint", serializable=False)(
    collections.namedtuple("BertCheckpoint", ["backbone", "masked_lm_head", "tokenizer"])
)
BertCheckpoint.__doc__ = """What `bert_from_checkpoint` read: a keras-hub `BertBackbone`, the
masked-LM head (a `keras_hub.layers.MaskedLMHead` tied to the token embedding, or None
when the checkpoint has no `cls/predictions`) and a `BertTokenizer` (or None)."""

_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings")


class _Reader:
    """Reads named variables of one checkpoint, refusing missing or mis-shaped ones."""

    def __init__(self, path):
        try:
            self.reader = tf.train.load_checkpoint(path)
        except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as error:
            raise ValueError(
                f"`checkpoint_path` is not a readable TensorFlow checkpoint. Received: "
                f"checkpoint_path={path!r} ({str(error).splitlines()[0]})"
            ) from None
        self.path = path
        self.shapes = self.reader.get_variable_to_shape_map()

    def __contains__(self, name):
        return name in self.shapes

    def read(self, name, shape):
        if name not in self.shapes:
            raise ValueError(
                f"The checkpoint {self.path!r} has no variable {name!r} (a Google-format BERT "
                "checkpoint names its weights bert/embeddings/..., bert/encoder/layer_N/..., "
                "bert/pooler/...)."
            )
        if tuple(self.shapes[name]) != tuple(shape):
            raise ValueError(
                f"The checkpoint variable {name!r} has shape {tuple(self.shapes[name])}; "
                f"bert_config.json implies {tuple(shape)}."
            )
        value = self.reader.get_tensor(name)
        if not np.all(np.isfinite(value)):
            raise ValueError(
                f"The checkpoint variable {name!r} holds {int(np.sum(~np.isfinite(value)))} "
                f"non-finite values: the checkpoint {self.path!r} is damaged."
            )
        return value


def _checkpoint_prefix(path):
    """A checkpoint prefix from a prefix or a folder holding exactly one checkpoint."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return path
    latest = tf.train.latest_checkpoint(path)  # folders with a `checkpoint` state file
    if latest:
        return latest
    prefixes = sorted(name[: -len(".index")] for name in os.listdir(path) if name.endswith(".index"))
    if len(prefixes) != 1:
        raise ValueError(
            "`checkpoint_path` must be a checkpoint prefix or a folder holding one checkpoint. "
            f"Received: checkpoint_path={path!r}, a folder holding "
            + (f"{len(prefixes)} checkpoints {prefixes}: name one" if prefixes else "none")
        )
    return os.path.join(path, prefixes[0])


def _read_config(config_path):
    """bert_config.json, its sizes checked."""
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError, TypeError) as error:
        raise ValueError(
            f"`config_path` must be a readable bert_config.json. Received: "
            f"config_path={config_path!r} ({error})"
        ) from None
    missing = [k for k in _CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"bert_config.json {config_path!r} lacks {missing}.")
    for key in (*_CONFIG_KEYS, "type_vocab_size"):
        if key in config:
            config[key] = validation.positive_int(f"bert_config.json's {key}", config[key])
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if key in config:
            config[key] = validation.probability(f"bert_config.json's {key}", config[key])
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(
            "keras-hub's BertBackbone uses the exact GELU. Received: hidden_act="
            f"{config['hidden_act']!r} in {config_path!r}"
        )
    return config


def _assign_dense(reader, prefix, layer, shape_in, shape_out):
    """A Google `dense` (kernel (in, out), bias (out,)) into a Dense or EinsumDense."""
    kernel = reader.read(f"{prefix}/kernel", (int(np.prod(shape_in)), int(np.prod(shape_out))))
    layer.kernel.assign(kernel.reshape(tuple(layer.kernel.shape)))
    bias = reader.read(f"{prefix}/bias", (int(np.prod(shape_out)),))
    layer.bias.assign(bias.reshape(tuple(layer.bias.shape)))


def _assign_norm(reader, prefix, layer, dim):
    layer.gamma.assign(reader.read(f"{prefix}/gamma", (dim,)))
    layer.beta.assign(reader.read(f"{prefix}/beta", (dim,)))


@keras_space_export("keras_space.models.bert_from_checkpoint", serializable=False, backends=("tensorflow",))
def bert_from_checkpoint(config_path, checkpoint_path, vocab_path=None, lowercase=True,
                         dtype=None):
    """A keras-hub `BertBackbone` (+ masked-LM head, tokenizer) from a Google-format checkpoint.

    Reads `bert_config.json` and the TF checkpoint with TensorFlow's own reader
    (`tf.train.load_checkpoint`); every weight is checked by name and shape
    (a missing, mis-shaped or non-finite variable raises a `ValueError` naming
    it; a square kernel stored transposed has the right shape and cannot be
    told apart: compare an output with the original implementation once). The
    masked-LM head is read when the checkpoint has `cls/predictions/...`
    (a `MaskedLMHead` tied to the token embedding, GELU and LayerNorm epsilon
    1e-12 as in the original). Optimizer slots and the next-sentence head are
    ignored.

    Args:
        config_path: path to `bert_config.json`.
        checkpoint_path: the checkpoint prefix (`.../bert_model.ckpt`) or a folder
            holding one checkpoint (its `checkpoint` state file, else its one
            `*.index` file; a folder of several is refused, naming them).
        vocab_path: optional `vocab.txt`; gives a `keras_hub.tokenizers.BertTokenizer`.
        lowercase: whether the tokenizer lowercases (True for "uncased" and
            Chinese checkpoints). Defaults to `True`.
        dtype: optional dtype policy of the backbone.

    Returns:
        A `BertCheckpoint(backbone, masked_lm_head, tokenizer)` named tuple.

    Example:

    ```python notest
    # needs a downloaded release; tests/models/bert_checkpoint_test.py makes one from MiniLM
    from keras_space.models import bert_from_checkpoint

    bert = bert_from_checkpoint("chinese_L-12_H-768_A-12/bert_config.json",
                                "chinese_L-12_H-768_A-12/bert_model.ckpt",
                                "chinese_L-12_H-768_A-12/vocab.txt")
    outputs = bert.backbone(bert.tokenizer(["..."]))  # after packing; see README
    ```
    """
    import keras_hub

    lowercase = validation.strict_bool("lowercase", lowercase)
    config = _read_config(config_path)
    reader = _Reader(_checkpoint_prefix(checkpoint_path))

    h, n_layers = config["hidden_size"], config["num_hidden_layers"]
    heads, inter = config["num_attention_heads"], config["intermediate_size"]
    vocab, positions = config["vocab_size"], config["max_position_embeddings"]
    segments = config.get("type_vocab_size", 2)
    if h % heads:
        raise ValueError(f"hidden_size={h} is not divisible by num_attention_heads={heads}.")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocab, num_layers=n_layers, num_heads=heads, hidden_dim=h,
        intermediate_dim=inter, dropout=config.get("hidden_dropout_prob", 0.1),
        max_sequence_length=positions, num_segments=segments, dtype=dtype,
    )
    e = "bert/embeddings"
    embeddings = dict(zip(("token_embedding", "position_embedding", "segment_embedding"),
                          _backbones.embedding_parts(backbone), strict=True))
    embeddings["token_embedding"].embeddings.assign(reader.read(f"{e}/word_embeddings", (vocab, h)))
    embeddings["position_embedding"].position_embeddings.assign(
        reader.read(f"{e}/position_embeddings", (positions, h)))
    embeddings["segment_embedding"].embeddings.assign(
        reader.read(f"{e}/token_type_embeddings", (segments, h)))
    _assign_norm(reader, f"{e}/LayerNorm", _backbones.embeddings_norm(backbone), h)
    for i, layer in enumerate(_backbones.transformer_layers(backbone)):
        p, parts = f"bert/encoder/layer_{i}", _backbones.transformer_sublayers(layer)
        attention = parts["attention"]
        for role, dense in (("query", attention.query_dense), ("key", attention.key_dense),
                            ("value", attention.value_dense)):
            _assign_dense(reader, f"{p}/attention/self/{role}", dense, h, h)
        _assign_dense(reader, f"{p}/attention/output/dense", attention.output_dense, h, h)
        _assign_norm(reader, f"{p}/attention/output/LayerNorm", parts["attention_norm"], h)
        _assign_dense(reader, f"{p}/intermediate/dense", parts["intermediate"], h, inter)
        _assign_dense(reader, f"{p}/output/dense", parts["output"], inter, h)
        _assign_norm(reader, f"{p}/output/LayerNorm", parts["output_norm"], h)
    _assign_dense(reader, "bert/pooler/dense", _backbones.pooler(backbone), h, h)

    head = None
    if "cls/predictions/output_bias" in reader:
        head = keras_hub.layers.MaskedLMHead(
            vocabulary_size=vocab, token_embedding=backbone.token_embedding,
            intermediate_activation=keras.activations.gelu, layer_norm_epsilon=1e-12,
            dtype=backbone.dtype_policy, name="mlm_head",
        )
        head.build((None, None, h))
        c = "cls/predictions"
        _assign_dense(reader, f"{c}/transform/dense", head._intermediate_dense, h, h)
        _assign_norm(reader, f"{c}/transform/LayerNorm", head._intermediate_layer_norm, h)
        head._bias.assign(reader.read(f"{c}/output_bias", (vocab,)))
    tokenizer = None
    if vocab_path is not None:
        tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=os.fspath(vocab_path),
                                                    lowercase=lowercase)
        if tokenizer.vocabulary_size() != vocab:
            raise ValueError(
                f"`vocab_path` has {tokenizer.vocabulary_size()} tokens; bert_config.json says "
                f"vocab_size={vocab}. Received: vocab_path={vocab_path!r}"
            )
    return BertCheckpoint(backbone, head, tokenizer)
