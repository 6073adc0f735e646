"""automodel: a team of agents that turns a folder of labelled images into a trained classifier."""

__version__ = "0.1.0"
