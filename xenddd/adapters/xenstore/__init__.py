"""xenddd's xenstore client: pyxs's wire protocol with deadlines, pipelining, reconnects and watches.

Owns: the client and its watch stream (`client`), one transaction's operations (`transaction`), the
connection and reply routing with pyxs's defects contained (`wire`), and the vocabulary every caller
shares: checked paths (`paths`) and typed errors (`errors`).
May import: `xenddd.errors` and pyxs.
"""
