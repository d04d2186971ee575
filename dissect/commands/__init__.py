"""The command line's commands, one module each: its parser, the config it fills, one library call.

``cli.py`` is the table of these modules (:data:`cli.COMMANDS`); each has ``add_parser(subparsers)``
and ``run(args) -> int``. Shards, Ray and merges are :mod:`dissect.runner.orchestrate`'s.
"""
