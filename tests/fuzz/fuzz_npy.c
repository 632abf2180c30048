/* fuzz_npy.c - libFuzzer target: .npy bytes -> hx_npy_load_mem into tensors of several
 * dtypes and shapes (tests/fuzz/CMakeLists.txt runs it).
 *
 * Any bytes must load or be refused with one printable line that names the file, never a
 * crash, a leak, undefined behaviour or a write outside the tensor (its canary guards stay
 * intact).
 * The targets cover every path through the loader: exact copies, the '<f4' rounding of bf16,
 * f16 and fp8, bf16's '<V2', one-byte types, a 0-d and an empty tensor.
 */
#include "hx.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz.npy"

static const struct {
    const char *name;
    ref_dtype dtype;
    int ndim;
    int64_t shape[3];
} fuzz__targets[] = {
    {"f32", REF_F32, 2, {2, 3}},       {"bf16", REF_BF16, 2, {2, 3}},
    {"f16", REF_F16, 1, {6}},          {"fp8", REF_FP8E4M3, 2, {3, 1}},
    {"e8m0", REF_E8M0, 1, {5}},        {"i32", REF_I32, 1, {4}},
    {"i64", REF_I64, 2, {2, 2}},       {"f64_scalar", REF_F64, 0, {0}},
    {"u8_empty", REF_U8, 2, {1, 0}},
};
enum { FUZZ_NT = (int)(sizeof fuzz__targets / sizeof fuzz__targets[0]) };

static hx_tensors fuzz__set;

/* One printable line: the file's own bytes (its dtype string) are quoted in messages. */
static int fuzz__one_line(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    hx_err e = {0};
    for (int i = 0; i < FUZZ_NT; i++)
        if (!hx_tensors_add(&fuzz__set, fuzz__targets[i].name, fuzz__targets[i].dtype,
                            fuzz__targets[i].ndim, fuzz__targets[i].shape, &e)) {
            fprintf(stderr, "fuzz_npy: %s\n", e.msg);
            abort();
        }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int i = 0; i < fuzz__set.n; i++) {
        hx_tensor *t = &fuzz__set.t[i];
        hx_err e = {0};
        int rc = hx_npy_load_mem(FUZZ_NAME, data, size, t, &e);
        if (rc && (strstr(e.msg, FUZZ_NAME) == NULL || !fuzz__one_line(e.msg))) {
            fprintf(stderr, "fuzz_npy: tensor '%s': bad error (rc %d): %s\n", t->name, rc, e.msg);
            abort();
        }
        if (!hx_tensor_canary_ok(t)) {
            fprintf(stderr, "fuzz_npy: tensor '%s': load wrote outside the tensor\n", t->name);
            abort();
        }
    }
    return 0;
}
