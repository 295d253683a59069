/* The hot path of transform.py in C: a Live page's JSON in, the published messages out, each
 * byte for byte what `orjson.dumps(SiteTransform.apply(orjson.loads(visit)))` gives, without
 * building a Python object per field (parsing into objects was half of the tool's CPU).
 *
 * The rewriter copies each visit while normalising it as orjson writes JSON (escapes
 * decoded, "\/" -> "/", control characters as \b \t \n \f \r or \u00xx, no whitespace),
 * renames the custom-dimension keys (moved to the end of their object, in the rename order,
 * as dict.pop + insert does), replaces the pseudonymised columns by their HMAC (OpenSSL,
 * below; other than plain strings, by what the Python hasher returns), and reads idVisit and
 * lastActionTimestamp (as integers) on the way.
 *
 * It only takes the common road. Anything else leaves the visit (or the whole page) to the
 * Python path, which gives the reference result or the reference error: invalid JSON, a
 * non-object visit, non-ASCII bytes or lone surrogates in strings, escaped or non-ASCII keys
 * in the objects it rewrites, numbers other than small integers (floats, -0, more than 18
 * digits), nesting deeper than MAX_DEPTH, a key equal to a rename target, a repeated rename
 * source, an escaped action type, a goal action without a goalName string, no idVisit.
 * One difference is left, documented: a key repeated inside one object (PHP's arrays cannot
 * repeat a key, so Matomo never sends one) is kept twice here, once by orjson.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <string.h>

#define FALLBACK (-2) /* not the common road: the caller takes the Python path */
#define MAX_DEPTH 128
#define MAX_RENAMES 64
#define STACK_BUFFER 16384

typedef struct {
    const char *text;
    Py_ssize_t len;
} Name;

/* -- HMAC-SHA256 through OpenSSL -------------------------------------------------------
 * The libcrypto that Python's hashlib already uses, opened at import (dlopen): no OpenSSL
 * headers or link at build time. Its EVP calls, with the key's inner and outer states
 * prepared once (RFC 2104, as transform.KeyedHash does), cost 0.16 us a value where the
 * same through hashlib costs about 1 us. Without it, pseudonyms come from Python. */

typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_md_st EVP_MD;

static struct {
    EVP_MD_CTX *(*ctx_new)(void);
    void (*ctx_free)(EVP_MD_CTX *);
    const EVP_MD *(*sha256)(void);
    int (*init)(EVP_MD_CTX *, const EVP_MD *, void *);
    int (*update)(EVP_MD_CTX *, const void *, size_t);
    int (*final)(EVP_MD_CTX *, unsigned char *, unsigned int *);
    int (*copy)(EVP_MD_CTX *, const EVP_MD_CTX *);
    int ready;
} crypto;

static void load_crypto(void) {
    static const char *names[] = {"libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so", NULL};
    void *lib = NULL;
    for (int i = 0; names[i] != NULL && lib == NULL; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) return;
    *(void **)&crypto.ctx_new = dlsym(lib, "EVP_MD_CTX_new");
    *(void **)&crypto.ctx_free = dlsym(lib, "EVP_MD_CTX_free");
    *(void **)&crypto.sha256 = dlsym(lib, "EVP_sha256");
    *(void **)&crypto.init = dlsym(lib, "EVP_DigestInit_ex");
    *(void **)&crypto.update = dlsym(lib, "EVP_DigestUpdate");
    *(void **)&crypto.final = dlsym(lib, "EVP_DigestFinal_ex");
    *(void **)&crypto.copy = dlsym(lib, "EVP_MD_CTX_copy_ex");
    crypto.ready = crypto.ctx_new && crypto.ctx_free && crypto.sha256 && crypto.init
                   && crypto.update && crypto.final && crypto.copy;
}

typedef struct {
    EVP_MD_CTX *inner, *outer, *scratch;
} Hmac;

static void hmac_free(Hmac *h) {
    if (h->inner) crypto.ctx_free(h->inner);
    if (h->outer) crypto.ctx_free(h->outer);
    if (h->scratch) crypto.ctx_free(h->scratch);
    h->inner = h->outer = h->scratch = NULL;
}

/* 0, or -1 with h left empty (then pseudonyms come from Python). */
static int hmac_prepare(Hmac *h, const unsigned char *key, Py_ssize_t key_len) {
    unsigned char block[64], pad[64];
    unsigned int len;
    if (!crypto.ready) return -1;
    memset(block, 0, sizeof block);
    h->inner = crypto.ctx_new();
    h->outer = crypto.ctx_new();
    h->scratch = crypto.ctx_new();
    if (!h->inner || !h->outer || !h->scratch) goto fail;
    if (key_len > 64) { /* a long key is hashed first */
        if (!crypto.init(h->scratch, crypto.sha256(), NULL)
            || !crypto.update(h->scratch, key, (size_t)key_len)
            || !crypto.final(h->scratch, block, &len))
            goto fail;
    } else {
        memcpy(block, key, (size_t)key_len);
    }
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x36;
    if (!crypto.init(h->inner, crypto.sha256(), NULL) || !crypto.update(h->inner, pad, 64))
        goto fail;
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x5C;
    if (!crypto.init(h->outer, crypto.sha256(), NULL) || !crypto.update(h->outer, pad, 64))
        goto fail;
    memset(block, 0, sizeof block);
    memset(pad, 0, sizeof pad);
    return 0;
fail:
    memset(block, 0, sizeof block);
    memset(pad, 0, sizeof pad);
    hmac_free(h);
    return -1;
}

/* The hex HMAC of text, into hex[64]. Never calls Python: the GIL is held throughout, so
 * the scratch state is never shared. */
static int hmac_hex(Hmac *h, const unsigned char *text, size_t n, char *hex) {
    static const char digits[] = "0123456789abcdef";
    unsigned char digest[32];
    unsigned int len;
    if (!crypto.copy(h->scratch, h->inner) || !crypto.update(h->scratch, text, n)
        || !crypto.final(h->scratch, digest, &len) || !crypto.copy(h->scratch, h->outer)
        || !crypto.update(h->scratch, digest, 32) || !crypto.final(h->scratch, digest, &len)) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to compute an HMAC");
        return -1;
    }
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 0xF];
    }
    return 0;
}

typedef struct {
    Name source;    /* dimensionN, as in Matomo's answer */
    Name target;    /* the configured name, UTF-8 */
    Name target_json; /* the same as a JSON string, quotes included */
    int hashed;     /* the target is a pseudonymised column */
} Rename;

typedef struct {
    Rename renames[MAX_RENAMES];
    int rename_count;
    Name *columns;
    int column_count;
} Scope;

typedef struct {
    PyObject_HEAD
    Scope visit;
    Scope action;
    int rewrite_actions; /* action renames, action columns or goal checks to do */
    int check_goals;
    PyObject *hash_raw;  /* bytes (a JSON value) -> bytes (its pseudonym as JSON) */
    PyObject *hash_text; /* str (a plain string value) -> str (its pseudonym, hex) */
    Hmac hmac;           /* the same as hash_text, in C, when libcrypto was found */
    PyObject *keep;      /* the bytes objects the Names point into */
} Rewriter;

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    char *buf;
    Py_ssize_t len;
    Py_ssize_t cap;
    int on_heap;
    Rewriter *rw;
} State;

typedef struct {
    const unsigned char *start;
    const unsigned char *end;
} Span;

/* -- output buffer -------------------------------------------------------------------- */

static int grow(State *s, Py_ssize_t need) {
    Py_ssize_t cap = s->cap * 2;
    while (cap < s->len + need) cap *= 2;
    char *buf;
    if (s->on_heap) {
        buf = PyMem_Realloc(s->buf, (size_t)cap);
    } else {
        buf = PyMem_Malloc((size_t)cap);
        if (buf != NULL) memcpy(buf, s->buf, (size_t)s->len);
    }
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->buf = buf;
    s->cap = cap;
    s->on_heap = 1;
    return 0;
}

static inline int put(State *s, const void *data, Py_ssize_t n) {
    if (s->len + n > s->cap && grow(s, n) < 0) return -1;
    memcpy(s->buf + s->len, data, (size_t)n);
    s->len += n;
    return 0;
}

static inline int put_char(State *s, char c) { return put(s, &c, 1); }

/* -- scanning ------------------------------------------------------------------------- */

/* Bytes copied as they are inside a string: printable ASCII but the quote and backslash. */
static unsigned char plain_byte[256];

static void init_plain_bytes(void) {
    for (int c = 0x20; c < 0x80; c++) plain_byte[c] = c != '"' && c != '\\';
}

static inline void skip_ws(State *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static inline int name_is(const char *text, Py_ssize_t len, const char *literal) {
    Py_ssize_t n = (Py_ssize_t)strlen(literal);
    return len == n && memcmp(text, literal, (size_t)n) == 0;
}

static inline int name_eq(const char *text, Py_ssize_t len, const Name *name) {
    return len == name->len && memcmp(text, name->text, (size_t)len) == 0;
}

static int read_hex4(const unsigned char *p, unsigned *out) {
    unsigned value = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        value <<= 4;
        if (c >= '0' && c <= '9') value |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') value |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') value |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = value;
    return 0;
}

/* One code point as orjson writes it. */
static int put_code_point(State *s, unsigned cp) {
    static const char hex[] = "0123456789abcdef";
    char b[6];
    switch (cp) {
    case '"': return put(s, "\\\"", 2);
    case '\\': return put(s, "\\\\", 2);
    case '\b': return put(s, "\\b", 2);
    case '\t': return put(s, "\\t", 2);
    case '\n': return put(s, "\\n", 2);
    case '\f': return put(s, "\\f", 2);
    case '\r': return put(s, "\\r", 2);
    default: break;
    }
    if (cp < 0x20) {
        b[0] = '\\'; b[1] = 'u'; b[2] = '0'; b[3] = '0';
        b[4] = hex[cp >> 4]; b[5] = hex[cp & 0xF];
        return put(s, b, 6);
    }
    if (cp < 0x80) return put_char(s, (char)cp);
    if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        return put(s, b, 2);
    }
    if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        return put(s, b, 3);
    }
    b[0] = (char)(0xF0 | (cp >> 18));
    b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (char)(0x80 | (cp & 0x3F));
    return put(s, b, 4);
}

/* A string (s->p on its opening quote), re-escaped as orjson does. */
static int copy_string(State *s) {
    const unsigned char *p = s->p + 1, *end = s->end;
    if (put_char(s, '"') < 0) return -1;
    for (;;) {
        const unsigned char *run = p;
        while (p < end && plain_byte[*p]) p++;
        if (p > run && put(s, run, p - run) < 0) return -1;
        if (p >= end) return FALLBACK;
        if (*p == '"') {
            p++;
            break;
        }
        if (*p != '\\' || end - p < 2) return FALLBACK; /* control or non-ASCII byte */
        unsigned char c = p[1];
        p += 2;
        int rc;
        switch (c) {
        case '"': rc = put(s, "\\\"", 2); break;
        case '\\': rc = put(s, "\\\\", 2); break;
        case '/': rc = put_char(s, '/'); break;
        case 'b': rc = put(s, "\\b", 2); break;
        case 'f': rc = put(s, "\\f", 2); break;
        case 'n': rc = put(s, "\\n", 2); break;
        case 'r': rc = put(s, "\\r", 2); break;
        case 't': rc = put(s, "\\t", 2); break;
        case 'u': {
            unsigned cp, low;
            if (end - p < 4 || read_hex4(p, &cp) < 0) return FALLBACK;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || read_hex4(p + 2, &low) < 0
                    || low < 0xDC00 || low > 0xDFFF)
                    return FALLBACK;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return FALLBACK;
            }
            rc = put_code_point(s, cp);
            break;
        }
        default: return FALLBACK;
        }
        if (rc < 0) return -1;
    }
    s->p = p;
    return put_char(s, '"');
}

static int copy_number(State *s) {
    const unsigned char *start = s->p, *p = s->p, *end = s->end;
    if (*p == '-') p++;
    if (p >= end) return FALLBACK;
    if (*p == '0') {
        p++;
        if (*start == '-') return FALLBACK; /* -0: orjson writes 0 */
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') p++;
    } else {
        return FALLBACK;
    }
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9')))
        return FALLBACK; /* a float (orjson re-formats it) or a leading zero */
    if (p - start > 18) return FALLBACK; /* beyond 64 bits orjson reads a float */
    s->p = p;
    return put(s, start, p - start);
}

static int copy_literal(State *s, const char *word, Py_ssize_t n) {
    if (s->end - s->p < n || memcmp(s->p, word, (size_t)n) != 0) return FALLBACK;
    s->p += n;
    return put(s, word, n);
}

static int copy_value(State *s, int depth);

static int copy_object(State *s, int depth) {
    if (depth > MAX_DEPTH) return FALLBACK;
    s->p++;
    if (put_char(s, '{') < 0) return -1;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return put_char(s, '}');
    }
    for (;;) {
        int rc;
        skip_ws(s);
        if (s->p >= s->end || *s->p != '"') return FALLBACK;
        if ((rc = copy_string(s)) != 0) return rc;
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':') return FALLBACK;
        s->p++;
        if (put_char(s, ':') < 0) return -1;
        if ((rc = copy_value(s, depth)) != 0) return rc;
        skip_ws(s);
        if (s->p >= s->end) return FALLBACK;
        if (*s->p == ',') {
            s->p++;
            if (put_char(s, ',') < 0) return -1;
            continue;
        }
        if (*s->p == '}') {
            s->p++;
            return put_char(s, '}');
        }
        return FALLBACK;
    }
}

static int copy_array(State *s, int depth) {
    if (depth > MAX_DEPTH) return FALLBACK;
    s->p++;
    if (put_char(s, '[') < 0) return -1;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return put_char(s, ']');
    }
    for (;;) {
        int rc = copy_value(s, depth);
        if (rc != 0) return rc;
        skip_ws(s);
        if (s->p >= s->end) return FALLBACK;
        if (*s->p == ',') {
            s->p++;
            if (put_char(s, ',') < 0) return -1;
            continue;
        }
        if (*s->p == ']') {
            s->p++;
            return put_char(s, ']');
        }
        return FALLBACK;
    }
}

static int copy_value(State *s, int depth) {
    skip_ws(s);
    if (s->p >= s->end) return FALLBACK;
    switch (*s->p) {
    case '"': return copy_string(s);
    case '{': return copy_object(s, depth + 1);
    case '[': return copy_array(s, depth + 1);
    case 't': return copy_literal(s, "true", 4);
    case 'f': return copy_literal(s, "false", 5);
    case 'n': return copy_literal(s, "null", 4);
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) return copy_number(s);
        return FALLBACK;
    }
}

/* Checks a value and returns its bounds in the input, writing nothing. */
static int skip_value(State *s, int depth, Span *span) {
    Py_ssize_t mark = s->len;
    skip_ws(s);
    span->start = s->p;
    int rc = copy_value(s, depth);
    s->len = mark;
    span->end = s->p;
    return rc;
}

/* Writes a value of the input again (already checked by skip_value). */
static int copy_span(State *s, Span span, int depth) {
    const unsigned char *p = s->p, *end = s->end;
    s->p = span.start;
    s->end = span.end;
    int rc = copy_value(s, depth);
    s->p = p;
    s->end = end;
    return rc;
}

/* Writes the pseudonym of a value of the input: null stays null; a plain string (ASCII, no
 * escape: the common case) is hashed here (or by hash_text, as a str, without libcrypto);
 * any other value goes to hash_raw as JSON, for transform.value_text's rules. */
static int put_hashed(State *s, Span span) {
    Py_ssize_t n = span.end - span.start;
    if (n == 4 && memcmp(span.start, "null", 4) == 0) return put(s, "null", 4);
    if (n >= 2 && *span.start == '"' && memchr(span.start, '\\', (size_t)n) == NULL) {
        Py_ssize_t i = 1;
        while (i < n - 1 && span.start[i] < 0x80) i++;
        if (i == n - 1 && s->rw->hmac.inner != NULL) {
            char hex[64];
            if (hmac_hex(&s->rw->hmac, span.start + 1, (size_t)(n - 2), hex) < 0) return -1;
            if (put_char(s, '"') < 0 || put(s, hex, 64) < 0) return -1;
            return put_char(s, '"');
        }
        if (i == n - 1) {
            PyObject *text = PyUnicode_FromStringAndSize((const char *)span.start + 1, n - 2);
            if (text == NULL) return -1;
            PyObject *hex = PyObject_CallOneArg(s->rw->hash_text, text);
            Py_DECREF(text);
            if (hex == NULL) return -1;
            Py_ssize_t hex_len;
            const char *hex_text = PyUnicode_Check(hex) ? PyUnicode_AsUTF8AndSize(hex, &hex_len)
                                                        : NULL;
            int rc = hex_text == NULL ? -1
                     : (put_char(s, '"') < 0 || put(s, hex_text, hex_len) < 0
                        || put_char(s, '"') < 0) ? -1 : 0;
            if (hex_text == NULL && !PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "hash_text must return str");
            Py_DECREF(hex);
            return rc;
        }
    }
    PyObject *raw = PyBytes_FromStringAndSize((const char *)span.start, n);
    if (raw == NULL) return -1;
    PyObject *hashed = PyObject_CallOneArg(s->rw->hash_raw, raw);
    Py_DECREF(raw);
    if (hashed == NULL) return -1;
    if (!PyBytes_Check(hashed)) {
        Py_DECREF(hashed);
        PyErr_SetString(PyExc_TypeError, "the hasher must return bytes");
        return -1;
    }
    int rc = put(s, PyBytes_AS_STRING(hashed), PyBytes_GET_SIZE(hashed));
    Py_DECREF(hashed);
    return rc;
}

/* A key of an object being rewritten: plain ASCII, no escape (else the Python path). */
static int read_plain_key(State *s, const char **key, Py_ssize_t *len) {
    const unsigned char *p = s->p + 1, *start = p, *end = s->end;
    while (p < end && plain_byte[*p]) p++;
    if (p >= end || *p != '"') return FALLBACK;
    *key = (const char *)start;
    *len = p - start;
    s->p = p + 1;
    return 0;
}

static int is_column(const Scope *scope, const char *key, Py_ssize_t len) {
    for (int i = 0; i < scope->column_count; i++)
        if (name_eq(key, len, &scope->columns[i])) return 1;
    return 0;
}

typedef struct {
    Span id_visit;
    Span last_action;
} VisitKeys;

static int rewrite_actions(State *s, int depth);

/* A visit (keys != NULL) or an action object (keys == NULL), s->p on its '{'. */
static int rewrite_object(State *s, const Scope *scope, VisitKeys *keys, int depth) {
    Rewriter *rw = s->rw;
    Span found[MAX_RENAMES];
    int first = 1, is_goal = 0, has_goal_name = 0, rc;
    if (depth > MAX_DEPTH) return FALLBACK;
    memset(found, 0, sizeof(Span) * (size_t)scope->rename_count);
    s->p++;
    if (put_char(s, '{') < 0) return -1;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
    } else {
        for (;;) {
            const char *key;
            Py_ssize_t key_len;
            int rename = -1;
            skip_ws(s);
            if (s->p >= s->end || *s->p != '"') return FALLBACK;
            if ((rc = read_plain_key(s, &key, &key_len)) != 0) return rc;
            skip_ws(s);
            if (s->p >= s->end || *s->p != ':') return FALLBACK;
            s->p++;
            for (int i = 0; i < scope->rename_count; i++) {
                if (name_eq(key, key_len, &scope->renames[i].target)) return FALLBACK;
                if (name_eq(key, key_len, &scope->renames[i].source)) rename = i;
            }
            if (rename >= 0) { /* written at the end of the object, renamed */
                if (found[rename].start != NULL) return FALLBACK;
                if ((rc = skip_value(s, depth, &found[rename])) != 0) return rc;
            } else {
                Span value;
                if (!first && put_char(s, ',') < 0) return -1;
                first = 0;
                if (put_char(s, '"') < 0 || put(s, key, key_len) < 0 || put(s, "\":", 2) < 0)
                    return -1;
                skip_ws(s);
                value.start = s->p;
                if (is_column(scope, key, key_len)) {
                    if ((rc = skip_value(s, depth, &value)) != 0) return rc;
                    if ((rc = put_hashed(s, value)) != 0) return rc;
                } else if (keys != NULL && rw->rewrite_actions && s->p < s->end && *s->p == '['
                           && name_is(key, key_len, "actionDetails")) {
                    if ((rc = rewrite_actions(s, depth + 1)) != 0) return rc;
                } else {
                    if ((rc = copy_value(s, depth)) != 0) return rc;
                }
                value.end = s->p;
                if (keys != NULL) {
                    if (name_is(key, key_len, "idVisit")) keys->id_visit = value;
                    else if (name_is(key, key_len, "lastActionTimestamp")) keys->last_action = value;
                } else if (rw->check_goals && name_is(key, key_len, "type")) {
                    if (memchr(value.start, '\\', (size_t)(value.end - value.start)) != NULL)
                        return FALLBACK;
                    is_goal = value.end - value.start == 6 && memcmp(value.start, "\"goal\"", 6) == 0;
                } else if (rw->check_goals && name_is(key, key_len, "goalName")) {
                    has_goal_name = *value.start == '"' && value.end - value.start > 2;
                }
            }
            skip_ws(s);
            if (s->p >= s->end) return FALLBACK;
            if (*s->p == ',') {
                s->p++;
                continue;
            }
            if (*s->p == '}') {
                s->p++;
                break;
            }
            return FALLBACK;
        }
    }
    for (int i = 0; i < scope->rename_count; i++) {
        const Rename *r = &scope->renames[i];
        if (found[i].start == NULL) continue;
        if (!first && put_char(s, ',') < 0) return -1;
        first = 0;
        if (put(s, r->target_json.text, r->target_json.len) < 0 || put_char(s, ':') < 0) return -1;
        rc = r->hashed ? put_hashed(s, found[i]) : copy_span(s, found[i], depth);
        if (rc != 0) return rc;
    }
    if (is_goal && !has_goal_name) return FALLBACK; /* a goal name to add: Python does it */
    return put_char(s, '}');
}

static int rewrite_actions(State *s, int depth) {
    int rc;
    if (depth > MAX_DEPTH) return FALLBACK;
    s->p++;
    if (put_char(s, '[') < 0) return -1;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return put_char(s, ']');
    }
    for (;;) {
        skip_ws(s);
        if (s->p < s->end && *s->p == '{')
            rc = rewrite_object(s, &s->rw->action, NULL, depth + 1);
        else
            rc = copy_value(s, depth);
        if (rc != 0) return rc;
        skip_ws(s);
        if (s->p >= s->end) return FALLBACK;
        if (*s->p == ',') {
            s->p++;
            if (put_char(s, ',') < 0) return -1;
            continue;
        }
        if (*s->p == ']') {
            s->p++;
            return put_char(s, ']');
        }
        return FALLBACK;
    }
}

/* -- the Python type ------------------------------------------------------------------ */

/* An id or a time as matomo.as_int reads it: a JSON integer, or a string of digits (older
 * Matomo versions). 0 for anything else, which the caller leaves to the Python path. */
static int span_long(Span span, long long *out) {
    const unsigned char *p = span.start, *end = span.end;
    int negative = 0, digits = 0;
    long long value = 0;
    if (p == NULL) return 0;
    if (*p == '"') {
        p++;
        end--;
    } else if (*p == '-') {
        negative = 1;
        p++;
    }
    for (; p < end && *p >= '0' && *p <= '9'; p++, digits++) value = value * 10 + (*p - '0');
    if (p != end || digits == 0 || digits > 18) return 0;
    *out = negative ? -value : value;
    return 1;
}

typedef struct {
    long long id_visit, last_action;
    int has_id_visit, has_last_action;
} VisitIds;

/* The visit object at *p (no further than end): 0 with *message set and *p after the object,
 * FALLBACK, or -1 with a Python error. */
static int rewrite_visit(Rewriter *self, const unsigned char **p, const unsigned char *end,
                         PyObject **message, VisitIds *ids) {
    char stack[STACK_BUFFER];
    VisitKeys keys = {{NULL, NULL}, {NULL, NULL}};
    State s = {*p, end, stack, 0, STACK_BUFFER, 0, self};
    *message = NULL;
    int rc = (s.p < s.end && *s.p == '{') ? rewrite_object(&s, &self->visit, &keys, 1) : FALLBACK;
    if (rc == 0) {
        ids->has_id_visit = span_long(keys.id_visit, &ids->id_visit);
        ids->has_last_action = span_long(keys.last_action, &ids->last_action);
        *message = PyBytes_FromStringAndSize(s.buf, s.len);
        if (*message == NULL) rc = -1;
        *p = s.p;
    }
    if (s.on_heap) PyMem_Free(s.buf);
    return rc;
}

/* Any JSON value at *p, checked only for its bounds (strings, brackets): where a visit the
 * rewriter leaves ends, so Python can parse it alone. -1 if the bounds are not found. */
static int skip_any(const unsigned char **at, const unsigned char *end) {
    const unsigned char *p = *at;
    int depth = 0;
    do {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
        if (p >= end) return -1;
        if (*p == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\') p++;
            if (p >= end) return -1;
            p++;
        } else if (*p == '{' || *p == '[') {
            if (++depth > 100000) return -1;
            p++;
            continue;
        } else if (*p == '}' || *p == ']') {
            if (--depth < 0) return -1;
            p++;
        } else if (*p == ',' || *p == ':') {
            if (depth == 0) return -1;
            p++;
            continue;
        } else {
            while (p < end && *p != ',' && *p != ':' && *p != '}' && *p != ']' && *p != ' '
                   && *p != '\t' && *p != '\n' && *p != '\r' && *p != '"' && *p != '{' && *p != '[')
                p++;
        }
    } while (depth > 0);
    *at = p;
    return 0;
}

static PyObject *long_or_none(int has, long long value) {
    if (!has) Py_RETURN_NONE;
    return PyLong_FromLongLong(value);
}

static PyObject *Rewriter_rewrite(Rewriter *self, PyObject *raw) {
    Py_buffer view;
    PyObject *message;
    VisitIds ids;
    if (PyObject_GetBuffer(raw, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *p = view.buf, *end = p + view.len;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    int rc = rewrite_visit(self, &p, end, &message, &ids);
    while (rc == 0 && p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    PyBuffer_Release(&view);
    if (rc == 0 && p != end) {
        Py_DECREF(message);
        rc = FALLBACK;
    }
    if (rc == FALLBACK) Py_RETURN_NONE;
    if (rc < 0) return NULL;
    PyObject *id_visit = long_or_none(ids.has_id_visit, ids.id_visit);
    PyObject *last_action = id_visit ? long_or_none(ids.has_last_action, ids.last_action) : NULL;
    PyObject *result = last_action ? PyTuple_Pack(3, message, id_visit, last_action) : NULL;
    Py_DECREF(message);
    Py_XDECREF(id_visit);
    Py_XDECREF(last_action);
    return result;
}

static int append_todo(PyObject *todo, Py_ssize_t index, Py_ssize_t start, Py_ssize_t stop) {
    PyObject *item = Py_BuildValue("(nnn)", index, start, stop);
    int rc = item ? PyList_Append(todo, item) : -1;
    Py_XDECREF(item);
    return rc;
}

/* rewrite_page(page, prefix, message_type, keyset) -> (messages, ids, stamps, todo), or None
 * when the page is not a JSON list as far as this reader sees: a whole Live page at once,
 * with no Python loop or object a visit but the results. messages are message_type(key,
 * value), key = prefix + idVisit; todo lists the visits left to the Python path as (index,
 * start, end) in the page, their entries None. A page given back whole is checked by
 * Python, whose errors stay those of the reference. */
static PyObject *Rewriter_rewrite_page(Rewriter *self, PyObject *args) {
    Py_buffer view;
    PyObject *prefix, *type_object, *lists[4] = {NULL, NULL, NULL, NULL}, *result = NULL;
    int keyset;
    if (!PyArg_ParseTuple(args, "y*O!O!p", &view, &PyBytes_Type, &prefix, &PyType_Type,
                          &type_object, &keyset))
        return NULL;
    PyTypeObject *message_type = (PyTypeObject *)type_object;
    Py_ssize_t prefix_len = PyBytes_GET_SIZE(prefix);
    if (!PyType_IsSubtype(message_type, &PyTuple_Type) || message_type->tp_itemsize == 0
        || prefix_len > 40) {
        PyErr_SetString(PyExc_TypeError, "message_type must be a tuple type, prefix short");
        goto done;
    }
    for (int k = 0; k < 4; k++)
        if ((lists[k] = PyList_New(0)) == NULL) goto done;
    const unsigned char *base = view.buf, *p = base, *end = base + view.len;
#define WS() while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++
    WS();
    if (p >= end || *p != '[') goto whole_page_to_python;
    p++;
    WS();
    if (p < end && *p == ']') {
        p++;
    } else {
        for (Py_ssize_t i = 0;; i++) {
            PyObject *value, *key, *message, *id_visit, *stamp;
            VisitIds ids;
            WS();
            const unsigned char *start = p;
            int rc = rewrite_visit(self, &p, end, &value, &ids);
            if (rc == -1) goto done;
            if (rc == 0 && (!ids.has_id_visit || (keyset && !ids.has_last_action))) {
                Py_DECREF(value);
                rc = FALLBACK;
            }
            if (rc == FALLBACK) {
                p = start;
                if (skip_any(&p, end) < 0) goto whole_page_to_python;
                if (append_todo(lists[3], i, start - base, p - base) < 0) goto done;
                for (int k = 0; k < 3; k++)
                    if (PyList_Append(lists[k], Py_None) < 0) goto done;
            } else {
                char key_text[64];
                memcpy(key_text, PyBytes_AS_STRING(prefix), (size_t)prefix_len);
                int digits = snprintf(key_text + prefix_len, sizeof key_text - (size_t)prefix_len,
                                      "%lld", ids.id_visit);
                key = PyBytes_FromStringAndSize(key_text, prefix_len + digits);
                message = key ? message_type->tp_alloc(message_type, 2) : NULL;
                if (message == NULL) {
                    Py_DECREF(value);
                    Py_XDECREF(key);
                    goto done;
                }
                PyTuple_SET_ITEM(message, 0, key);
                PyTuple_SET_ITEM(message, 1, value);
                rc = PyList_Append(lists[0], message);
                Py_DECREF(message);
                id_visit = rc == 0 ? PyLong_FromLongLong(ids.id_visit) : NULL;
                rc = id_visit ? PyList_Append(lists[1], id_visit) : -1;
                Py_XDECREF(id_visit);
                stamp = rc == 0 ? PyLong_FromLongLong(keyset ? ids.last_action : 0) : NULL;
                rc = stamp ? PyList_Append(lists[2], stamp) : -1;
                Py_XDECREF(stamp);
                if (rc < 0) goto done;
            }
            WS();
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == ']') {
                p++;
                break;
            }
            goto whole_page_to_python;
        }
    }
    WS();
    if (p != end) goto whole_page_to_python;
#undef WS
    result = PyTuple_Pack(4, lists[0], lists[1], lists[2], lists[3]);
    goto done;
whole_page_to_python:
    result = Py_NewRef(Py_None);
done:
    for (int k = 0; k < 4; k++) Py_XDECREF(lists[k]);
    PyBuffer_Release(&view);
    return result;
}

static int load_name(PyObject *keep, PyObject *item, Name *name) {
    if (!PyBytes_Check(item)) {
        PyErr_SetString(PyExc_TypeError, "names must be bytes");
        return -1;
    }
    if (PyList_Append(keep, item) < 0) return -1;
    name->text = PyBytes_AS_STRING(item);
    name->len = PyBytes_GET_SIZE(item);
    return 0;
}

/* renames: ((source, target, target_json), ...); columns: (name, ...): all bytes. */
static int load_scope(PyObject *keep, PyObject *renames, PyObject *columns, Scope *scope) {
    if (!PyTuple_Check(renames) || !PyTuple_Check(columns)) {
        PyErr_SetString(PyExc_TypeError, "renames and columns must be tuples");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(renames);
    if (n > MAX_RENAMES) {
        PyErr_SetString(PyExc_ValueError, "too many renames");
        return -1;
    }
    Py_ssize_t column_count = PyTuple_GET_SIZE(columns);
    scope->columns = PyMem_Calloc((size_t)(column_count + 1), sizeof(Name));
    if (scope->columns == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < column_count; i++) {
        if (load_name(keep, PyTuple_GET_ITEM(columns, i), &scope->columns[i]) < 0) return -1;
        scope->column_count = (int)(i + 1);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(renames, i);
        Rename *r = &scope->renames[i];
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "a rename is (source, target, target_json)");
            return -1;
        }
        if (load_name(keep, PyTuple_GET_ITEM(item, 0), &r->source) < 0
            || load_name(keep, PyTuple_GET_ITEM(item, 1), &r->target) < 0
            || load_name(keep, PyTuple_GET_ITEM(item, 2), &r->target_json) < 0)
            return -1;
        r->hashed = is_column(scope, r->target.text, r->target.len);
        scope->rename_count = (int)(i + 1);
    }
    return 0;
}

static int Rewriter_init(Rewriter *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"visit_renames", "visit_columns", "action_renames",
                             "action_columns", "check_goals", "hash_raw", "hash_text",
                             "hmac_key", NULL};
    PyObject *visit_renames, *visit_columns, *action_renames, *action_columns, *hash_raw;
    PyObject *hash_text;
    Py_buffer hmac_key = {NULL, NULL};
    int check_goals;
    if (self->keep != NULL) {
        PyErr_SetString(PyExc_TypeError, "VisitRewriter is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOpOO|y*", kwlist, &visit_renames,
                                     &visit_columns, &action_renames, &action_columns,
                                     &check_goals, &hash_raw, &hash_text, &hmac_key))
        return -1;
    if (hmac_key.buf != NULL) { /* not an error if it fails: hash_text does the work */
        hmac_prepare(&self->hmac, hmac_key.buf, hmac_key.len);
        PyBuffer_Release(&hmac_key);
    }
    if (!PyCallable_Check(hash_raw) || !PyCallable_Check(hash_text)) {
        PyErr_SetString(PyExc_TypeError, "hash_raw and hash_text must be callable");
        return -1;
    }
    self->keep = PyList_New(0);
    if (self->keep == NULL) return -1;
    if (load_scope(self->keep, visit_renames, visit_columns, &self->visit) < 0
        || load_scope(self->keep, action_renames, action_columns, &self->action) < 0)
        return -1;
    self->check_goals = check_goals;
    self->rewrite_actions = check_goals || self->action.rename_count > 0
                            || self->action.column_count > 0;
    self->hash_raw = Py_NewRef(hash_raw);
    self->hash_text = Py_NewRef(hash_text);
    return 0;
}

static int Rewriter_traverse(Rewriter *self, visitproc visit, void *arg) {
    Py_VISIT(self->hash_raw);
    Py_VISIT(self->hash_text);
    Py_VISIT(self->keep);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int Rewriter_clear(Rewriter *self) {
    Py_CLEAR(self->hash_raw);
    Py_CLEAR(self->hash_text);
    return 0;
}

static void Rewriter_dealloc(Rewriter *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Rewriter_clear(self);
    Py_CLEAR(self->keep);
    hmac_free(&self->hmac);
    PyMem_Free(self->visit.columns);
    PyMem_Free(self->action.columns);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef Rewriter_methods[] = {
    {"rewrite", (PyCFunction)Rewriter_rewrite, METH_O,
     "rewrite(raw) -> (message, idVisit, lastActionTimestamp), ints or None where "
     "matomo.as_int would not read one, or None when the visit must take the Python path."},
    {"rewrite_page", (PyCFunction)Rewriter_rewrite_page, METH_VARARGS,
     "rewrite_page(page, prefix, message_type, keyset) -> (messages, ids, stamps, todo) "
     "or None."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Rewriter_native_hmac(Rewriter *self, void *closure) {
    return PyBool_FromLong(self->hmac.inner != NULL);
}

static PyGetSetDef Rewriter_getset[] = {
    {"native_hmac", (getter)Rewriter_native_hmac, NULL,
     "True if plain string values are pseudonymised in C (libcrypto found).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Rewriter_slots[] = {
    {Py_tp_doc, "One site's visit transform, in C (see transform.py)."},
    {Py_tp_init, Rewriter_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Rewriter_dealloc},
    {Py_tp_traverse, Rewriter_traverse},
    {Py_tp_clear, Rewriter_clear},
    {Py_tp_methods, Rewriter_methods},
    {Py_tp_getset, Rewriter_getset},
    {0, NULL},
};

static PyType_Spec Rewriter_spec = {
    "matomo_kafka._fastvisit.VisitRewriter",
    sizeof(Rewriter),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    Rewriter_slots,
};

static int module_exec(PyObject *module) {
    init_plain_bytes();
    load_crypto();
    PyObject *type = PyType_FromModuleAndSpec(module, &Rewriter_spec, NULL);
    if (type == NULL) return -1;
    int rc = PyModule_AddObjectRef(module, "VisitRewriter", type);
    Py_DECREF(type);
    return rc;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "matomo_kafka._fastvisit",
    "The visit transform's hot path in C; transform.py holds the reference.",
    0, NULL, module_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastvisit(void) { return PyModuleDef_Init(&module_def); }
