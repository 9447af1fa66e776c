"""Build tokenizers and Hugging Face task models from the config."""

from hftransfer.modeling.build import build_model, load_tokenizer

__all__ = ["build_model", "load_tokenizer"]
