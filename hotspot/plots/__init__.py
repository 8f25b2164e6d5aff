"""Figure families of the plot step (one module each); hotspot.plot runs them."""
