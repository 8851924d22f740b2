/* cwc: count lines, words and bytes, like wc, as a Conduit WebAssembly plugin.
 *
 *   conduit cwc [FILE|URL|-]...
 *
 * FILE is read through WASI (a path in or under the workspace, once the module has
 * changed to it); an http:// or https:// URL is fetched through Conduit's http import;
 * - or no argument reads stdin. CWC_ONLY=lines|words|bytes prints only that count. It
 * exits 1 if an argument could not be counted. See docs/wasm.md, "Writing a module in C".
 */
#include <conduit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    long lines, words, bytes;
    int in_word;
} counts;

static void count(counts *c, const unsigned char *buf, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char b = buf[i];
        int space = b == ' ' || (b >= '\t' && b <= '\r');
        if (b == '\n') c->lines++;
        if (space) {
            c->in_word = 0;
        } else if (!c->in_word) {
            c->in_word = 1;
            c->words++;
        }
    }
    c->bytes += (long)n;
}

static int count_stream(FILE *f, counts *c) {
    unsigned char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) count(c, buf, n);
    return ferror(f) ? -1 : 0;
}

/* GET url through the http import; 0 if counted, else -1 with the reason printed */
static int count_url(const char *url, counts *c) {
    char *quoted = conduit_json_quote(url);
    if (quoted == NULL) return -1;
    size_t size = strlen(quoted) + 32;
    char *request = malloc(size);
    if (request == NULL) return -1;
    snprintf(request, size, "{\"method\": \"GET\", \"url\": %s}", quoted);
    free(quoted);
    conduit_result r = conduit_http(request); /* traps if the host is not granted */
    free(request);
    int rc = -1;
    if (!r.ok) {
        fprintf(stderr, "cwc: %s: %s\n", url, r.data ? r.data : "out of memory");
    } else {
        long status = conduit_json_int(conduit_json_get(r.data, "status"), 0);
        const char *text = conduit_json_get(r.data, "body");
        const char *b64 = conduit_json_get(r.data, "body_base64");
        size_t n = 0;
        char *body = conduit_json_string(text ? text : b64, &n);
        unsigned char *bytes = (unsigned char *)body;
        if (body != NULL && text == NULL) { /* not UTF-8 text: the exact bytes in base64 */
            bytes = conduit_base64_decode(body, &n);
            free(body);
            body = (char *)bytes;
        }
        if (status != 200) {
            fprintf(stderr, "cwc: %s: HTTP status %ld\n", url, status);
        } else if (bytes == NULL) {
            fprintf(stderr, "cwc: %s: no body in the response\n", url);
        } else {
            count(c, bytes, n);
            rc = 0;
        }
        free(body);
    }
    free(r.data);
    return rc;
}

static void print(const counts *c, const char *only, const char *name) {
    if (only != NULL && strcmp(only, "lines") == 0) printf("%7ld", c->lines);
    else if (only != NULL && strcmp(only, "words") == 0) printf("%7ld", c->words);
    else if (only != NULL && strcmp(only, "bytes") == 0) printf("%7ld", c->bytes);
    else printf("%7ld %7ld %7ld", c->lines, c->words, c->bytes);
    printf(name ? " %s\n" : "\n", name);
}

int main(int argc, char **argv) {
    /* wasi-libc starts in "/": change to the workspace so that relative paths name files
     * there. Without a grant that reaches it there is none, and only absolute paths work. */
    conduit_chdir_workspace();

    /* getenv() sees only granted variables (an ungranted one looks unset), while the env
     * import traps for an ungranted one: ask it only for a variable that is there. */
    char *only = getenv("CWC_ONLY") ? conduit_getenv("CWC_ONLY") : NULL;
    if (only != NULL && strcmp(only, "lines") && strcmp(only, "words") && strcmp(only, "bytes")) {
        fprintf(stderr, "cwc: CWC_ONLY=%s: use lines, words or bytes\n", only);
        return 2;
    }

    counts total = {0, 0, 0, 0};
    int failed = 0;
    if (argc < 2) {
        counts c = {0, 0, 0, 0};
        if (count_stream(stdin, &c) != 0) {
            fprintf(stderr, "cwc: stdin: %s\n", strerror(errno));
            return 1;
        }
        print(&c, only, NULL);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        counts c = {0, 0, 0, 0};
        int rc;
        if (strncmp(arg, "http://", 7) == 0 || strncmp(arg, "https://", 8) == 0) {
            rc = count_url(arg, &c);
        } else if (strcmp(arg, "-") == 0) {
            rc = count_stream(stdin, &c);
            if (rc != 0) fprintf(stderr, "cwc: -: %s\n", strerror(errno));
        } else {
            FILE *f = fopen(arg, "rb");
            if (f == NULL) {
                fprintf(stderr, "cwc: %s: %s\n", arg, strerror(errno));
                rc = -1;
            } else {
                rc = count_stream(f, &c);
                if (rc != 0) fprintf(stderr, "cwc: %s: %s\n", arg, strerror(errno));
                fclose(f);
            }
        }
        if (rc != 0) {
            failed = 1;
            continue;
        }
        print(&c, only, arg);
        total.lines += c.lines;
        total.words += c.words;
        total.bytes += c.bytes;
    }
    if (argc > 2) print(&total, only, "total");
    if (failed) conduit_log(CONDUIT_DEBUG, "some arguments could not be counted");
    free(only);
    return failed;
}
