"""hftransfer: transfer learning for Hugging Face NLP encoders."""

__version__ = "0.1.0"
