"""Model families: how each is recognised, its tool-call syntax (read back and constrained by
a grammar) and its reasoning markers."""
