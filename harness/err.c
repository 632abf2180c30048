/* err.c - harness error codes (the HX_ERRORS table), their texts and exit codes. */
#include "hx.h"

#include <string.h>

int hx_fail(hx_err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        e->code = code;
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *hx_strerror(int code)
{
    switch (code) {
#define HX__TEXT(name, c, text, exitc) \
    case c:                             \
        return text;
        HX_ERRORS(HX__TEXT)
#undef HX__TEXT
    }
    return "unknown error";
}

int hx_exit_code(int code)
{
    switch (code) {
#define HX__EXIT(name, c, text, exitc) \
    case c:                             \
        return exitc;
        HX_ERRORS(HX__EXIT)
#undef HX__EXIT
    }
    return 3;
}
