"""The checks, by subject: each a function from plain records to one ``Check`` (or None: nothing to say)."""
