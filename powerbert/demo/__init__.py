"""The built-in synthetic demo dataset (see README.md here); `python -m powerbert.demo.generate` rebuilds it."""
