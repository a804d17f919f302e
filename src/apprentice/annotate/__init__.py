"""Blind human pairwise votes: a SQLite store (`store`) and a small web app over it (`server`).

Run it with `apprentice annotate --a A.json --b B.json --db votes.sqlite`; docs/USAGE.md has the whole workflow."""
