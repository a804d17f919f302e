"""The whole loop from one config: `config` (the TOML schema), `run` (stages, keys, skip/resume), `report`."""
