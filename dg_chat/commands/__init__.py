"""One module per CLI command, each with `run(args: argparse.Namespace) -> int`.

`args.settings` holds the resolved `Settings` (defaults < file < env < flags).
"""
