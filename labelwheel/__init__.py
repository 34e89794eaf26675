"""labelwheel: active learning for Label Studio.

Subpackages:

- :mod:`labelwheel.selectors`: pure numpy/scikit-learn strategies that rank unlabelled samples.
- :mod:`labelwheel.ml_backend`: the Flask ML backend that Label Studio connects to.
- :mod:`labelwheel.label_config`: Label Studio config templates and parsing helpers.
"""

__version__ = "0.1.0"
