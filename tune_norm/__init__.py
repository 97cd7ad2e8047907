"""tune-norm: hyperparameter search for normalization and regularization studies on MNIST."""

__version__ = "0.1.0"
