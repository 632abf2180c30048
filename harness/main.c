/* main.c - the attn-harness command line: list | run | info | roofline | plot | compare.
 *
 * Exit codes (DESIGN.md): 0 every row PASS or skipped, 1 a check failed, 2 usage or case-file
 * error, 3 runtime error. Only this file exits.
 */
#include "records.h"
#include "run.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const usage_main =
    "usage: attn-harness COMMAND [OPTIONS] [CASE_FILES...]\n"
    "\n"
    "Validate and time attention kernels against an f64 CPU reference.\n"
    "\n"
    "commands:\n"
    "  list   [FILES...]      paths, their variants and keys; the cases in FILES\n"
    "  run    FILES...        run cases: reference, candidates, verdicts, timings\n"
    "  info                   build, BLAS, threads, GPU devices\n"
    "  roofline               measured peaks (read, copy, matrix) and the timing self-test\n"
    "  plot    RESULTS...     figures per GPU from result files (gnuplot): speedup, roofline,\n"
    "                         error by position; one across GPUs\n"
    "  compare BASE NEW       speed and accuracy drift between two sets of results\n"
    "\n"
    "`attn-harness COMMAND --help` explains each command. Case-file grammar: cases/README.md.\n"
    "Exit codes: 0 all pass or skip, 1 a check failed, 2 usage or case-file error,\n"
    "3 runtime error.\n";

static const char *const usage_run =
    "usage: attn-harness run [OPTIONS] CASE_FILE...\n"
    "\n"
    "For each case: generate inputs in their storage dtypes (seeded by the case name), compute\n"
    "the f64 reference, run each candidate into NaN-poisoned, canary-guarded outputs, judge\n"
    "them (VALIDATION.md), and print one row per (case, variant). Candidates: `emulated` (the\n"
    "reference with a kernel's rounding points, on the CPU) and the GPU variants of the path.\n"
    "\n"
    "options:\n"
    "  -f, --filter GLOB     only cases whose name or \"case/variant\" matches GLOB\n"
    "  -V, --variant NAME    only this variant\n"
    "  -p, --path NAME       only cases of this path\n"
    "      --cpu-only        no GPU variants (the emulated reference is still judged)\n"
    "      --seed N          XOR N into every case seed (default 0); printed in each row\n"
    "      --shard I/N       run only cases k with k % N == I (0-based), for job arrays\n"
    "      --json FILE       write JSON Lines records (written to a temp name, renamed at end)\n"
    "      --csv FILE        write a flat CSV for gnuplot\n"
    "      --dump DIR        write inputs, reference and candidate outputs as DIR/CASE/*.npy\n"
    "      --inputs DIR      read inputs from DIR/CASE/TENSOR.npy where present (e.g. from\n"
    "                        PyTorch or vLLM); shapes must match the case\n"
    "      --progress        progress on stderr: cases done/total, case/candidate, elapsed,\n"
    "                        ETA; one line redrawn on a terminal, else a line per step\n"
    "                        (default: on when stderr is a terminal)\n"
    "      --determinism     rerun every passing candidate on the same inputs into fresh\n"
    "                        poisoned outputs; a bit difference is FAIL_NONDETERMINISTIC\n"
    "                        (only a note for a variant declared nondeterministic)\n"
    "      --batch-invariance  rerun one request of the batch alone (mha_varlen,\n"
    "                        paged_decode, extend, mla_decode, dsv4_sparse_decode); its\n"
    "                        outputs must equal its slice of the batch's, bit for bit, where\n"
    "                        the candidate claims batch invariance (else a note)\n"
    "      --kernel-timeout S  give up waiting for the GPU after S seconds (default 60; 0 =\n"
    "                        never): that row is ERROR, the remaining GPU rows are skipped\n"
    "      --device N        GPU index (default 0)\n"
    "      --warmup N        untimed launches before timing (default 5)\n"
    "      --iters N         at least N timed launches, and at least 100 ms (default 20)\n"
    "      --hot             keep the L2 warm between samples (default: flushed, cold)\n"
    "      --no-timing       verification launches only: no peaks, no timing (for sanitizers)\n"
    "  -h, --help            this text\n"
    "\n"
    "Columns: status, max_abs (worst output), cos_diff (of `out`), headroom (worst err/tol;\n"
    "> 1 fails), median time, TFLOP/s and GB/s (SPEC.md cost model), % of the measured peak\n"
    "(OpenBLAS dgemm for CPU rows), seed. Exit: 0 pass/skip, 1 failure, 2 bad case file, 3 runtime.\n"
    "\n"
    "Interrupting: the first Ctrl-C or SIGTERM (e.g. from `timeout`) lets the case under way\n"
    "finish, keeps the records written so far under the --json/--csv names and exits with\n"
    "128 + the signal (130, 143); another one a second or more later ends the run at once,\n"
    "leaving the finished records in FILE.tmp<pid> (repeats within the second, as `timeout`\n"
    "sends them, count as one).\n";

static const char *const usage_list =
    "usage: attn-harness list [CASE_FILE...]\n"
    "\n"
    "Without files: every path with its summary, case keys, outputs and variants.\n"
    "With files: also every case, its path and its shape.\n";

static const char *const usage_info =
    "usage: attn-harness info [--slug]\n"
    "\n"
    "Build (git revision, GPU backend, compiler), BLAS and threads, OpenBLAS dgemm GFLOP/s\n"
    "measured now, and every GPU device with its attributes.\n"
    "  --slug   print only the device slug results are filed under (results/<slug>/):\n"
    "           device 0's name in lower case with '-' for spaces, or 'cpu' without a GPU\n";

static const char *const usage_roofline =
    "usage: attn-harness roofline [--device N]\n"
    "\n"
    "The micro-benchmarks of MEASURE.md on one GPU: streaming read bandwidth (1 GiB, 16-byte\n"
    "loads), copy bandwidth (read + write), bf16 matrix throughput (mma.sync on NVIDIA, MFMA on\n"
    "AMD), each the best of 10 launches; then the timing self-test: an empty kernel must time\n"
    "in microseconds (< 50 us) and a cold 256 MiB copy timed like a kernel must reach 70% of the\n"
    "copy peak. Every `run` measures the same peaks for its % of peak column.\n"
    "Exit: 0 self-test passed, 1 failed, 3 no GPU or runtime error.\n";

static const char *const usage_plot =
    "usage: attn-harness plot [OPTIONS] RESULTS...\n"
    "\n"
    "RESULTS: JSON Lines files of `attn-harness run --json` (or of harness/peers/torch_peers.py),\n"
    "or directories of them (results/<slug>/; read recursively, in name order). Shards and\n"
    "repeated runs are merged: of two records of one (case, variant, device) the last read wins\n"
    "(said on stderr). Per GPU (device slug), into OUT/<slug>/, as .svg and .png with the .dat\n"
    "files gnuplot read:\n"
    "  speedup    each variant's speedup over the path's baseline `simple` per case (median\n"
    "             time, log scale, PyTorch peers included; PASS rows only), grouped by path\n"
    "  roofline   the measured read/copy/mma ceilings of the run (run.gpu; dgemm on the CPU)\n"
    "             and each (case, variant) at its FLOP/byte against its achieved TFLOP/s\n"
    "  errpos     the N worst (case, variant) by headroom: worst err/tol along the token axis\n"
    "             (records' err_by_row), the emulated candidate dashed beside a GPU variant\n"
    "and with several GPUs, OUT/speedup-gpus: speedup per (case, variant), one series per GPU.\n"
    "\n"
    "options:\n"
    "  -o, --out DIR       output root (default plots): figures in DIR/<slug>/\n"
    "      --worst N       panels of the error-by-position figure (default 6, at most 12)\n"
    "      --scripts DIR   the gnuplot scripts (default: plots/ beside the build directory,\n"
    "                      else ./plots)\n"
    "      --gnuplot PROG  the gnuplot program (default $GNUPLOT, else gnuplot on PATH)\n"
    "  -h, --help          this text\n"
    "Exit: 0 figures written, 2 usage or a bad result file (file:line), 3 gnuplot missing or\n"
    "failing (scripts/deps.sh installs gnuplot-nox).\n";

static const char *const usage_compare =
    "usage: attn-harness compare [OPTIONS] BASE NEW\n"
    "\n"
    "BASE, NEW: JSON Lines result files or directories of them (shards of one run: one\n"
    "directory, or more with --base/--new). Records are matched on (case, variant, device\n"
    "slug); one row per record: median times, NEW/BASE ratio, the noise (combined relative\n"
    "spread sqrt((sd/median)_base^2 + (sd/median)_new^2)), a verdict, status and notes.\n"
    "  verdict   FAIL: ratio >= --fail and beyond the noise; SLOWER: >= --warn and beyond\n"
    "            the noise; faster: <= 1/--warn and beyond the noise; same; untimed: a side\n"
    "            has < 2 samples (the emulated CPU candidate) or no time; new; missing\n"
    "  notes     status changes (PASS or skip -> anything else is a regression) and accuracy\n"
    "            drift: max_abs or cos_diff grown by --drift or more, even inside tolerance\n"
    "\n"
    "options:\n"
    "      --warn R          NEW/BASE time ratio reported as slower (default 1.10)\n"
    "      --fail R          ratio that fails (default 1.15)\n"
    "      --drift F         accuracy growth factor reported as drift (default 1.5)\n"
    "      --base SRC        one more BASE file or directory (repeatable)\n"
    "      --new SRC         one more NEW file or directory (repeatable)\n"
    "      --cross-device    match on (case, variant) only: compare two GPUs\n"
    "      --only-changes    print only rows that are not `same` or carry a note\n"
    "      --missing-fails   a BASE record NEW lacks fails (a lost shard, a crashed sweep);\n"
    "                        by default missing rows are listed and counted only\n"
    "  -h, --help            this text\n"
    "Exit: 0 no regression, 1 a FAIL verdict, a status regression or (--missing-fails) a\n"
    "missing record, 2 usage, a bad result\n"
    "file (file:line) or nothing in common.\n";

static int want_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    return 0;
}

static int die(int code, const char *msg)
{
    fprintf(stderr, "attn-harness: %s\n", msg);
    return hx_exit_code(code);
}

static int cmd_list(int argc, char **argv)
{
    if (want_help(argc, argv)) {
        fputs(usage_list, stdout);
        return 0;
    }
    printf("paths:\n");
    for (int i = 0; i < hx_n_paths; i++) {
        const hx_path *p = hx_paths[i];
        printf("  %-14s %s\n", p->name, p->summary);
        printf("  %-14s keys: %s\n", "", p->keys);
        printf("  %-14s outputs: %s%s; variants: emulated (cpu)", "", p->outputs,
               p->bit_exact ? " (bit-exact)" : "");
        for (int v = 0; v < p->n_variants; v++)
            printf(", %s", p->variants[v].name);
        putchar('\n');
        for (int v = 0; v < p->n_variants; v++)
            printf("  %-14s   %s: %s\n", "", p->variants[v].name, p->variants[v].summary);
    }
    if (argc <= 1)
        return 0;
    hx_caselist l = {0};
    hx_err e = {0};
    for (int i = 1; i < argc; i++) {
        if (hx_cases_load(argv[i], 0, &l, &e)) {
            hx_cases_free(&l);
            return die(e.code, e.msg);
        }
    }
    printf("\ncases:\n");
    for (int i = 0; i < l.n; i++) {
        const hx_case *c = &l.v[i];
        printf("  %-36s %-13s %s:%d", c->name, c->path->name, c->file, c->line);
        if (c->tags[0])
            printf("  [%s]", c->tags);
        putchar('\n');
    }
    hx_cases_free(&l);
    return 0;
}

static int cmd_info(int argc, char **argv)
{
    if (want_help(argc, argv)) {
        fputs(usage_info, stdout);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--slug") == 0) {
        char slug[128];
        hx_device_slug(slug, sizeof slug);
        puts(slug);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "attn-harness info: unknown option '%s'\n%s", argv[1], usage_info);
        return 2;
    }
    hx_runinfo ri;
    hx_runinfo_init(&ri, "info");
    printf("attn-harness %s\n", ri.git_rev);
    printf("build:    %s\n", ri.build);
    printf("host:     %s\n", ri.host);
    printf("blas:     %s\n", ri.blas);
    printf("threads:  %d (OpenMP)\n", ri.threads);
    printf("dgemm:    %.1f GFLOP/s (1024^3, measured now)\n", ref_dgemm_gflops(1024, 0.3));
    printf("gpu:      backend %s, %d device(s)\n", hx_gpu_backend(), hx_gpu_count());
    for (int d = 0; d < hx_gpu_count(); d++)
        hx_gpu_describe(d, stdout);
    return 0;
}

static int parse_int(const char *s, int lo, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > 1000000)
        return 0;
    *out = (int)v;
    return 1;
}

static int cmd_roofline(int argc, char **argv)
{
    int dev = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage_roofline, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--device") && i + 1 < argc && parse_int(argv[i + 1], 0, &dev)) {
            i++;
            continue;
        }
        fprintf(stderr, "attn-harness roofline: bad argument '%s'\n%s", argv[i], usage_roofline);
        return 2;
    }
    if (hx_gpu_count() == 0)
        return die(HX_ERUNTIME, "roofline: no GPU device in this build or on this machine");
    return hx_roofline(dev);
}

static int parse_shard(const char *s, int *i, int *n)
{
    char extra;
    return sscanf(s, "%d/%d%c", i, n, &extra) == 2 && *n > 0 && *i >= 0 && *i < *n;
}

static int cmd_run(int argc, char **argv, const char *argv_line)
{
    enum { O_CPU = 256, O_SEED, O_SHARD, O_JSON, O_CSV, O_DUMP, O_INPUTS, O_PROGRESS, O_DEVICE,
           O_WARMUP, O_ITERS, O_HOT, O_NO_TIMING, O_DETERMINISM, O_BATCH_INV, O_KTIMEOUT };
    static const struct option opts[] = {
        {"filter", required_argument, 0, 'f'}, {"variant", required_argument, 0, 'V'},
        {"path", required_argument, 0, 'p'},
        {"cpu-only", no_argument, 0, O_CPU},   {"seed", required_argument, 0, O_SEED},
        {"shard", required_argument, 0, O_SHARD}, {"json", required_argument, 0, O_JSON},
        {"csv", required_argument, 0, O_CSV},  {"dump", required_argument, 0, O_DUMP},
        {"inputs", required_argument, 0, O_INPUTS}, {"progress", no_argument, 0, O_PROGRESS},
        {"device", required_argument, 0, O_DEVICE}, {"warmup", required_argument, 0, O_WARMUP},
        {"iters", required_argument, 0, O_ITERS}, {"hot", no_argument, 0, O_HOT},
        {"no-timing", no_argument, 0, O_NO_TIMING},
        {"determinism", no_argument, 0, O_DETERMINISM},
        {"batch-invariance", no_argument, 0, O_BATCH_INV},
        {"kernel-timeout", required_argument, 0, O_KTIMEOUT},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    hx_run_opts o = {.shard_n = 1, .progress = isatty(2), .warmup = 5, .iters = 20,
                     .kernel_timeout = 60};
    int ch;
    char msg[256];
    optind = 1;
    while ((ch = getopt_long(argc, argv, "f:V:p:h", opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'f': o.filter = optarg; break;
        case 'V': {
            int known = strcmp(optarg, "emulated") == 0;
            for (int i = 0; i < hx_n_paths && !known; i++)
                for (int v = 0; v < hx_paths[i]->n_variants && !known; v++)
                    known = strcmp(optarg, hx_paths[i]->variants[v].name) == 0;
            if (!known) {
                snprintf(msg, sizeof msg,
                         "--variant '%s': no path has such a variant in this build (attn-harness list)", optarg);
                return die(HX_EUSAGE, msg);
            }
            o.variant = optarg;
            break;
        }
        case 'p':
            if (!hx_path_find(optarg)) {
                snprintf(msg, sizeof msg, "--path '%s': no such path (attn-harness list)", optarg);
                return die(HX_EUSAGE, msg);
            }
            o.path = optarg;
            break;
        case O_CPU: o.cpu_only = 1; break;
        case O_SEED:
            o.seed = strtoull(optarg, &end, 0);
            if (*end || !*optarg) {
                snprintf(msg, sizeof msg, "--seed '%s': expected an integer (decimal or 0x hex)", optarg);
                return die(HX_EUSAGE, msg);
            }
            break;
        case O_SHARD:
            if (!parse_shard(optarg, &o.shard_i, &o.shard_n)) {
                snprintf(msg, sizeof msg, "--shard '%s': expected I/N with 0 <= I < N", optarg);
                return die(HX_EUSAGE, msg);
            }
            break;
        case O_JSON: o.json = optarg; break;
        case O_CSV: o.csv = optarg; break;
        case O_DUMP: o.dump = optarg; break;
        case O_INPUTS: o.inputs = optarg; break;
        case O_PROGRESS: o.progress = 1; break;
        case O_HOT: o.hot = 1; break;
        case O_NO_TIMING: o.no_timing = 1; break;
        case O_DETERMINISM: o.determinism = 1; break;
        case O_BATCH_INV: o.batch_invariance = 1; break;
        case O_KTIMEOUT:
            o.kernel_timeout = strtod(optarg, &end);
            if (*end || !*optarg || !(o.kernel_timeout >= 0 && o.kernel_timeout < 1e9)) {
                snprintf(msg, sizeof msg, "--kernel-timeout '%s': expected seconds >= 0", optarg);
                return die(HX_EUSAGE, msg);
            }
            break;
        case O_DEVICE:
        case O_WARMUP:
        case O_ITERS: {
            int *dst = ch == O_DEVICE ? &o.device : ch == O_WARMUP ? &o.warmup : &o.iters;
            if (!parse_int(optarg, ch == O_ITERS ? 1 : 0, dst)) {
                snprintf(msg, sizeof msg, "--%s '%s': expected an integer >= %d",
                         ch == O_DEVICE ? "device" : ch == O_WARMUP ? "warmup" : "iters", optarg,
                         ch == O_ITERS ? 1 : 0);
                return die(HX_EUSAGE, msg);
            }
            break;
        }
        case 'h': fputs(usage_run, stdout); return 0;
        default: fputs(usage_run, stderr); return 2;
        }
    }
    if (optind >= argc)
        return die(HX_EUSAGE, "run: no case file given (try: attn-harness run cases/smoke.ini)");
    hx_err e = {0};
    int rc = hx_run(&o, argv + optind, argc - optind, argv_line, &e);
    if (rc < 0)
        return die(rc, e.msg);
    return rc;
}

static int parse_ratio(const char *s, double lo, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo) || !isfinite(v))
        return 0;
    *out = v;
    return 1;
}

static int cmd_plot(int argc, char **argv)
{
    enum { O_SCRIPTS = 256, O_GNUPLOT, O_WORST };
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},         {"scripts", required_argument, 0, O_SCRIPTS},
        {"gnuplot", required_argument, 0, O_GNUPLOT}, {"worst", required_argument, 0, O_WORST},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0},
    };
    hx_plot_opts o = {.out_dir = "plots", .worst = 6};
    char msg[256];
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': o.out_dir = optarg; break;
        case O_SCRIPTS: o.scripts = optarg; break;
        case O_GNUPLOT: o.gnuplot = optarg; break;
        case O_WORST:
            if (!parse_int(optarg, 1, &o.worst) || o.worst > 12) {
                snprintf(msg, sizeof msg, "--worst '%s': expected 1 to 12 panels", optarg);
                return die(HX_EUSAGE, msg);
            }
            break;
        case 'h': fputs(usage_plot, stdout); return 0;
        default: fputs(usage_plot, stderr); return 2;
        }
    }
    if (optind >= argc)
        return die(HX_EUSAGE, "plot: no result file or directory given (try: attn-harness plot "
                              "results/*/)");
    hx_err e = {0};
    int rc = hx_plot(&o, argv + optind, argc - optind, &e);
    return rc < 0 ? die(rc, e.msg) : rc;
}

static int cmd_compare(int argc, char **argv)
{
    enum { O_WARN = 256, O_FAIL, O_DRIFT, O_BASE, O_NEW, O_CROSS, O_CHANGES, O_MISSING };
    static const struct option opts[] = {
        {"warn", required_argument, 0, O_WARN},   {"fail", required_argument, 0, O_FAIL},
        {"drift", required_argument, 0, O_DRIFT}, {"base", required_argument, 0, O_BASE},
        {"new", required_argument, 0, O_NEW},     {"cross-device", no_argument, 0, O_CROSS},
        {"only-changes", no_argument, 0, O_CHANGES}, {"missing-fails", no_argument, 0, O_MISSING},
        {"help", no_argument, 0, 'h'},               {0, 0, 0, 0},
    };
    hx_compare_opts o = {.warn = 1.10, .fail = 1.15, .drift = 1.5};
    const char **base = calloc((size_t)argc + 1, sizeof *base),
               **news = calloc((size_t)argc + 1, sizeof *news);
    char msg[256];
    int ch, rc = 0;
    if (!base || !news) {
        free(base);
        free(news);
        return die(HX_ENOMEM, "out of memory");
    }
    optind = 1;
    while (!rc && (ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case O_WARN:
        case O_FAIL:
        case O_DRIFT: {
            double *dst = ch == O_WARN ? &o.warn : ch == O_FAIL ? &o.fail : &o.drift;
            if (!parse_ratio(optarg, 1.0, dst)) {
                snprintf(msg, sizeof msg, "--%s '%s': expected a ratio >= 1",
                         ch == O_WARN ? "warn" : ch == O_FAIL ? "fail" : "drift", optarg);
                rc = die(HX_EUSAGE, msg);
            }
            break;
        }
        case O_BASE: base[1 + o.n_base++] = optarg; break;
        case O_NEW: news[1 + o.n_new++] = optarg; break;
        case O_CROSS: o.cross_device = 1; break;
        case O_CHANGES: o.quiet = 1; break;
        case O_MISSING: o.missing_fails = 1; break;
        case 'h': fputs(usage_compare, stdout); rc = -1; break;
        default: fputs(usage_compare, stderr); rc = 2; break;
        }
    }
    /* BASE NEW come first on their sides; without them --base and --new must give both. */
    int npos = argc - optind, first = 1;
    if (!rc && npos == 2) {
        base[0] = argv[optind];
        news[0] = argv[optind + 1];
        o.n_base++, o.n_new++;
        first = 0;
    } else if (!rc && !(npos == 0 && o.n_base && o.n_new)) {
        rc = die(HX_EUSAGE, "compare: expected BASE NEW (result files or directories; more "
                            "with --base/--new)");
    }
    if (!rc && o.fail < o.warn)
        rc = die(HX_EUSAGE, "compare: --fail must be >= --warn");
    if (!rc) {
        hx_err e = {0};
        o.base = base + first;
        o.new_ = news + first;
        rc = hx_compare_results(&o, &e);
        if (rc < 0)
            rc = die(rc, e.msg);
    }
    free(base);
    free(news);
    return rc < 0 ? 0 : rc;
}

int main(int argc, char **argv)
{
    char line[1024];
    size_t k = 0;
    line[0] = '\0';
    for (int i = 0; i < argc && k < sizeof line; i++)
        k += (size_t)snprintf(line + k, sizeof line - k, "%s%s", i ? " " : "", argv[i]);

    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_main, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "list") == 0)
        return cmd_list(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1, line);
    if (strcmp(cmd, "info") == 0)
        return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "roofline") == 0)
        return cmd_roofline(argc - 1, argv + 1);
    if (strcmp(cmd, "plot") == 0)
        return cmd_plot(argc - 1, argv + 1);
    if (strcmp(cmd, "compare") == 0)
        return cmd_compare(argc - 1, argv + 1);
    fprintf(stderr, "attn-harness: unknown command '%s' (commands: list, run, info, roofline, "
                    "plot, compare)\n",
            cmd);
    return 2;
}
