"""keras_space.layers: the public layers (see DESIGN.md)."""

from keras_space.layers.smooth_abs import SmoothAbs
from keras_space.layers.smooth_activation import SmoothActivation
from keras_space.layers.smooth_leaky_relu import SmoothLeakyReLU
from keras_space.layers.smooth_max import SmoothMax
from keras_space.layers.smooth_relu import SmoothReLU
from keras_space.layers.smooth_sign import SmoothSign
