"""keras_space.growth: public growth (see DESIGN.md)."""
