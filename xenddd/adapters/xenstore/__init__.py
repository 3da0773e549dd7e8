"""xenddd's xenstore client: pyxs's wire protocol with deadlines, pipelining, reconnects and watches.

Owns: the client (`client`), its connection and reply routing (`wire`), and the path and error
vocabulary every caller shares (`paths`).
May import: `xenddd.errors` and pyxs.
"""
