"""keras_space.utils: helpers shared by examples, tests and benchmarks."""

from keras_space.utils.batch_coupling import find_batch_coupled_layers
from keras_space.utils.determinism import set_deterministic
from keras_space.utils.multi_worker import enable_multi_worker_fit
from keras_space.utils.pretrained import minilm_path
