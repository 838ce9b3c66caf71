"""`python -m hapa_lsp`: the same as the `hapa-lsp` command."""

from hapa_lsp.cli import main

raise SystemExit(main())
