"""Publishing runs to the Hugging Face Hub: staging folders, model cards and the upload."""
