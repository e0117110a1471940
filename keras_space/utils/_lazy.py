"""A module imported on first use (internal): TensorFlow-only features import
TensorFlow only when they run, so `import keras_space` on JAX does not."""

import importlib


class LazyModule:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)


tensorflow = LazyModule("tensorflow")
