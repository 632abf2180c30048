/* records.c - reading result records back (JSON Lines) for `plot` and `compare`.
 *
 * A small JSON parser (RFC 8259 values, nesting depth <= 32) builds each line into a node
 * array, unescaping strings in place in the line's own buffer; then the fields the commands
 * use are taken by name. Unknown keys are skipped; a null number reads as NAN, as the writer
 * (results.c) turns non-finite values into null.
 */
#include "records.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------ the parser */
enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct hx__jnode {
    int type;
    double num;
    const char *str;   /* J_STR: unescaped, NUL-terminated (inside the line buffer) */
    const char *key;   /* member name when the parent is an object */
    int child, next;   /* first child, next sibling: node indices, -1 for none */
} hx__jnode;

typedef struct hx__jdoc {
    hx__jnode *v;
    int n, cap;
    char *p;           /* parse position in the line */
    const char *err;   /* what went wrong, at err_at */
    const char *err_at;
} hx__jdoc;

#define HX__JDEPTH 32

static int hx__jfail(hx__jdoc *d, const char *at, const char *msg)
{
    if (!d->err) {
        d->err = msg;
        d->err_at = at;
    }
    return -1;
}

static int hx__jnew(hx__jdoc *d, int type)
{
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 256;
        hx__jnode *v = realloc(d->v, (size_t)cap * sizeof *v);
        if (!v)
            return hx__jfail(d, d->p, "out of memory");
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n] = (hx__jnode){.type = type, .child = -1, .next = -1};
    return d->n++;
}

static void hx__jspace(hx__jdoc *d)
{
    while (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r')
        d->p++;
}

static int hx__jhex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

static char *hx__utf8(char *w, unsigned cp)
{
    if (cp < 0x80) {
        *w++ = (char)cp;
    } else if (cp < 0x800) {
        *w++ = (char)(0xC0 | cp >> 6);
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *w++ = (char)(0xE0 | cp >> 12);
        *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *w++ = (char)(0xF0 | cp >> 18);
        *w++ = (char)(0x80 | (cp >> 12 & 0x3F));
        *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    }
    return w;
}

/* The string whose opening quote is at d->p, unescaped in place: the result is never longer
 * than the text it came from (a 6-byte \u escape gives at most 3 bytes of UTF-8, a 12-byte
 * surrogate pair 4), so it fits where that text was. NULL on a malformed string. */
static const char *hx__jstring(hx__jdoc *d)
{
    char *const s = ++d->p;
    char *r = s, *w = s;
    while (*r != '"') {
        unsigned char c = (unsigned char)*r;
        if (c == '\0')
            return hx__jfail(d, r, "unterminated string"), NULL;
        if (c < 0x20)
            return hx__jfail(d, r, "control character inside a string"), NULL;
        if (c != '\\') {
            *w++ = *r++;
            continue;
        }
        static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
        const char *k = r[1] ? strchr(esc_in, r[1]) : NULL;
        if (k) {
            *w++ = esc_out[k - esc_in];
            r += 2;
            continue;
        }
        unsigned cp, lo;
        if (r[1] != 'u' || !hx__jhex4(r + 2, &cp))
            return hx__jfail(d, r, "bad escape in a string"), NULL;
        r += 6;
        if (cp >= 0xD800 && cp < 0xDC00 && r[0] == '\\' && r[1] == 'u' && hx__jhex4(r + 2, &lo) &&
            lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            r += 6;
        }
        w = hx__utf8(w, cp);
    }
    d->p = r + 1;
    *w = '\0';
    return s;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? : JSON's numbers, not strtod's (no inf, nan,
 * hex or leading '+'). */
static int hx__jnumber(hx__jdoc *d, double *out)
{
    const char *s = d->p, *q = s;
    if (*q == '-')
        q++;
    if (*q == '0')
        q++;
    else if (*q >= '1' && *q <= '9')
        while (*q >= '0' && *q <= '9')
            q++;
    else
        return hx__jfail(d, s, "expected a value (string, number, object, array, true, false or null)");
    if (*q == '.') {
        if (!(*++q >= '0' && *q <= '9'))
            return hx__jfail(d, q, "expected a digit after '.'");
        while (*q >= '0' && *q <= '9')
            q++;
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-')
            q++;
        if (!(*q >= '0' && *q <= '9'))
            return hx__jfail(d, q, "expected a digit in the exponent");
        while (*q >= '0' && *q <= '9')
            q++;
    }
    *out = strtod(s, NULL);
    d->p = (char *)q;
    return 0;
}

static int hx__jvalue(hx__jdoc *d, int depth)
{
    hx__jspace(d);
    char c = *d->p;
    if (depth > HX__JDEPTH)
        return hx__jfail(d, d->p, "nested too deeply");
    if (c == '{' || c == '[') {
        const char close = c == '{' ? '}' : ']';
        int node = hx__jnew(d, c == '{' ? J_OBJ : J_ARR), last = -1;
        if (node < 0)
            return -1;
        d->p++;
        hx__jspace(d);
        if (*d->p == close) {
            d->p++;
            return node;
        }
        for (;;) {
            const char *key = NULL;
            if (close == '}') {
                hx__jspace(d);
                if (*d->p != '"')
                    return hx__jfail(d, d->p, "expected a member name in double quotes");
                if (!(key = hx__jstring(d)))
                    return -1;
                hx__jspace(d);
                if (*d->p != ':')
                    return hx__jfail(d, d->p, "expected ':' after a member name");
                d->p++;
            }
            int kid = hx__jvalue(d, depth + 1);
            if (kid < 0)
                return -1;
            d->v[kid].key = key;
            if (last < 0)
                d->v[node].child = kid;
            else
                d->v[last].next = kid;
            last = kid;
            hx__jspace(d);
            if (*d->p == ',') {
                d->p++;
                continue;
            }
            if (*d->p == close) {
                d->p++;
                return node;
            }
            return hx__jfail(d, d->p, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    if (c == '"') {
        const char *s = hx__jstring(d);
        int node = s ? hx__jnew(d, J_STR) : -1;
        if (node >= 0)
            d->v[node].str = s;
        return node;
    }
    static const struct { const char *word; int type; } lit[] = {
        {"null", J_NULL}, {"true", J_TRUE}, {"false", J_FALSE}};
    for (size_t i = 0; i < sizeof lit / sizeof lit[0]; i++) {
        size_t n = strlen(lit[i].word);
        if (strncmp(d->p, lit[i].word, n) == 0) {
            d->p += n;
            return hx__jnew(d, lit[i].type);
        }
    }
    double v;
    if (hx__jnumber(d, &v))
        return -1;
    int node = hx__jnew(d, J_NUM);
    if (node >= 0)
        d->v[node].num = v;
    return node;
}

/* ------------------------------------------------------------ field access */
typedef struct hx__jget {
    hx__jdoc *d;
    int bad;         /* a field of the wrong type; why says which: "key 'case': expected a string" */
    char why[200];
} hx__jget;

static const hx__jnode *hx__jmember(const hx__jget *g, int obj, const char *key)
{
    if (obj < 0 || g->d->v[obj].type != J_OBJ)
        return NULL;
    for (int k = g->d->v[obj].child; k >= 0; k = g->d->v[k].next)
        if (strcmp(g->d->v[k].key, key) == 0)
            return &g->d->v[k];
    return NULL;
}

static void hx__jwrong(hx__jget *g, const char *key, const char *want)
{
    if (!g->bad) {
        snprintf(g->why, sizeof g->why, "key '%s': expected %s", key, want);
        g->bad = 1;
    }
}

/* A string member into buf; 0 when absent (or of the wrong type, which is noted). */
static int hx__jgets(hx__jget *g, int obj, const char *key, char *buf, size_t n)
{
    const hx__jnode *m = hx__jmember(g, obj, key);
    if (!m)
        return 0;
    if (m->type != J_STR) {
        hx__jwrong(g, key, "a string");
        return 0;
    }
    snprintf(buf, n, "%s", m->str);
    return 1;
}

/* A number member; NAN when absent or null. */
static double hx__jgetn(hx__jget *g, int obj, const char *key)
{
    const hx__jnode *m = hx__jmember(g, obj, key);
    if (!m || m->type == J_NULL)
        return NAN;
    if (m->type != J_NUM) {
        hx__jwrong(g, key, "a number or null");
        return NAN;
    }
    return m->num;
}

/* An object member's node index, or -1. */
static int hx__jgeto(hx__jget *g, int obj, const char *key, int type)
{
    const hx__jnode *m = hx__jmember(g, obj, key);
    if (!m || m->type == J_NULL)
        return -1;
    if (m->type != type) {
        hx__jwrong(g, key, type == J_OBJ ? "an object" : "an array");
        return -1;
    }
    return (int)(m - g->d->v);
}

/* An array of numbers (null -> NAN) into a malloc'd array of *n; NULL when absent or empty. */
static double *hx__jgeta(hx__jget *g, int obj, const char *key, int *n)
{
    int a = hx__jgeto(g, obj, key, J_ARR);
    *n = 0;
    if (a < 0)
        return NULL;
    int cnt = 0;
    for (int k = g->d->v[a].child; k >= 0; k = g->d->v[k].next)
        cnt++;
    double *v = cnt ? malloc((size_t)cnt * sizeof *v) : NULL;
    if (!v)
        return NULL;
    for (int k = g->d->v[a].child; k >= 0; k = g->d->v[k].next) {
        const hx__jnode *x = &g->d->v[k];
        if (x->type != J_NUM && x->type != J_NULL) {
            hx__jwrong(g, key, "an array of numbers");
            free(v);
            return NULL;
        }
        v[(*n)++] = x->type == J_NUM ? x->num : NAN;
    }
    return v;
}

/* ------------------------------------------------------------ records */
void hx_slugify(const char *name, char *buf, size_t n)
{
    size_t k = 0;
    if (!n)
        return;
    for (const char *p = name; *p && k + 1 < n; p++) {
        char ch = *p;
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
            buf[k++] = ch;
        else if (k > 0 && buf[k - 1] != '-')
            buf[k++] = '-';
    }
    while (k > 0 && buf[k - 1] == '-')
        k--;
    buf[k] = '\0';
}

int hx_rec_status_ok(const char *status)
{
    return !strcmp(status, "PASS") || !strcmp(status, "SKIP_UNSUPPORTED") ||
           !strcmp(status, "SKIP_NO_GPU");
}

const hx_rec_out *hx_rec_worst_output(const hx_rec *r)
{
    const hx_rec_out *w = NULL;
    for (int i = 0; i < r->n_out; i++)
        if (!w || isnan(r->out[i].headroom) || r->out[i].headroom > w->headroom)
            w = &r->out[i];
    return w;
}

static void hx__rec_free(hx_rec *r)
{
    for (int i = 0; i < r->n_out; i++) {
        free(r->out[i].prof_max_abs);
        free(r->out[i].prof_headroom);
        r->out[i].prof_max_abs = r->out[i].prof_headroom = NULL;
    }
}

/* The record in parsed line `root`; a message in g->why when it is not one. */
static int hx__rec_from(hx__jget *g, int root, hx_rec *r)
{
    const hx__jnode *schema = hx__jmember(g, root, "schema");
    if (!schema || schema->type != J_NUM) {
        snprintf(g->why, sizeof g->why,
                 "not a result record (no \"schema\" number; expected the JSON Lines of "
                 "`attn-harness run --json`)");
        return -1;
    }
    if (schema->num != 1) {
        snprintf(g->why, sizeof g->why, "schema %g: this build reads schema 1", schema->num);
        return -1;
    }
    static const char *const required[] = {"case", "variant", "device", "status"};
    char *const dst[] = {r->case_name, r->variant, r->device, r->status};
    const size_t dn[] = {sizeof r->case_name, sizeof r->variant, sizeof r->device, sizeof r->status};
    for (int i = 0; i < 4; i++) {
        if (!hx__jgets(g, root, required[i], dst[i], dn[i]) && !g->bad) {
            snprintf(g->why, sizeof g->why, "key '%s' missing", required[i]);
            return -1;
        }
        /* Names become gnuplot data rows and labels: one printable line each. */
        for (const char *q = dst[i]; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f) {
                snprintf(g->why, sizeof g->why, "key '%s': control character in the name",
                         required[i]);
                return -1;
            }
    }
    hx__jgets(g, root, "path", r->path, sizeof r->path);
    hx__jgets(g, root, "message", r->message, sizeof r->message);
    int t = hx__jgeto(g, root, "timing", J_OBJ);
    double samples = hx__jgetn(g, t, "samples");
    r->t.samples = samples >= 0 && samples <= 1e9 ? (int)samples : 0; /* NaN: 0 */
    r->t.median_ms = hx__jgetn(g, t, "median_ms");
    r->t.min_ms = hx__jgetn(g, t, "min_ms");
    r->t.max_ms = hx__jgetn(g, t, "max_ms");
    r->t.stddev_ms = hx__jgetn(g, t, "stddev_ms");
    r->flops = hx__jgetn(g, root, "flops");
    r->bytes = hx__jgetn(g, root, "bytes");
    r->tflops = hx__jgetn(g, root, "tflops");
    r->gbps = hx__jgetn(g, root, "gbps");
    r->err_ratio = hx__jgetn(g, root, "err_ratio");

    int run = hx__jgeto(g, root, "run", J_OBJ), gpu = hx__jgeto(g, run, "gpu", J_OBJ);
    hx__jgets(g, run, "git_rev", r->git_rev, sizeof r->git_rev);
    r->dgemm_gflops = hx__jgetn(g, run, "dgemm_gflops");
    r->read_gbps = hx__jgetn(g, gpu, "read_gbps");
    r->copy_gbps = hx__jgetn(g, gpu, "copy_gbps");
    r->mma_tflops = hx__jgetn(g, gpu, "mma_tflops");
    /* The emulated rows of a GPU run say device "cpu" but belong to that run's GPU. */
    char gname[256] = "";
    hx__jgets(g, gpu, "name", gname, sizeof gname);
    const char *dev = gname[0] ? gname : r->device;
    if (!dev[0] || !strcmp(dev, "cpu") || !strcmp(dev, "none"))
        snprintf(r->slug, sizeof r->slug, "cpu");
    else
        hx_slugify(dev, r->slug, sizeof r->slug);

    int outs = hx__jgeto(g, root, "outputs", J_ARR);
    for (int k = outs >= 0 ? g->d->v[outs].child : -1; k >= 0 && r->n_out < HX_MAX_OUTPUTS;
         k = g->d->v[k].next) {
        if (g->d->v[k].type != J_OBJ) {
            hx__jwrong(g, "outputs", "an array of objects");
            break;
        }
        hx_rec_out *o = &r->out[r->n_out++];
        hx__jgets(g, k, "name", o->name, sizeof o->name);
        hx__jgets(g, k, "status", o->status, sizeof o->status);
        hx__jgets(g, hx__jgeto(g, k, "worst", J_OBJ), "where", o->where, sizeof o->where);
        o->atol = hx__jgetn(g, k, "atol");
        o->max_abs = hx__jgetn(g, k, "max_abs");
        o->cos_diff = hx__jgetn(g, k, "cos_diff");
        o->headroom = hx__jgetn(g, k, "headroom");
        int prof = hx__jgeto(g, k, "err_by_row", J_OBJ);
        if (prof >= 0) {
            int na = 0, nh = 0;
            double axis = hx__jgetn(g, prof, "axis"), rows = hx__jgetn(g, prof, "rows");
            o->prof_max_abs = hx__jgeta(g, prof, "max_abs", &na);
            o->prof_headroom = hx__jgeta(g, prof, "headroom", &nh);
            if (na != nh || !isfinite(rows) || rows < na || rows > 9007199254740992.0 ||
                (axis != 0 && axis != 1)) {
                snprintf(g->why, sizeof g->why,
                         "output '%s': err_by_row needs buckets <= rows <= 2^53, axis 0 or 1, and "
                         "max_abs and headroom arrays of one length",
                         o->name);
                return -1;
            }
            o->prof_n = na;
            o->prof_axis = (int)axis;
            o->prof_rows = (int64_t)rows;
        }
    }
    return g->bad ? -1 : 0; /* g->why says which key */
}

static int hx__recs_push(hx_recset *s, const hx_rec *r)
{
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        hx_rec *v = realloc(s->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = *r;
    return 0;
}

static int hx__load_file(hx_recset *s, const char *file, hx_err *e)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return hx_fail(e, HX_EINPUT, "cannot open result file '%s': %s", file, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = HX_OK;
    hx__jdoc d = {0};
    hx_rec *r = calloc(1, sizeof *r);
    if (!r)
        rc = hx_fail(e, HX_ENOMEM, "out of memory");
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)len != strlen(line)) {
            rc = hx_fail(e, HX_EINPUT, "%s:%d: a NUL byte in the line: not a JSON Lines file", file,
                         lineno);
            break;
        }
        d.n = 0;
        d.err = NULL;
        d.p = line;
        hx__jspace(&d);
        if (!*d.p)
            continue; /* blank line */
        int root = hx__jvalue(&d, 0);
        if (root >= 0) {
            hx__jspace(&d);
            if (*d.p)
                root = hx__jfail(&d, d.p, "unexpected text after the record");
            else if (d.v[root].type != J_OBJ)
                root = hx__jfail(&d, line, "a record is a JSON object ({...})");
        }
        if (root < 0) {
            rc = hx_fail(e, HX_EINPUT, "%s:%d: column %d: %s", file, lineno,
                         (int)(d.err_at - line) + 1, d.err);
            break;
        }
        memset(r, 0, sizeof *r);
        hx__jget g = {.d = &d};
        if (hx__rec_from(&g, root, r)) {
            hx__rec_free(r);
            rc = hx_fail(e, HX_EINPUT, "%s:%d: %s", file, lineno, g.why);
            break;
        }
        snprintf(r->src, sizeof r->src, "%s", file);
        r->line = lineno;
        if (hx__recs_push(s, r)) {
            hx__rec_free(r);
            rc = hx_fail(e, HX_ENOMEM, "out of memory");
        }
    }
    if (!rc && ferror(f))
        rc = hx_fail(e, HX_EINPUT, "error reading '%s'", file);
    free(r);
    free(d.v);
    free(line);
    fclose(f);
    return rc;
}

static int hx__cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int hx__ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Every *.jsonl under dir, recursively, in name order; *found counts the files. */
static int hx__load_dir(hx_recset *s, const char *dir, int depth, int *found, hx_err *e)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return hx_fail(e, HX_EINPUT, "cannot read directory '%s': %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0, rc = HX_OK;
    struct dirent *de;
    while ((de = readdir(dp))) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 32;
            char **v = realloc(names, (size_t)cap * sizeof *v);
            if (!v) {
                rc = hx_fail(e, HX_ENOMEM, "out of memory");
                break;
            }
            names = v;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = hx_fail(e, HX_ENOMEM, "out of memory");
            break;
        }
        n++;
    }
    closedir(dp);
    if (n > 1)
        qsort(names, (size_t)n, sizeof *names, hx__cmp_str);
    for (int i = 0; i < n && !rc; i++) {
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s%s%s", dir, hx__ends_with(dir, "/") ? "" : "/", names[i]);
        if (stat(p, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < 8)
            rc = hx__load_dir(s, p, depth + 1, found, e);
        else if (S_ISREG(st.st_mode) && hx__ends_with(names[i], ".jsonl")) {
            (*found)++;
            rc = hx__load_file(s, p, e);
        }
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int hx_recs_load(hx_recset *s, const char *src, hx_err *e)
{
    struct stat st;
    if (stat(src, &st) != 0)
        return hx_fail(e, HX_EINPUT, "cannot open result file '%s': %s", src, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return hx__load_file(s, src, e);
    int found = 0, rc = hx__load_dir(s, src, 0, &found, e);
    if (!rc && !found)
        return hx_fail(e, HX_EINPUT,
                       "no *.jsonl result files under '%s' (attn-harness run --json FILE writes them)",
                       src);
    return rc;
}

static const hx_recset *hx__sort_set;

static int hx__cmp_key(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    const hx_rec *x = &hx__sort_set->v[i], *y = &hx__sort_set->v[j];
    int c = strcmp(x->case_name, y->case_name);
    if (!c)
        c = strcmp(x->variant, y->variant);
    if (!c)
        c = strcmp(x->slug, y->slug);
    return c ? c : (i > j) - (i < j);
}

int hx_recs_dedup(hx_recset *s, const char *who, FILE *warn)
{
    if (s->n < 2)
        return 0;
    int *idx = malloc((size_t)s->n * sizeof *idx);
    char *drop = calloc((size_t)s->n, 1);
    if (!idx || !drop) {
        free(idx);
        free(drop);
        return 0; /* no memory to merge: every record stays */
    }
    for (int i = 0; i < s->n; i++)
        idx[i] = i;
    hx__sort_set = s;
    qsort(idx, (size_t)s->n, sizeof *idx, hx__cmp_key);
    int n_drop = 0;
    for (int k = 0; k + 1 < s->n; k++) {
        const hx_rec *a = &s->v[idx[k]], *b = &s->v[idx[k + 1]];
        if (strcmp(a->case_name, b->case_name) || strcmp(a->variant, b->variant) ||
            strcmp(a->slug, b->slug))
            continue;
        drop[idx[k]] = 1;
        if (warn && n_drop < 5)
            fprintf(warn, "attn-harness %s: %s:%d replaces %s:%d (%s/%s on %s): the last read wins\n",
                    who, b->src, b->line, a->src, a->line, a->case_name, a->variant, a->slug);
        n_drop++;
    }
    if (warn && n_drop > 5)
        fprintf(warn, "attn-harness %s: ... and %d more records read again (shards or runs that "
                      "overlap): the last read wins\n",
                who, n_drop - 5);
    int w = 0;
    for (int i = 0; i < s->n; i++) {
        if (drop[i])
            hx__rec_free(&s->v[i]);
        else
            s->v[w++] = s->v[i];
    }
    s->n = w;
    free(idx);
    free(drop);
    return n_drop;
}

void hx_recs_free(hx_recset *s)
{
    for (int i = 0; i < s->n; i++)
        hx__rec_free(&s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}
