"""`python -m apprentice` runs the command line."""

from apprentice.cli import main

main()
