"""Publishing runs to the Hugging Face Hub: staging folders, model cards and the upload."""

# What a run can publish (light enough for the CLI to import before it parses arguments).
WHAT = ("auto", "model", "adapter", "merged")
