"""`python -m edged`: the same as the `edged` command."""
from .cli import main

raise SystemExit(main())
