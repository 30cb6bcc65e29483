"""The PowerBERT dashboard (Textual): `powerbert-tui`, see tui/app.py. Imports powerbert, never the reverse."""
