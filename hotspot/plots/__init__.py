"""Figure families of the plot step (one module each); hotspot.steps.plot runs them."""
