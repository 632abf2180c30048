/* npy.c - named tensors to and from NumPy .npy files (run --dump DIR / --inputs DIR).
 *
 * Writes format 1.0 (2.0 when the header needs more than 64 KiB), reads 1.0, 2.0 and 3.0.
 * Only little-endian, C-order data of one plain dtype is read or written, because that is the
 * tensors' own memory layout and a file is then copied byte for byte. NumPy has no bf16 or
 * fp8, so those travel as raw bits: bf16 as '<u2' ('<V2' is what ml_dtypes' bfloat16 saves
 * and is read too), fp8e4m3 and e8m0 as '|u1'. A narrow float tensor also loads from '<f4',
 * rounded to nearest even through ref_store, so hand-made inputs need no bit fiddling.
 */
#include "hx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c copies tensor memory as little-endian data"
#endif // __BYTE_ORDER__

#define HX__NPY_MAGIC "\x93NUMPY"
#define HX__NPY_HEADER_MAX (1u << 20) /* far above any header NumPy writes */
#define HX__NPY_MAX_DIMS 32

static const char *hx__npy_descr(ref_dtype t)
{
    switch (t) {
    case REF_F32: return "<f4";
    case REF_F64: return "<f8";
    case REF_F16: return "<f2";
    case REF_BF16: return "<u2";
    case REF_FP8E4M3:
    case REF_E8M0:
    case REF_U8: return "|u1";
    case REF_I32: return "<i4";
    case REF_I64: return "<i8";
    default: return NULL;
    }
}

static void hx__shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    hx_tensor t;
    t.ndim = ndim;
    for (int i = 0; i < ndim && i < HX_MAX_DIMS; i++)
        t.shape[i] = shape[i];
    if (ndim <= HX_MAX_DIMS) {
        hx_tensor_shape_str(&t, buf, n);
        return;
    }
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

/* ----------------------------------------------------------------------- save */
int hx_npy_save(const char *path, const hx_tensor *t, hx_err *e)
{
    const char *descr = hx__npy_descr(t->dtype);
    if (!descr)
        return hx_fail(e, HX_EIO, "%s: tensor '%s' has dtype %s, which has no .npy form", path,
                       t->name, ref_dtype_name(t->dtype));
    /* magic(6) version(2) length(2) dict, padded with blanks and ended by '\n' so the data
     * starts 64-byte aligned, as NumPy writes it. */
    char dict[64 + 24 * HX_MAX_DIMS];
    int k = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     descr);
    for (int i = 0; i < t->ndim; i++)
        k += snprintf(dict + k, sizeof dict - (size_t)k, "%s%lld%s", i ? ", " : "",
                      (long long)t->shape[i], t->ndim == 1 ? "," : "");
    k += snprintf(dict + k, sizeof dict - (size_t)k, "), }");
    size_t total = (10 + (size_t)k + 1 + 63) / 64 * 64;
    char header[sizeof dict + 128];
    memcpy(header, HX__NPY_MAGIC "\x01\x00", 8);
    size_t hlen = total - 10;
    header[8] = (char)(hlen & 0xFF);
    header[9] = (char)(hlen >> 8);
    memcpy(header + 10, dict, (size_t)k);
    memset(header + 10 + k, ' ', total - 10 - (size_t)k - 1);
    header[total - 1] = '\n';

    /* Written beside the target and renamed over it, so a crash never leaves half a file. */
    char tmp[1100];
    if (snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid()) >= (int)sizeof tmp)
        return hx_fail(e, HX_EIO, "file name '%s' is too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return hx_fail(e, HX_EIO, "cannot write '%s': %s", path, strerror(errno));
    int ok = fwrite(header, 1, total, f) == total;
    ok = ok && (t->bytes == 0 || fwrite(t->data, 1, t->bytes, f) == t->bytes);
    int err = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    if (!ok) {
        remove(tmp);
        return hx_fail(e, HX_EIO, "cannot write '%s': %s", path, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        remove(tmp);
        return hx_fail(e, HX_EIO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(err));
    }
    return HX_OK;
}

/* ---------------------------------------------------------------- header dict */
typedef struct hx__npy_header {
    char descr[32];
    int fortran;
    int ndim;
    int64_t shape[HX__NPY_MAX_DIMS];
} hx__npy_header;

static const char *hx__ws(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    return s;
}

/* A Python string literal in single or double quotes, without escapes. */
static const char *hx__quoted(const char *s, char *out, size_t n)
{
    char q = *s;
    if (q != '\'' && q != '"')
        return NULL;
    const char *end = strchr(s + 1, q);
    if (!end || (size_t)(end - s - 1) >= n)
        return NULL;
    memcpy(out, s + 1, (size_t)(end - s - 1));
    out[end - s - 1] = '\0';
    return end + 1;
}

/* The dict NumPy writes: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }.
 * Returns NULL when it reads, else what is wrong with it. */
static const char *hx__parse_dict(const char *s, hx__npy_header *h)
{
    int seen = 0; /* bits: descr, fortran_order, shape */
    s = hx__ws(s);
    if (*s++ != '{')
        return "it does not start with '{'";
    for (;;) {
        char key[32];
        s = hx__ws(s);
        if (*s == '}')
            break;
        if (!(s = hx__quoted(s, key, sizeof key)))
            return "expected a quoted key";
        s = hx__ws(s);
        if (*s++ != ':')
            return "expected ':' after a key";
        s = hx__ws(s);
        if (strcmp(key, "descr") == 0) {
            if (!(s = hx__quoted(s, h->descr, sizeof h->descr)))
                return "'descr' is not a simple dtype string (structured dtypes are not read)";
            for (const unsigned char *c = (const unsigned char *)h->descr; *c; c++)
                if (*c < 0x20 || *c == 0x7f) /* messages quote it: keep them one line */
                    return "'descr' holds a control character";
            seen |= 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (strncmp(s, "True", 4) == 0)
                h->fortran = 1, s += 4;
            else if (strncmp(s, "False", 5) == 0)
                h->fortran = 0, s += 5;
            else
                return "'fortran_order' is neither True nor False";
            seen |= 2;
        } else if (strcmp(key, "shape") == 0) {
            if (*s++ != '(')
                return "'shape' is not a tuple";
            h->ndim = 0;
            for (;;) {
                s = hx__ws(s);
                if (*s == ')')
                    break;
                if (*s < '0' || *s > '9')
                    return "'shape' holds something other than non-negative integers";
                char *end;
                errno = 0;
                long long v = strtoll(s, &end, 10);
                if (errno == ERANGE || h->ndim == HX__NPY_MAX_DIMS)
                    return "'shape' is too large";
                h->shape[h->ndim++] = v;
                s = hx__ws(end);
                if (*s == ',')
                    s++;
                else if (*s != ')')
                    return "expected ',' or ')' in 'shape'";
            }
            s++;
            seen |= 4;
        } else {
            return "it has a key other than descr, fortran_order and shape";
        }
        s = hx__ws(s);
        if (*s == ',')
            s++;
        else if (*s != '}')
            return "expected ',' or '}' after a value";
    }
    if (*hx__ws(s + 1) != '\0')
        return "text follows the closing '}'";
    if (seen != 7)
        return "one of descr, fortran_order and shape is missing";
    return NULL;
}

/* ----------------------------------------------------------------------- load */
static int hx__is_narrow_float(ref_dtype t)
{
    return t == REF_BF16 || t == REF_F16 || t == REF_FP8E4M3;
}

static int hx__load(FILE *f, const char *path, hx_tensor *t, hx_err *e)
{
    unsigned char pre[12];
    if (fread(pre, 1, 8, f) != 8 || memcmp(pre, HX__NPY_MAGIC, 6) != 0)
        return hx_fail(e, HX_EIO, "'%s' is not a .npy file (bad magic; save it with numpy.save)",
                       path);
    int major = pre[6], minor = pre[7];
    size_t hlen, start;
    if (major == 1) {
        if (fread(pre + 8, 1, 2, f) != 2)
            return hx_fail(e, HX_EIO, "'%s' is truncated inside its header", path);
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
        start = 10;
    } else if (major == 2 || major == 3) {
        if (fread(pre + 8, 1, 4, f) != 4)
            return hx_fail(e, HX_EIO, "'%s' is truncated inside its header", path);
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 |
               (size_t)pre[11] << 24;
        start = 12;
    } else {
        return hx_fail(e, HX_EIO, "'%s' has .npy format version %d.%d; versions 1.0, 2.0 and 3.0 "
                                  "are read",
                       path, major, minor);
    }
    if (hlen > HX__NPY_HEADER_MAX)
        return hx_fail(e, HX_EIO, "'%s' has a malformed header: %zu bytes long", path, hlen);
    char *text = malloc(hlen + 1);
    if (!text)
        return hx_fail(e, HX_ENOMEM, "cannot read the header of '%s'", path);
    if (fread(text, 1, hlen, f) != hlen) {
        free(text);
        return hx_fail(e, HX_EIO, "'%s' is truncated inside its header", path);
    }
    text[hlen] = '\0';
    hx__npy_header h;
    memset(&h, 0, sizeof h);
    const char *why = strlen(text) == hlen ? hx__parse_dict(text, &h) : "it holds a NUL byte";
    free(text);
    if (why)
        return hx_fail(e, HX_EIO, "'%s' has a malformed header: %s", path, why);

    /* A one-byte type has no byte order, '=' is native (little here) and NumPy writes a plain
     * two-byte void as '|V2'; normalise those before comparing. */
    char d[sizeof h.descr];
    memcpy(d, h.descr, sizeof d);
    if (d[0] && strchr("<>=|", d[0])) {
        int one_byte = !strcmp(d + 1, "u1") || !strcmp(d + 1, "i1") || !strcmp(d + 1, "b1");
        if (one_byte)
            d[0] = '|';
        else if (d[0] == '>')
            return hx_fail(e, HX_EIO, "'%s' holds big-endian data ('%s'); save it little-endian "
                                      "(a.astype(a.dtype.newbyteorder('<')))",
                           path, h.descr);
        else if (d[0] == '=' || !strcmp(d, "|V2"))
            d[0] = '<';
    }
    if (h.fortran && h.ndim >= 2)
        return hx_fail(e, HX_EIO, "'%s' is in Fortran order; save C order "
                                  "(numpy.ascontiguousarray)",
                       path);

    const char *want = hx__npy_descr(t->dtype);
    int convert = 0;
    if (!want || strcmp(d, want) != 0) {
        if (t->dtype == REF_BF16 && strcmp(d, "<V2") == 0)
            ;
        else if (hx__is_narrow_float(t->dtype) && strcmp(d, "<f4") == 0)
            convert = 1;
        else
            return hx_fail(e, HX_EIO, "'%s' holds '%s' data but tensor '%s' is %s (needs '%s'%s)",
                           path, h.descr, t->name, ref_dtype_name(t->dtype), want ? want : "?",
                           hx__is_narrow_float(t->dtype) ? ", or '<f4' to be rounded" : "");
    }

    int same = h.ndim == t->ndim;
    for (int i = 0; same && i < h.ndim; i++)
        same = h.shape[i] == t->shape[i];
    if (!same) {
        char fs[200], ts[200];
        hx__shape_str(h.ndim, h.shape, fs, sizeof fs);
        hx_tensor_shape_str(t, ts, sizeof ts);
        return hx_fail(e, HX_EIO, "'%s' has shape %s but the case needs %s (tensor '%s')", path,
                       fs, ts, t->name);
    }

    size_t esz = convert ? 4 : ref_dtype_size(t->dtype);
    size_t need = t->numel * esz;
    long end;
    if (fseek(f, 0, SEEK_END) != 0 || (end = ftell(f)) < 0 ||
        fseek(f, (long)(start + hlen), SEEK_SET) != 0)
        return hx_fail(e, HX_EIO, "cannot seek in '%s': %s", path, strerror(errno));
    size_t have = (size_t)end > start + hlen ? (size_t)end - start - hlen : 0;
    if (have < need)
        return hx_fail(e, HX_EIO, "'%s' is truncated: %zu of %zu data bytes", path, have, need);
    if (have > need)
        return hx_fail(e, HX_EIO, "'%s' has %zu bytes past the %zu its header describes", path,
                       have - need, need);

    if (!convert) {
        if (need && fread(t->data, 1, need, f) != need)
            return hx_fail(e, HX_EIO, "cannot read '%s': %s", path, strerror(errno));
        return HX_OK;
    }
    float buf[4096];
    for (size_t i = 0; i < t->numel;) {
        size_t m = t->numel - i < 4096 ? t->numel - i : 4096;
        if (fread(buf, sizeof buf[0], m, f) != m)
            return hx_fail(e, HX_EIO, "cannot read '%s': %s", path, strerror(errno));
        for (size_t j = 0; j < m; j++)
            ref_store(t->dtype, t->data, i + j, (double)buf[j]);
        i += m;
    }
    return HX_OK;
}

int hx_npy_load_into(const char *path, hx_tensor *t, hx_err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return hx_fail(e, HX_EIO, "cannot open '%s': %s", path, strerror(errno));
    int rc = hx__load(f, path, t, e);
    fclose(f);
    return rc;
}

int hx_npy_load_mem(const char *name, const void *data, size_t len, hx_tensor *t, hx_err *e)
{
    /* Read-only: fmemopen never writes through the buffer in mode "rb". */
    FILE *f = fmemopen((void *)(uintptr_t)data, len, "rb");
    if (!f)
        return hx_fail(e, HX_ENOMEM, "cannot read '%s' from memory: %s", name, strerror(errno));
    int rc = hx__load(f, name, t, e);
    fclose(f);
    return rc;
}
