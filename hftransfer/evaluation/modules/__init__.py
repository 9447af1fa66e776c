"""The packaged ``evaluate`` scripts, one directory each (``<name>/<name>.py``): see ``evaluation/loading.py``."""
