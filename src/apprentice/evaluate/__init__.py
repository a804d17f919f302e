"""Evaluation: model output files (`outputs`), the LLM judge (`judge`, `verdict`) and the statistics of pairwise
comparisons (`stats`). Run through `apprentice judge` and `apprentice tally`."""
