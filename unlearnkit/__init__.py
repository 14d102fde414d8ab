"""unlearnkit: remove people from face-recognition models, and measure that they are gone."""
__version__ = "0.1.0"
