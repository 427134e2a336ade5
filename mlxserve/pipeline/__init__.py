"""The protocol-neutral generation pipeline: a typed request in, typed output events out.

API adapters parse their wire format into a GenerateRequest (request.py); prepare.py finds the
model, renders the chat template and tokenizes; generate.py runs the engine and passes its text
through the output stage (output.py), which yields the events every adapter renders (events.py).
"""
