"""The training runs that the multi-process tests make on several workers or devices and
in one process, as Python source for the processes they start
(tests/utils/multi_worker_test.py on TensorFlow, tests/utils/data_parallel_test.py on
JAX). Needs `numpy as np` and `keras` imported first."""

RUNS = """
from keras_space.losses import InfoNCE
from keras_space.models import GradCacheModel
from keras_space.optimizers import GradientAccumulator, LayerwiseLearningRate
import os, signal

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 6)); y = x.sum(1, keepdims=True)
a = rng.normal(size=(64, 8)); p = a + 0.3 * rng.normal(size=(64, 8)); n = a + rng.normal(size=(64, 8))
labels = rng.integers(0, 30, 64); w = rng.uniform(0, 2, 64)
tuples = ((a, p, n), labels, w)  # what fit_resumable takes

def flat(model):
    return np.concatenate([v.ravel() for v in model.get_weights()])

def floats(text):  # flat(model) printed as a RESULT field (comma-separated reprs)
    return np.array([float(v) for v in text.split(",")])

def rel(u, v):
    return float(np.linalg.norm(u - v) / np.linalg.norm(v))

def grad_cache_model(optimizer, dims=None):
    # for tuples (a, p, n) with hard negatives, a learned temperature, sample weights w
    # and labels (mask_duplicates); with `dims`, the loss is Matryoshka over those prefixes
    encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"),
                                keras.layers.Dense(4)])
    model = GradCacheModel(encoder, micro_batch_size=8)
    loss = InfoNCE(0.1, symmetric=True, mask_duplicates=True, learnable_temperature=True)
    if dims is not None:
        from keras_space.losses import Matryoshka
        loss = Matryoshka(loss, dims)
    model.compile(optimizer, loss)
    return model

def accumulated_model():
    # a plain model trained by GradientAccumulator(LayerwiseLearningRate(AdamW)), 3 steps a window
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh", name="body"),
                              keras.layers.Dense(1)])
    inner = LayerwiseLearningRate(keras.optimizers.AdamW(1e-2, weight_decay=0.01), {"(.*/)?body/.*": 0.5})
    model.compile(GradientAccumulator(inner, 3), "mse")
    return model

KILLED_AT = (1, 1)  # (epoch, batch): the second step of the second epoch (6th of 12)

class StopAt(keras.callbacks.Callback):
    # at the end of step `at` (epoch, batch): print `last_words` as this process's RESULT
    # and SIGKILL it, or raise
    def __init__(self, at, kill, last_words):
        super().__init__()
        self.at, self.kill, self.last_words = at, kill, last_words
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            if self.kill:
                print("RESULT", self.last_words, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("interrupted")

def resumable_model():
    # GradCacheModel with a learned temperature, trained by GradientAccumulator(AdamW),
    # 3 steps a window
    return grad_cache_model(GradientAccumulator(keras.optimizers.AdamW(1e-2), 3))

def fit_resumable(model, data, batch_size, folder, stop_at=None, kill=False, last_words=""):
    # 3 epochs of (a, p, n) tuples with labels and weights, backed up every step;
    # stopped at `stop_at` (SIGKILL when `kill`, else an exception)
    (a_, p_, n_), labels_, w_ = data
    callbacks = [keras.callbacks.BackupAndRestore(folder, save_freq=1)]
    if stop_at:
        callbacks.append(StopAt(stop_at, kill, last_words))
    model.fit((a_, p_, n_), labels_, sample_weight=w_, batch_size=batch_size, epochs=3, shuffle=False,
              verbose=0, callbacks=callbacks)
    return model
"""
