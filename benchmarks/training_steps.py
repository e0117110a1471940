"""Where one training step's time goes: the vMF-VAE example and P-tuning on MiniLM.

Run: python benchmarks/training_steps.py
Prints one JSON object. Median of 30 `train_on_batch` calls (after warm-up),
and of the same number of calls of each part alone inside `tf.function`:

- vMF-VAE (examples/vmf_vae.py: 64-256-128-5 encoder, learned kappa, batch
  64): the whole step; the same model with the Gaussian latent; the
  VonMisesFisher layer's forward + backward alone; and inside it Wood's
  sampler of w, the implicit kappa gradient (96-point quadrature per sample)
  and the KL with its gradient (Bessel ratios).
- P-tuning (p_tuning_model defaults on the pretrained MiniLM, batch 16,
  length 48): the whole step; the frozen backbone's forward alone
  (inference); and the prompt encoder's forward + backward alone.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import numpy as np  # noqa: E402
from _timing import best_time  # noqa: E402

from keras_space.utils import set_deterministic  # noqa: E402

REPEATS = 30


def ms(fn):
    return round(best_time(fn, repeats=REPEATS, warmup=3) * 1e3, 2)


def vmf_vae():
    import tensorflow as tf
    from vmf_vae import build

    from keras_space.ops import vmf
    from keras_space.ops.vmf import vmf_kl_to_uniform

    x = np.random.default_rng(0).uniform(size=(64, 64)).astype("float32")
    out = {}
    for kind in ("vmf", "gaussian"):
        model, _ = build(5, kind, seed=0)
        out[f"step_{kind}"] = ms(lambda model=model: model.train_on_batch(x, x))
    model, _ = build(5, "vmf", seed=0)
    layer = model.get_layer("latent")
    mu = tf.constant(np.random.default_rng(1).normal(size=(64, 5)).astype("float32"))

    @tf.function
    def layer_fwd_bwd():
        with tf.GradientTape() as tape:
            tape.watch(mu)
            loss = tf.reduce_sum(layer(mu, training=True)) + tf.add_n(layer.losses)
        return tape.gradient(loss, [mu, layer.log_kappa])

    kappa = tf.constant(10.0, tf.float64)
    seed = tf.constant([1, 2])
    w = vmf._wood_sample_w(5, kappa, (64,), seed)[0]

    @tf.function
    def kl_and_grad():
        with tf.GradientTape() as tape:
            tape.watch(kappa)
            kl = vmf_kl_to_uniform(5, kappa)
        return kl, tape.gradient(kl, kappa)

    out["vmf_layer_fwd_bwd"] = ms(lambda: [t.numpy() for t in layer_fwd_bwd()])
    wood = tf.function(lambda: vmf._wood_sample_w(5, kappa, (64,), seed))
    implicit = tf.function(lambda: vmf._dw_dkappa(w, 5, kappa))
    out["wood_sampler"] = ms(lambda: [t.numpy() for t in wood()])
    out["implicit_kappa_gradient"] = ms(lambda: implicit().numpy())
    out["kl_and_gradient"] = ms(lambda: [t.numpy() for t in kl_and_grad()])
    return out


def p_tuning():
    import keras_hub
    import tensorflow as tf
    from p_tuning import sts_corpus_task

    from keras_space.models import p_tuning_model
    from keras_space.utils import minilm_path

    path = minilm_path()
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=48)
    texts, y, _, _ = sts_corpus_task(0)
    x = {k: np.asarray(v)[:16] for k, v in pre(x=texts[:16]).items()}
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    model = p_tuning_model(backbone, num_classes=5, seed=0)
    model.compile("adamw", "sparse_categorical_crossentropy")
    out = {"step": ms(lambda: model.train_on_batch(x, y[:16]))}
    frozen = tf.function(lambda: backbone(x, training=False)["sequence_output"])
    out["backbone_forward_only"] = ms(lambda: frozen().numpy())
    encoder = model.get_layer("prompt_encoder")

    @tf.function
    def encoder_fwd_bwd():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(encoder.prompt_embeddings(training=True))
        return tape.gradient(loss, encoder.trainable_weights)

    out["prompt_encoder_fwd_bwd"] = ms(lambda: [t.numpy() for t in encoder_fwd_bwd()])
    return out


def main():
    set_deterministic(0)  # before TensorFlow starts
    print(json.dumps({"vmf_vae_ms": vmf_vae(), "p_tuning_ms": p_tuning()}))


if __name__ == "__main__":
    main()
