"""One module per command group; each exposes `register(app)` and keeps command bodies short: parse options, call
the stage's core, print."""
