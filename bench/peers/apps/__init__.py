"""One module per system: the no-op task in that system's own terms, and
its connection read from the environment the harness sets."""
