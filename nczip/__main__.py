"""`python -m nczip`: the same as the `nczip` command."""
from .cli import main

raise SystemExit(main())
