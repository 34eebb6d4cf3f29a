/* nczip._cext.Engine and the engine's test hooks: the Python face of cext/eng_*.c.
 *
 * Kept apart from module.c (the coder's binding) so that each binding file stays about one C
 * object; module.c calls ncz_py_engine_add from its module exec. As there, buffers are checked
 * (contiguous, item size and format), statuses become exceptions in one place (raise_engine),
 * each object has its own lock, and the GIL is released around the long calls.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include <string.h>

#include "engine.h"

int ncz_py_engine_add(PyObject *module);

typedef struct {
    PyObject_HEAD
    ncz_model *model;
    PyThread_type_lock lock;
} EngineObject;

/* A contiguous buffer of items of `itemsize` bytes whose format is one of `formats`. */
static int get_view(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, const char *formats,
                    const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    if (view->itemsize != itemsize || strchr(formats, *f) == NULL || f[1] != '\0') {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous buffer of %zd-byte items (%s), got format %s", what,
                     itemsize, formats, view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *raise_engine(EngineObject *self, int status)
{
    if (status == NCZ_ENG_E_NOMEM && ncz_model_error(self->model)[0] == '\0')
        return PyErr_NoMemory();
    const char *msg = ncz_model_error(self->model);
    PyErr_SetString(status == NCZ_ENG_E_NOMEM ? PyExc_MemoryError : PyExc_ValueError,
                    msg[0] ? msg : "engine: invalid arguments");
    return NULL;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab",
                             "swa_window", "eps", "rope_base", "rope_base_local", "layer_local", NULL};
    ncz_hparams hp;
    Py_buffer local;
    memset(&hp, 0, sizeof hp);
    hp.arch = NCZ_ARCH_GEMMA3;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$iiiiiiiifddy*:Engine", kwlist, &hp.n_layer, &hp.n_embd,
                                     &hp.n_head, &hp.n_head_kv, &hp.head_dim, &hp.n_ff, &hp.n_vocab,
                                     &hp.swa_window, &hp.eps, &hp.rope_base, &hp.rope_base_local, &local))
        return NULL;
    if (local.len != hp.n_layer) {
        PyBuffer_Release(&local);
        PyErr_Format(PyExc_ValueError, "layer_local must have n_layer (%d) bytes, got %zd", hp.n_layer, local.len);
        return NULL;
    }
    hp.layer_local = local.buf;
    EngineObject *self = (EngineObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        PyBuffer_Release(&local);
        return NULL;
    }
    self->lock = PyThread_allocate_lock();
    int status = ncz_model_new(&hp, &self->model);
    PyBuffer_Release(&local);
    if (self->lock == NULL || status != NCZ_ENG_OK) {
        Py_DECREF(self);
        if (status == NCZ_ENG_E_NOMEM || status == NCZ_ENG_OK)
            return PyErr_NoMemory();
        PyErr_SetString(PyExc_ValueError, "Engine: hyperparameters out of range (see cext/eng_model.c)");
        return NULL;
    }
    return (PyObject *)self;
}

static void Engine_dealloc(EngineObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    ncz_model_free(self->model);
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* Runs `call` with the GIL released and the object's lock held. */
#define LOCKED(self, stmt)                                  \
    do {                                                    \
        Py_BEGIN_ALLOW_THREADS                              \
        PyThread_acquire_lock((self)->lock, WAIT_LOCK);     \
        stmt;                                               \
        PyThread_release_lock((self)->lock);                \
        Py_END_ALLOW_THREADS                                \
    } while (0)

static PyObject *Engine_set_tensor(EngineObject *self, PyObject *args)
{
    int which, layer, type;
    Py_ssize_t n_out, n_in;
    PyObject *obj;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "iiiOnn:set_tensor", &which, &layer, &type, &obj, &n_out, &n_in))
        return NULL;
    if (n_out < 1 || n_in < 1) {
        PyErr_SetString(PyExc_ValueError, "set_tensor: shape must be positive");
        return NULL;
    }
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    int status;
    LOCKED(self, status = ncz_model_set_tensor(self->model, which, layer, type, view.buf, (size_t)view.len,
                                               (size_t)n_out, (size_t)n_in));
    PyBuffer_Release(&view);
    if (status != NCZ_ENG_OK)
        return raise_engine(self, status);
    Py_RETURN_NONE;
}

static PyObject *Engine_ready(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(ncz_model_ready(self->model) == NCZ_ENG_OK);
}

static PyObject *Engine_configure(EngineObject *self, PyObject *args)
{
    Py_ssize_t n_ctx, lanes, rows;
    if (!PyArg_ParseTuple(args, "nnn:configure", &n_ctx, &lanes, &rows))
        return NULL;
    if (n_ctx < 0 || lanes < 0 || rows < 0) {
        PyErr_SetString(PyExc_ValueError, "configure: sizes must be positive");
        return NULL;
    }
    int status;
    LOCKED(self, status = ncz_model_configure(self->model, (size_t)n_ctx, (size_t)lanes, (size_t)rows));
    if (status != NCZ_ENG_OK)
        return raise_engine(self, status);
    Py_RETURN_NONE;
}

static PyObject *Engine_set_threads(EngineObject *self, PyObject *args)
{
    int threads, status;
    if (!PyArg_ParseTuple(args, "i:set_threads", &threads))
        return NULL;
    LOCKED(self, status = ncz_model_set_threads(self->model, threads));
    if (status != NCZ_ENG_OK)
        return raise_engine(self, status);
    Py_RETURN_NONE;
}

static PyObject *Engine_forward(EngineObject *self, PyObject *args)
{
    PyObject *objs[4];
    Py_buffer v[4];
    if (!PyArg_ParseTuple(args, "OOOO:forward", &objs[0], &objs[1], &objs[2], &objs[3]))
        return NULL;
    const char *names[] = {"tokens", "positions", "lanes", "hidden"};
    int got = 0;
    for (; got < 4; got++)
        if (get_view(objs[got], &v[got], got == 3, 4, got == 3 ? "f" : "iIl", names[got]) < 0)
            break;
    int status = NCZ_ENG_OK;
    if (got == 4) {
        Py_ssize_t rows = v[0].len / 4;
        if (v[1].len / 4 != rows || v[2].len / 4 != rows ||
            v[3].len / 4 != rows * (Py_ssize_t)ncz_model_width(self->model)) {
            PyErr_SetString(PyExc_ValueError, "forward: tokens, positions and lanes need one entry per row, "
                                              "hidden rows x n_embd floats");
            got = -got;
        } else {
            LOCKED(self, status = ncz_model_forward(self->model, v[0].buf, v[1].buf, v[2].buf, (size_t)rows,
                                                    v[3].buf));
        }
    }
    int held = got < 0 ? -got : got;
    for (int i = 0; i < held; i++)
        PyBuffer_Release(&v[i]);
    if (got != 4)
        return NULL;
    if (status != NCZ_ENG_OK)
        return raise_engine(self, status);
    Py_RETURN_NONE;
}

static PyObject *Engine_head(EngineObject *self, PyObject *args)
{
    PyObject *h, *o;
    Py_buffer hv, ov;
    if (!PyArg_ParseTuple(args, "OO:head", &h, &o))
        return NULL;
    if (get_view(h, &hv, 0, 4, "f", "hidden") < 0)
        return NULL;
    if (get_view(o, &ov, 1, 4, "f", "logits") < 0) {
        PyBuffer_Release(&hv);
        return NULL;
    }
    size_t width = ncz_model_width(self->model), vocab = ncz_model_vocab(self->model);
    size_t rows = (size_t)hv.len / 4 / width;
    int status = NCZ_ENG_OK, bad = rows * width * 4 != (size_t)hv.len || (size_t)ov.len != rows * vocab * 4;
    if (!bad)
        LOCKED(self, status = ncz_model_head(self->model, hv.buf, rows, ov.buf));
    PyBuffer_Release(&hv);
    PyBuffer_Release(&ov);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "head: hidden must be rows x n_embd floats, logits rows x n_vocab");
        return NULL;
    }
    if (status != NCZ_ENG_OK)
        return raise_engine(self, status);
    Py_RETURN_NONE;
}

static PyObject *Engine_reset(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
    LOCKED(self, ncz_model_reset(self->model));
    Py_RETURN_NONE;
}

static PyObject *Engine_clear_lane(EngineObject *self, PyObject *args)
{
    Py_ssize_t lane;
    int status;
    if (!PyArg_ParseTuple(args, "n:clear_lane", &lane))
        return NULL;
    if (lane < 0) {
        PyErr_SetString(PyExc_ValueError, "lane must be >= 0");
        return NULL;
    }
    LOCKED(self, status = ncz_model_clear_lane(self->model, (size_t)lane));
    if (status != NCZ_ENG_OK)
        return raise_engine(self, status);
    Py_RETURN_NONE;
}

static PyObject *Engine_copy_lane(EngineObject *self, PyObject *args)
{
    Py_ssize_t source, target;
    int status;
    if (!PyArg_ParseTuple(args, "nn:copy_lane", &source, &target))
        return NULL;
    if (source < 0 || target < 0) {
        PyErr_SetString(PyExc_ValueError, "lanes must be >= 0");
        return NULL;
    }
    LOCKED(self, status = ncz_model_copy_lane(self->model, (size_t)source, (size_t)target));
    if (status != NCZ_ENG_OK)
        return raise_engine(self, status);
    Py_RETURN_NONE;
}

static PyObject *Engine_shift_lane(EngineObject *self, PyObject *args)
{
    Py_ssize_t lane, end;
    int status;
    if (!PyArg_ParseTuple(args, "nn:shift_lane", &lane, &end))
        return NULL;
    if (lane < 0 || end < 0) {
        PyErr_SetString(PyExc_ValueError, "shift_lane: arguments must be >= 0");
        return NULL;
    }
    LOCKED(self, status = ncz_model_shift_lane(self->model, (size_t)lane, (size_t)end));
    if (status != NCZ_ENG_OK)
        return raise_engine(self, status);
    Py_RETURN_NONE;
}

static PyObject *Engine_lane_length(EngineObject *self, PyObject *args)
{
    Py_ssize_t lane;
    if (!PyArg_ParseTuple(args, "n:lane_length", &lane))
        return NULL;
    return PyLong_FromSize_t(lane < 0 ? 0 : ncz_model_lane_length(self->model, (size_t)lane));
}

static PyObject *Engine_get_kernel(EngineObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(ncz_model_kernel(self->model));
}

static int Engine_set_kernel(EngineObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    long k = value ? PyLong_AsLong(value) : -1;
    if (k == -1 && PyErr_Occurred())
        return -1;
    if (k < NCZ_KERNEL_PORTABLE || k > NCZ_KERNEL_AVX512) {
        PyErr_Format(PyExc_ValueError, "kernel must be in 0..%d, got %ld", NCZ_KERNEL_AVX512, k);
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    ncz_model_set_kernel(self->model, (int)k);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    return 0;
}

static PyMethodDef Engine_methods[] = {
    {"set_tensor", (PyCFunction)Engine_set_tensor, METH_VARARGS,
     "set_tensor(which, layer, ggml_type, data, n_out, n_in)\n--\n\nA tensor's GGUF bytes (repacked)."},
    {"ready", (PyCFunction)Engine_ready, METH_NOARGS, "ready()\n--\n\nWhether every tensor is there."},
    {"configure", (PyCFunction)Engine_configure, METH_VARARGS,
     "configure(n_ctx, lanes, max_lane_rows)\n--\n\nEmpty caches for lanes of n_ctx positions."},
    {"set_threads", (PyCFunction)Engine_set_threads, METH_VARARGS, "set_threads(n)\n--\n\n"},
    {"forward", (PyCFunction)Engine_forward, METH_VARARGS,
     "forward(tokens, positions, lanes, hidden)\n--\n\nAppend rows to their lanes; final hidden states "
     "into hidden (rows x n_embd float32)."},
    {"head", (PyCFunction)Engine_head, METH_VARARGS,
     "head(hidden, logits)\n--\n\nLogits (rows x n_vocab float32) of final hidden states."},
    {"reset", (PyCFunction)Engine_reset, METH_NOARGS, "reset()\n--\n\nEmpty every lane."},
    {"clear_lane", (PyCFunction)Engine_clear_lane, METH_VARARGS, "clear_lane(lane)\n--\n\n"},
    {"copy_lane", (PyCFunction)Engine_copy_lane, METH_VARARGS, "copy_lane(source, target)\n--\n\n"},
    {"shift_lane", (PyCFunction)Engine_shift_lane, METH_VARARGS,
     "shift_lane(lane, end)\n--\n\nDrop window positions [1, end) and move the rest down."},
    {"lane_length", (PyCFunction)Engine_lane_length, METH_VARARGS, "lane_length(lane)\n--\n\n"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"kernel", (getter)Engine_get_kernel, (setter)Engine_set_kernel,
     "0: portable C, 1: AVX2, 2: AVX-512 VNNI (the best this CPU runs at most); same bits", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Engine_slots[] = {
    {Py_tp_new, Engine_new},
    {Py_tp_dealloc, Engine_dealloc},
    {Py_tp_methods, Engine_methods},
    {Py_tp_getset, Engine_getset},
    {Py_tp_doc, "Engine(*, n_layer, n_embd, ...): nczip's exact Gemma-3 engine (cext/eng_*.c)."},
    {0, NULL},
};

static PyType_Spec Engine_spec = {
    "nczip._cext.Engine", sizeof(EngineObject), 0, Py_TPFLAGS_DEFAULT, Engine_slots,
};

/* ---- test hooks: the engine's pieces on their own ---- */

/* dequantize(ggml_type, data, n_out, n_in, out): the values the engine multiplies with */
static PyObject *mod_engine_dequantize(PyObject *module, PyObject *args)
{
    int type;
    PyObject *data, *out;
    Py_ssize_t n_out, n_in;
    Py_buffer dv, ov;
    (void)module;
    if (!PyArg_ParseTuple(args, "iOnnO:engine_dequantize", &type, &data, &n_out, &n_in, &out))
        return NULL;
    if (PyObject_GetBuffer(data, &dv, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (get_view(out, &ov, 1, 4, "f", "out") < 0) {
        PyBuffer_Release(&dv);
        return NULL;
    }
    ncz_mat m;
    int status = n_out > 0 && n_in > 0 && ov.len == n_out * n_in * 4
                     ? ncz_mat_pack(&m, type, dv.buf, (size_t)dv.len, (size_t)n_out, (size_t)n_in)
                     : -1;
    if (status == 0) {
        for (Py_ssize_t r = 0; r < n_out; r++)
            ncz_mat_row(&m, (size_t)r, (float *)ov.buf + r * n_in);
        ncz_mat_free(&m);
    }
    PyBuffer_Release(&dv);
    PyBuffer_Release(&ov);
    if (status == -2)
        return PyErr_NoMemory();
    if (status != 0) {
        PyErr_SetString(PyExc_ValueError, "engine_dequantize: unsupported type, or sizes that do not match");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* matmul(ggml_type, data, n_out, n_in, x, out, kernel): out = W x for rows of x */
static PyObject *mod_engine_matmul(PyObject *module, PyObject *args)
{
    int type, kernel;
    PyObject *data, *x, *out;
    Py_ssize_t n_out, n_in;
    Py_buffer dv, xv, ov;
    (void)module;
    if (!PyArg_ParseTuple(args, "iOnnOOi:engine_matmul", &type, &data, &n_out, &n_in, &x, &out, &kernel))
        return NULL;
    if (PyObject_GetBuffer(data, &dv, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (get_view(x, &xv, 0, 4, "f", "x") < 0) {
        PyBuffer_Release(&dv);
        return NULL;
    }
    if (get_view(out, &ov, 1, 4, "f", "out") < 0) {
        PyBuffer_Release(&dv);
        PyBuffer_Release(&xv);
        return NULL;
    }
    size_t rows = n_in > 0 ? (size_t)xv.len / 4 / (size_t)n_in : 0;
    ncz_mat m;
    ncz_act a;
    memset(&a, 0, sizeof a);
    int status = -1;
    if (rows > 0 && n_out > 0 && rows * (size_t)n_in * 4 == (size_t)xv.len && (size_t)ov.len == rows * (size_t)n_out * 4)
        status = ncz_mat_pack(&m, type, dv.buf, (size_t)dv.len, (size_t)n_out, (size_t)n_in);
    if (status == 0) {
        if (ncz_act_reserve(&a, rows, (size_t)n_in) != 0) {
            status = -2;
        } else {
            Py_BEGIN_ALLOW_THREADS
            unsigned env = ncz_fpenv_enter();
            ncz_act_quantize(&a, xv.buf, (size_t)n_in, rows, (size_t)n_in, kernel);
            ncz_matmul(&m, &a, ov.buf, (size_t)n_out, 0, m.groups, kernel);
            ncz_fpenv_leave(env);
            Py_END_ALLOW_THREADS
        }
        ncz_act_free(&a);
        ncz_mat_free(&m);
    }
    PyBuffer_Release(&dv);
    PyBuffer_Release(&xv);
    PyBuffer_Release(&ov);
    if (status == -2)
        return PyErr_NoMemory();
    if (status != 0) {
        PyErr_SetString(PyExc_ValueError, "engine_matmul: unsupported type, or sizes that do not match");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* attend(k, v, k0, v0, ring, offset, head_dim, q, lo, hi, with_bos, out, kernel): ncz_attend on
 * caches given as uint16 arrays in the engine's layout (engine.h) */
static PyObject *mod_engine_attend(PyObject *module, PyObject *args)
{
    PyObject *objs[6];
    Py_ssize_t ring, offset, hd, lo, hi;
    int bos, kernel;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOOOnnnOnnpOi:engine_attend", &objs[0], &objs[1], &objs[2], &objs[3], &ring,
                          &offset, &hd, &objs[4], &lo, &hi, &bos, &objs[5], &kernel))
        return NULL;
    Py_buffer v[6];
    int got = 0;
    const char *names[] = {"k", "v", "k0", "v0", "q", "out"};
    for (; got < 6; got++)
        if (get_view(objs[got], &v[got], got == 5, got < 4 ? 2 : 4, got < 4 ? "HhB" : "f", names[got]) < 0)
            break;
    int ok = got == 6 && ring > 0 && ring % 16 == 0 && hd > 0 && hd % 16 == 0 && offset >= 0 && lo >= 1 &&
             hi < lo + ring && v[0].len == ring * hd * 2 && v[1].len == ring * hd * 2 && v[2].len == hd * 2 &&
             v[3].len == hd * 2 && v[4].len % (hd * 4) == 0 && v[5].len == v[4].len && v[4].len / (hd * 4) <= 64;
    if (ok) {
        ncz_kv_view kv = {v[0].buf, v[1].buf, v[2].buf, v[3].buf, (size_t)ring, (size_t)offset % (size_t)ring};
        size_t nq = (size_t)(v[4].len / (hd * 4));
        float *scratch = PyMem_RawMalloc(NCZ_ATTN_SCRATCH((size_t)ring) * sizeof(float) * ((nq + 3) / 4));
        if (scratch == NULL) {
            ok = -1;
        } else {
            Py_BEGIN_ALLOW_THREADS
            unsigned env = ncz_fpenv_enter();
            ncz_attend(&kv, (size_t)hd, nq, v[4].buf, (size_t)lo, (size_t)hi, bos, v[5].buf, scratch, kernel);
            ncz_fpenv_leave(env);
            Py_END_ALLOW_THREADS
            PyMem_RawFree(scratch);
        }
    }
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&v[i]);
    if (got != 6)
        return NULL;
    if (ok < 0)
        return PyErr_NoMemory();
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "engine_attend: sizes out of range");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* expf / half conversions over arrays, for tests against numpy */
static PyObject *mod_engine_expf(PyObject *module, PyObject *args)
{
    PyObject *x, *out;
    Py_buffer xv, ov;
    (void)module;
    if (!PyArg_ParseTuple(args, "OO:engine_expf", &x, &out))
        return NULL;
    if (get_view(x, &xv, 0, 4, "f", "x") < 0)
        return NULL;
    if (get_view(out, &ov, 1, 4, "f", "out") < 0) {
        PyBuffer_Release(&xv);
        return NULL;
    }
    int ok = xv.len == ov.len;
    if (ok) {
        unsigned env = ncz_fpenv_enter();
        for (Py_ssize_t i = 0; i < xv.len / 4; i++)
            ((float *)ov.buf)[i] = ncz_expf(((const float *)xv.buf)[i]);
        ncz_fpenv_leave(env);
    }
    PyBuffer_Release(&xv);
    PyBuffer_Release(&ov);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "engine_expf: x and out differ in length");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *mod_engine_to_half(PyObject *module, PyObject *args)
{
    PyObject *x, *out;
    Py_buffer xv, ov;
    (void)module;
    if (!PyArg_ParseTuple(args, "OO:engine_to_half", &x, &out))
        return NULL;
    if (get_view(x, &xv, 0, 4, "f", "x") < 0)
        return NULL;
    if (get_view(out, &ov, 1, 2, "Hhe", "out") < 0) {
        PyBuffer_Release(&xv);
        return NULL;
    }
    int ok = xv.len == 2 * ov.len;
    if (ok)
        for (Py_ssize_t i = 0; i < ov.len / 2; i++)
            ((uint16_t *)ov.buf)[i] = ncz_float_to_half(((const float *)xv.buf)[i]);
    PyBuffer_Release(&xv);
    PyBuffer_Release(&ov);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "engine_to_half: x and out differ in length");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *mod_engine_best_kernel(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyLong_FromLong(ncz_kernel_best());
}

static PyObject *mod_engine_kernels(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    PyObject *out = PyList_New(0);
    for (int k = NCZ_KERNEL_PORTABLE; out != NULL && k <= NCZ_KERNEL_AVX512; k++) {
        if (!ncz_kernel_runs(k))
            continue;
        PyObject *v = PyLong_FromLong(k);
        if (v == NULL || PyList_Append(out, v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(v);
    }
    return out;
}

static PyObject *mod_engine_rope_trig(PyObject *module, PyObject *args)
{
    double base, pos;
    int head_dim;
    (void)module;
    if (!PyArg_ParseTuple(args, "ddi:engine_rope_trig", &base, &pos, &head_dim))
        return NULL;
    if (head_dim < 2 || head_dim > 1024 || head_dim % 2 || !(base > 1.0) || pos < 0 || pos > (double)(1 << 21)) {
        PyErr_SetString(PyExc_ValueError, "engine_rope_trig: arguments out of range");
        return NULL;
    }
    size_t half = (size_t)head_dim / 2;
    double inv[512];
    float cs[512], sn[512];
    double lg = ncz_log_d(base);
    for (size_t i = 0; i < half; i++)
        inv[i] = ncz_exp_d(-2.0 * (double)i / (double)head_dim * lg);
    ncz_rope_trig(inv, half, pos, cs, sn);
    PyObject *c = PyList_New((Py_ssize_t)half), *s = PyList_New((Py_ssize_t)half);
    if (c == NULL || s == NULL) {
        Py_XDECREF(c);
        Py_XDECREF(s);
        return NULL;
    }
    for (size_t i = 0; i < half; i++) {
        PyList_SET_ITEM(c, (Py_ssize_t)i, PyFloat_FromDouble(cs[i]));
        PyList_SET_ITEM(s, (Py_ssize_t)i, PyFloat_FromDouble(sn[i]));
    }
    return Py_BuildValue("(NN)", c, s);
}

static PyMethodDef engine_functions[] = {
    {"engine_dequantize", mod_engine_dequantize, METH_VARARGS,
     "engine_dequantize(ggml_type, data, n_out, n_in, out)\n--\n\nThe values the engine multiplies with."},
    {"engine_matmul", mod_engine_matmul, METH_VARARGS,
     "engine_matmul(ggml_type, data, n_out, n_in, x, out, kernel)\n--\n\nW x, as the engine computes it."},
    {"engine_attend", mod_engine_attend, METH_VARARGS,
     "engine_attend(k, v, k0, v0, ring, offset, head_dim, q, lo, hi, with_bos, out, kernel)\n--\n\n"},
    {"engine_expf", mod_engine_expf, METH_VARARGS, "engine_expf(x, out)\n--\n\n"},
    {"engine_to_half", mod_engine_to_half, METH_VARARGS, "engine_to_half(x, out)\n--\n\n"},
    {"engine_best_kernel", mod_engine_best_kernel, METH_NOARGS,
     "engine_best_kernel()\n--\n\n0 portable, 1 AVX2, 2 AVX-512 VNNI: the best this CPU runs."},
    {"engine_kernels", mod_engine_kernels, METH_NOARGS,
     "engine_kernels()\n--\n\nThe kernel levels this CPU runs (0 portable, 1 AVX2, 2 AVX-512 VNNI)."},
    {"engine_rope_trig", mod_engine_rope_trig, METH_VARARGS,
     "engine_rope_trig(base, position, head_dim)\n--\n\n(cos, sin) lists of a position's RoPE angles."},
    {NULL, NULL, 0, NULL},
};

int ncz_py_engine_add(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &Engine_spec, NULL);
    if (type == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "Engine", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    Py_DECREF(type);
    return PyModule_AddFunctions(module, engine_functions);
}
