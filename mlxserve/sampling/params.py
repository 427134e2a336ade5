"""Sampling parameters shared by the API layer, the C sampler and both engines."""

from dataclasses import dataclass, field

# LM Studio's defaults, so clients that send nothing get the behaviour they know.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
DEFAULT_REPEAT_PENALTY = 1.1
DEFAULT_REPEAT_LAST_N = 64
BANNED_BIAS = -100  # OpenAI's logit_bias for "never pick this token"


@dataclass
class SamplingParams:
    temperature: float = DEFAULT_TEMPERATURE  # 0 means greedy
    top_p: float = DEFAULT_TOP_P  # (0, 1]; 1 disables
    top_k: int = DEFAULT_TOP_K  # 0 disables
    min_p: float = DEFAULT_MIN_P  # [0, 1]; 0 disables
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY  # > 0; 1 disables
    repeat_last_n: int = DEFAULT_REPEAT_LAST_N  # window over prompt and output tokens
    presence_penalty: float = 0.0  # [-2, 2], OpenAI semantics over generated tokens
    frequency_penalty: float = 0.0  # [-2, 2], OpenAI semantics over generated tokens
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> bias in [-100, 100]
    seed: int | None = None  # None: a fresh random seed per request

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0
