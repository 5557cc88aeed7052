"""`python -m adapmtl` (used by torchrun) is the `adapmtl` command."""
from adapmtl.cli import main

raise SystemExit(main())
