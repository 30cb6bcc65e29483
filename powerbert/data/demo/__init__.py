"""The built-in synthetic demo dataset (see README.md here); `python -m powerbert.data.demo.generate` rebuilds it."""
