"""reshape: an offline SynDR-IQA pipeline that reshapes synthetic IQA training sets.

Each stage (features, select, distort, label, prune, publish) reads and writes static artifacts whose
schemas live in ``data_manifests/``; any IQA trainer can consume the result without importing reshape.
"""

__version__ = "0.1.0"

from reshape.errors import BadInputError, ReshapeError, StageError  # noqa: E402

__all__ = ["BadInputError", "ReshapeError", "StageError", "__version__"]
