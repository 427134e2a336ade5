/* Token sampler for mlxserve, in the style of llama2.c's run.c. See sampler.h for the API.
 *
 * The caller's logits are never written: tokens whose logit changes (logit_bias, penalties)
 * are kept in a small patch list and flagged in `mark`, and every scan over the vocabulary
 * skips flagged tokens and then visits the patch list. Scans test a block at a time so the
 * common case (nothing in the block beats the threshold) vectorizes.
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK          16        /* scan granularity for the vectorizable threshold tests */
#define SUM_BLOCK      1024      /* dense weights are summed per block to find a draw quickly */
#define RING_MAX       (1 << 20) /* longer repeat windows behave as "every token" */
#define SMALL_SORT     32
#define MARK_PATCHED   1
#define MARK_WINDOW    2
#define MARK_GENERATED 4

/* Kept out of line so the compiler vectorizes the block test instead of unrolling it. */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

struct Sampler {
    int n;
    SamplerConfig cfg;
    float inv_temp;
    uint64_t rng;
    int n_bias, n_forced;
    int *bias_tok, *forced_tok;
    float *bias_val;                          /* -INFINITY for banned tokens */
    int *ring, ring_cap, ring_len, ring_head; /* bounded repeat window */
    uint8_t *seen;                            /* whole-context repeat window */
    int *seen_tok, n_seen;
    int *gen_count, *gen_tok, n_gen; /* presence/frequency penalties */
    uint8_t *mark;
    int *patch_tok, n_patch, patch_cap;
    float *patch_logit;
    int *cand_tok, cand_cap;
    float *cand_w;
    float *weights; /* dense distribution when top_k is off */
    double *block_sum;
    float *masked; /* logits outside a grammar's allowed set, as -inf; made on first use */
};

typedef struct {
    int count;    /* kept candidates, or tokens when dense */
    int dense;    /* the distribution is s->weights over the whole vocabulary */
    double total; /* sum of the kept weights */
} Kept;

/* ---- random numbers: xorshift64*, seeded through splitmix64 so every seed is usable ---- */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static double random_unit(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) * (1.0 / 9007199254740992.0);
}

/* e^v for v <= 0: 0 below -87 and for NaN, 1 above 0. Branch-free (Cephes' expf polynomial)
 * so loops over it vectorize; the clamp keeps the exponent arithmetic defined. */
static inline float exp_nonpositive(float v) {
    float c = v > -87.0f ? (v < 0.0f ? v : 0.0f) : -87.0f;
    float t = c * 1.44269504f;
    float r = (t + 12582912.0f) - 12582912.0f; /* round to nearest without a libm call */
    float f = c - r * 0.693359375f + r * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * f + 1.3981999507e-3f;
    p = p * f + 8.3334519073e-3f;
    p = p * f + 4.1665795894e-2f;
    p = p * f + 1.6666665459e-1f;
    p = p * f + 5.0000001201e-1f;
    p = p * f * f + f + 1.0f;
    int32_t exponent = ((int32_t)r + 127) << 23;
    float scale;
    memcpy(&scale, &exponent, sizeof scale);
    return v >= -87.0f ? p * scale : 0.0f;
}

/* ---- patches: the few tokens whose logit differs from the caller's ---- */

static void add_patch(Sampler *s, int tok, float logit, uint8_t why) {
    if (!s->mark[tok]) {
        s->mark[tok] = MARK_PATCHED;
        s->patch_tok[s->n_patch] = tok;
        s->patch_logit[s->n_patch++] = logit;
    }
    s->mark[tok] |= why;
}

static float penalized(const Sampler *s, int tok, float v) {
    const SamplerConfig *c = &s->cfg;
    if (v == -INFINITY) return v;
    if (s->mark[tok] & MARK_WINDOW) v = v > 0.0f ? v / c->repeat_penalty : v * c->repeat_penalty;
    if (s->mark[tok] & MARK_GENERATED)
        v -= (float)s->gen_count[tok] * c->frequency_penalty + c->presence_penalty;
    return v;
}

static void build_patches(Sampler *s, const float *logits) {
    s->n_patch = 0;
    for (int i = 0; i < s->n_bias; i++)
        add_patch(s, s->bias_tok[i], logits[s->bias_tok[i]] + s->bias_val[i], 0);
    for (int i = 0; i < s->ring_len; i++) add_patch(s, s->ring[i], logits[s->ring[i]], MARK_WINDOW);
    for (int i = 0; i < s->n_seen; i++)
        add_patch(s, s->seen_tok[i], logits[s->seen_tok[i]], MARK_WINDOW);
    for (int i = 0; i < s->n_gen; i++)
        add_patch(s, s->gen_tok[i], logits[s->gen_tok[i]], MARK_GENERATED);
    for (int i = 0; i < s->n_patch; i++)
        s->patch_logit[i] = penalized(s, s->patch_tok[i], s->patch_logit[i]);
}

static void clear_patches(Sampler *s) {
    for (int i = 0; i < s->n_patch; i++) s->mark[s->patch_tok[i]] = 0;
}

static float logit_of(const Sampler *s, const float *logits, int tok) {
    if (!s->mark[tok]) return logits[tok];
    for (int i = 0; i < s->n_patch; i++)
        if (s->patch_tok[i] == tok) return s->patch_logit[i];
    return logits[tok];
}

/* ---- scans over the whole vocabulary ---- */

NOINLINE static int block_beats(const float *x, float threshold) {
    int hit = 0;
    for (int j = 0; j < BLOCK; j++) hit |= x[j] > threshold;
    return hit;
}

NOINLINE static int block_reaches(const float *x, float threshold) {
    int hit = 0;
    for (int j = 0; j < BLOCK; j++) hit |= x[j] >= threshold;
    return hit;
}

/* Index of the largest effective logit (lowest index on ties), or -1 when all are -inf. */
static int argmax_effective(const Sampler *s, const float *logits, float *best_out) {
    int best = -1;
    float top = -INFINITY;
    for (int base = 0; base < s->n; base += BLOCK) {
        int end = base + BLOCK <= s->n ? base + BLOCK : s->n;
        if (end - base == BLOCK && !block_beats(logits + base, top)) continue;
        for (int i = base; i < end; i++)
            if (logits[i] > top && !s->mark[i]) top = logits[i], best = i;
    }
    for (int i = 0; i < s->n_patch; i++) {
        float v = s->patch_logit[i];
        int tok = s->patch_tok[i];
        if (v > top || (v == top && v > -INFINITY && tok < best)) top = v, best = tok;
    }
    *best_out = top;
    return best;
}

/* Sum of a block in eight lanes: the compiler vectorizes it without reassociating floats. */
static double block_total(const float *w, int len) {
    float lane[8] = {0};
    int i = 0;
    for (; i + 8 <= len; i += 8)
        for (int j = 0; j < 8; j++) lane[j] += w[i + j];
    for (; i < len; i++) lane[0] += w[i];
    double total = 0.0;
    for (int j = 0; j < 8; j++) total += lane[j];
    return total;
}

/* Writes e^((logit - top) * inv_temp) per token into out (or only sums when out is NULL). */
static double dense_weights(Sampler *s, const float *logits, float top, float inv_temp,
                            float *out) {
    float scratch[SUM_BLOCK];
    double total = 0.0;
    for (int base = 0; base < s->n; base += SUM_BLOCK) {
        int len = s->n - base < SUM_BLOCK ? s->n - base : SUM_BLOCK;
        float *dst = out ? out + base : scratch;
        const float *x = logits + base;
        const uint8_t *mark = s->mark + base;
        for (int i = 0; i < len; i++) {
            float w = exp_nonpositive((x[i] - top) * inv_temp);
            dst[i] = mark[i] ? 0.0f : w;
        }
        double block = block_total(dst, len);
        s->block_sum[base / SUM_BLOCK] = block;
        total += block;
    }
    for (int i = 0; i < s->n_patch; i++) {
        float w = exp_nonpositive((s->patch_logit[i] - top) * inv_temp);
        if (out) out[s->patch_tok[i]] = w;
        s->block_sum[s->patch_tok[i] / SUM_BLOCK] += w;
        total += w;
    }
    return total;
}

/* ---- candidate selection ---- */

static int better(float wa, int ta, float wb, int tb) {
    return wa > wb || (wa == wb && ta < tb);
}

/* Candidate a ranks above candidate b: more likely, or as likely with a lower token id. */
static int cand_better(const Sampler *s, int a, int b) {
    return better(s->cand_w[a], s->cand_tok[a], s->cand_w[b], s->cand_tok[b]);
}

static void swap_cand(Sampler *s, int a, int b) {
    int t = s->cand_tok[a];
    float w = s->cand_w[a];
    s->cand_tok[a] = s->cand_tok[b], s->cand_w[a] = s->cand_w[b];
    s->cand_tok[b] = t, s->cand_w[b] = w;
}

/* Min-heap on (value, token) so the root is the weakest of the current top k. */
static void heap_sift_down(Sampler *s, int i, int size) {
    for (;;) {
        int weakest = i, l = 2 * i + 1, r = l + 1;
        if (l < size && cand_better(s, weakest, l)) weakest = l;
        if (r < size && cand_better(s, weakest, r)) weakest = r;
        if (weakest == i) return;
        swap_cand(s, i, weakest);
        i = weakest;
    }
}

static void heap_offer(Sampler *s, int *size, int k, int tok, float v) {
    if (!(v > -INFINITY)) return; /* banned, or NaN */
    if (*size < k) {
        int i = (*size)++;
        s->cand_tok[i] = tok, s->cand_w[i] = v;
        while (i > 0 && better(s->cand_w[(i - 1) / 2], s->cand_tok[(i - 1) / 2], v, tok)) {
            swap_cand(s, i, (i - 1) / 2);
            i = (i - 1) / 2;
        }
    } else if (better(v, tok, s->cand_w[0], s->cand_tok[0])) {
        s->cand_tok[0] = tok, s->cand_w[0] = v;
        heap_sift_down(s, 0, *size);
    }
}

/* The k largest effective logits into cand_w (unordered); returns how many (fewer if banned). */
static int select_top_k(Sampler *s, const float *logits, int k) {
    int size = 0;
    float floor_value = -INFINITY;
    for (int base = 0; base < s->n; base += BLOCK) {
        int end = base + BLOCK <= s->n ? base + BLOCK : s->n;
        if (end - base == BLOCK && !block_beats(logits + base, floor_value)) continue;
        for (int i = base; i < end; i++) {
            if (!(logits[i] > floor_value) || s->mark[i]) continue;
            heap_offer(s, &size, k, i, logits[i]);
            if (size == k) floor_value = s->cand_w[0];
        }
    }
    for (int i = 0; i < s->n_patch; i++)
        heap_offer(s, &size, k, s->patch_tok[i], s->patch_logit[i]);
    return size;
}

/* Insertion sort of [lo, hi) from most to least likely; only used on small ranges. */
static void sort_range(Sampler *s, int lo, int hi) {
    for (int i = lo + 1; i < hi; i++)
        for (int j = i; j > lo && cand_better(s, j, j - 1); j--) swap_cand(s, j, j - 1);
}

/* Moves the shortest most-likely prefix holding at least `target` weight to the front and
 * returns its length: a quickselect on weight mass, so no full sort even on a flat distribution. */
static int nucleus(Sampler *s, int count, double target) {
    int lo = 0, hi = count;
    while (hi - lo > SMALL_SORT) {
        int mid = lo + (hi - lo) / 2;
        if (cand_better(s, mid, lo)) swap_cand(s, mid, lo);
        if (cand_better(s, hi - 1, lo)) swap_cand(s, hi - 1, lo);
        if (cand_better(s, mid, hi - 1)) swap_cand(s, mid, hi - 1);
        float pivot_w = s->cand_w[hi - 1]; /* the median of three now sits at hi - 1 */
        int pivot_tok = s->cand_tok[hi - 1], split = lo;
        double mass = 0.0;
        for (int i = lo; i < hi - 1; i++)
            if (better(s->cand_w[i], s->cand_tok[i], pivot_w, pivot_tok)) {
                mass += s->cand_w[i];
                swap_cand(s, i, split++);
            }
        swap_cand(s, split, hi - 1);
        if (mass >= target) {
            hi = split;
            continue;
        }
        target -= mass + pivot_w;
        if (target <= 0.0) return split + 1;
        lo = split + 1;
    }
    sort_range(s, lo, hi);
    for (int i = lo; i < hi; i++) {
        target -= s->cand_w[i];
        if (target <= 0.0) return i + 1;
    }
    return hi;
}

/* Turns candidate logits into weights, then applies min_p and top_p. */
static Kept filter_candidates(Sampler *s, int count) {
    Kept kept = {0, 0, 0.0};
    float top = -INFINITY;
    for (int i = 0; i < count; i++) top = s->cand_w[i] > top ? s->cand_w[i] : top;
    if (count == 0 || top == -INFINITY) return kept;
    double total = 0.0;
    for (int i = 0; i < count; i++) {
        s->cand_w[i] = exp_nonpositive((s->cand_w[i] - top) * s->inv_temp);
        total += s->cand_w[i];
    }
    int n_kept = 0;
    for (int i = 0; i < count; i++)
        if (s->cand_w[i] >= s->cfg.min_p) swap_cand(s, i, n_kept++);
    if (s->cfg.top_p < 1.0f) n_kept = nucleus(s, n_kept, s->cfg.top_p * total);
    kept.count = n_kept;
    for (int i = 0; i < n_kept; i++) kept.total += s->cand_w[i];
    return kept;
}

/* Top_k off: weights over the whole vocabulary, then only tokens that could survive top_p or
 * min_p become candidates (llama2.c's cutoff: below (1 - top_p) / (n - 1) none can). */
static Kept dense_candidates(Sampler *s, const float *logits) {
    Kept kept = {0, 1, 0.0};
    float top;
    if (argmax_effective(s, logits, &top) < 0) return kept;
    kept.total = dense_weights(s, logits, top, s->inv_temp, s->weights);
    kept.count = s->n;
    const SamplerConfig *c = &s->cfg;
    if (c->top_p >= 1.0f && c->min_p <= 0.0f) return kept;
    double cut = c->top_p < 1.0f ? kept.total * (1.0 - c->top_p) / (s->n > 1 ? s->n - 1 : 1) : 0.0;
    cut = cut < c->min_p ? c->min_p : cut;
    float threshold = (float)(cut < 1.0 ? cut : 1.0); /* the most likely token (weight 1) stays */
    int count = 0;
    for (int base = 0; base < s->n; base += BLOCK) {
        int end = base + BLOCK <= s->n ? base + BLOCK : s->n;
        if (end - base == BLOCK && !block_reaches(s->weights + base, threshold)) continue;
        for (int i = base; i < end; i++) {
            if (s->weights[i] < threshold || s->weights[i] == 0.0f) continue;
            s->cand_tok[count] = i;
            s->cand_w[count++] = s->weights[i];
        }
    }
    if (c->top_p < 1.0f) count = nucleus(s, count, c->top_p * kept.total);
    kept.dense = 0;
    kept.count = count;
    kept.total = 0.0;
    for (int i = 0; i < count; i++) kept.total += s->cand_w[i];
    return kept;
}

static Kept keep_candidates(Sampler *s, const float *logits) {
    int count;
    if (s->n_forced > 0) {
        count = 0;
        for (int i = 0; i < s->n_forced; i++) {
            s->cand_tok[count] = s->forced_tok[i];
            s->cand_w[count] = logit_of(s, logits, s->forced_tok[i]);
            count += s->cand_w[count] > -INFINITY;
        }
        if (s->cfg.top_k > 0 && s->cfg.top_k < count) {
            sort_range(s, 0, count);
            count = s->cfg.top_k;
        }
    } else if (s->cfg.top_k > 0 && s->cfg.top_k < s->n) {
        count = select_top_k(s, logits, s->cfg.top_k);
    } else {
        return dense_candidates(s, logits);
    }
    return filter_candidates(s, count);
}

/* ---- drawing and recording ---- */

/* Index in w[0, count) where the running sum passes r; rounding falls back to the last
 * token with a nonzero weight. */
static int pick(const float *w, int count, double r) {
    int last = 0;
    for (int i = 0; i < count; i++) {
        if (w[i] > 0.0f) last = i;
        r -= w[i];
        if (r < 0.0) return i;
    }
    return last;
}

/* Draws a token from the kept distribution; *weight gets its unnormalized weight. */
static int draw(Sampler *s, Kept kept, float *weight) {
    double r = random_unit(&s->rng) * kept.total;
    if (!kept.dense) {
        int i = pick(s->cand_w, kept.count, r);
        *weight = s->cand_w[i];
        return s->cand_tok[i];
    }
    int block = 0, last_block = (s->n - 1) / SUM_BLOCK;
    while (block < last_block && r >= s->block_sum[block]) r -= s->block_sum[block++];
    int base = block * SUM_BLOCK;
    int tok = base + pick(s->weights + base, s->n - base < SUM_BLOCK ? s->n - base : SUM_BLOCK, r);
    *weight = s->weights[tok];
    return tok;
}

/* Argmax (lowest id on ties); the log-probability is under the softmax at temperature 1. */
static int greedy(Sampler *s, const float *logits, float *logprob) {
    float top = -INFINITY;
    int best = -1;
    double total = 0.0;
    if (s->n_forced == 0) {
        best = argmax_effective(s, logits, &top);
        if (best >= 0 && logprob) total = dense_weights(s, logits, top, 1.0f, NULL);
    }
    for (int i = 0; i < s->n_forced; i++) {
        int tok = s->forced_tok[i];
        float v = logit_of(s, logits, tok);
        if (v > top || (v == top && v > -INFINITY && tok < best)) top = v, best = tok;
    }
    for (int i = 0; i < s->n_forced && logprob; i++)
        total += exp_nonpositive(logit_of(s, logits, s->forced_tok[i]) - top);
    if (best >= 0 && logprob) *logprob = (float)-log(total);
    return best;
}

static void record(Sampler *s, int tok, int generated) {
    if (s->ring_cap > 0) {
        if (s->ring_len < s->ring_cap) s->ring_len++;
        s->ring[s->ring_head] = tok;
        s->ring_head = (s->ring_head + 1) % s->ring_cap;
    } else if (s->seen && !s->seen[tok]) {
        s->seen[tok] = 1;
        s->seen_tok[s->n_seen++] = tok;
    }
    if (generated && s->gen_count && s->gen_count[tok]++ == 0) s->gen_tok[s->n_gen++] = tok;
}

/* One token from the biased, penalized logits, not yet recorded; -1 when every token is banned. */
static int choose(Sampler *s, const float *logits, float *logprob) {
    build_patches(s, logits);
    int tok;
    if (s->cfg.temperature == 0.0f) {
        tok = greedy(s, logits, logprob);
    } else {
        Kept kept = keep_candidates(s, logits);
        float weight = 0.0f;
        tok = kept.count > 0 ? draw(s, kept, &weight) : -1;
        if (tok >= 0 && logprob) *logprob = (float)log(weight / kept.total);
    }
    clear_patches(s);
    return tok;
}

int sampler_sample(Sampler *s, const float *logits, float *logprob) {
    int tok = choose(s, logits, logprob);
    if (tok >= 0) record(s, tok, 1);
    return tok;
}

/* The logits with every token outside `allowed` at -inf, so the usual sampling never picks one.
 * A word that allows all or none of its 32 tokens is copied or filled whole. */
static const float *restrict_to_allowed(Sampler *s, const float *logits, const uint32_t *allowed) {
    if (!s->masked && !(s->masked = malloc(sizeof(float) * (size_t)s->n))) return NULL;
    for (int base = 0; base < s->n; base += 32) {
        uint32_t bits = allowed[base / 32];
        int len = s->n - base < 32 ? s->n - base : 32;
        if (bits == 0xffffffffu) {
            memcpy(s->masked + base, logits + base, sizeof(float) * (size_t)len);
            continue;
        }
        for (int j = 0; j < len; j++)
            s->masked[base + j] = (bits >> j) & 1u ? logits[base + j] : -INFINITY;
    }
    return s->masked;
}

int sampler_sample_allowed(Sampler *s, const float *logits, const uint32_t *allowed,
                           float *logprob) {
    if (!allowed) return sampler_sample(s, logits, logprob);
    const float *view = restrict_to_allowed(s, logits, allowed);
    return view ? sampler_sample(s, view, logprob) : -2;
}

/* The k most likely tokens under the softmax at temperature 1 of the patched logits (only the
 * forced tokens, when the bias forces any), most likely first; *top and *log_total give every
 * token's log-probability as (logit - top) - log_total. Patches must be built. Returns how many
 * were written, or -1 when every token is banned. */
static int top_logprobs(Sampler *s, const float *logits, int k, int *tok_out, float *lp_out,
                        float *top, double *log_total) {
    int count = 0;
    if (s->n_forced > 0) {
        for (int i = 0; i < s->n_forced; i++) {
            s->cand_tok[count] = s->forced_tok[i];
            s->cand_w[count] = logit_of(s, logits, s->forced_tok[i]);
            count += s->cand_w[count] > -INFINITY;
        }
    } else {
        count = select_top_k(s, logits, k > 0 ? k : 1);
    }
    if (count == 0) return -1;
    sort_range(s, 0, count);
    *top = s->cand_w[0];
    double total = 0.0;
    if (s->n_forced > 0) {
        for (int i = 0; i < count; i++) total += exp_nonpositive(s->cand_w[i] - *top);
    } else {
        total = dense_weights(s, logits, *top, 1.0f, NULL);
    }
    *log_total = log(total);
    int written = count < k ? count : k;
    for (int i = 0; i < written; i++) {
        tok_out[i] = s->cand_tok[i];
        lp_out[i] = (float)((double)(s->cand_w[i] - *top) - *log_total);
    }
    return written;
}

int sampler_sample_logprobs(Sampler *s, const float *logits, const uint32_t *allowed, int k,
                            int *top_tok, float *top_logprob, int *n_top, float *token_logprob) {
    if (k < 0 || k > MAX_TOP_LOGPROBS) return -3;
    const float *view = allowed ? restrict_to_allowed(s, logits, allowed) : logits;
    if (!view) return -2;
    float top;
    double log_total;
    build_patches(s, view);
    *n_top = top_logprobs(s, view, k, top_tok, top_logprob, &top, &log_total);
    clear_patches(s);
    int tok = *n_top < 0 ? -1 : choose(s, view, NULL);
    if (tok < 0) return -1;
    build_patches(s, view); /* the chosen token's logit as it was before it is recorded */
    *token_logprob = (float)((double)(logit_of(s, view, tok) - top) - log_total);
    clear_patches(s);
    record(s, tok, 1);
    return tok;
}

int sampler_probs(Sampler *s, const float *logits, float *probs) {
    memset(probs, 0, sizeof(float) * (size_t)s->n);
    build_patches(s, logits);
    int kept_count = 0;
    if (s->cfg.temperature == 0.0f) {
        int tok = greedy(s, logits, NULL);
        if (tok >= 0) probs[tok] = 1.0f, kept_count = 1;
    } else {
        Kept kept = keep_candidates(s, logits);
        for (int i = 0; i < kept.count; i++) {
            float w = kept.dense ? s->weights[i] : s->cand_w[i];
            probs[kept.dense ? i : s->cand_tok[i]] = (float)(w / kept.total);
            kept_count += w > 0.0f;
        }
    }
    clear_patches(s);
    return kept_count;
}

int sampler_feed(Sampler *s, const int *tokens, int n_tokens) {
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= s->n) return -1;
    for (int i = 0; i < n_tokens; i++) record(s, tokens[i], 0);
    return 0;
}

/* ---- lifetime ---- */

static int split_bias(Sampler *s, const int *tokens, const float *values, int n_bias) {
    for (int i = 0; i < n_bias; i++) {
        if (tokens[i] < 0 || tokens[i] >= s->n) return -1;
        if (values[i] >= 100.0f) s->forced_tok[s->n_forced++] = tokens[i];
        s->bias_tok[s->n_bias] = tokens[i];
        s->bias_val[s->n_bias++] = values[i] <= -100.0f ? -INFINITY : values[i];
    }
    return 0;
}

/* malloc or calloc that records a failure, so allocate() checks once at the end. */
static void *grab(size_t count, size_t size, int zeroed, int *failed) {
    void *p = zeroed ? calloc(count + 1, size) : malloc((count + 1) * size);
    *failed |= p == NULL;
    return p;
}

/* Every buffer a request needs, sized by its parameters; returns 0 when memory runs out. */
static int allocate(Sampler *s, int n_bias) {
    const SamplerConfig *c = &s->cfg;
    int window = c->repeat_penalty != 1.0f && c->repeat_last_n != 0;
    int tracks_generated = c->presence_penalty != 0.0f || c->frequency_penalty != 0.0f;
    int dense = c->top_k <= 0 || c->top_k >= s->n;
    size_t n = (size_t)s->n, patches = (size_t)n_bias + (tracks_generated ? n : 0);
    int failed = 0;
    if (window && c->repeat_last_n > 0 && c->repeat_last_n <= RING_MAX) {
        s->ring_cap = c->repeat_last_n;
        s->ring = grab((size_t)s->ring_cap, sizeof(int), 0, &failed);
        patches += (size_t)s->ring_cap;
    } else if (window) {
        s->seen = grab(n, 1, 1, &failed);
        s->seen_tok = grab(n, sizeof(int), 0, &failed);
        patches += n;
    }
    if (tracks_generated) {
        s->gen_count = grab(n, sizeof(int), 1, &failed);
        s->gen_tok = grab(n, sizeof(int), 0, &failed);
    }
    s->patch_cap = (int)(patches < n ? patches : n);
    s->cand_cap = dense ? s->n : (c->top_k > n_bias ? c->top_k : n_bias);
    if (s->cand_cap < MAX_TOP_LOGPROBS) s->cand_cap = MAX_TOP_LOGPROBS;
    s->bias_tok = grab((size_t)n_bias, sizeof(int), 0, &failed);
    s->bias_val = grab((size_t)n_bias, sizeof(float), 0, &failed);
    s->forced_tok = grab((size_t)n_bias, sizeof(int), 0, &failed);
    s->mark = grab(n, 1, 1, &failed);
    s->patch_tok = grab((size_t)s->patch_cap, sizeof(int), 0, &failed);
    s->patch_logit = grab((size_t)s->patch_cap, sizeof(float), 0, &failed);
    s->cand_tok = grab((size_t)s->cand_cap, sizeof(int), 0, &failed);
    s->cand_w = grab((size_t)s->cand_cap, sizeof(float), 0, &failed);
    s->block_sum = grab(n / SUM_BLOCK, sizeof(double), 0, &failed);
    if (dense) s->weights = grab(n, sizeof(float), 0, &failed);
    return !failed;
}

Sampler *sampler_new(int vocab_size, const SamplerConfig *config, const int *bias_tokens,
                     const float *bias_values, int n_bias) {
    if (vocab_size <= 0 || n_bias < 0 || n_bias > vocab_size || !config) return NULL;
    Sampler *s = calloc(1, sizeof(Sampler));
    if (!s) return NULL;
    s->n = vocab_size;
    s->cfg = *config;
    s->inv_temp = config->temperature > 0.0f ? 1.0f / config->temperature : 1.0f;
    s->rng = splitmix64(config->seed);
    s->rng += s->rng == 0; /* xorshift must not start at zero */
    if (!allocate(s, n_bias) || split_bias(s, bias_tokens, bias_values, n_bias) != 0) {
        sampler_free(s);
        return NULL;
    }
    return s;
}

void sampler_free(Sampler *s) {
    if (!s) return;
    void *buffers[] = {s->bias_tok,    s->bias_val,  s->forced_tok, s->ring,    s->seen,
                       s->seen_tok,    s->gen_count, s->gen_tok,    s->mark,    s->patch_tok,
                       s->patch_logit, s->cand_tok,  s->cand_w,     s->weights, s->block_sum,
                       s->masked};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) free(buffers[i]);
    free(s);
}
