/* nczip._cext: the Python face of the coder's C core (rangecoder.c, cdf.c, head.c, ensemble.c);
 * py_engine.c adds the engine's type and functions to the same module.
 *
 * It checks buffers (contiguous, 4-byte items, format 'f' or 'I'),
 * turns status codes into exceptions in one place (raise_status), keeps its state per module
 * (PEP 489 multi-phase init, heap types) and releases the GIL around the O(vocabulary) loops.
 * Because the GIL is released while an object's state is in use, each object has its own lock.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pythread.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "nczip.h"

int ncz_py_engine_add(PyObject *module); /* py_engine.c */

/* Tables smaller than this are coded without releasing the GIL: the switch costs more. */
#define NOGIL_MIN_ITEMS 2048

typedef struct {
    PyObject *CoderError;
    PyTypeObject *Encoder;
    PyTypeObject *Decoder;
    PyTypeObject *Ensemble;
} modstate;

static modstate *get_state(PyObject *module)
{
    return (modstate *)PyModule_GetState(module);
}

/* ---- argument context and the one place where statuses become exceptions ---- */

/* The arguments as the caller gave them, for messages. */
typedef struct {
    long long precision;
    long long cum;
    long long freq;
    long long symbol;
    Py_ssize_t n;
} callargs;

static void raise_status(const modstate *st, int status, const callargs *a)
{
    unsigned long long total = 0;
    if (a->precision >= 1 && a->precision <= 31)
        total = 1ull << a->precision;
    switch (status) {
    case NCZ_E_PRECISION:
        PyErr_Format(PyExc_ValueError, "precision must be in 1..31, got %lld", a->precision);
        break;
    case NCZ_E_CUM:
        PyErr_Format(PyExc_ValueError, "cum must be in 0..%llu (2**precision - 1), got %lld",
                     total - 1, a->cum);
        break;
    case NCZ_E_FREQ:
        PyErr_Format(PyExc_ValueError,
                     "freq must be in 1..%llu (2**precision - cum) for cum %lld, got %lld",
                     total - (unsigned long long)a->cum, a->cum, a->freq);
        break;
    case NCZ_E_SYMBOL:
        PyErr_Format(PyExc_ValueError, "symbol must be in 0..%zd, got %lld", a->n - 1,
                     a->symbol);
        break;
    case NCZ_E_ALPHABET:
        PyErr_Format(PyExc_ValueError,
                     "alphabet size must be in 1..%llu (2**(precision - 1)) for precision "
                     "%lld, got %zd",
                     total / 2, a->precision, a->n);
        break;
    case NCZ_E_TABLE:
        PyErr_Format(PyExc_ValueError,
                     "frequency table of %zd entries must sum to exactly 2**%lld = %llu",
                     a->n, a->precision, total);
        break;
    case NCZ_E_ZERO_FREQ:
        PyErr_Format(PyExc_ValueError, "symbol %lld has frequency 0 and cannot be coded",
                     a->symbol);
        break;
    case NCZ_E_NOMEM:
        PyErr_NoMemory();
        break;
    case NCZ_E_CORRUPT:
        PyErr_SetString(st != NULL ? st->CoderError : PyExc_ValueError,
                        "corrupt range-coded stream: the code is outside every interval "
                        "of the model");
        break;
    case NCZ_E_PARAMS:
        PyErr_SetString(PyExc_ValueError, "ensemble: parameter, lane or position out of range");
        break;
    default:
        PyErr_Format(PyExc_SystemError, "nczip._cext internal error (status %d)", status);
        break;
    }
}

/* ---- argument conversion ---- */

/* O& converter: any integer (via __index__) to long long. Values beyond +-2^63 are out of
 * every range we accept; they get a ValueError here rather than an OverflowError. */
static int conv_ll(PyObject *obj, void *out)
{
    int overflow = 0;
    long long v;
    PyObject *idx = PyNumber_Index(obj);
    if (idx == NULL)
        return 0;
    v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        Py_DECREF(idx);
        return 0;
    }
    if (overflow) {
        PyErr_Format(PyExc_ValueError, "integer argument out of range: %R", idx);
        Py_DECREF(idx);
        return 0;
    }
    Py_DECREF(idx);
    *(long long *)out = v;
    return 1;
}

/* The C core checks every range; these casts only make sure an out-of-range Python value
 * reaches it as an out-of-range C value (never truncated into range). */
static unsigned c_precision(long long p)
{
    return (p < 1 || p > 31) ? 0u : (unsigned)p;
}

static uint64_t c_u64(long long v)
{
    return v < 0 ? UINT64_MAX : (uint64_t)v;
}

static size_t c_index(long long v)
{
    return (v < 0 || (unsigned long long)v > (unsigned long long)SIZE_MAX) ? SIZE_MAX
                                                                          : (size_t)v;
}

static int native_little_endian(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* Gets a C-contiguous buffer of 4-byte items of the given struct code ('f' or 'I'), any
 * shape, read as flat. On success the caller must PyBuffer_Release(view). */
static int get_buffer(PyObject *obj, Py_buffer *view, char code, int writable, const char *name)
{
    const char *fmt;
    int ok;
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_RECORDS : PyBUF_RECORDS_RO) < 0)
        return -1;
    fmt = view->format != NULL ? view->format : "B";
    /* Byte order prefixes: native, or explicit and equal to the native order. */
    if (fmt[0] == '@' || fmt[0] == '=' || (fmt[0] == '<' && native_little_endian()) ||
        (fmt[0] == '>' && !native_little_endian()) || (fmt[0] == '!' && !native_little_endian()))
        fmt++;
    /* uint32 is 'I'; on LLP64 platforms (Windows) 'L' is 4 bytes too. */
    ok = view->itemsize == 4 && fmt[1] == '\0' &&
         (fmt[0] == code || (code == 'I' && fmt[0] == 'L'));
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s must be a buffer of %s (format '%c'), got format '%s' "
                     "with item size %zd", name, code == 'f' ? "float32" : "uint32", code,
                     view->format != NULL ? view->format : "B", view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    if (!PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* ---- per-object lock ---- */

static void lock_object(PyThread_type_lock lock)
{
    if (!PyThread_acquire_lock(lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

/* ---- scratch space for the logits methods: n uint32, grown on demand ---- */

typedef struct {
    uint32_t *freq;
    size_t n;
} scratch;

static int scratch_reserve(scratch *s, size_t n)
{
    uint32_t *f;
    if (n <= s->n)
        return 0;
    if (n > (size_t)PY_SSIZE_T_MAX / sizeof(uint32_t)) {
        PyErr_NoMemory();
        return -1;
    }
    f = (uint32_t *)PyMem_RawMalloc(n * sizeof(uint32_t));
    if (f == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_RawFree(s->freq);
    s->freq = f;
    s->n = n;
    return 0;
}

static void scratch_free(scratch *s)
{
    PyMem_RawFree(s->freq);
    s->freq = NULL;
    s->n = 0;
}

/* Life cycle shared by Encoder and Decoder. Any exception from a coding method leaves the
 * object unusable (like brotli): a skipped or half-done step would silently desynchronize
 * encoder and decoder, so continuing is never right. */
enum { ACTIVE = 0, FINISHED = 1, FAILED = 2 };

static int check_usable(int lifecycle, const char *what)
{
    if (lifecycle == FINISHED) {
        PyErr_Format(PyExc_ValueError, "%s is finished", what);
        return -1;
    }
    if (lifecycle == FAILED) {
        PyErr_Format(PyExc_ValueError, "%s is unusable after an earlier error", what);
        return -1;
    }
    return 0;
}

/* ================================ Encoder ================================ */

typedef struct {
    PyObject_HEAD
    ncz_encoder enc;
    scratch ws;
    int lifecycle;
    PyThread_type_lock lock;
} EncoderObject;

static PyObject *Encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    EncoderObject *self;
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Encoder() takes no arguments");
        return NULL;
    }
    self = (EncoderObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    ncz_encoder_init(&self->enc);
    self->ws.freq = NULL;
    self->ws.n = 0;
    self->lifecycle = ACTIVE;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_MemoryError, "cannot allocate lock");
        return NULL;
    }
    return (PyObject *)self;
}

static void Encoder_dealloc(EncoderObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    ncz_encoder_free(&self->enc);
    scratch_free(&self->ws);
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static modstate *type_state(PyObject *self)
{
    return (modstate *)PyType_GetModuleState(Py_TYPE(self));
}

/* Common tail of every coding method: on failure raise and disable the object. */
static PyObject *coder_result(PyObject *self, int *lifecycle, int status, const callargs *a)
{
    if (status == NCZ_OK)
        Py_RETURN_NONE;
    *lifecycle = FAILED;
    raise_status(type_state(self), status, a);
    return NULL;
}

static PyObject *Encoder_encode(EncoderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"cum", "freq", "precision", NULL};
    callargs a = {0, 0, 0, 0, 0};
    int status;
    if (check_usable(self->lifecycle, "Encoder") < 0)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&O&:encode", kwlist, conv_ll, &a.cum,
                                     conv_ll, &a.freq, conv_ll, &a.precision)) {
        self->lifecycle = FAILED;
        return NULL;
    }
    lock_object(self->lock);
    status = ncz_encode(&self->enc, c_u64(a.cum), c_u64(a.freq), c_precision(a.precision));
    PyThread_release_lock(self->lock);
    return coder_result((PyObject *)self, &self->lifecycle, status, &a);
}

static PyObject *Encoder_encode_freqs(EncoderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"freqs", "symbol", "precision", NULL};
    callargs a = {0, 0, 0, 0, 0};
    PyObject *obj;
    Py_buffer view;
    int status;
    size_t n;
    if (check_usable(self->lifecycle, "Encoder") < 0)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO&O&:encode_freqs", kwlist, &obj, conv_ll,
                                     &a.symbol, conv_ll, &a.precision) ||
        get_buffer(obj, &view, 'I', 0, "freqs") < 0) {
        self->lifecycle = FAILED;
        return NULL;
    }
    n = (size_t)(view.len / 4);
    a.n = view.len / 4;
    lock_object(self->lock);
    if (n >= NOGIL_MIN_ITEMS) {
        Py_BEGIN_ALLOW_THREADS
        status = ncz_encode_freqs(&self->enc, (const uint32_t *)view.buf, n, c_index(a.symbol),
                                  c_precision(a.precision));
        Py_END_ALLOW_THREADS
    } else {
        status = ncz_encode_freqs(&self->enc, (const uint32_t *)view.buf, n, c_index(a.symbol),
                                  c_precision(a.precision));
    }
    PyThread_release_lock(self->lock);
    PyBuffer_Release(&view);
    return coder_result((PyObject *)self, &self->lifecycle, status, &a);
}

static PyObject *Encoder_encode_logits(EncoderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"logits", "symbol", "precision", NULL};
    callargs a = {0, 0, 0, 0, 0};
    PyObject *obj;
    Py_buffer view;
    int status = NCZ_OK;
    size_t n;
    if (check_usable(self->lifecycle, "Encoder") < 0)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO&O&:encode_logits", kwlist, &obj,
                                     conv_ll, &a.symbol, conv_ll, &a.precision) ||
        get_buffer(obj, &view, 'f', 0, "logits") < 0) {
        self->lifecycle = FAILED;
        return NULL;
    }
    n = (size_t)(view.len / 4);
    a.n = view.len / 4;
    lock_object(self->lock);
    if (scratch_reserve(&self->ws, n) < 0) {
        PyThread_release_lock(self->lock);
        PyBuffer_Release(&view);
        self->lifecycle = FAILED;
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = ncz_encode_logits(&self->enc, (const float *)view.buf, n, c_index(a.symbol),
                               c_precision(a.precision), self->ws.freq);
    Py_END_ALLOW_THREADS
    PyThread_release_lock(self->lock);
    PyBuffer_Release(&view);
    return coder_result((PyObject *)self, &self->lifecycle, status, &a);
}

static PyObject *Encoder_finish(EncoderObject *self, PyObject *Py_UNUSED(ignored))
{
    callargs a = {0, 0, 0, 0, 0};
    PyObject *out = NULL;
    int status;
    if (check_usable(self->lifecycle, "Encoder") < 0)
        return NULL;
    lock_object(self->lock);
    status = ncz_encoder_finish(&self->enc);
    if (status == NCZ_OK)
        out = PyBytes_FromStringAndSize((const char *)self->enc.buf, (Py_ssize_t)self->enc.len);
    PyThread_release_lock(self->lock);
    if (status != NCZ_OK)
        return coder_result((PyObject *)self, &self->lifecycle, status, &a);
    if (out == NULL) {
        self->lifecycle = FAILED;
        return NULL;
    }
    self->lifecycle = FINISHED;
    return out;
}

static PyObject *Encoder_get_bytes_written(EncoderObject *self, void *Py_UNUSED(closure))
{
    size_t len;
    lock_object(self->lock);
    len = self->enc.len;
    PyThread_release_lock(self->lock);
    return PyLong_FromSize_t(len);
}

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Encoder_encode, METH_VARARGS | METH_KEYWORDS,
     "encode($self, cum, freq, precision)\n--\n\n"
     "Code the interval [cum, cum + freq) of a total of 2**precision (precision 1..31)."},
    {"encode_freqs", (PyCFunction)(void (*)(void))Encoder_encode_freqs,
     METH_VARARGS | METH_KEYWORDS,
     "encode_freqs($self, freqs, symbol, precision)\n--\n\n"
     "Code symbol against a uint32 frequency table summing to exactly 2**precision."},
    {"encode_logits", (PyCFunction)(void (*)(void))Encoder_encode_logits,
     METH_VARARGS | METH_KEYWORDS,
     "encode_logits($self, logits, symbol, precision)\n--\n\n"
     "Quantize float32 logits into a table (see quantize) and code symbol against it."},
    {"finish", (PyCFunction)Encoder_finish, METH_NOARGS,
     "finish($self)\n--\n\n"
     "Flush and return the compressed bytes. The encoder cannot be used afterwards."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Encoder_getset[] = {
    {"bytes_written", (getter)Encoder_get_bytes_written, NULL,
     "Bytes produced so far (the total after finish()).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Encoder_slots[] = {
    {Py_tp_new, Encoder_new},
    {Py_tp_dealloc, Encoder_dealloc},
    {Py_tp_methods, Encoder_methods},
    {Py_tp_getset, Encoder_getset},
    {Py_tp_doc, "Encoder()\n--\n\n"
                "Range encoder against integer frequency tables with a total of 2**precision."},
    {0, NULL},
};

static PyType_Spec Encoder_spec = {
    "nczip._cext.Encoder",
    sizeof(EncoderObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    Encoder_slots,
};

/* ================================ Decoder ================================ */

typedef struct {
    PyObject_HEAD
    PyObject *data; /* bytes; dec.data points into it */
    ncz_decoder dec;
    scratch ws;
    int lifecycle;
    PyThread_type_lock lock;
} DecoderObject;

static PyObject *Decoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", NULL};
    DecoderObject *self;
    PyObject *obj, *data;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Decoder", kwlist, &obj))
        return NULL;
    if (PyBytes_Check(obj)) {
        data = Py_NewRef(obj);
    } else {
        /* Copy: a mutable buffer could change or be resized under us. */
        Py_buffer view;
        if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        data = PyBytes_FromStringAndSize((const char *)view.buf, view.len);
        PyBuffer_Release(&view);
        if (data == NULL)
            return NULL;
    }
    self = (DecoderObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    self->data = data;
    ncz_decoder_init(&self->dec, (const uint8_t *)PyBytes_AS_STRING(data),
                     (size_t)PyBytes_GET_SIZE(data));
    self->ws.freq = NULL;
    self->ws.n = 0;
    self->lifecycle = ACTIVE;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_MemoryError, "cannot allocate lock");
        return NULL;
    }
    return (PyObject *)self;
}

static void Decoder_dealloc(DecoderObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_XDECREF(self->data);
    scratch_free(&self->ws);
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *symbol_result(DecoderObject *self, int status, size_t symbol, const callargs *a)
{
    if (status != NCZ_OK)
        return coder_result((PyObject *)self, &self->lifecycle, status, a);
    return PyLong_FromSize_t(symbol);
}

static PyObject *Decoder_target(DecoderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"precision", NULL};
    callargs a = {0, 0, 0, 0, 0};
    uint32_t target = 0;
    int status;
    if (check_usable(self->lifecycle, "Decoder") < 0)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&:target", kwlist, conv_ll,
                                     &a.precision)) {
        self->lifecycle = FAILED;
        return NULL;
    }
    lock_object(self->lock);
    status = ncz_decoder_target(&self->dec, c_precision(a.precision), &target);
    PyThread_release_lock(self->lock);
    return symbol_result(self, status, target, &a);
}

static PyObject *Decoder_advance(DecoderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"cum", "freq", "precision", NULL};
    callargs a = {0, 0, 0, 0, 0};
    int status;
    if (check_usable(self->lifecycle, "Decoder") < 0)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&O&:advance", kwlist, conv_ll, &a.cum,
                                     conv_ll, &a.freq, conv_ll, &a.precision)) {
        self->lifecycle = FAILED;
        return NULL;
    }
    lock_object(self->lock);
    status = ncz_decoder_advance(&self->dec, c_u64(a.cum), c_u64(a.freq),
                                 c_precision(a.precision));
    PyThread_release_lock(self->lock);
    return coder_result((PyObject *)self, &self->lifecycle, status, &a);
}

static PyObject *Decoder_decode_freqs(DecoderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"freqs", "precision", NULL};
    callargs a = {0, 0, 0, 0, 0};
    PyObject *obj;
    Py_buffer view;
    size_t n, symbol = 0;
    int status;
    if (check_usable(self->lifecycle, "Decoder") < 0)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO&:decode_freqs", kwlist, &obj, conv_ll,
                                     &a.precision) ||
        get_buffer(obj, &view, 'I', 0, "freqs") < 0) {
        self->lifecycle = FAILED;
        return NULL;
    }
    n = (size_t)(view.len / 4);
    a.n = view.len / 4;
    lock_object(self->lock);
    if (n >= NOGIL_MIN_ITEMS) {
        Py_BEGIN_ALLOW_THREADS
        status = ncz_decode_freqs(&self->dec, (const uint32_t *)view.buf, n,
                                  c_precision(a.precision), &symbol);
        Py_END_ALLOW_THREADS
    } else {
        status = ncz_decode_freqs(&self->dec, (const uint32_t *)view.buf, n,
                                  c_precision(a.precision), &symbol);
    }
    PyThread_release_lock(self->lock);
    PyBuffer_Release(&view);
    return symbol_result(self, status, symbol, &a);
}

static PyObject *Decoder_decode_logits(DecoderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"logits", "precision", NULL};
    callargs a = {0, 0, 0, 0, 0};
    PyObject *obj;
    Py_buffer view;
    size_t n, symbol = 0;
    int status;
    if (check_usable(self->lifecycle, "Decoder") < 0)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO&:decode_logits", kwlist, &obj, conv_ll,
                                     &a.precision) ||
        get_buffer(obj, &view, 'f', 0, "logits") < 0) {
        self->lifecycle = FAILED;
        return NULL;
    }
    n = (size_t)(view.len / 4);
    a.n = view.len / 4;
    lock_object(self->lock);
    if (scratch_reserve(&self->ws, n) < 0) {
        PyThread_release_lock(self->lock);
        PyBuffer_Release(&view);
        self->lifecycle = FAILED;
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = ncz_decode_logits(&self->dec, (const float *)view.buf, n,
                               c_precision(a.precision), self->ws.freq, &symbol);
    Py_END_ALLOW_THREADS
    PyThread_release_lock(self->lock);
    PyBuffer_Release(&view);
    return symbol_result(self, status, symbol, &a);
}

static PyObject *Decoder_get_overrun(DecoderObject *self, void *Py_UNUSED(closure))
{
    uint64_t v;
    lock_object(self->lock);
    v = self->dec.overrun;
    PyThread_release_lock(self->lock);
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *Decoder_get_position(DecoderObject *self, void *Py_UNUSED(closure))
{
    size_t v;
    lock_object(self->lock);
    v = self->dec.pos;
    PyThread_release_lock(self->lock);
    return PyLong_FromSize_t(v);
}

static PyMethodDef Decoder_methods[] = {
    {"target", (PyCFunction)(void (*)(void))Decoder_target, METH_VARARGS | METH_KEYWORDS,
     "target($self, precision)\n--\n\n"
     "The value t in 0..2**precision - 1 that selects the next symbol: the one with\n"
     "cum <= t < cum + freq. Does not consume it; call advance(cum, freq, precision)."},
    {"advance", (PyCFunction)(void (*)(void))Decoder_advance, METH_VARARGS | METH_KEYWORDS,
     "advance($self, cum, freq, precision)\n--\n\n"
     "Consume the symbol [cum, cum + freq). CoderError if target() does not select it."},
    {"decode_freqs", (PyCFunction)(void (*)(void))Decoder_decode_freqs,
     METH_VARARGS | METH_KEYWORDS,
     "decode_freqs($self, freqs, precision)\n--\n\n"
     "Decode one symbol against a uint32 table summing to exactly 2**precision."},
    {"decode_logits", (PyCFunction)(void (*)(void))Decoder_decode_logits,
     METH_VARARGS | METH_KEYWORDS,
     "decode_logits($self, logits, precision)\n--\n\n"
     "Quantize float32 logits exactly as Encoder.encode_logits does and decode one symbol."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Decoder_getset[] = {
    {"overrun", (getter)Decoder_get_overrun, NULL,
     "Zero bytes read past the end of the data. After the last symbol of a complete stream\n"
     "this is at most 7 and position == len(data).",
     NULL},
    {"position", (getter)Decoder_get_position, NULL,
     "Bytes of the data consumed so far (the decoder reads 8 bytes ahead).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Decoder_slots[] = {
    {Py_tp_new, Decoder_new},
    {Py_tp_dealloc, Decoder_dealloc},
    {Py_tp_methods, Decoder_methods},
    {Py_tp_getset, Decoder_getset},
    {Py_tp_doc, "Decoder(data)\n--\n\n"
                "Range decoder for the output of Encoder; data is any bytes-like object\n"
                "(copied unless it is bytes). Corrupt input raises CoderError or decodes\n"
                "garbage; it never crashes or loops."},
    {0, NULL},
};

static PyType_Spec Decoder_spec = {
    "nczip._cext.Decoder",
    sizeof(DecoderObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    Decoder_slots,
};

/* ================================ Ensemble ================================ */

typedef struct {
    PyObject_HEAD
    ncz_ensemble *ens;
    scratch ws;
    size_t vocab;
    int lifecycle;
    int threads; /* 2 with a helper thread, else 1 */
    PyThread_type_lock lock;
} EnsembleObject;

static PyObject *Ensemble_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"vocab", "lanes", "doc_tokens", "orders", "ngram_bits",
                             "match_min", "match_bits", "mix_rate", "bias_rate", "w_ngram",
                             "w_match", NULL};
    long long vocab, lanes, doc, v[8], threads = 1;
    PyObject *rest = NULL, *given;
    ncz_ens_params p;
    EnsembleObject *self;
    int st, i;
    /* threads is optional and changes no bit: taken out before the required keywords */
    if (kwargs != NULL && (given = PyDict_GetItemString(kwargs, "threads")) != NULL) {
        if (!conv_ll(given, &threads))
            return NULL;
        if ((rest = PyDict_Copy(kwargs)) == NULL || PyDict_DelItemString(rest, "threads") < 0) {
            Py_XDECREF(rest);
            return NULL;
        }
        kwargs = rest;
    }
    i = PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&O&$O&O&O&O&O&O&O&O&:Ensemble", kwlist,
                                    conv_ll, &vocab, conv_ll, &lanes, conv_ll, &doc,
                                    conv_ll, &v[0], conv_ll, &v[1], conv_ll, &v[2], conv_ll,
                                    &v[3], conv_ll, &v[4], conv_ll, &v[5], conv_ll, &v[6],
                                    conv_ll, &v[7]);
    Py_XDECREF(rest);
    if (!i)
        return NULL;
    for (i = 0; i < 8; i++)
        if (v[i] < -(1LL << 30) || v[i] > (1LL << 30)) {
            PyErr_Format(PyExc_ValueError, "ensemble parameter %s out of range: %lld",
                         kwlist[3 + i], v[i]);
            return NULL;
        }
    p.orders = (int)v[0];
    p.ngram_bits = (int)v[1];
    p.match_min = (int)v[2];
    p.match_bits = (int)v[3];
    p.mix_rate = (int32_t)v[4];
    p.bias_rate = (int32_t)v[5];
    p.w_ngram = (int32_t)v[6];
    p.w_match = (int32_t)v[7];
    if (ncz_ens_check_params(&p) != NCZ_OK) {
        PyErr_SetString(PyExc_ValueError, "ensemble parameters out of range (see cext/nczip.h)");
        return NULL;
    }
    if (vocab < 1 || vocab > (1LL << 30) || lanes < 1 || lanes > 4096 || doc < 0 ||
        doc > (1LL << 31) - 2) {
        PyErr_Format(PyExc_ValueError, "Ensemble: vocab %lld, lanes %lld or doc_tokens %lld out "
                     "of range", vocab, lanes, doc);
        return NULL;
    }
    self = (EnsembleObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->ens = NULL;
    self->ws.freq = NULL;
    self->ws.n = 0;
    self->vocab = (size_t)vocab;
    self->lifecycle = ACTIVE;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_MemoryError, "cannot allocate lock");
        return NULL;
    }
    st = ncz_ens_new(&p, (size_t)vocab, (int)lanes, (size_t)doc, &self->ens);
    if (st != NCZ_OK || scratch_reserve(&self->ws, (size_t)vocab) < 0) {
        Py_DECREF(self);
        if (st == NCZ_E_NOMEM || st == NCZ_OK)
            return PyErr_NoMemory();
        PyErr_SetString(PyExc_ValueError, "Ensemble: invalid parameters");
        return NULL;
    }
    self->threads = ncz_ens_use_threads(self->ens, threads > 1 ? 2 : 1) ? 2 : 1;
    return (PyObject *)self;
}

static void Ensemble_dealloc(EnsembleObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    ncz_ens_free(self->ens);
    scratch_free(&self->ws);
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* Shared argument handling: (lane, position, logits) plus the caller's extras. */
static int ensemble_logits(EnsembleObject *self, PyObject *obj, Py_buffer *view, callargs *a)
{
    if (check_usable(self->lifecycle, "Ensemble") < 0)
        return -1;
    if (get_buffer(obj, view, 'f', 0, "logits") < 0)
        return -1;
    a->n = view->len / 4;
    if ((size_t)a->n != self->vocab) {
        PyErr_Format(PyExc_ValueError, "logits must have %zu entries (the vocabulary), got %zd",
                     self->vocab, a->n);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *Ensemble_encode(EnsembleObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"encoder", "lane", "position", "logits", "symbol", "precision",
                             NULL};
    callargs a = {0, 0, 0, 0, 0};
    long long lane, pos;
    PyObject *eobj, *obj;
    EncoderObject *enc;
    Py_buffer view;
    int status;
    modstate *st = type_state((PyObject *)self);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O&O&OO&O&:encode", kwlist, st->Encoder,
                                     &eobj, conv_ll, &lane, conv_ll, &pos, &obj, conv_ll,
                                     &a.symbol, conv_ll, &a.precision))
        return NULL;
    enc = (EncoderObject *)eobj;
    if (check_usable(enc->lifecycle, "Encoder") < 0 || ensemble_logits(self, obj, &view, &a) < 0)
        return NULL;
    lock_object(self->lock);
    lock_object(enc->lock);
    Py_BEGIN_ALLOW_THREADS
    status = ncz_ens_encode(self->ens, &enc->enc, (int)(lane < 0 || lane > INT_MAX ? -1 : lane),
                            c_index(pos), (const float *)view.buf, self->vocab,
                            c_index(a.symbol), c_precision(a.precision), self->ws.freq);
    Py_END_ALLOW_THREADS
    PyThread_release_lock(enc->lock);
    PyThread_release_lock(self->lock);
    PyBuffer_Release(&view);
    if (status != NCZ_OK) {
        enc->lifecycle = FAILED;
        self->lifecycle = FAILED;
        raise_status(st, status, &a);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Ensemble_decode(EnsembleObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"decoder", "lane", "position", "logits", "precision", NULL};
    callargs a = {0, 0, 0, 0, 0};
    long long lane, pos;
    PyObject *dobj, *obj;
    DecoderObject *dec;
    Py_buffer view;
    size_t symbol = 0;
    int status;
    modstate *st = type_state((PyObject *)self);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O&O&OO&:decode", kwlist, st->Decoder,
                                     &dobj, conv_ll, &lane, conv_ll, &pos, &obj, conv_ll,
                                     &a.precision))
        return NULL;
    dec = (DecoderObject *)dobj;
    if (check_usable(dec->lifecycle, "Decoder") < 0 || ensemble_logits(self, obj, &view, &a) < 0)
        return NULL;
    lock_object(self->lock);
    lock_object(dec->lock);
    Py_BEGIN_ALLOW_THREADS
    status = ncz_ens_decode(self->ens, &dec->dec, (int)(lane < 0 || lane > INT_MAX ? -1 : lane),
                            c_index(pos), (const float *)view.buf, self->vocab,
                            c_precision(a.precision), self->ws.freq, &symbol);
    Py_END_ALLOW_THREADS
    PyThread_release_lock(dec->lock);
    PyThread_release_lock(self->lock);
    PyBuffer_Release(&view);
    if (status != NCZ_OK) {
        dec->lifecycle = FAILED;
        self->lifecycle = FAILED;
        raise_status(st, status, &a);
        return NULL;
    }
    return PyLong_FromSize_t(symbol);
}

static PyObject *Ensemble_measure(EnsembleObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"lane", "position", "logits", "symbol", "precision", "out", NULL};
    callargs a = {0, 0, 0, 0, 0};
    long long lane, pos;
    PyObject *obj, *oobj = Py_None;
    Py_buffer view, ov;
    uint32_t freq = 0;
    int status;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&OO&O&|O:measure", kwlist, conv_ll, &lane,
                                     conv_ll, &pos, &obj, conv_ll, &a.symbol, conv_ll,
                                     &a.precision, &oobj))
        return NULL;
    if (ensemble_logits(self, obj, &view, &a) < 0)
        return NULL;
    if (oobj != Py_None) {
        if (get_buffer(oobj, &ov, 'I', 1, "out") < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        if ((size_t)(ov.len / 4) != self->vocab) {
            PyErr_Format(PyExc_ValueError, "out must have %zu entries", self->vocab);
            PyBuffer_Release(&ov);
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    lock_object(self->lock);
    Py_BEGIN_ALLOW_THREADS
    status = ncz_ens_measure(self->ens, (int)(lane < 0 || lane > INT_MAX ? -1 : lane),
                             c_index(pos), (const float *)view.buf, self->vocab,
                             c_index(a.symbol), c_precision(a.precision), self->ws.freq, &freq);
    if (status == NCZ_OK && oobj != Py_None)
        memcpy(ov.buf, self->ws.freq, self->vocab * sizeof(uint32_t));
    Py_END_ALLOW_THREADS
    PyThread_release_lock(self->lock);
    if (oobj != Py_None)
        PyBuffer_Release(&ov);
    PyBuffer_Release(&view);
    if (status != NCZ_OK) {
        self->lifecycle = FAILED;
        raise_status(type_state((PyObject *)self), status, &a);
        return NULL;
    }
    return PyLong_FromUnsignedLong(freq);
}

static PyObject *Ensemble_fan_out(EnsembleObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_usable(self->lifecycle, "Ensemble") < 0)
        return NULL;
    lock_object(self->lock);
    ncz_ens_fan_out(self->ens);
    PyThread_release_lock(self->lock);
    Py_RETURN_NONE;
}

static PyMethodDef Ensemble_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Ensemble_encode, METH_VARARGS | METH_KEYWORDS,
     "encode($self, encoder, lane, position, logits, symbol, precision)\n--\n\n"
     "Mix the LLM's logits with the cheap models for the token at document position\n"
     "`position` of lane `lane`, code symbol with encoder, and learn it."},
    {"decode", (PyCFunction)(void (*)(void))Ensemble_decode, METH_VARARGS | METH_KEYWORDS,
     "decode($self, decoder, lane, position, logits, precision)\n--\n\n"
     "The decoding twin of encode: returns the symbol, after learning it."},
    {"measure", (PyCFunction)(void (*)(void))Ensemble_measure, METH_VARARGS | METH_KEYWORDS,
     "measure($self, lane, position, logits, symbol, precision, out=None)\n--\n\n"
     "Like encode without a coder: returns symbol's frequency (of 2**precision), and\n"
     "copies the whole table into out (writable uint32, vocabulary entries) if given."},
    {"fan_out", (PyCFunction)Ensemble_fan_out, METH_NOARGS,
     "fan_out($self)\n--\n\nEvery lane starts from lane 0's history (after a primer)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Ensemble_get_threads(EnsembleObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(self->threads);
}

static PyGetSetDef Ensemble_getset[] = {
    {"threads", (getter)Ensemble_get_threads, NULL,
     "Threads its vocabulary passes run on: 2 with a helper thread, else 1.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Ensemble_slots[] = {
    {Py_tp_new, Ensemble_new},
    {Py_tp_dealloc, Ensemble_dealloc},
    {Py_tp_methods, Ensemble_methods},
    {Py_tp_getset, Ensemble_getset},
    {Py_tp_doc, "Ensemble(vocab, lanes, doc_tokens, *, orders, ngram_bits, match_min,\n"
                "match_bits, mix_rate, bias_rate, w_ngram, w_match, threads=1)\n--\n\n"
                "The cheap online models and the mixer of one segment (cext/ensemble.c).\n"
                "threads > 1 splits its vocabulary passes with a helper thread (same bits).\n"
                "An error leaves it unusable, like Encoder and Decoder."},
    {0, NULL},
};

static PyType_Spec Ensemble_spec = {
    "nczip._cext.Ensemble",
    sizeof(EnsembleObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    Ensemble_slots,
};

/* ============================ module functions ============================ */

static PyObject *mod_quantize(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"logits", "out", "precision", NULL};
    callargs a = {0, 0, 0, 0, 0};
    PyObject *lobj, *oobj;
    Py_buffer lv, ov;
    size_t n;
    int status;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO&:quantize", kwlist, &lobj, &oobj,
                                     conv_ll, &a.precision))
        return NULL;
    if (get_buffer(lobj, &lv, 'f', 0, "logits") < 0)
        return NULL;
    if (get_buffer(oobj, &ov, 'I', 1, "out") < 0) {
        PyBuffer_Release(&lv);
        return NULL;
    }
    if (ov.len != lv.len) {
        PyErr_Format(PyExc_ValueError, "out must have the same length as logits (%zd), got %zd",
                     lv.len / 4, ov.len / 4);
        PyBuffer_Release(&ov);
        PyBuffer_Release(&lv);
        return NULL;
    }
    n = (size_t)(lv.len / 4);
    a.n = lv.len / 4;
    Py_BEGIN_ALLOW_THREADS
    status = ncz_quantize((const float *)lv.buf, n, c_precision(a.precision),
                          (uint32_t *)ov.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&ov);
    PyBuffer_Release(&lv);
    if (status != NCZ_OK) {
        raise_status(get_state(module), status, &a);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *mod_ideal_bits(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"logits", "symbol", NULL};
    callargs a = {0, 0, 0, 0, 0};
    PyObject *lobj;
    Py_buffer lv;
    size_t n;
    double bits;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO&:ideal_bits", kwlist, &lobj, conv_ll,
                                     &a.symbol))
        return NULL;
    if (get_buffer(lobj, &lv, 'f', 0, "logits") < 0)
        return NULL;
    n = (size_t)(lv.len / 4);
    a.n = lv.len / 4;
    if (n == 0) {
        PyBuffer_Release(&lv);
        PyErr_SetString(PyExc_ValueError, "logits must not be empty");
        return NULL;
    }
    if (c_index(a.symbol) >= n) {
        PyBuffer_Release(&lv);
        raise_status(get_state(module), NCZ_E_SYMBOL, &a);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    bits = ncz_ideal_bits((const float *)lv.buf, n, c_index(a.symbol));
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&lv);
    return PyFloat_FromDouble(bits);
}

/* head_q8: the buffers are checked for size here; their dtypes are the caller's (nczip/models/head.py). */
static int get_bytes(PyObject *obj, Py_buffer *view, size_t need, int writable, const char *name)
{
    if (PyObject_GetBuffer(obj, view, writable ? (PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) : PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if ((size_t)view->len != need) {
        PyErr_Format(PyExc_ValueError, "%s must have %zu bytes, got %zd", name, need, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *mod_head_q8(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"packed", "wsum", "dw", "hidden", "out", "n_vocab", "n_embd", "rows",
                             "g0", "g1", "portable", NULL};
    PyObject *objs[5];
    Py_buffer views[5];
    Py_ssize_t n_vocab, n_embd, rows, g0, g1;
    int portable = 0, status, got = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOnnnnn|p:head_q8", kwlist, &objs[0], &objs[1],
                                     &objs[2], &objs[3], &objs[4], &n_vocab, &n_embd, &rows, &g0, &g1,
                                     &portable))
        return NULL;
    if (n_vocab <= 0 || n_embd <= 0 || n_embd % 32 != 0 || rows <= 0 || g0 < 0 || g1 < g0 ||
        g1 > (n_vocab + 15) / 16) {
        PyErr_SetString(PyExc_ValueError, "head_q8: sizes out of range");
        return NULL;
    }
    size_t groups = (size_t)(n_vocab + 15) / 16, nb = (size_t)n_embd / 32;
    size_t need[5] = {groups * nb * 512, groups * nb * 16 * 4, groups * nb * 16 * 4,
                      (size_t)rows * (size_t)n_embd * 4, (size_t)rows * (size_t)n_vocab * 4};
    static const char *names[5] = {"packed", "wsum", "dw", "hidden", "out"};
    for (; got < 5; got++)
        if (get_bytes(objs[got], &views[got], need[got], got == 4, names[got]) < 0)
            break;
    if (got < 5) {
        while (got-- > 0)
            PyBuffer_Release(&views[got]);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = ncz_head_q8((const int8_t *)views[0].buf, (const int32_t *)views[1].buf, (const float *)views[2].buf,
                         (size_t)n_vocab, (size_t)n_embd, (const float *)views[3].buf, (size_t)rows, (size_t)g0,
                         (size_t)g1, (float *)views[4].buf, portable);
    Py_END_ALLOW_THREADS
    for (int i = 0; i < 5; i++)
        PyBuffer_Release(&views[i]);
    if (status == NCZ_E_NOMEM)
        return PyErr_NoMemory();
    if (status != NCZ_OK) {
        PyErr_SetString(PyExc_ValueError, "head_q8: invalid sizes");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *mod_head_fast_kernel(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(ncz_head_fast_kernel());
}

static PyObject *mod_capture_callback_address(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromVoidPtr((void *)ncz_capture_callback);
}

static PyObject *mod_discard_log_address(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromVoidPtr((void *)ncz_discard_log);
}

static PyMethodDef module_methods[] = {
    {"head_q8", (PyCFunction)(void (*)(void))mod_head_q8, METH_VARARGS | METH_KEYWORDS,
     "head_q8(packed, wsum, dw, hidden, out, n_vocab, n_embd, rows, g0, g1, portable=False)\n--\n\n"
     "Logits of groups [g0, g1) of 16 vocabulary rows into out (rows x n_vocab float32), from\n"
     "packed Q8_0 weights and float32 hidden states; releases the GIL. Same bits on every path."},
    {"head_fast_kernel", (PyCFunction)mod_head_fast_kernel, METH_NOARGS,
     "head_fast_kernel()\n--\n\nWhether this CPU runs head_q8's AVX-512 VNNI kernel."},
    {"capture_callback_address", (PyCFunction)mod_capture_callback_address, METH_NOARGS,
     "capture_callback_address()\n--\n\nAddress of the C ggml eval callback that captures result_norm."},
    {"discard_log_address", (PyCFunction)mod_discard_log_address, METH_NOARGS,
     "discard_log_address()\n--\n\nAddress of a C ggml log callback that drops every message."},
    {"quantize", (PyCFunction)(void (*)(void))mod_quantize, METH_VARARGS | METH_KEYWORDS,
     "quantize(logits, out, precision)\n--\n\n"
     "Quantize float32 logits into out (writable uint32, same length): every frequency >= 1,\n"
     "sum exactly 2**precision, bit-identical on every platform. Needs\n"
     "1 <= len(logits) <= 2**(precision - 1)."},
    {"ideal_bits", (PyCFunction)(void (*)(void))mod_ideal_bits, METH_VARARGS | METH_KEYWORDS,
     "ideal_bits(logits, symbol)\n--\n\n"
     "-log2 softmax(logits)[symbol] in double precision. Diagnostics only: uses libm, so the\n"
     "last bits may differ between platforms; never use it for coding."},
    {NULL, NULL, 0, NULL},
};

/* ================================ module ================================ */

static int module_exec(PyObject *module)
{
    modstate *st = get_state(module);
    if (ncz_selftest() != NCZ_OK) {
        PyErr_SetString(PyExc_ImportError,
                        "nczip._cext was compiled so that its floating-point results differ from "
                        "the reference (FMA contraction or extended precision); its archives "
                        "would not decode elsewhere. Rebuild with -ffp-contract=off (see "
                        "setup.py).");
        return -1;
    }
    st->CoderError = PyErr_NewExceptionWithDoc(
        "nczip._cext.CoderError",
        "The range-coded stream is corrupt: the decoder found it inconsistent with the model.",
        PyExc_ValueError, NULL);
    if (st->CoderError == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "CoderError", st->CoderError) < 0)
        return -1;
    st->Encoder = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Encoder_spec, NULL);
    if (st->Encoder == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "Encoder", (PyObject *)st->Encoder) < 0)
        return -1;
    st->Decoder = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Decoder_spec, NULL);
    if (st->Decoder == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "Decoder", (PyObject *)st->Decoder) < 0)
        return -1;
    st->Ensemble = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Ensemble_spec, NULL);
    if (st->Ensemble == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "Ensemble", (PyObject *)st->Ensemble) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "MAX_PRECISION", NCZ_MAX_PRECISION) < 0)
        return -1;
    if (ncz_py_engine_add(module) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    modstate *st = get_state(module);
    Py_VISIT(st->CoderError);
    Py_VISIT(st->Encoder);
    Py_VISIT(st->Decoder);
    Py_VISIT(st->Ensemble);
    return 0;
}

static int module_clear(PyObject *module)
{
    modstate *st = get_state(module);
    Py_CLEAR(st->CoderError);
    Py_CLEAR(st->Encoder);
    Py_CLEAR(st->Decoder);
    Py_CLEAR(st->Ensemble);
    return 0;
}

static void module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "nczip._cext",
    "Range coder and logits quantizer for nczip (C core: cext/rangecoder.c, cext/cdf.c).",
    sizeof(modstate),
    module_methods,
    module_slots,
    module_traverse,
    module_clear,
    module_free,
};

PyMODINIT_FUNC PyInit__cext(void)
{
    return PyModuleDef_Init(&module_def);
}
