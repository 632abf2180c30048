/* test_npy.c - .npy save/load: bit-identical round trips for every dtype, NumPy's header
 * layout, '<f4' rounded into narrow floats, and one clear error per kind of bad file.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx.h"

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/test_npy_XXXXXX");
    cr_assert(mkdtemp(dir), "mkdtemp failed");
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char p[400];
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

static const char *file_in_dir(const char *name)
{
    static char p[2][200];
    static int k;
    k ^= 1;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

/* A .npy file by hand: any version, any header dict, any data. */
static const char *write_npy(const char *name, int major, int minor, const char *dict,
                             const void *data, size_t n)
{
    const char *path = file_in_dir(name);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    size_t pre = major == 1 ? 10 : 12, len = strlen(dict);
    size_t total = (pre + len + 1 + 63) / 64 * 64, hlen = total - pre;
    unsigned char head[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major,
                              (unsigned char)minor};
    for (size_t i = 0; i < pre - 8; i++)
        head[8 + i] = (unsigned char)(hlen >> (8 * i));
    fwrite(head, 1, pre, f);
    fwrite(dict, 1, len, f);
    for (size_t i = pre + len; i + 1 < total; i++)
        fputc(' ', f);
    fputc('\n', f);
    if (n)
        fwrite(data, 1, n, f);
    fclose(f);
    return path;
}

static hx_tensor *tensor(hx_tensors *s, const char *name, ref_dtype dt, int ndim,
                         const int64_t *shape)
{
    hx_err e = {0};
    hx_tensor *t = hx_tensors_add(s, name, dt, ndim, shape, &e);
    cr_assert(t, "%s", e.msg);
    return t;
}

static void expect_load_error(const char *path, hx_tensor *t, const char *needle)
{
    hx_err e = {0};
    int rc = hx_npy_load_into(path, t, &e);
    cr_assert_eq(rc, HX_EIO, "expected HX_EIO, got %d (%s)", rc, e.msg);
    cr_assert(strstr(e.msg, path), "message '%s' does not name the file", e.msg);
    cr_assert(strstr(e.msg, needle), "message '%s' does not contain '%s'", e.msg, needle);
    cr_assert(!strchr(e.msg, '\n'));
}

TestSuite(npy, .init = make_dir, .fini = remove_dir);

Test(npy, round_trip_every_dtype_bit_identical)
{
    static const ref_dtype all[] = {REF_F32, REF_F64, REF_BF16, REF_F16, REF_FP8E4M3,
                                    REF_E8M0, REF_I32, REF_I64, REF_U8};
    static const int64_t shapes[3][3] = {{3, 5, 7}, {17, 0, 0}, {0, 0, 0}};
    static const int ranks[3] = {3, 1, 0};
    for (size_t d = 0; d < sizeof all / sizeof all[0]; d++)
        for (int s = 0; s < 3; s++) {
            hx_tensors a = {0}, b = {0};
            hx_tensor *x = tensor(&a, "x", all[d], ranks[s], shapes[s]);
            hx_tensor *y = tensor(&b, "x", all[d], ranks[s], shapes[s]);
            unsigned char *p = x->data;
            /* Every byte pattern, NaN payloads included, must survive. */
            for (size_t i = 0; i < x->bytes; i++)
                p[i] = (unsigned char)(ref_rng_u64(d * 7 + (uint64_t)s, i) >> 56);
            hx_err e = {0};
            const char *path = file_in_dir("x.npy");
            cr_assert_eq(hx_npy_save(path, x, &e), HX_OK, "%s", e.msg);
            cr_assert_eq(hx_npy_load_into(path, y, &e), HX_OK, "%s: %s",
                         ref_dtype_name(all[d]), e.msg);
            cr_assert(memcmp(x->data, y->data, x->bytes) == 0, "%s rank %d differs",
                      ref_dtype_name(all[d]), ranks[s]);
            cr_assert(hx_tensor_canary_ok(y));
            hx_tensors_free(&a);
            hx_tensors_free(&b);
        }
}

Test(npy, header_is_numpy_v1)
{
    hx_tensors s = {0};
    int64_t shape[2] = {2, 3};
    hx_tensor *t = tensor(&s, "b", REF_BF16, 2, shape);
    hx_err e = {0};
    const char *path = file_in_dir("b.npy");
    cr_assert_eq(hx_npy_save(path, t, &e), HX_OK, "%s", e.msg);
    FILE *f = fopen(path, "rb");
    char buf[256] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    cr_assert_eq(n, 128 + 12, "header padded to a multiple of 64 bytes, then 6 bf16 values");
    cr_assert(memcmp(buf, "\x93NUMPY\x01\x00", 8) == 0);
    cr_assert_eq((unsigned char)buf[8] | (unsigned char)buf[9] << 8, 118);
    cr_assert(strstr(buf + 10, "{'descr': '<u2', 'fortran_order': False, 'shape': (2, 3), }"),
              "%s", buf + 10);
    cr_assert_eq(buf[127], '\n');

    int64_t one[1] = {4};
    t = tensor(&s, "f", REF_FP8E4M3, 1, one);
    cr_assert_eq(hx_npy_save(path, t, &e), HX_OK);
    f = fopen(path, "rb");
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    cr_assert(strstr(buf + 10, "'descr': '|u1', 'fortran_order': False, 'shape': (4,), }"),
              "%s", buf + 10);

    /* Written through a temporary and renamed: nothing else is left in the directory. */
    DIR *d = opendir(dir);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d)))
        files += de->d_name[0] != '.';
    closedir(d);
    cr_assert_eq(files, 1);
    hx_tensors_free(&s);
}

Test(npy, f4_rounds_into_narrow_floats)
{
    float v[6] = {1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -3.14159f, 1e-30f, 70000.0f};
    const char *path = write_npy("f4.npy", 1, 0,
                                 "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                                 v, sizeof v);
    int64_t shape[2] = {2, 3};
    static const ref_dtype narrow[] = {REF_BF16, REF_F16, REF_FP8E4M3};
    for (int d = 0; d < 3; d++) {
        hx_tensors s = {0};
        hx_tensor *t = tensor(&s, "q", narrow[d], 2, shape);
        hx_err e = {0};
        cr_assert_eq(hx_npy_load_into(path, t, &e), HX_OK, "%s", e.msg);
        for (int i = 0; i < 6; i++)
            cr_assert_eq(ref_load(narrow[d], t->data, (size_t)i), ref_round_to(narrow[d], v[i]),
                         "%s element %d", ref_dtype_name(narrow[d]), i);
        hx_tensors_free(&s);
    }
    hx_tensors s = {0};
    hx_tensor *t = tensor(&s, "q", REF_BF16, 2, shape);
    hx_err e = {0};
    cr_assert_eq(hx_npy_load_into(path, t, &e), HX_OK);
    cr_assert_eq(((uint16_t *)t->data)[1], 0x3F80, "a tie rounds to even");
    cr_assert_eq(((uint16_t *)t->data)[2], 0x3F82, "a tie rounds to even (up)");
    /* f32 tensors take '<f4' as they are; i32 tensors do not take it. */
    hx_tensor *i = tensor(&s, "i", REF_I32, 2, shape);
    expect_load_error(path, i, "holds '<f4' data but tensor 'i' is i32");
    hx_tensors_free(&s);
}

Test(npy, bf16_reads_void_and_v2_v3_headers)
{
    uint16_t bits[3] = {0x3F80, 0xFFC1, 0x0001};
    int64_t shape[1] = {3};
    const char *dicts[] = {"{'descr': '<V2', 'fortran_order': False, 'shape': (3,), }",
                           "{'descr': '|V2', 'fortran_order': False, 'shape': (3,), }",
                           "{\"descr\": \"<u2\", \"shape\": (3,), \"fortran_order\": False}"};
    for (int k = 0; k < 3; k++)
        for (int major = 1; major <= 3; major++) {
            const char *path = write_npy("v.npy", major, 0, dicts[k], bits, sizeof bits);
            hx_tensors s = {0};
            hx_tensor *t = tensor(&s, "k", REF_BF16, 1, shape);
            hx_err e = {0};
            cr_assert_eq(hx_npy_load_into(path, t, &e), HX_OK, "%s", e.msg);
            cr_assert(memcmp(t->data, bits, sizeof bits) == 0);
            hx_tensors_free(&s);
        }
}

/* ------------------------------------------------------------------ bad files */
#define F4_2x3 "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"

static hx_tensor *f32_2x3(hx_tensors *s)
{
    int64_t shape[2] = {2, 3};
    return tensor(s, "t", REF_F32, 2, shape);
}

Test(npy, error_unreadable_file)
{
    hx_tensors s = {0};
    expect_load_error(file_in_dir("missing.npy"), f32_2x3(&s), "cannot open");
    hx_tensors_free(&s);
}

Test(npy, error_bad_magic)
{
    const char *path = file_in_dir("text.npy");
    FILE *f = fopen(path, "w");
    fputs("x,y\n1,2\n", f);
    fclose(f);
    hx_tensors s = {0};
    expect_load_error(path, f32_2x3(&s), "not a .npy file (bad magic");
    hx_tensors_free(&s);
}

Test(npy, error_unsupported_version)
{
    float v[6] = {0};
    hx_tensors s = {0};
    expect_load_error(write_npy("v4.npy", 4, 0, F4_2x3, v, sizeof v), f32_2x3(&s),
                      "version 4.0");
    hx_tensors_free(&s);
}

Test(npy, error_malformed_header)
{
    float v[6] = {0};
    static const char *bad[] = {
        "'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }",
        "{'descr': '<f4', 'fortran_order': False}",
        "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 3), }",
        "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2, 3), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } junk",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hx_tensors s = {0};
        expect_load_error(write_npy("m.npy", 1, 0, bad[i], v, sizeof v), f32_2x3(&s),
                          "malformed header");
        hx_tensors_free(&s);
    }
    /* A header length running past the end of the file. */
    const char *path = file_in_dir("short.npy");
    FILE *f = fopen(path, "wb");
    fwrite("\x93NUMPY\x01\x00\x00\x01{'descr'", 1, 18, f);
    fclose(f);
    hx_tensors s = {0};
    expect_load_error(path, f32_2x3(&s), "truncated inside its header");
    hx_tensors_free(&s);
}

Test(npy, error_fortran_order)
{
    float v[6] = {0};
    hx_tensors s = {0};
    expect_load_error(
        write_npy("fo.npy", 1, 0, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                  v, sizeof v),
        f32_2x3(&s), "Fortran order");
    hx_tensors_free(&s);
}

Test(npy, error_big_endian)
{
    float v[6] = {0};
    hx_tensors s = {0};
    expect_load_error(
        write_npy("be.npy", 1, 0, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
                  v, sizeof v),
        f32_2x3(&s), "big-endian data ('>f4')");
    hx_tensors_free(&s);
}

Test(npy, error_shape_mismatch)
{
    float v[8] = {0};
    hx_tensors s = {0};
    int64_t shape[2] = {2, 4};
    hx_tensor *t = tensor(&s, "q", REF_F32, 2, shape);
    const char *path = write_npy("x.npy", 1, 0, F4_2x3, v, 24);
    hx_err e = {0};
    cr_assert_eq(hx_npy_load_into(path, t, &e), HX_EIO);
    char want[300];
    snprintf(want, sizeof want, "'%s' has shape [2, 3] but the case needs [2, 4] (tensor 'q')",
             path);
    cr_assert_str_eq(e.msg, want);
    expect_load_error(
        write_npy("r.npy", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (8,), }", v,
                  sizeof v),
        t, "has shape [8] but the case needs [2, 4]");
    hx_tensors_free(&s);
}

Test(npy, error_dtype_mismatch)
{
    double v[6] = {0};
    hx_tensors s = {0};
    expect_load_error(
        write_npy("f8.npy", 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
                  v, sizeof v),
        f32_2x3(&s), "holds '<f8' data but tensor 't' is f32 (needs '<f4')");
    int64_t shape[2] = {2, 3};
    hx_tensor *b = tensor(&s, "b", REF_BF16, 2, shape);
    expect_load_error(
        write_npy("i2.npy", 1, 0, "{'descr': '<i2', 'fortran_order': False, 'shape': (2, 3), }",
                  v, 12),
        b, "needs '<u2', or '<f4' to be rounded");
    hx_tensors_free(&s);
}

Test(npy, error_truncated_or_extra_data)
{
    float v[7] = {0};
    hx_tensors s = {0};
    hx_tensor *t = f32_2x3(&s);
    memset(t->data, 0x5A, t->bytes);
    expect_load_error(write_npy("tr.npy", 1, 0, F4_2x3, v, 20), t,
                      "is truncated: 20 of 24 data bytes");
    unsigned char *p = t->data;
    cr_assert_eq(p[0], 0x5A, "a refused file leaves the tensor as it was");
    expect_load_error(write_npy("ex.npy", 1, 0, F4_2x3, v, 28), t, "4 bytes past");
    hx_tensors_free(&s);
}

Test(npy, error_unwritable_target)
{
    hx_tensors s = {0};
    hx_err e = {0};
    cr_assert_eq(hx_npy_save("/tmp/no/such/dir/x.npy", f32_2x3(&s), &e), HX_EIO);
    cr_assert(strstr(e.msg, "cannot write '/tmp/no/such/dir/x.npy"), "%s", e.msg);
    hx_tensors_free(&s);
}
