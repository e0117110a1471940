"""keras_space.testing: the layer-contract checker (one function per clause) and test helpers.

README: "For contributors: the layer contract".
"""

from keras_space.testing.distributed import run_on_logical_cpus, run_workers
from keras_space.testing.layer_contract import (
    LayerContractError,
    check_config,
    check_config_outputs,
    check_eager_call,
    check_fit,
    check_keras_save,
    check_masking,
    check_mixed_precision,
    check_saved_model,
    check_symbolic_call,
    check_weight_counts,
    run_layer_contract,
)
