"""`python -m powerbert` is the `powerbert` command."""
from powerbert.cli import main

main()
