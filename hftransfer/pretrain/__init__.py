"""Continued pre-training of an encoder with masked language modelling (DAPT / TAPT, Gururangan et al., 2020).

* ``mlm_head.py``: the encoder as a masked LM (a new head, its decoder tied to the word embeddings, for checkpoints
  saved without one), and the masked LM as the loop trains it;
* ``masking.py``: text windows with word ids, and seeded whole-word masking;
* ``run.py``: the run's config and setup on the repository's training loop (``recipes/pretrain_mlm.py``).

The same masking and head serve the ``mlm`` objective (``hftransfer/objectives/mlm.py``): MLM on a named source of
unlabelled text during fine-tuning (UDALM, Karouzos et al., 2021).
"""

# ``run`` is not imported here: the mlm objective imports this package while ``hftransfer.objectives`` loads, and
# the run imports the flow, which imports the objectives.
from hftransfer.pretrain.masking import MaskingConfig, WholeWordMasker, mask_generator
from hftransfer.pretrain.mlm_head import MaskedTokenPredictor, build_masked_lm

__all__ = ["MaskedTokenPredictor", "MaskingConfig", "WholeWordMasker", "build_masked_lm", "mask_generator"]
