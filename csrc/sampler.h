/* Token sampler for mlxserve: one caller-owned state per request, no allocation per token.
 *
 * Order of operations (llama.cpp's): logit_bias, repeat/presence/frequency penalties,
 * temperature, then top_k, top_p and min_p on the tempered distribution, then one draw from
 * the per-request RNG. The caller's logits are only read, never written.
 */
#ifndef MLXSERVE_SAMPLER_H
#define MLXSERVE_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temperature;       /* 0: greedy argmax after bias and penalties */
    int top_k;               /* 0 (or >= vocab size): off */
    float top_p;             /* (0, 1]; 1: off */
    float min_p;             /* [0, 1], relative to the most likely token; 0: off */
    float repeat_penalty;    /* > 0; 1: off */
    int repeat_last_n;       /* last n fed and generated tokens; 0: off; -1 (or > 2^20): all */
    float presence_penalty;  /* OpenAI semantics over generated tokens */
    float frequency_penalty; /* OpenAI semantics over generated tokens */
    uint64_t seed;
} SamplerConfig;

typedef struct Sampler Sampler;

/* Bias entries <= -100 ban a token; entries >= 100 restrict sampling to the forced tokens.
 * Returns NULL when memory runs out or an argument is out of range. */
Sampler *sampler_new(int vocab_size, const SamplerConfig *config, const int *bias_tokens,
                     const float *bias_values, int n_bias);
void sampler_free(Sampler *sampler);

/* Adds prompt tokens to the repeat-penalty window. Returns 0, or -1 for a token out of range. */
int sampler_feed(Sampler *sampler, const int *tokens, int n_tokens);

/* Samples one token from vocab_size logits and records it as generated. Writes its
 * log-probability under the final distribution to *logprob when logprob is not NULL (greedy:
 * under the softmax of the biased, penalized logits). Returns -1 when every token is banned. */
int sampler_sample(Sampler *sampler, const float *logits, float *logprob);

/* sampler_sample restricted to the tokens whose bit is set in `allowed` (bit i % 32 of word
 * i / 32, as a grammar's token mask gives them; NULL allows all). Returns -1 when no allowed
 * token can be sampled, -2 when memory for the masked copy runs out. */
int sampler_sample_allowed(Sampler *sampler, const float *logits, const uint32_t *allowed,
                           float *logprob);

#define MAX_TOP_LOGPROBS 20

/* sampler_sample_allowed that also reports log-probabilities under the softmax at temperature 1
 * of the biased, penalized (and grammar-masked) logits: the sampled token's in *token_logprob,
 * and the k <= MAX_TOP_LOGPROBS most likely tokens, most likely first (lowest id on ties), in
 * top_tok and top_logprob, *n_top of them. Returns the token; -1 when none can be sampled, -2
 * when memory for the masked copy runs out, -3 for a k out of range. */
int sampler_sample_logprobs(Sampler *sampler, const float *logits, const uint32_t *allowed, int k,
                            int *top_tok, float *top_logprob, int *n_top, float *token_logprob);

/* The final probability of every token (zeros for the dropped ones) without drawing or
 * recording anything. Returns how many tokens keep a nonzero probability. */
int sampler_probs(Sampler *sampler, const float *logits, float *probs);

#endif
