"""keras_space.utils: helpers shared by examples, tests and benchmarks."""

from keras_space.utils.pretrained import minilm_path
