"""Finding markers (tool-call tags, think tags) in text that arrives in pieces."""


def partial_marker_length(text: str, marker: str) -> int:
    """Length of the longest tail of `text` that begins `marker`: text to hold back, since the
    next piece may complete the marker."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
