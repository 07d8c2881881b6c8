"""The transformers implementation of the model interface: loading, random-weight builds, the greedy loop, checkpoint checks."""
