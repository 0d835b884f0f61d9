"""One module per command the user types (`python -m benchmark COMMAND`).

Each owns its arguments (`add_parser`) and imports its machinery only when it runs, so
`--help` never waits for torch. Adding a command is adding a module and naming it here.
"""

COMMANDS = ("datasets", "list", "run", "report", "tune", "perf", "reproduce")
