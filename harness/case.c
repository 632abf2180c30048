/* case.c - case files: INI text (libinih) -> validated hx_case list; sequence-length specs.
 *
 * The grammar is documented in cases/README.md. One [section] is one case; every key lives in
 * one table (name, type, field, help) so parsing, "accepted keys" lists and hx_case_key_line
 * agree. Path-specific validation and defaults belong to each path's check().
 *
 * libinih gives the handler neither a line number nor a section callback, truncates section
 * names to 49 bytes, silently splits an over-long line into two, and reads an indented line as
 * the continuation of the previous value. So lines reach inih through our own reader, which
 * counts them, rejects over-long ones, strips leading blanks (no continuations), and takes the
 * [section] headers itself (full name and header line); inih then splits 'key = value' pairs
 * and inline comments. The first error stops the reader, so every message names one file:line.
 */
#include "hx.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ key table */
typedef enum hx__ktype {
    HX__K_PATH,
    HX__K_STRING,
    HX__K_TOL, /* atol.<output>, rtol.<output>, cos_tol.<output> */
    HX__K_INT,
    HX__K_DOUBLE,
    HX__K_BOOL,
    HX__K_DTYPE,
    HX__K_LENS,
    HX__K_ENUM, /* one word of hx__key.choices, stored as its index (int) */
} hx__ktype;

typedef struct hx__key {
    const char *name;
    hx__ktype type;
    size_t off;        /* field in hx_case */
    size_t size;       /* string fields: buffer size */
    double min;        /* ints and doubles: smallest accepted value */
    int min_excluded;  /* doubles: min itself is not accepted */
    const char *alias; /* the other spelling of the same field */
    int common;        /* taken by every path, so not listed in hx_path.keys */
    const char *help;
    const char *choices; /* HX__K_ENUM: space-separated words, in HX_* enum order */
} hx__key;

/* The most sequences one case may have: far above any serving batch, and low enough that the
 * per-sequence arrays of a mistyped batch (2147483647) are not gigabytes. */
#define HX__BATCH_MAX (1 << 20)

#define HX__F(field) offsetof(hx_case, field)
#define HX__S(field) sizeof(((hx_case *)0)->field)

static const hx__key hx__keys[] = {
    {"path", HX__K_PATH, 0, 0, 0, 0, NULL, 1, "the attention path this case runs (required)", NULL},
    {"tags", HX__K_STRING, HX__F(tags), HX__S(tags), 0, 0, NULL, 1, "free text, for --filter and plots", NULL},
    {"atol", HX__K_TOL, 0, 0, 0, 0, NULL, 1, "absolute tolerance of one output", NULL},
    {"rtol", HX__K_TOL, 0, 0, 0, 0, NULL, 1, "relative tolerance of one output", NULL},
    {"cos_tol", HX__K_TOL, 0, 0, 0, 0, NULL, 1, "largest cos_diff accepted for one output", NULL},
    {"tol_reason", HX__K_STRING, HX__F(tol_reason), HX__S(tol_reason), 0, 0, NULL, 1,
     "why a tolerance is looser than the default (required then)", NULL},
    {"batch", HX__K_INT, HX__F(batch), 0, 1, 0, NULL, 0, "number of sequences", NULL},
    {"heads_q", HX__K_INT, HX__F(heads_q), 0, 1, 0, "heads", 0, "query heads", NULL},
    {"heads", HX__K_INT, HX__F(heads_q), 0, 1, 0, "heads_q", 0, "heads (same as heads_q)", NULL},
    {"heads_kv", HX__K_INT, HX__F(heads_kv), 0, 1, 0, NULL, 0, "key/value heads", NULL},
    {"head_dim", HX__K_INT, HX__F(head_dim), 0, 1, 0, NULL, 0, "query/key head dimension", NULL},
    {"head_dim_v", HX__K_INT, HX__F(head_dim_v), 0, 1, 0, NULL, 0, "value head dimension", NULL},
    {"tokens", HX__K_INT, HX__F(tokens), 0, 1, 0, NULL, 0, "number of tokens", NULL},
    {"seq_lens_q", HX__K_LENS, HX__F(seq_lens_q), 0, 0, 0, "seq_lens", 0, "query length per sequence", NULL},
    {"seq_lens", HX__K_LENS, HX__F(seq_lens_q), 0, 0, 0, "seq_lens_q", 0,
     "length per sequence (same as seq_lens_q)", NULL},
    {"seq_lens_k", HX__K_LENS, HX__F(seq_lens_k), 0, 0, 0, NULL, 0, "key length per sequence", NULL},
    {"scale", HX__K_DOUBLE, HX__F(scale), 0, 0, 1, NULL, 0, "logit scale", NULL},
    {"softcap", HX__K_DOUBLE, HX__F(softcap), 0, 0, 0, NULL, 0, "logit soft cap, 0 = none", NULL},
    {"causal", HX__K_BOOL, HX__F(causal), 0, 0, 0, NULL, 0, "causal mask, bottom-right aligned", NULL},
    {"window_left", HX__K_INT, HX__F(window_left), 0, -1, 0, NULL, 0,
     "keys visible to the left of the diagonal, -1 = all", NULL},
    {"dtype", HX__K_DTYPE, HX__F(dtype), 0, 0, 0, NULL, 0, "storage dtype of the inputs and out", NULL},
    {"context_lens", HX__K_LENS, HX__F(context_lens), 0, 0, 0, NULL, 0,
     "tokens already in the paged cache, per request", NULL},
    {"layout", HX__K_ENUM, HX__F(layout), 0, 0, 0, NULL, 0, "paged KV cache layout",
     "nhd hnd shuffled"},
    {"kv_dtype", HX__K_DTYPE, HX__F(kv_dtype), 0, 0, 0, NULL, 0, "KV cache element dtype", NULL},
    {"block_size", HX__K_INT, HX__F(block_size), 0, 1, 0, NULL, 0, "tokens per cache block", NULL},
    {"num_blocks", HX__K_INT, HX__F(num_blocks), 0, 1, 0, NULL, 0,
     "physical blocks in the cache pool (default: as many as needed)", NULL},
    {"block_alloc", HX__K_ENUM, HX__F(block_alloc), 0, 0, 0, NULL, 0,
     "block ids: random permutation, identity, or the highest ids of the pool",
     "permuted identity high"},
    {"k_scale", HX__K_DOUBLE, HX__F(k_scale), 0, 0, 1, NULL, 0, "fp8 K cache scale", NULL},
    {"v_scale", HX__K_DOUBLE, HX__F(v_scale), 0, 0, 1, NULL, 0, "fp8 V cache scale", NULL},
    {"chunk_tokens", HX__K_INT, HX__F(chunk_tokens), 0, 1, 0, NULL, 0,
     "context tokens per chunk across the batch (extend)", NULL},
    {"positions", HX__K_LENS, HX__F(positions), 0, 0, 0, NULL, 0,
     "position of each decode token (DeepSeek V4)", NULL},
    {"window", HX__K_INT, HX__F(window), 0, 1, 0, NULL, 0, "sliding-window size (SWA scope)", NULL},
    {"topk", HX__K_INT, HX__F(topk), 0, 1, 0, NULL, 0, "extra-scope index row width", NULL},
    {"compress_ratio", HX__K_INT, HX__F(compress_ratio), 0, 1, 0, NULL, 0,
     "positions per compressed entry of the extra scope", NULL},
    {"swa_block_size", HX__K_INT, HX__F(swa_block_size), 0, 1, 0, NULL, 0,
     "block size of the SWA cache", NULL},
    {"extra_block_size", HX__K_INT, HX__F(extra_block_size), 0, 1, 0, NULL, 0,
     "block size of the extra-scope cache", NULL},
    {"sink", HX__K_ENUM, HX__F(sink), 0, 0, 0, NULL, 0, "attention sink per head",
     "none random +inf -inf"},
};
enum { HX__NKEYS = (int)(sizeof hx__keys / sizeof hx__keys[0]) };
_Static_assert(HX__NKEYS <= 64, "keys_given and key_line hold 64 keys");

static const char *const hx__tol_kinds[3] = {"atol", "rtol", "cos_tol"};

static int hx__key_index(const char *name)
{
    for (int i = 0; i < HX__NKEYS; i++)
        if (strcmp(hx__keys[i].name, name) == 0)
            return i;
    return -1;
}

static int hx__tol_kind(const char *name, size_t len)
{
    for (int k = 0; k < 3; k++)
        if (strlen(hx__tol_kinds[k]) == len && strncmp(hx__tol_kinds[k], name, len) == 0)
            return k;
    return -1;
}

/* Is `word` one of the words of `list` (separated by blanks or '|')? */
static int hx__has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *s = list; s && *s;) {
        while (*s == ' ' || *s == '|')
            s++;
        size_t m = strcspn(s, " |");
        if (m == n && m && strncmp(s, word, n) == 0)
            return 1;
        s += m;
    }
    return 0;
}

static int hx__path_takes(const hx_path *p, const hx__key *k)
{
    return k->common || hx__has_word(p->keys, k->name) ||
           (k->alias && hx__has_word(p->keys, k->alias));
}

/* Append to a fixed buffer, truncating quietly: used only to build messages. */
static void hx__cat(char *buf, size_t n, const char *s)
{
    size_t k = strlen(buf);
    if (k + 1 < n)
        snprintf(buf + k, n - k, "%s", s);
}

static void hx__accepted_keys(const hx_path *p, char *buf, size_t n)
{
    buf[0] = '\0';
    for (int i = 0; i < HX__NKEYS; i++) {
        const hx__key *k = &hx__keys[i];
        if (p && !hx__path_takes(p, k))
            continue;
        if (buf[0])
            hx__cat(buf, n, " ");
        hx__cat(buf, n, k->name);
        if (k->type == HX__K_TOL)
            hx__cat(buf, n, ".<output>");
    }
    if (p) {
        hx__cat(buf, n, " (outputs: ");
        hx__cat(buf, n, p->outputs);
        hx__cat(buf, n, ")");
    }
}

static void hx__path_names(char *buf, size_t n)
{
    buf[0] = '\0';
    for (int i = 0; i < hx_n_paths; i++) {
        if (i)
            hx__cat(buf, n, " ");
        hx__cat(buf, n, hx_paths[i]->name);
    }
}

static void hx__dtype_names(char *buf, size_t n)
{
    buf[0] = '\0';
    for (int t = 0; t < REF_DTYPE_COUNT; t++) {
        if (t)
            hx__cat(buf, n, " ");
        hx__cat(buf, n, ref_dtype_name((ref_dtype)t));
    }
}

/* --------------------------------------------------------------------- errors */
/* Messages quote the file's text; a control character in it ('\r', ESC, ...) is written as
 * \xNN, so a message stays one line and cannot drive the terminal. */
static void hx__printable(const char *s, char *out, size_t n)
{
    size_t k = 0;
    for (; *s && k + 1 < n; s++) {
        const unsigned char ch = (unsigned char)*s;
        if (ch >= 0x20 && ch != 0x7f)
            out[k++] = (char)ch;
        else if (k + 5 < n)
            k += (size_t)snprintf(out + k, n - k, "\\x%02x", ch);
        else
            break;
    }
    out[k] = '\0';
}

/* "file:line: [case] key 'k': msg"; cname and key may be NULL. */
static int hx__vfail_at(hx_err *e, const char *file, int line, const char *cname,
                        const char *key, const char *fmt, va_list ap)
{
    char raw[sizeof e->msg], msg[sizeof e->msg];
    int k = snprintf(raw, sizeof raw, "%s:%d: ", file, line);
    if (cname && k >= 0 && (size_t)k < sizeof raw)
        k += snprintf(raw + k, sizeof raw - (size_t)k, "[%s] ", cname);
    if (key && k >= 0 && (size_t)k < sizeof raw)
        k += snprintf(raw + k, sizeof raw - (size_t)k, "key '%s': ", key);
    if (k >= 0 && (size_t)k < sizeof raw)
        vsnprintf(raw + k, sizeof raw - (size_t)k, fmt, ap);
    hx__printable(raw, msg, sizeof msg);
    return hx_fail(e, HX_ECASE, "%s", msg);
}

static int hx__fail_at(hx_err *e, const char *file, int line, const char *cname, const char *key,
                       const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int hx__fail_at(hx_err *e, const char *file, int line, const char *cname, const char *key,
                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = hx__vfail_at(e, file, line, cname, key, fmt, ap);
    va_end(ap);
    return rc;
}

/* The key as the case file spelled it: "seq_lens" when that alias was given for seq_lens_q. */
static const char *hx__written(const hx_case *c, const char *key)
{
    int i = hx__key_index(key);
    if (i < 0 || (c->keys_given >> i & 1) || !hx__keys[i].alias)
        return key;
    int j = hx__key_index(hx__keys[i].alias);
    return (j >= 0 && (c->keys_given >> j & 1)) ? hx__keys[j].name : key;
}

int hx_case_key_line(const hx_case *c, const char *key)
{
    const char *dot = strchr(key, '.');
    if (dot) {
        int kind = hx__tol_kind(key, (size_t)(dot - key));
        for (int i = 0; kind >= 0 && i < c->n_tol_override; i++) {
            const int has[3] = {c->tol_override[i].has_atol, c->tol_override[i].has_rtol,
                                c->tol_override[i].has_cos};
            if (has[kind] && strcmp(c->tol_override[i].output, dot + 1) == 0)
                return c->tol_override[i].line;
        }
        return 0;
    }
    int i = hx__key_index(key);
    if (i < 0)
        return 0;
    if (c->keys_given >> i & 1)
        return c->key_line[i];
    int j = hx__keys[i].alias ? hx__key_index(hx__keys[i].alias) : -1;
    return (j >= 0 && (c->keys_given >> j & 1)) ? c->key_line[j] : 0;
}

int hx_case_fail(hx_err *e, const hx_case *c, const char *key, const char *fmt, ...)
{
    int line = key ? hx_case_key_line(c, key) : 0;
    va_list ap;
    va_start(ap, fmt);
    int rc = hx__vfail_at(e, c->file, line ? line : c->line, c->name,
                          key ? hx__written(c, key) : NULL, fmt, ap);
    va_end(ap);
    return rc;
}

/* ----------------------------------------------------------------------- lens */
typedef struct hx__item {
    int64_t lo, hi, count;
    int is_range, has_count;
} hx__item;

typedef struct hx__spec {
    int n_items;
    int64_t n_values; /* after expansion, counting a lone value or range once */
    int broadcast;    /* exactly one INT or one range: one value per sequence */
    hx__item item[HX_LENS_TEXT_MAX / 2 + 1];
} hx__spec;

static const char *hx__skip_blanks(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

static int hx__parse_i64(const char **sp, int64_t *v)
{
    const char *s = *sp;
    if (!(isdigit((unsigned char)*s) || (*s == '-' && isdigit((unsigned char)s[1]))))
        return -1;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno == ERANGE)
        x = x < 0 ? INT64_MIN : INT64_MAX; /* reported below as out of range */
    *v = x;
    *sp = end;
    return 0;
}

static int hx__check_len(int64_t v, char *why, size_t n)
{
    if (v < 0)
        snprintf(why, n, "negative length %lld", (long long)v);
    else if (v > INT32_MAX)
        snprintf(why, n, "length %lld does not fit int32", (long long)v);
    else
        return 0;
    return -1;
}

/* item := INT | INT '..' INT | INT '*' COUNT;  spec := item (',' item)*  (blanks anywhere) */
static int hx__spec_parse(const char *text, hx__spec *sp, char *why, size_t n)
{
    sp->n_items = 0;
    sp->n_values = 0;
    sp->broadcast = 0;
    const char *s = hx__skip_blanks(text);
    if (!*s) {
        snprintf(why, n, "empty; expected lengths such as 4096 or 512,17,0 or 3000..4096 or 128*4");
        return -1;
    }
    for (;;) {
        if (sp->n_items >= (int)(sizeof sp->item / sizeof sp->item[0])) {
            snprintf(why, n, "too many items");
            return -1;
        }
        hx__item *it = &sp->item[sp->n_items++];
        memset(it, 0, sizeof *it);
        const char *at = s;
        if (hx__parse_i64(&s, &it->lo) != 0)
            goto syntax;
        it->hi = it->lo;
        it->count = 1;
        if (hx__check_len(it->lo, why, n))
            return -1;
        s = hx__skip_blanks(s);
        if (s[0] == '.' && s[1] == '.') {
            s = hx__skip_blanks(s + 2);
            at = s;
            if (hx__parse_i64(&s, &it->hi) != 0)
                goto syntax;
            if (hx__check_len(it->hi, why, n))
                return -1;
            if (it->hi < it->lo) {
                snprintf(why, n, "range %lld..%lld is empty (write low..high)", (long long)it->lo,
                         (long long)it->hi);
                return -1;
            }
            it->is_range = 1;
        } else if (*s == '*') {
            s = hx__skip_blanks(s + 1);
            at = s;
            if (hx__parse_i64(&s, &it->count) != 0)
                goto syntax;
            if (it->count < 1 || it->count > HX__BATCH_MAX) {
                snprintf(why, n, "repeat count %lld must be between 1 and %d",
                         (long long)it->count, HX__BATCH_MAX);
                return -1;
            }
            it->has_count = 1;
        }
        sp->n_values += it->count;
        if (sp->n_values > HX__BATCH_MAX) {
            snprintf(why, n, "more than %d values (the most sequences a case may have)",
                     HX__BATCH_MAX);
            return -1;
        }
        s = hx__skip_blanks(s);
        if (*s == '\0')
            break;
        if (*s != ',') {
            at = s;
            goto syntax;
        }
        s = hx__skip_blanks(s + 1);
        continue;
    syntax:
        snprintf(why, n, "cannot read '%s': expected lengths such as 4096 or 512,17,0 or "
                         "3000..4096 or 128*4 (items separated by ',')",
                 at);
        return -1;
    }
    sp->broadcast = sp->n_items == 1 && !sp->item[0].has_count;
    return 0;
}

static int hx__lens_line(const hx_case *c, const char *key, const hx_lens *l)
{
    int line = l->line ? l->line : hx_case_key_line(c, key);
    return line ? line : c->line;
}

int hx_lens_expand(const hx_case *c, const char *key, hx_lens *l, int n, hx_err *e)
{
    hx__spec sp;
    char why[300];
    int line = hx__lens_line(c, key, l);
    const char *kname = hx__written(c, key);
    if (n < 0)
        return hx__fail_at(e, c->file, line, c->name, kname, "cannot expand to %d values", n);
    if (hx__spec_parse(l->text, &sp, why, sizeof why))
        return hx__fail_at(e, c->file, line, c->name, kname, "'%s': %s", l->text, why);
    if (!sp.broadcast && sp.n_values != n)
        return hx__fail_at(e, c->file, line, c->name, kname, "%s has %lld values but batch is %d",
                           kname, (long long)sp.n_values, n);

    int32_t *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v)
        return hx_fail(e, HX_ENOMEM, "cannot allocate %d lengths for %s", n, key);
    /* Ranges are drawn per sequence from the case seed and the canonical key, so an alias
     * (seq_lens for seq_lens_q) draws the same lengths. */
    uint64_t key_seed = c->seed ^ ref_hash_str(key);
    int64_t total = 0;
    int i = 0, it = 0;
    int64_t left = sp.item[0].count;
    for (; i < n; i++) {
        if (!sp.broadcast && left == 0) {
            it++;
            left = sp.item[it].count;
        }
        const hx__item *x = &sp.item[sp.broadcast ? 0 : it];
        int64_t val = x->is_range ? ref_rng_range(key_seed, (uint64_t)i, x->lo, x->hi) : x->lo;
        left--;
        v[i] = (int32_t)val;
        total += val;
        if (total > INT32_MAX) {
            free(v);
            return hx__fail_at(e, c->file, line, c->name, kname,
                               "the lengths add up to more than %d (int32)", INT32_MAX);
        }
    }
    free(l->v);
    l->v = v;
    l->n = n;
    return HX_OK;
}

int hx_lens_copy(hx_lens *dst, const hx_lens *src, hx_err *e)
{
    int32_t *v = NULL;
    if (src->v) {
        v = malloc((size_t)(src->n ? src->n : 1) * sizeof *v);
        if (!v)
            return hx_fail(e, HX_ENOMEM, "cannot allocate %d lengths", src->n);
        memcpy(v, src->v, (size_t)src->n * sizeof *v);
    }
    free(dst->v);
    *dst = *src;
    dst->v = v;
    return HX_OK;
}

void hx_case_free(hx_case *c)
{
    hx_lens *ls[] = {&c->seq_lens_q, &c->seq_lens_k, &c->context_lens, &c->positions};
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) {
        free(ls[i]->v);
        ls[i]->v = NULL;
        ls[i]->n = 0;
    }
}

void hx_cases_free(hx_caselist *l)
{
    for (int i = 0; i < l->n; i++)
        hx_case_free(&l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

/* ---------------------------------------------------------------- the parser */
typedef struct hx__parse {
    FILE *f;
    const char *file;
    uint64_t run_seed;
    hx_caselist *out;
    hx_err *e;
    int rc;       /* first error found by us; inih's syntax errors are its return value */
    int err_line; /* the line being read when rc was set, to order it against inih's */
    int lineno;
    int n_cases;
    int in_case;
    hx_case c;
    int tol_line[HX_MAX_OUTPUTS][3];
} hx__parse;

static int hx__syntax(hx_err *e, const char *file, int line)
{
    return hx__fail_at(e, file, line, NULL, NULL,
                       "syntax error: expected 'key = value' or '[case]'");
}

static int hx__stop(hx__parse *p, int rc)
{
    if (rc && !p->rc) {
        p->rc = rc;
        p->err_line = p->lineno;
    }
    return rc;
}

static int hx__value_error(hx__parse *p, const char *key, const hx__key *k, const char *value,
                           const char *expected)
{
    return hx__fail_at(p->e, p->file, p->lineno, p->c.name, key, "expected %s, got '%s' (%s)",
                       expected, value, k->help);
}

static int hx__set_tol(hx__parse *p, const char *key, const hx__key *k, const char *output,
                       const char *value)
{
    hx_case *c = &p->c;
    int kind = hx__tol_kind(k->name, strlen(k->name));
    if (!*output || strlen(output) >= HX_NAME_MAX)
        return hx__fail_at(p->e, p->file, p->lineno, c->name, key,
                           "write %s.<output>, with one of the path's outputs%s%s", k->name,
                           c->path ? ": " : "", c->path ? c->path->outputs : "");
    if (c->path && !hx__has_word(c->path->outputs, output))
        return hx__fail_at(p->e, p->file, p->lineno, c->name, key,
                           "path '%s' has no output '%s' (outputs: %s)", c->path->name, output,
                           c->path->outputs);
    int o = 0;
    while (o < c->n_tol_override && strcmp(c->tol_override[o].output, output) != 0)
        o++;
    if (o == c->n_tol_override) {
        if (o == HX_MAX_OUTPUTS)
            return hx__fail_at(p->e, p->file, p->lineno, c->name, key,
                               "tolerances for more than %d outputs", HX_MAX_OUTPUTS);
        c->n_tol_override++;
        strcpy(c->tol_override[o].output, output);
        c->tol_override[o].line = p->lineno;
        c->tol_override[o].tol = (hx_tol){0, 0, -1};
    }
    if (p->tol_line[o][kind])
        return hx__fail_at(p->e, p->file, p->lineno, c->name, key,
                           "given twice (lines %d and %d); keep one", p->tol_line[o][kind],
                           p->lineno);
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (!*value || *end || errno == ERANGE || !isfinite(v) || v < 0)
        return hx__value_error(p, key, k, value, "a finite number >= 0");
    int *has[3] = {&c->tol_override[o].has_atol, &c->tol_override[o].has_rtol,
                   &c->tol_override[o].has_cos};
    double *dst[3] = {&c->tol_override[o].tol.atol, &c->tol_override[o].tol.rtol,
                      &c->tol_override[o].tol.cos_tol};
    *has[kind] = 1;
    *dst[kind] = v;
    p->tol_line[o][kind] = p->lineno;
    return HX_OK;
}

static int hx__set_value(hx__parse *p, const char *key, const hx__key *k, const char *value)
{
    hx_case *c = &p->c;
    char *field = (char *)c + k->off;
    char *end;
    char list[600];
    switch (k->type) {
    case HX__K_PATH: {
        const hx_path *path = hx_path_find(value);
        if (!path) {
            hx__path_names(list, sizeof list);
            return hx__fail_at(p->e, p->file, p->lineno, c->name, key,
                               "unknown path '%s' (known paths: %s)", value, list);
        }
        c->path = path;
        return HX_OK;
    }
    case HX__K_STRING:
        if (strlen(value) >= k->size) {
            char why[64];
            snprintf(why, sizeof why, "at most %zu characters", k->size - 1);
            return hx__value_error(p, key, k, value, why);
        }
        strcpy(field, value);
        return HX_OK;
    case HX__K_INT: {
        errno = 0;
        long v = strtol(value, &end, 10);
        char why[64];
        snprintf(why, sizeof why, "an integer >= %d", (int)k->min);
        if (!*value || *end || errno == ERANGE || v > INT_MAX || v < (long)k->min)
            return hx__value_error(p, key, k, value, why);
        if (k->off == HX__F(batch) && v > HX__BATCH_MAX) {
            snprintf(why, sizeof why, "an integer from 1 to %d", HX__BATCH_MAX);
            return hx__value_error(p, key, k, value, why);
        }
        *(int *)field = (int)v;
        return HX_OK;
    }
    case HX__K_DOUBLE: {
        errno = 0;
        double v = strtod(value, &end);
        if (!*value || *end || errno == ERANGE || !isfinite(v) || v < k->min ||
            (k->min_excluded && v == k->min))
            return hx__value_error(p, key, k, value,
                                   k->min_excluded ? "a finite number > 0" : "a finite number >= 0");
        *(double *)field = v;
        return HX_OK;
    }
    case HX__K_BOOL:
        if (!strcasecmp(value, "true") || !strcasecmp(value, "yes") || !strcmp(value, "1"))
            *(int *)field = 1;
        else if (!strcasecmp(value, "false") || !strcasecmp(value, "no") || !strcmp(value, "0"))
            *(int *)field = 0;
        else
            return hx__value_error(p, key, k, value, "true/false (or yes/no, 1/0)");
        return HX_OK;
    case HX__K_DTYPE: {
        ref_dtype t;
        if (ref_dtype_from_name(value, &t) != REF_OK) {
            char names[128], why[160];
            hx__dtype_names(names, sizeof names);
            snprintf(why, sizeof why, "a dtype: one of %s", names);
            return hx__value_error(p, key, k, value, why);
        }
        *(ref_dtype *)field = t;
        return HX_OK;
    }
    case HX__K_LENS: {
        hx_lens *l = (hx_lens *)field;
        hx__spec sp;
        char why[300];
        /* Syntax is checked now so the error is reported in line order; expansion needs the
         * batch and the seed, known only at the end of the section. */
        if (strlen(value) >= sizeof l->text || hx__spec_parse(value, &sp, why, sizeof why))
            return hx__fail_at(p->e, p->file, p->lineno, c->name, key, "'%s': %s", value,
                               strlen(value) >= sizeof l->text ? "too long" : why);
        strcpy(l->text, value);
        l->set = 1;
        l->line = p->lineno;
        return HX_OK;
    }
    case HX__K_ENUM: {
        const char *w = k->choices;
        for (int idx = 0; *w; idx++) {
            size_t len = strcspn(w, " ");
            if (strlen(value) == len && strncmp(value, w, len) == 0) {
                *(int *)field = idx;
                return HX_OK;
            }
            w += len;
            w += *w == ' ';
        }
        char why[160];
        snprintf(why, sizeof why, "one of: %s", k->choices);
        return hx__value_error(p, key, k, value, why);
    }
    case HX__K_TOL:
        break;
    }
    return HX_OK;
}

static int hx__on_key(hx__parse *p, const char *key, const char *value)
{
    hx_case *c = &p->c;
    char list[900];
    if (!p->in_case)
        return hx__fail_at(p->e, p->file, p->lineno, NULL, key,
                           "comes before any [case] section; start the file with [name]");
    const char *dot = strchr(key, '.');
    int i = -1;
    if (dot) {
        if (hx__tol_kind(key, (size_t)(dot - key)) >= 0) {
            char head[16];
            snprintf(head, sizeof head, "%.*s", (int)(dot - key), key);
            i = hx__key_index(head);
        }
    } else {
        i = hx__key_index(key);
        if (i >= 0 && hx__keys[i].type == HX__K_TOL)
            return hx__fail_at(p->e, p->file, p->lineno, c->name, key,
                               "name the output: %s.<output>%s%s", key,
                               c->path ? ", outputs: " : "", c->path ? c->path->outputs : "");
    }
    if (i < 0) {
        hx__accepted_keys(c->path, list, sizeof list);
        if (c->path)
            return hx__fail_at(p->e, p->file, p->lineno, c->name, NULL,
                               "unknown key '%s'; accepted keys for path '%s': %s", key,
                               c->path->name, list);
        return hx__fail_at(p->e, p->file, p->lineno, c->name, NULL,
                           "unknown key '%s'; accepted keys: %s", key, list);
    }
    const hx__key *k = &hx__keys[i];
    if (c->path && !hx__path_takes(c->path, k))
        return hx__fail_at(p->e, p->file, p->lineno, c->name, NULL,
                           "key '%s' is not used by path '%s' (it takes: %s)", key, c->path->name,
                           c->path->keys);
    if (k->type == HX__K_TOL) {
        int rc = hx__set_tol(p, key, k, dot + 1, value);
        if (rc)
            return rc;
    } else {
        if (c->keys_given >> i & 1)
            return hx__fail_at(p->e, p->file, p->lineno, c->name, key,
                               "given twice (lines %d and %d); keep one", c->key_line[i],
                               p->lineno);
        int a = k->alias ? hx__key_index(k->alias) : -1;
        if (a >= 0 && (c->keys_given >> a & 1))
            return hx__fail_at(p->e, p->file, p->lineno, c->name, key,
                               "'%s' (line %d) and '%s' (line %d) are the same key; keep one",
                               hx__keys[a].name, c->key_line[a], key, p->lineno);
        int rc = hx__set_value(p, key, k, value);
        if (rc)
            return rc;
    }
    if (!(c->keys_given >> i & 1)) {
        c->keys_given |= (uint64_t)1 << i;
        c->key_line[i] = p->lineno;
    }
    return HX_OK;
}

static int hx__handler(void *user, const char *section, const char *name, const char *value)
{
    hx__parse *p = user;
    if (p->rc)
        return 0;
    return hx__stop(p, hx__on_key(p, name, value)) == 0;
}

/* Keys given before the 'path' line could not be checked against the path when read. */
static int hx__check_keys_for_path(hx__parse *p)
{
    hx_case *c = &p->c;
    int bad_line = INT_MAX, bad_key = -1, bad_out = -1;
    for (int i = 0; i < HX__NKEYS; i++)
        if ((c->keys_given >> i & 1) && !hx__path_takes(c->path, &hx__keys[i]) &&
            c->key_line[i] < bad_line) {
            bad_line = c->key_line[i];
            bad_key = i;
        }
    for (int o = 0; o < c->n_tol_override; o++)
        if (!hx__has_word(c->path->outputs, c->tol_override[o].output) &&
            c->tol_override[o].line < bad_line) {
            bad_line = c->tol_override[o].line;
            bad_key = -1;
            bad_out = o;
        }
    if (bad_key >= 0)
        return hx__fail_at(p->e, p->file, bad_line, c->name, NULL,
                           "key '%s' is not used by path '%s' (it takes: %s)",
                           hx__keys[bad_key].name, c->path->name, c->path->keys);
    if (bad_out >= 0)
        return hx__fail_at(p->e, p->file, bad_line, c->name, NULL,
                           "path '%s' has no output '%s' (outputs: %s)", c->path->name,
                           c->tol_override[bad_out].output, c->path->outputs);
    return HX_OK;
}

/* batch: as given, else the length of the longest list; a lone value or range broadcasts. */
static int hx__expand_all_lens(hx_case *c, hx_err *e)
{
    enum { NL = 4 };
    static const char *const names[NL] = {"seq_lens_q", "seq_lens_k", "context_lens", "positions"};
    hx_lens *ls[NL] = {&c->seq_lens_q, &c->seq_lens_k, &c->context_lens, &c->positions};
    if (!(c->keys_given >> hx__key_index("batch") & 1)) {
        int64_t batch = 0;
        int range_key = -1;
        for (int j = 0; j < NL; j++) {
            hx__spec sp;
            char why[300];
            if (!ls[j]->set)
                continue;
            if (hx__spec_parse(ls[j]->text, &sp, why, sizeof why))
                return hx_case_fail(e, c, names[j], "'%s': %s", ls[j]->text, why);
            if (!sp.broadcast && sp.n_values > batch)
                batch = sp.n_values;
            if (sp.broadcast && sp.item[0].is_range && range_key < 0)
                range_key = j;
        }
        int any = 0;
        for (int j = 0; j < NL; j++)
            any |= ls[j]->set;
        if (!any)
            return HX_OK;
        if (batch == 0 && range_key >= 0)
            return hx_case_fail(e, c, names[range_key],
                                "'%s' is drawn per sequence: give 'batch' for a range",
                                ls[range_key]->text);
        c->batch = batch ? (int)batch : 1;
    }
    for (int j = 0; j < NL; j++)
        if (ls[j]->set) {
            int rc = hx_lens_expand(c, names[j], ls[j], c->batch, e);
            if (rc)
                return rc;
        }
    return HX_OK;
}

/* An override looser than the default profile needs a written reason (VALIDATION.md). */
static int hx__check_tol_reason(hx__parse *p)
{
    hx_case *c = &p->c;
    if (c->tol_reason[0])
        return HX_OK;
    ref_dtype dt = c->dtype < REF_DTYPE_COUNT ? c->dtype : REF_BF16;
    int bad_line = INT_MAX, bad_o = -1, bad_kind = -1;
    double bad_def = 0;
    for (int o = 0; o < c->n_tol_override; o++) {
        hx_tol d = hx_default_tol(dt, strcmp(c->tol_override[o].output, "lse") == 0,
                                  c->path->bit_exact);
        const hx_tol *t = &c->tol_override[o].tol;
        const int looser[3] = {
            c->tol_override[o].has_atol && t->atol > d.atol,
            c->tol_override[o].has_rtol && t->rtol > d.rtol,
            c->tol_override[o].has_cos && d.cos_tol >= 0 && t->cos_tol > d.cos_tol,
        };
        const double def[3] = {d.atol, d.rtol, d.cos_tol};
        for (int k = 0; k < 3; k++)
            if (looser[k] && p->tol_line[o][k] < bad_line) {
                bad_line = p->tol_line[o][k];
                bad_o = o;
                bad_kind = k;
                bad_def = def[k];
            }
    }
    if (bad_o < 0)
        return HX_OK;
    const double vals[3] = {c->tol_override[bad_o].tol.atol, c->tol_override[bad_o].tol.rtol,
                            c->tol_override[bad_o].tol.cos_tol};
    return hx__fail_at(p->e, p->file, bad_line, c->name, NULL,
                       "key '%s.%s' = %g is looser than the default %g: add tol_reason = <why>",
                       hx__tol_kinds[bad_kind], c->tol_override[bad_o].output, vals[bad_kind],
                       bad_def);
}

static int hx__finish_case(hx__parse *p)
{
    hx_case *c = &p->c;
    char list[300];
    int rc;
    p->in_case = 0;
    if (!c->path) {
        hx__path_names(list, sizeof list);
        return hx__fail_at(p->e, p->file, c->line, c->name, NULL,
                           "no 'path' key; add path = <one of: %s>", list);
    }
    c->seed = ref_hash_str(c->name) ^ p->run_seed;
    if ((rc = hx__check_keys_for_path(p)) || (rc = hx__expand_all_lens(c, p->e)) ||
        (rc = c->path->check(c, p->e)) || (rc = hx__check_tol_reason(p)))
        return rc;

    hx_caselist *l = p->out;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        hx_case *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return hx_fail(p->e, HX_ENOMEM, "cannot grow the case list to %d cases", cap);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *c;
    memset(c, 0, sizeof *c); /* the list owns the lens arrays now */
    p->n_cases++;
    return HX_OK;
}

static int hx__name_ok(const char *s, size_t n)
{
    if (n == 0 || n >= HX_CASE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return 0;
    return 1;
}

static int hx__start_case(hx__parse *p, const char *line)
{
    const char *close = strchr(line, ']');
    if (!close)
        return hx__syntax(p->e, p->file, p->lineno);
    const char *rest = hx__skip_blanks(close + 1);
    if (*rest && *rest != ';' && *rest != '#')
        return hx__fail_at(p->e, p->file, p->lineno, NULL, NULL,
                           "unexpected '%s' after the [case] header", rest);
    size_t n = (size_t)(close - line - 1);
    if (!hx__name_ok(line + 1, n))
        return hx__fail_at(p->e, p->file, p->lineno, NULL, NULL,
                           "case name '%.*s' is not allowed: use 1 to %d letters, digits, "
                           "'_', '-' or '.'",
                           (int)n, line + 1, HX_CASE_NAME_MAX - 1);
    if (p->in_case) {
        int rc = hx__finish_case(p);
        if (rc)
            return rc;
    }
    hx_case *c = &p->c;
    memset(c, 0, sizeof *c);
    memcpy(c->name, line + 1, n);
    c->name[n] = '\0';
    for (int i = 0; i < p->out->n; i++)
        if (strcmp(p->out->v[i].name, c->name) == 0)
            return hx__fail_at(p->e, p->file, p->lineno, NULL, NULL,
                               "case '%s' is defined twice (first at %s:%d); rename one",
                               c->name, p->out->v[i].file, p->out->v[i].line);
    snprintf(c->file, sizeof c->file, "%s", p->file);
    c->line = p->lineno;
    c->causal = -1;
    c->window_left = -1;
    c->dtype = REF_DTYPE_COUNT;
    c->kv_dtype = REF_DTYPE_COUNT;
    c->layout = c->block_alloc = c->sink = -1;
    memset(p->tol_line, 0, sizeof p->tol_line);
    p->in_case = 1;
    return HX_OK;
}

/* inih's reader: one line, counted; leading blanks stripped; headers handled here. */
static char *hx__read_line(char *buf, int num, void *stream)
{
    hx__parse *p = stream;
    if (p->rc)
        return NULL;
    int ch = 0, prev = 0;
    size_t len = 0, stored = 0;
    while ((ch = getc(p->f)) != EOF && ch != '\n') {
        if (stored + 1 < (size_t)num)
            buf[stored++] = (char)ch;
        len++;
        prev = ch;
    }
    if (ch == EOF && len == 0) {
        if (ferror(p->f))
            hx__stop(p, hx_fail(p->e, HX_EINPUT, "%s:%d: cannot read: %s", p->file, p->lineno + 1,
                                strerror(errno)));
        return NULL;
    }
    p->lineno++;
    if (prev == '\r') { /* CRLF files: the '\r' is not part of the line */
        len--;
        if (stored == len + 1)
            stored--;
    }
    if (len + 1 > (size_t)num) {
        hx__stop(p, hx__fail_at(p->e, p->file, p->lineno, NULL, NULL,
                                "line too long (max %d characters)", num - 1));
        return NULL;
    }
    buf[stored] = '\0';
    size_t skip = 0;
    if (p->lineno == 1 && strncmp(buf, "\xEF\xBB\xBF", 3) == 0)
        skip = 3;
    while (buf[skip] == ' ' || buf[skip] == '\t' || buf[skip] == '\f' || buf[skip] == '\v')
        skip++;
    memmove(buf, buf + skip, stored - skip + 1);
    if (buf[0] == '[' && hx__stop(p, hx__start_case(p, buf)))
        return NULL;
    return buf;
}

/* Read every case of stream f (named `file` in messages); f stays open. */
static int hx__cases_read(FILE *f, const char *file, uint64_t run_seed, hx_caselist *out,
                          hx_err *e)
{
    hx__parse *p = calloc(1, sizeof *p);
    if (!p)
        return hx_fail(e, HX_ENOMEM, "out of memory reading '%s'", file);
    p->f = f;
    p->file = file;
    p->run_seed = run_seed;
    p->out = out;
    p->e = e;
    int n0 = out->n;

    int r = ini_parse_stream(hx__read_line, p, hx__handler, p);
    int rc;
    if (r > 0 && (!p->rc || r < p->err_line))
        rc = hx__syntax(e, file, r);
    else if (p->rc)
        rc = p->rc;
    else if (r < 0)
        rc = hx_fail(e, HX_ENOMEM, "%s: out of memory in the INI parser", file);
    else if (p->in_case)
        rc = hx__finish_case(p);
    else
        rc = HX_OK;
    if (!rc && p->n_cases == 0)
        rc = hx_fail(e, HX_ECASE, "%s: no cases in file (a case starts with a [name] line)", file);

    hx_case_free(&p->c);
    free(p);
    if (rc) {
        for (int i = n0; i < out->n; i++)
            hx_case_free(&out->v[i]);
        out->n = n0;
    }
    return rc;
}

int hx_cases_load(const char *file, uint64_t run_seed, hx_caselist *out, hx_err *e)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return hx_fail(e, HX_EINPUT, "cannot open case file '%s': %s", file, strerror(errno));
    int rc = hx__cases_read(f, file, run_seed, out, e);
    fclose(f);
    return rc;
}

int hx_cases_load_text(const char *name, const char *text, size_t len, uint64_t run_seed,
                       hx_caselist *out, hx_err *e)
{
    /* Read-only: fmemopen never writes through the buffer in mode "r". */
    FILE *f = fmemopen((void *)(uintptr_t)text, len, "r");
    if (!f)
        return hx_fail(e, HX_ENOMEM, "cannot read the case text '%s': %s", name, strerror(errno));
    int rc = hx__cases_read(f, name, run_seed, out, e);
    fclose(f);
    return rc;
}
