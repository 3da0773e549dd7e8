"""`python -m xenddd` — the same as the `xenddd` console script."""

from xenddd.cli.main import main

main()
