"""keras_space.testing: the layer-contract checker every layer test uses."""

from keras_space.testing.layer_contract import LayerContractError, run_layer_contract
