"""Command-line sub-commands, one module per task (``add_parser`` + ``run``)."""
