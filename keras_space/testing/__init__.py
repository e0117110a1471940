"""keras_space.testing: the layer-contract checker and helpers for the tests."""

from keras_space.testing.distributed import run_on_logical_cpus
from keras_space.testing.layer_contract import LayerContractError, run_layer_contract
