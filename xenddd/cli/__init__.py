"""The `xenddd` command line: an `xl`-style group whose subcommands live in one module per concern."""
