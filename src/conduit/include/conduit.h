/* conduit.h: Conduit's services for WASI preview1 command modules written in C.
 *
 * Shipped with Conduit (the `include` directory of the installed package); docs/wasm.md
 * ("Writing a module in C") is the reference. Build with wasi-libc, e.g.
 *
 *     clang --target=wasm32-wasi --sysroot=SYSROOT -O2 -s \
 *         -I "$(python -c 'import conduit, os; print(os.path.join(os.path.dirname(conduit.__file__), "include"))')" \
 *         -o plugin.wasm main.c
 *
 * Everything here is `static inline`: there is nothing to link but the imports below,
 * and a module only gets (and needs grants for) the imports it calls.
 *
 * The imports (module "conduit"; every parameter and result is an i32):
 *
 *   log(level, ptr, len)          writes "NAME: LEVEL: message" to stderr
 *   env(name_ptr, name_len) -> n  the variable's value becomes the result; -1 if unset;
 *                                 traps if the variable is not granted
 *   http(req_ptr, req_len) -> n   an HTTP request; -2 if it failed (the result is the
 *                                 error text); traps if the host is not granted
 *   exec(req_ptr, req_len) -> n   runs a program; -2 if it could not run (the result is
 *                                 the error text); traps if the program is not granted
 *   result(ptr, capacity) -> n    copies the last result (up to capacity bytes) to ptr;
 *                                 returns the bytes copied
 *   result_len() -> n             the length of the last result (after -2: of the error text)
 *
 * n >= 0 is the length of the result. A trap ends the command with Conduit's one-line
 * "denied: ..." error; the module does not get to handle it.
 *
 * Requests and results are UTF-8 JSON:
 *
 *   http request   {"method": "GET", "url": "https://example.com/",
 *                   "headers": {"Accept": "text/plain"}, "body": "..."}
 *                  ("method" defaults to GET, "headers" and "body" may be left out;
 *                   "body_base64": "..." instead of "body" sends exact bytes)
 *   http result    {"status": 200, "headers": [["content-type", "text/plain"], ...],
 *                   "body": "..."}  or, when the body is not UTF-8 text,
 *                  {"status": 200, "headers": [...], "body_base64": "..."}
 *                  (redirects are not followed: a 3xx is returned as it is)
 *   exec request   {"program": "git", "args": ["status"], "stdin": "..."}
 *                  ("args" and "stdin" may be left out; "stdin_base64" sends bytes)
 *   exec result    {"code": 0, "stdout": "...", "stderr": "..."}, with "stdout_base64"
 *                  ("stderr_base64") instead when the output is not UTF-8 text
 *
 * Helpers: conduit_chdir_workspace() (call it first in main: relative paths name
 * nothing until the module changes to the workspace), conduit_log(), conduit_getenv(),
 * conduit_http() and conduit_exec() (the result in a malloc'd buffer), and a small JSON
 * kit: conduit_json_quote() to build requests, conduit_json_get() /
 * conduit_json_string() / conduit_json_int() to read the fields of a result, and
 * conduit_base64_decode() for the *_base64 fields. It is not a JSON parser: the readers
 * find a key of the top-level object, which is all a result needs.
 */
#ifndef CONDUIT_H
#define CONDUIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CONDUIT_IMPORT(name) __attribute__((import_module("conduit"), import_name(name)))

/* -- the imports, as docs/wasm.md lists them ------------------------------------------ */

CONDUIT_IMPORT("log") void conduit_import_log(int32_t level, const char *ptr, int32_t len);
CONDUIT_IMPORT("env") int32_t conduit_import_env(const char *name_ptr, int32_t name_len);
CONDUIT_IMPORT("http") int32_t conduit_import_http(const char *req_ptr, int32_t req_len);
CONDUIT_IMPORT("exec") int32_t conduit_import_exec(const char *req_ptr, int32_t req_len);
CONDUIT_IMPORT("result") int32_t conduit_import_result(char *ptr, int32_t capacity);
CONDUIT_IMPORT("result_len") int32_t conduit_import_result_len(void);

/* log levels */
#define CONDUIT_DEBUG 0
#define CONDUIT_INFO 1
#define CONDUIT_WARNING 2
#define CONDUIT_ERROR 3

/* returned by env() for an unset variable, and by http()/exec() when the call failed */
#define CONDUIT_UNSET (-1)
#define CONDUIT_FAILED (-2)

/* -- helpers ---------------------------------------------------------------------------- */

/* Change to the workspace (Conduit puts it in PWD). wasi-libc starts in "/", so until
 * then a relative path names nothing. Returns 0, or -1 when there is no workspace to
 * change to (no grant reaches it) or chdir failed (errno says why). */
static inline int conduit_chdir_workspace(void) {
    const char *pwd = getenv("PWD");
    if (pwd == NULL || *pwd == '\0') return -1;
    return chdir(pwd);
}

/* Write "NAME: LEVEL: message" to stderr; level is CONDUIT_DEBUG ... CONDUIT_ERROR. */
static inline void conduit_log(int level, const char *message) {
    conduit_import_log(level, message, (int32_t)strlen(message));
}

/* The last result in a malloc'd, NUL-terminated buffer (its length in *len if len is not
 * NULL); NULL if out of memory. Free it. */
static inline char *conduit_take_result(size_t *len) {
    int32_t n = conduit_import_result_len();
    char *buf = (char *)malloc((size_t)n + 1);
    if (buf == NULL) return NULL;
    int32_t got = conduit_import_result(buf, n);
    buf[got] = '\0';
    if (len != NULL) *len = (size_t)got;
    return buf;
}

/* A variable through the env import: a malloc'd copy of its value (free it), or NULL if
 * it is unset (or out of memory). Traps if the variable is not granted. (getenv() sees
 * the same granted variables through WASI.) */
static inline char *conduit_getenv(const char *name) {
    if (conduit_import_env(name, (int32_t)strlen(name)) < 0) return NULL;
    return conduit_take_result(NULL);
}

/* What conduit_http() and conduit_exec() return. data is malloc'd and NUL-terminated
 * (free it): the result JSON when ok is 1, the error text when ok is 0. data is NULL only
 * when out of memory. */
typedef struct {
    int ok;
    char *data;
    size_t len;
} conduit_result;

static inline conduit_result conduit_call_(int32_t n) {
    conduit_result r;
    r.ok = n >= 0;
    r.data = conduit_take_result(&r.len);
    if (r.data == NULL) {
        r.ok = 0;
        r.len = 0;
    }
    return r;
}

/* An HTTP request: request_json as documented above. Traps if the host is not granted. */
static inline conduit_result conduit_http(const char *request_json) {
    return conduit_call_(conduit_import_http(request_json, (int32_t)strlen(request_json)));
}

/* Run a program: request_json as documented above. Traps if it is not granted. */
static inline conduit_result conduit_exec(const char *request_json) {
    return conduit_call_(conduit_import_exec(request_json, (int32_t)strlen(request_json)));
}

/* -- JSON ------------------------------------------------------------------------------- */

/* s (UTF-8 text) as a JSON string with its quotes, malloc'd (free it); NULL if out of
 * memory. For bytes that are not UTF-8, send "body_base64"/"stdin_base64" instead. */
static inline char *conduit_json_quote(const char *s) {
    static const char hex[] = "0123456789abcdef";
    size_t n = 2;
    for (const char *p = s; *p; p++) n += ((unsigned char)*p < 0x20) ? 6 : (*p == '"' || *p == '\\') ? 2 : 1;
    char *out = (char *)malloc(n + 1), *o = out;
    if (out == NULL) return NULL;
    *o++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            *o++ = '\\';
            *o++ = (char)*p;
        } else if (*p < 0x20) {
            *o++ = '\\';
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        } else {
            *o++ = (char)*p;
        }
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

static inline const char *conduit_json_ws_(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* past the closing quote of the JSON string that starts at p; NULL if cut off */
static inline const char *conduit_json_str_end_(const char *p) {
    for (p++; *p != '"'; p++) {
        if (*p == '\0') return NULL;
        if (*p == '\\' && *++p == '\0') return NULL;
    }
    return p + 1;
}

/* past the JSON value at p (a string, number, literal, array or object); NULL if cut off */
static inline const char *conduit_json_skip_(const char *p) {
    int depth = 0;
    do {
        p = conduit_json_ws_(p);
        if (*p == '"') {
            if ((p = conduit_json_str_end_(p)) == NULL) return NULL;
        } else if (*p == '{' || *p == '[') {
            depth++;
            p++;
        } else if (*p == '}' || *p == ']') {
            depth--;
            p++;
        } else if (*p == '\0') {
            return NULL;
        } else {
            while (*p && strchr(",:]} \t\r\n", *p) == NULL) p++;  /* a number or literal */
        }
        p = conduit_json_ws_(p);
        if (depth > 0 && (*p == ',' || *p == ':')) p++;
    } while (depth > 0);
    return p;
}

/* The value of `key` in the top-level JSON object `json`: a pointer into json at the
 * value, or NULL if the key is not there. */
static inline const char *conduit_json_get(const char *json, const char *key) {
    size_t klen = strlen(key);
    const char *p = conduit_json_ws_(json);
    if (*p++ != '{') return NULL;
    for (;;) {
        p = conduit_json_ws_(p);
        if (*p != '"') return NULL;
        const char *name = p + 1, *end = conduit_json_str_end_(p);
        if (end == NULL) return NULL;
        int match = (size_t)(end - 1 - name) == klen && memcmp(name, key, klen) == 0;
        p = conduit_json_ws_(end);
        if (*p++ != ':') return NULL;
        p = conduit_json_ws_(p);
        if (match) return p;
        p = conduit_json_skip_(p);
        if (p == NULL || *p++ != ',') return NULL;
    }
}

static inline int conduit_json_hex4_(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* The JSON string at `value` (from conduit_json_get), unescaped into a malloc'd,
 * NUL-terminated buffer (free it), its length in *len if len is not NULL; NULL if value
 * is not a string (or out of memory). */
static inline char *conduit_json_string(const char *value, size_t *len) {
    if (value == NULL || *value != '"') return NULL;
    const char *end = conduit_json_str_end_(value);
    if (end == NULL) return NULL;
    char *out = (char *)malloc((size_t)(end - value)), *o = out;
    if (out == NULL) return NULL;
    for (const char *p = value + 1; *p != '"'; p++) {
        if (*p != '\\') {
            *o++ = *p;
            continue;
        }
        unsigned cp;
        switch (*++p) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u':
            if (conduit_json_hex4_(p + 1, &cp) != 0) goto bad;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {  /* a surrogate pair */
                unsigned lo;
                if (p[1] != '\\' || p[2] != 'u' || conduit_json_hex4_(p + 3, &lo) != 0) goto bad;
                if (lo < 0xDC00 || lo > 0xDFFF) goto bad;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            if (cp < 0x80) {
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xC0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xE0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (cp >> 18));
                *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        default: *o++ = *p; break;  /* \" \\ \/ */
        }
    }
    *o = '\0';
    if (len != NULL) *len = (size_t)(o - out);
    return out;
bad:
    free(out);
    return NULL;
}

/* The JSON number at `value` (from conduit_json_get) as an integer; `fallback` if value
 * is NULL or not a number. */
static inline long conduit_json_int(const char *value, long fallback) {
    if (value == NULL || (*value != '-' && (*value < '0' || *value > '9'))) return fallback;
    return strtol(value, NULL, 10);
}

/* Decode base64 text (a *_base64 field's string) into a malloc'd buffer (free it), its
 * length in *len; NULL if it is not base64 (or out of memory). */
static inline unsigned char *conduit_base64_decode(const char *text, size_t *len) {
    size_t n = strlen(text);
    unsigned char *out = (unsigned char *)malloc(n / 4 * 3 + 3), *o = out;
    if (out == NULL) return NULL;
    unsigned bits = 0;
    int have = 0;
    for (const char *p = text; *p && *p != '='; p++) {
        int v;
        char c = *p;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '+') v = 62;
        else if (c == '/') v = 63;
        else {
            free(out);
            return NULL;
        }
        bits = (bits << 6) | (unsigned)v;
        have += 6;
        if (have >= 8) {
            have -= 8;
            *o++ = (unsigned char)(bits >> have);
        }
    }
    *len = (size_t)(o - out);
    return out;
}

#ifdef __cplusplus
}
#endif

#endif /* CONDUIT_H */
