"""keras_space.layers: public layers (see DESIGN.md)."""
