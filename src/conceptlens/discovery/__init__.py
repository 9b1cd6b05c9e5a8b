"""Concepts discovered in the backbone's own features (Discover-then-Name), named afterwards."""

# one line per module, re-exported (plain imports so that each module's owner adds only its line)
from .naming import name_latents, unique_names  # noqa: F401
from .sae import SparseAutoencoder, pool_fingerprint, sae_for, sae_key, train_sae  # noqa: F401
from .vocabulary import load_vocabulary, parts_of_speech, split_pos  # noqa: F401
