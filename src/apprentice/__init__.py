"""apprentice: the Alpaca loop as a tool — generate instruction data from a teacher, fine-tune a student, compare
them blind. Run `apprentice --help`; the package map is in README.md."""

__version__ = "0.1.0"
