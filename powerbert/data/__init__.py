"""Task data: reading and checking task files (files.py), tokenising them into length-bucketed
batches (batching.py), and the built-in synthetic demo data (demo/).

Nothing here trains or knows about runs; training and inference read their rows through it.
"""
