/* test_case.c - case files: every key type, comments and lens forms parse as cases/README.md
 * says; every class of mistake is refused with the right code and a message that names the
 * file:line and the key.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx.h"

/* Each Criterion test runs in its own process, so one temp file per test is enough. */
static char tmp_path[2][64];

static const char *write_case(int slot, const char *text)
{
    if (tmp_path[slot][0])
        unlink(tmp_path[slot]);
    strcpy(tmp_path[slot], "/tmp/test_case_XXXXXX");
    int fd = mkstemp(tmp_path[slot]);
    cr_assert(fd >= 0, "mkstemp failed");
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    return tmp_path[slot];
}

static void cleanup(void)
{
    for (int i = 0; i < 2; i++)
        if (tmp_path[i][0])
            unlink(tmp_path[i]);
}

static int load(const char *text, uint64_t seed, hx_caselist *l, hx_err *e)
{
    return hx_cases_load(write_case(0, text), seed, l, e);
}

static hx_case *load_one(const char *text, hx_caselist *l)
{
    hx_err e = {0};
    int rc = load(text, 0, l, &e);
    cr_assert_eq(rc, HX_OK, "load failed: %s", e.msg);
    cr_assert_eq(l->n, 1);
    return &l->v[0];
}

/* The load fails with `code`; the message names file:line and contains `needle`. */
static void expect_error(const char *text, int code, int line, const char *needle)
{
    hx_caselist l = {0};
    hx_err e = {0};
    int rc = load(text, 0, &l, &e);
    cr_assert_eq(rc, code, "expected %d, got %d (%s)", code, rc, e.msg);
    cr_assert_eq(l.n, 0, "a failed load leaves no cases behind");
    char where[96];
    snprintf(where, sizeof where, "%s:%d: ", tmp_path[0], line);
    cr_assert(strstr(e.msg, where), "message '%s' does not name '%s'", e.msg, where);
    cr_assert(strstr(e.msg, needle), "message '%s' does not contain '%s'", e.msg, needle);
    cr_assert(!strchr(e.msg, '\n'), "message '%s' is not one line", e.msg);
    hx_cases_free(&l);
}

#define VARLEN "[c]\npath = mha_varlen\nheads_q = 4\nhead_dim = 64\n"

/* ---------------------------------------------------------------- good files */
Test(case_good, every_key_type, .fini = cleanup)
{
    hx_caselist l = {0};
    hx_case *c = load_one("# a comment\n"
                          "; another\n"
                          "\n"
                          "[full_case.v-1]\n"
                          "path        = mha_varlen   ; inline comment\n"
                          "tags        = perf, seed-study\n"
                          "batch       = 3\n"
                          "heads_q     = 8\n"
                          "heads_kv    = 2\n"
                          "head_dim    = 128\n"
                          "head_dim_v  = 64\n"
                          "seq_lens_q  = 5, 7, 9\n"
                          "seq_lens_k  = 10,20,30\n"
                          "scale       = 0.125\n"
                          "softcap     = 30\n"
                          "causal      = false\n"
                          "window_left = 16\n"
                          "dtype       = f16\n"
                          "atol.out    = 1e-4\n"
                          "cos_tol.out = 1e-7\n"
                          "rtol.lse    = 0.0001\n",
                          &l);
    cr_assert_str_eq(c->name, "full_case.v-1");
    cr_assert_str_eq(c->file, tmp_path[0]);
    cr_assert_eq(c->line, 4);
    cr_assert_str_eq(c->path->name, "mha_varlen");
    cr_assert_str_eq(c->tags, "perf, seed-study");
    cr_assert_eq(c->batch, 3);
    cr_assert_eq(c->heads_q, 8);
    cr_assert_eq(c->heads_kv, 2);
    cr_assert_eq(c->head_dim, 128);
    cr_assert_eq(c->head_dim_v, 64);
    cr_assert_eq(c->seq_lens_q.n, 3);
    cr_assert_eq(c->seq_lens_q.v[0], 5);
    cr_assert_eq(c->seq_lens_q.v[2], 9);
    cr_assert_eq(c->seq_lens_k.v[1], 20);
    cr_assert_eq(c->scale, 0.125);
    cr_assert_eq(c->softcap, 30.0);
    cr_assert_eq(c->causal, 0);
    cr_assert_eq(c->window_left, 16);
    cr_assert_eq(c->dtype, REF_F16);
    cr_assert_eq(c->seed, ref_hash_str("full_case.v-1"));
    cr_assert_eq(c->n_tol_override, 2);
    cr_assert_str_eq(c->tol_override[0].output, "out");
    cr_assert(c->tol_override[0].has_atol && c->tol_override[0].has_cos &&
              !c->tol_override[0].has_rtol);
    cr_assert_eq(c->tol_override[0].tol.atol, 1e-4);
    cr_assert_eq(c->tol_override[0].tol.cos_tol, 1e-7);
    cr_assert_eq(c->tol_override[1].tol.rtol, 1e-4);
    cr_assert_eq(hx_case_key_line(c, "path"), 5);
    cr_assert_eq(hx_case_key_line(c, "dtype"), 18);
    cr_assert_eq(hx_case_key_line(c, "heads"), 8, "an alias finds the line of its partner");
    cr_assert_eq(hx_case_key_line(c, "atol.out"), 19);
    cr_assert_eq(hx_case_key_line(c, "rtol.lse"), 21);
    cr_assert_eq(hx_case_key_line(c, "rtol.out"), 0);
    cr_assert_eq(hx_case_key_line(c, "seq_lens"), 12);
    cr_assert_eq(hx_case_key_line(c, "no_such_key"), 0);
    hx_cases_free(&l);
    cr_assert_eq(l.n, 0);
    cr_assert_null(l.v);
}

Test(case_good, defaults_filled_by_check, .fini = cleanup)
{
    hx_caselist l = {0};
    hx_case *c = load_one(VARLEN "seq_lens = 100\n", &l);
    cr_assert_eq(c->batch, 1, "a single value without batch is one sequence");
    cr_assert_eq(c->heads_kv, 4);
    cr_assert_eq(c->head_dim_v, 64);
    cr_assert_eq(c->causal, 1);
    cr_assert_eq(c->window_left, -1);
    cr_assert_eq(c->dtype, REF_BF16);
    cr_assert_float_eq(c->scale, 0.125, 1e-15);
    cr_assert_eq(c->seq_lens_k.n, 1);
    cr_assert_eq(c->seq_lens_k.v[0], 100);
    cr_assert_neq(c->seq_lens_k.v, c->seq_lens_q.v, "the default is a copy, not an alias");
    hx_cases_free(&l);
}

Test(case_good, comments_blanks_indent_crlf, .fini = cleanup)
{
    hx_caselist l = {0};
    hx_case *c = load_one("\xEF\xBB\xBF# BOM, then comments\r\n"
                          "  ; indented comment\r\n"
                          "\r\n"
                          "  [crlf]   ; header comment\r\n"
                          "\tpath=mha_varlen\r\n"
                          "   heads_q =4\r\n"
                          "head_dim= 32 ; d\r\n"
                          "  # indented hash comment after a key is a comment, not a continuation\r\n"
                          "seq_lens =  1 , 2   ,3\r\n",
                          &l);
    cr_assert_str_eq(c->name, "crlf");
    cr_assert_eq(c->line, 4);
    cr_assert_eq(c->heads_q, 4);
    cr_assert_eq(c->head_dim, 32);
    cr_assert_eq(c->batch, 3);
    cr_assert_eq(c->seq_lens_q.v[2], 3);
    cr_assert_eq(hx_case_key_line(c, "seq_lens_q"), 9);
    hx_cases_free(&l);
}

Test(case_good, bools_and_merge_states_alias, .fini = cleanup)
{
    const char *yes[] = {"true", "yes", "1", "TRUE"}, *no[] = {"false", "no", "0", "No"};
    for (int i = 0; i < 4; i++) {
        char text[256];
        hx_caselist l = {0};
        snprintf(text, sizeof text, VARLEN "seq_lens = 3\ncausal = %s\n", yes[i]);
        cr_assert_eq(load_one(text, &l)->causal, 1, "%s", yes[i]);
        hx_cases_free(&l);
        snprintf(text, sizeof text, VARLEN "seq_lens = 3\ncausal = %s\n", no[i]);
        cr_assert_eq(load_one(text, &l)->causal, 0, "%s", no[i]);
        hx_cases_free(&l);
    }
    hx_caselist l = {0};
    hx_case *c = load_one("[m]\npath = merge_states\ntokens = 7\nheads = 3\nhead_dim = 16\n"
                          "dtype = f32\n",
                          &l);
    cr_assert_eq(c->tokens, 7);
    cr_assert_eq(c->heads_q, 3);
    cr_assert_eq(c->dtype, REF_F32);
    hx_cases_free(&l);
}

Test(case_good, several_cases_and_files, .fini = cleanup)
{
    hx_caselist l = {0};
    hx_err e = {0};
    cr_assert_eq(load(VARLEN "seq_lens = 1\n[d]\npath = mha_varlen\nheads = 2\nhead_dim = 8\n"
                             "seq_lens = 2\n",
                      5, &l, &e),
                 HX_OK, "%s", e.msg);
    cr_assert_eq(hx_cases_load(write_case(1, "[e]\npath = merge_states\ntokens = 1\nheads = 1\n"
                                             "head_dim = 1\n"),
                               5, &l, &e),
                 HX_OK, "%s", e.msg);
    cr_assert_eq(l.n, 3);
    cr_assert_str_eq(l.v[1].name, "d");
    cr_assert_eq(l.v[1].line, 6);
    cr_assert_str_eq(l.v[2].file, tmp_path[1]);
    cr_assert_eq(l.v[2].seed, ref_hash_str("e") ^ 5);

    /* A name already loaded from another file is refused, and the list is left as it was. */
    cr_assert_eq(hx_cases_load(write_case(1, "[x]\npath = merge_states\ntokens = 1\nheads = 1\n"
                                             "head_dim = 1\n[c]\npath = mha_varlen\n"),
                               5, &l, &e),
                 HX_ECASE);
    cr_assert(strstr(e.msg, ":6: ") && strstr(e.msg, "'c' is defined twice") &&
                  strstr(e.msg, tmp_path[0]),
              "%s", e.msg);
    cr_assert_eq(l.n, 3);
    hx_cases_free(&l);
}

Test(case_good, longest_allowed_line, .fini = cleanup)
{
    char text[512], line[256];
    int n = snprintf(line, sizeof line, "tol_reason = ");
    memset(line + n, 'r', (size_t)(199 - n));
    line[199] = '\0';
    snprintf(text, sizeof text, VARLEN "seq_lens = 1\n%s\n", line);
    hx_caselist l = {0};
    hx_case *c = load_one(text, &l);
    cr_assert_eq(strlen(c->tol_reason), (size_t)(199 - n));
    hx_cases_free(&l);
}

/* ----------------------------------------------------------------------- lens */
Test(case_lens, list_repeat_broadcast, .fini = cleanup)
{
    hx_caselist l = {0};
    hx_case *c = load_one(VARLEN "seq_lens_q = 512*3, 17,0\nseq_lens_k = 64\n", &l);
    cr_assert_eq(c->batch, 5, "batch comes from the longest list");
    int32_t want_q[5] = {512, 512, 512, 17, 0};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(c->seq_lens_q.v[i], want_q[i]);
        cr_assert_eq(c->seq_lens_k.v[i], 64, "a single value broadcasts");
    }
    hx_cases_free(&l);

    c = load_one(VARLEN "batch = 4\nseq_lens = 9\n", &l);
    cr_assert_eq(c->seq_lens_q.n, 4);
    cr_assert_eq(c->seq_lens_q.v[3], 9);
    hx_cases_free(&l);

    c = load_one(VARLEN "seq_lens = 7*1\n", &l);
    cr_assert_eq(c->batch, 1);
    hx_cases_free(&l);
}

static void lens_of(const char *name, uint64_t seed, int32_t *v, int n)
{
    char text[256];
    snprintf(text, sizeof text,
             "[%s]\npath = mha_varlen\nheads_q = 1\nhead_dim = 8\nbatch = %d\n"
             "seq_lens = 3000..4096\n",
             name, n);
    hx_caselist l = {0};
    hx_err e = {0};
    cr_assert_eq(load(text, seed, &l, &e), HX_OK, "%s", e.msg);
    cr_assert_eq(l.v[0].seq_lens_q.n, n);
    memcpy(v, l.v[0].seq_lens_q.v, (size_t)n * sizeof *v);
    for (int i = 0; i < n; i++)
        cr_assert(v[i] >= 3000 && v[i] <= 4096, "%d out of range", v[i]);
    hx_cases_free(&l);
}

Test(case_lens, ranges_are_deterministic_per_case, .fini = cleanup)
{
    enum { N = 16 };
    int32_t a[N], b[N], other_name[N], other_seed[N];
    lens_of("r", 0, a, N);
    lens_of("r", 0, b, N);
    lens_of("r2", 0, other_name, N);
    lens_of("r", 1, other_seed, N);
    cr_assert(memcmp(a, b, sizeof a) == 0, "same name and seed: same lengths");
    cr_assert(memcmp(a, other_name, sizeof a) != 0, "another case name draws other lengths");
    cr_assert(memcmp(a, other_seed, sizeof a) != 0, "another --seed draws other lengths");
    int distinct = 0;
    for (int i = 1; i < N; i++)
        distinct += a[i] != a[0];
    cr_assert(distinct > 0, "drawn per sequence, not once");

    /* hx_lens_expand directly: value i = ref_rng_range(seed ^ hash(key), i, lo, hi). */
    hx_case c = {0};
    strcpy(c.name, "r");
    c.seed = 42;
    hx_lens lens = {0};
    strcpy(lens.text, "10..20, 5");
    hx_err e = {0};
    cr_assert_eq(hx_lens_expand(&c, "seq_lens_k", &lens, 2, &e), HX_OK, "%s", e.msg);
    cr_assert_eq(lens.v[0], ref_rng_range(42 ^ ref_hash_str("seq_lens_k"), 0, 10, 20));
    cr_assert_eq(lens.v[1], 5);

    hx_lens copy = {0};
    cr_assert_eq(hx_lens_copy(&copy, &lens, &e), HX_OK);
    cr_assert_eq(copy.n, 2);
    cr_assert_eq(copy.v[1], 5);
    cr_assert_str_eq(copy.text, lens.text);
    free(copy.v);
    free(lens.v);
}

/* ------------------------------------------------------------------ bad files */
Test(case_bad, syntax_error, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 1\nbatch 4\n", HX_ECASE, 6,
                 "syntax error: expected 'key = value' or '[case]'");
    expect_error("[open\npath = mha_varlen\n", HX_ECASE, 1, "syntax error");
    /* An indented line is not a continuation of the value above it. */
    expect_error(VARLEN "tags = a,\n   b\n", HX_ECASE, 6, "syntax error");
}

Test(case_bad, syntax_error_reported_before_later_errors, .fini = cleanup)
{
    expect_error(VARLEN "oops\nbatch = x\n", HX_ECASE, 5, "syntax error");
}

Test(case_bad, unknown_key, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 1\nbogus = 3\n", HX_ECASE, 6,
                 "unknown key 'bogus'; accepted keys for path 'mha_varlen': ");
    expect_error(VARLEN "seq_lens = 1\nbogus = 3\n", HX_ECASE, 6, "atol.<output>");
    expect_error("[c]\nbogus = 3\npath = mha_varlen\n", HX_ECASE, 2,
                 "unknown key 'bogus'; accepted keys: path");
    expect_error(VARLEN "atol = 1\n", HX_ECASE, 5, "key 'atol': name the output");
    expect_error(VARLEN "atol.nope = 1\n", HX_ECASE, 5, "has no output 'nope'");
    expect_error("[c]\natol.nope = 1\n" "path = mha_varlen\n", HX_ECASE, 2,
                 "has no output 'nope'");
}

Test(case_bad, key_not_used_by_path, .fini = cleanup)
{
    expect_error("[m]\npath = merge_states\ntokens = 2\ncausal = true\n", HX_ECASE, 4,
                 "key 'causal' is not used by path 'merge_states' (it takes: tokens");
    /* Given before the path line: found when the section ends, still at its own line. */
    expect_error("[m]\ntokens = 2\nseq_lens = 4\npath = merge_states\n", HX_ECASE, 3,
                 "key 'seq_lens' is not used by path 'merge_states'");
}

Test(case_bad, duplicate_key, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 1\nhead_dim = 32\n", HX_ECASE, 6,
                 "key 'head_dim': given twice (lines 4 and 6)");
    expect_error(VARLEN "seq_lens = 1\nheads = 4\n", HX_ECASE, 6,
                 "'heads_q' (line 3) and 'heads' (line 6) are the same key");
    expect_error(VARLEN "seq_lens = 1\natol.out = 1e-4\natol.out = 1e-5\n", HX_ECASE, 7,
                 "key 'atol.out': given twice (lines 6 and 7)");
}

Test(case_bad, duplicate_section, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 1\n[c]\n", HX_ECASE, 6,
                 "case 'c' is defined twice (first at");
    expect_error("[bad name]\n", HX_ECASE, 1, "case name 'bad name' is not allowed");
    expect_error("[]\n", HX_ECASE, 1, "is not allowed");
    expect_error("[a] b\n", HX_ECASE, 1, "unexpected 'b' after the [case] header");
}

Test(case_bad, unknown_path, .fini = cleanup)
{
    expect_error("[c]\npath = paged_decoder\n", HX_ECASE, 2,
                 "key 'path': unknown path 'paged_decoder' (known paths: ");
    expect_error("[c]\npath = paged_decoder\n", HX_ECASE, 2, "mha_varlen");
}

Test(case_bad, missing_path, .fini = cleanup)
{
    expect_error("[ok]\npath = merge_states\ntokens = 1\nheads = 1\nhead_dim = 1\n"
                 "[nopath]\nbatch = 2\n",
                 HX_ECASE, 6, "[nopath] no 'path' key");
    expect_error("[empty]\n", HX_ECASE, 1, "no 'path' key");
}

Test(case_bad, bad_int, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 1\nbatch = four\n", HX_ECASE, 6,
                 "key 'batch': expected an integer >= 1, got 'four'");
    expect_error(VARLEN "seq_lens = 1\nbatch = 0\n", HX_ECASE, 6, "expected an integer >= 1");
    expect_error(VARLEN "seq_lens = 1\nwindow_left = -2\n", HX_ECASE, 6,
                 "key 'window_left': expected an integer >= -1");
    expect_error(VARLEN "seq_lens = 1\nbatch = 99999999999\n", HX_ECASE, 6, "key 'batch'");
    expect_error(VARLEN "seq_lens = 1\nbatch = 4 # hash is not an inline comment\n", HX_ECASE, 6,
                 "expected an integer");
}

Test(case_bad, bad_bool, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 1\ncausal = maybe\n", HX_ECASE, 6,
                 "key 'causal': expected true/false");
}

Test(case_bad, bad_dtype, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 1\ndtype = bf17\n", HX_ECASE, 6, "key 'dtype': expected a dtype");
    expect_error(VARLEN "seq_lens = 1\ndtype = bf17\n", HX_ECASE, 6, "bf16");
    /* A dtype the path cannot run: refused by the path's check(), at the dtype line. */
    expect_error(VARLEN "seq_lens = 1\ndtype = i32\n", HX_ECASE, 6, "key 'dtype'");
}

Test(case_bad, bad_double, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 1\nscale = abc\n", HX_ECASE, 6,
                 "key 'scale': expected a finite number > 0, got 'abc'");
    expect_error(VARLEN "seq_lens = 1\nscale = 0\n", HX_ECASE, 6, "> 0");
    expect_error(VARLEN "seq_lens = 1\nscale = nan\n", HX_ECASE, 6, "key 'scale'");
    expect_error(VARLEN "seq_lens = 1\nsoftcap = -1\n", HX_ECASE, 6,
                 "key 'softcap': expected a finite number >= 0");
    expect_error(VARLEN "seq_lens = 1\natol.out = -1\n", HX_ECASE, 6, "key 'atol.out'");
}

Test(case_bad, lens_count_mismatch, .fini = cleanup)
{
    expect_error(VARLEN "batch = 4\nseq_lens_q = 1,2,3\n", HX_ECASE, 6,
                 "key 'seq_lens_q': seq_lens_q has 3 values but batch is 4");
    expect_error(VARLEN "batch = 4\nseq_lens = 1,2,3\n", HX_ECASE, 6,
                 "key 'seq_lens': seq_lens has 3 values but batch is 4");
    /* Without batch, the longest list decides, and a shorter list is then wrong. */
    expect_error(VARLEN "seq_lens_q = 1,2,3\nseq_lens_k = 4,5\n", HX_ECASE, 6,
                 "seq_lens_k has 2 values but batch is 3");
}

Test(case_bad, lens_values, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 4, -3\n", HX_ECASE, 5, "key 'seq_lens': '4, -3': negative length -3");
    expect_error(VARLEN "batch = 2\nseq_lens = 9..3\n", HX_ECASE, 6, "is empty");
    expect_error(VARLEN "seq_lens = 1..\n", HX_ECASE, 5, "key 'seq_lens'");
    expect_error(VARLEN "seq_lens = 3000000000\n", HX_ECASE, 5, "does not fit int32");
    expect_error(VARLEN "seq_lens = 2000000000*2\n", HX_ECASE, 5, "add up to more than");
    expect_error(VARLEN "seq_lens = 5*0\n", HX_ECASE, 5, "repeat count");
}

Test(case_bad, range_without_batch, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 3000..4096\n", HX_ECASE, 5,
                 "key 'seq_lens': '3000..4096' is drawn per sequence: give 'batch' for a range");
}

Test(case_bad, line_too_long, .fini = cleanup)
{
    char text[600], line[300];
    int n = snprintf(line, sizeof line, "tags = ");
    memset(line + n, 't', (size_t)(200 - n));
    line[200] = '\0';
    snprintf(text, sizeof text, VARLEN "seq_lens = 1\n%s\nbatch = 1\n", line);
    expect_error(text, HX_ECASE, 6, "line too long (max 199 characters)");
}

Test(case_bad, missing_file)
{
    hx_caselist l = {0};
    hx_err e = {0};
    cr_assert_eq(hx_cases_load("/tmp/no/such/dir/cases.ini", 0, &l, &e), HX_EINPUT);
    cr_assert(strstr(e.msg, "cannot open case file '/tmp/no/such/dir/cases.ini': "), "%s", e.msg);
    cr_assert_eq(l.n, 0);
}

Test(case_bad, no_cases_and_keys_outside_cases, .fini = cleanup)
{
    hx_caselist l = {0};
    hx_err e = {0};
    cr_assert_eq(load("# only a comment\n\n", 0, &l, &e), HX_ECASE);
    cr_assert(strstr(e.msg, tmp_path[0]) && strstr(e.msg, "no cases in file"), "%s", e.msg);
    expect_error("batch = 3\n[c]\n", HX_ECASE, 1, "key 'batch': comes before any [case] section");
}

Test(case_bad, path_check_rejects_impossible_shape, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 1\nheads_kv = 3\n", HX_ECASE, 6, "key 'heads_kv'");
    expect_error("[m]\npath = merge_states\nheads = 1\nhead_dim = 1\n", HX_ECASE, 1, "tokens");
}

/* ---------------------------------------------------------------- tolerances */
Test(case_tol, loosened_needs_reason, .fini = cleanup)
{
    expect_error(VARLEN "seq_lens = 1\nrtol.out = 0.001\natol.out = 0.01\n", HX_ECASE, 7,
                 "key 'atol.out' = 0.01 is looser than the default 0.001: add tol_reason");
    expect_error(VARLEN "seq_lens = 1\ncos_tol.out = 1e-3\n", HX_ECASE, 6, "cos_tol.out");
    /* lse has its own profile: 1e-4 is tight for bf16 out but loose for lse. */
    expect_error(VARLEN "seq_lens = 1\natol.lse = 1e-4\n", HX_ECASE, 6, "atol.lse");
    /* The default depends on the case's dtype: f16 out is tighter than bf16. */
    expect_error(VARLEN "seq_lens = 1\ndtype = f16\natol.out = 5e-4\n", HX_ECASE, 7, "atol.out");

    hx_caselist l = {0};
    hx_case *c = load_one(VARLEN "seq_lens = 1\natol.out = 0.01\ntol_reason = softcap 50 "
                                 "amplifies bf16 rounding\n",
                          &l);
    cr_assert_eq(c->tol_override[0].tol.atol, 0.01);
    cr_assert_str_eq(c->tol_reason, "softcap 50 amplifies bf16 rounding");
    hx_cases_free(&l);
}

Test(case_tol, tightened_is_accepted, .fini = cleanup)
{
    hx_caselist l = {0};
    hx_case *c = load_one(VARLEN "seq_lens = 1\natol.out = 1e-4\nrtol.out = 0\n"
                                 "cos_tol.lse = 0.5\n",
                          &l);
    cr_assert_eq(c->n_tol_override, 2);
    cr_assert_eq(c->tol_override[0].tol.rtol, 0.0);
    cr_assert(c->tol_override[1].has_cos, "a cos_tol where the default has none tightens");
    hx_cases_free(&l);
}

/* ---------------------------------------------------------------- hx_case_fail */
Test(case_fail, message_shape)
{
    hx_case c = {0};
    strcpy(c.name, "k");
    strcpy(c.file, "f.ini");
    c.line = 10;
    c.keys_given = 0;
    hx_err e = {0};
    cr_assert_eq(hx_case_fail(&e, &c, NULL, "bad %d", 1), HX_ECASE);
    cr_assert_str_eq(e.msg, "f.ini:10: [k] bad 1");
    cr_assert_eq(hx_case_fail(&e, &c, "batch", "too big"), HX_ECASE);
    cr_assert_str_eq(e.msg, "f.ini:10: [k] key 'batch': too big", "not given: the header line");
}

/* Windows line endings: the '\r' is not part of any header, key or value. */
Test(case_good, crlf_line_endings, .fini = cleanup)
{
    hx_caselist l = {0};
    hx_case *c = load_one("[crlf]\r\npath = mha_varlen\r\nheads_q = 4\r\nhead_dim = 64\r\n"
                          "seq_lens = 3,5\r\n",
                          &l);
    cr_expect_str_eq(c->name, "crlf");
    cr_expect_eq(c->heads_q, 4);
    cr_expect_eq(c->seq_lens_q.n, 2);
    cr_expect_eq(c->seq_lens_q.v[1], 5);
    hx_cases_free(&l);
}
