/* The few llama.cpp calls the side-by-side bench needs, behind a small C API (so the Rust
 * side declares no llama.cpp struct layouts). What it does per call is what
 * scripts/bench_vs_llamacpp.py does through llama-cpp-python: decode a batch after what
 * the context holds, return the argmax of the last position's logits. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include "llama.h"

struct peer {
    struct llama_model *model;
    struct llama_context *ctx;
    int n_vocab;
};

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)level;
    (void)text;
    (void)user;
}

/* NULL when the model or the context cannot be made. One batch holds n_batch tokens. */
struct peer *peer_open(const char *path, int threads, int n_ctx, int n_batch) {
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) return NULL;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)n_batch;
    cp.n_ubatch = (uint32_t)n_batch;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        llama_model_free(model);
        return NULL;
    }
    struct peer *p = malloc(sizeof *p);
    if (!p) {
        llama_free(ctx);
        llama_model_free(model);
        return NULL;
    }
    p->model = model;
    p->ctx = ctx;
    p->n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    return p;
}

int peer_vocab(const struct peer *p) { return p->n_vocab; }

/* Empties the context (positions start at 0 again). */
void peer_reset(struct peer *p) { llama_memory_clear(llama_get_memory(p->ctx), true); }

/* Decodes ids[0..n] after what the context holds; the argmax of the last logits, or -1. */
int peer_eval(struct peer *p, int32_t *ids, int n) {
    if (llama_decode(p->ctx, llama_batch_get_one(ids, n)) != 0) return -1;
    const float *x = llama_get_logits_ith(p->ctx, -1);
    if (!x) return -1;
    int best = 0;
    for (int i = 1; i < p->n_vocab; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

void peer_close(struct peer *p) {
    llama_free(p->ctx);
    llama_model_free(p->model);
    free(p);
}
