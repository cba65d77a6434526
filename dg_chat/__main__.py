"""`python -m dg_chat`: the `dg-chat` command."""

import sys

from dg_chat.cli import main

sys.exit(main())
