"""Spoken test sentences and the word error rate that scores a transcription of them."""

from __future__ import annotations

import re

import openai

SENTENCES = {
    "fox": "The quick brown fox jumps over the lazy dog.",
    "stella": "Please call Stella and ask her to bring these things with her from the store.",
}
# Whisper base on espeak's robotic voice: measured 0.11 on "fox" (it hears "jump") and 0.0 on
# "stella"; another sentence's words score near 1.
MAX_WORD_ERROR_RATE = 0.3


def words_of(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance (substitutions, insertions, deletions) over the reference's
    length."""
    ref, hyp = words_of(reference), words_of(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            substitution = previous[j - 1] + (ref_word != hyp_word)
            current.append(min(previous[j] + 1, current[j - 1] + 1, substitution))
        previous = current
    return previous[-1] / max(len(ref), 1)


def speech_client(server) -> openai.OpenAI:
    """The official client on a running server, patient with a transcription's minutes."""
    base_url = f"{server.base_url}/v1"
    return openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=0, timeout=300)
