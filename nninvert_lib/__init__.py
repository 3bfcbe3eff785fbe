"""nninvert_lib: generate neural-network inputs from prescribed outputs.

The public names are listed in ``__all__``; see the book's API reference.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .data import MnistData, load_mnist
from .errors import CheckpointWarning, DataWarning, InsufficientMemoryError, InversionError
from .models import DISPLAY_NAMES, MODEL_NAMES, PAPER_ACCURACY, build_model, make_fcnn, make_vit
from . import comparison, measures, prior
from .alignment import align_to_head, backbone_alignment, head_directions
from .activations import SELU_ALPHA, SELU_LAMBDA, activation_condition, invert_activation
from .backward import back_pass_inv, plan_back_pass
from .collect import collect_verified
from .forward import forward_pass_inv, levenberg_marquardt
from .frontier import PeakFrontier, peak_frontier
from .generalized import generalized_inv, head_reachability, invert_head
from .linear import PseudoInverse, sample_null_space, thresholded_pinv
from .softmax import invert_softmax
from .prior import gradient_image, max_class_image, percentile_average_image
from .plotting import image_grid
from .comparison import Figure3, figure3, figure3_settings, plot_figure3
from .explorers import LMExplorer, NullSpaceExplorer, lm_explorer, null_space_explorer
from .profiles import PROFILES, TrainConfig, train_config
from .result import (InversionResult, check_logits, check_target, prescribed_distribution,
                     target_distribution, verify)
from .reporting import accuracy_table
from .training import evaluate, train_model
from .zoo import LoadedModels, cached_cards, load_model, load_models

__all__ = [
    "__version__",
    "InversionError", "DataWarning", "CheckpointWarning", "InsufficientMemoryError",
    "MnistData", "load_mnist",
    "MODEL_NAMES", "DISPLAY_NAMES", "PAPER_ACCURACY", "build_model", "make_fcnn", "make_vit",
    "PROFILES", "TrainConfig", "train_config",
    "evaluate", "train_model",
    "load_model", "load_models", "LoadedModels", "cached_cards",
    "accuracy_table", "image_grid",
    "InversionResult", "target_distribution", "prescribed_distribution", "check_target",
    "check_logits", "verify",
    "prior", "measures", "comparison", "max_class_image", "percentile_average_image", "gradient_image",
    "invert_softmax", "invert_activation", "activation_condition", "SELU_LAMBDA", "SELU_ALPHA",
    "thresholded_pinv", "sample_null_space", "PseudoInverse",
    "back_pass_inv", "plan_back_pass", "forward_pass_inv", "levenberg_marquardt",
    "generalized_inv", "invert_head", "head_reachability", "collect_verified",
    "head_directions", "align_to_head", "backbone_alignment", "peak_frontier", "PeakFrontier",
    "figure3", "figure3_settings", "plot_figure3", "Figure3",
    "null_space_explorer", "lm_explorer", "NullSpaceExplorer", "LMExplorer",
]
