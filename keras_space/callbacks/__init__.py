"""keras_space.callbacks: public callbacks (see DESIGN.md)."""
