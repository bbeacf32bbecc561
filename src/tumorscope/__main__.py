"""``python -m tumorscope`` runs the command line."""

from tumorscope.cli import main

main()
