/* tritonic's launch() in C: the hot path of runtime/launcher.py without Python frames.
 *
 * launch(kernel, grid, *args, **meta) finds the kernel's spec (registered by launcher.py once
 * Triton has compiled the kernel for a call of these argument kinds), computes the same facts
 * as the generated Python binder (per tensor its dtype and 16-byte alignment, per int whether
 * it is 1 or divisible by 16, the bools, the keywords, the device), looks the key up in the
 * spec's dict of compiled kernels and calls Triton's C launcher with the arguments it expects.
 * Anything else (no spec yet, another argument kind, an int outside [0, 2**31), a key not
 * compiled yet, a profiler hook, launcher.FAST off) goes to launcher.py's Python path, which
 * is handed the key (or None) so that it can file the compiled kernel under it.
 *
 * A spec is a tuple (kernel, kinds, layout, compiled):
 *   kinds:  bytes, one per positional argument: T tensor, N None, i int, f float, b bool,
 *           D tensor descriptor (its key part comes from launcher._spec);
 *   layout: bytes, one per kernel parameter: a (the next positional argument) or c (a
 *           constexpr, which Triton's launcher takes and ignores: None is passed);
 *   compiled: dict key -> (C launcher, cooperative, pdl, function, packed metadata, ...).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static PyObject *g_specs = NULL;   /* dict: id(kernel) -> spec */
static PyObject *g_slow = NULL;    /* callable(kernel, grid, args, meta, key or None) */
static PyObject *g_flags = NULL;   /* launcher module's __dict__ (FAST) */
static PyObject *g_knobs = NULL;   /* object with launch_enter_hook, or None */
static PyObject *g_tensor = NULL, *g_param = NULL, *g_desc = NULL;
static PyObject *g_dev = NULL, *g_stream = NULL, *g_spec = NULL;
static PyObject *s_data_ptr, *s_dtype, *s_FAST, *s_hook, *s_calls;

static int hooks_active(void) {
    if (g_knobs == NULL || g_knobs == Py_None) return 0;
    PyObject *hook = PyObject_GetAttr(g_knobs, s_hook);
    if (hook == NULL) { PyErr_Clear(); return 0; }
    int active = 0;
    if (hook != Py_None) {
        PyObject *calls = PyObject_GetAttr(hook, s_calls);
        if (calls == NULL) { PyErr_Clear(); active = 1; }
        else { active = PyObject_IsTrue(calls); if (active < 0) { PyErr_Clear(); active = 1; } Py_DECREF(calls); }
    }
    Py_DECREF(hook);
    return active;
}

static PyObject *slow_path(PyObject *kernel, PyObject *grid, PyObject *const *pos, Py_ssize_t npos,
                           PyObject *const *kwv, PyObject *kwnames, PyObject *key) {
    PyObject *args = PyTuple_New(npos), *meta = NULL, *r = NULL;
    if (args == NULL) return NULL;
    for (Py_ssize_t i = 0; i < npos; i++) { Py_INCREF(pos[i]); PyTuple_SET_ITEM(args, i, pos[i]); }
    meta = PyDict_New();
    if (meta == NULL) goto done;
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++)
            if (PyDict_SetItem(meta, PyTuple_GET_ITEM(kwnames, i), kwv[i]) < 0) goto done;
    }
    r = PyObject_CallFunctionObjArgs(g_slow, kernel, grid, args, meta, key ? key : Py_None, NULL);
done:
    Py_XDECREF(args);
    Py_XDECREF(meta);
    return r;
}

static PyObject *launch(PyObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "launch(kernel, grid, *args, **meta)");
        return NULL;
    }
    PyObject *kernel = args[0], *grid = args[1];
    PyObject *const *pos = args + 2, *const *kwv = args + nargs;
    Py_ssize_t npos = nargs - 2, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *key = NULL, *outs[64];
    Py_ssize_t nouts = 0;
    int i;

    PyObject *fast = g_flags ? PyDict_GetItemWithError(g_flags, s_FAST) : NULL;  /* borrowed */
    if (fast == NULL || fast == Py_False || hooks_active() || npos > 64) { PyErr_Clear(); goto slow; }
    PyObject *id = PyLong_FromVoidPtr(kernel);
    if (id == NULL) return NULL;
    PyObject *spec = PyDict_GetItemWithError(g_specs, id);  /* borrowed */
    Py_DECREF(id);
    if (spec == NULL || PyTuple_GET_ITEM(spec, 0) != kernel) { PyErr_Clear(); goto slow; }
    const char *kinds = PyBytes_AS_STRING(PyTuple_GET_ITEM(spec, 1));
    if (PyBytes_GET_SIZE(PyTuple_GET_ITEM(spec, 1)) != npos) goto slow;
    PyObject *layout = PyTuple_GET_ITEM(spec, 2), *compiled = PyTuple_GET_ITEM(spec, 3);

    Py_ssize_t nkey = 2 + nkw;  /* device, keyword names, keyword values */
    for (i = 0; i < npos; i++) nkey += kinds[i] == 'T' ? 2 : (kinds[i] == 'i' || kinds[i] == 'b' || kinds[i] == 'D');
    key = PyTuple_New(nkey);
    if (key == NULL) return NULL;
    Py_ssize_t j = 1;
    for (i = 0; i < npos; i++) {
        PyObject *a = pos[i];
        switch (kinds[i]) {
        case 'T': {
            if ((PyObject *)Py_TYPE(a) != g_tensor && (PyObject *)Py_TYPE(a) != g_param) goto slow_nokey;
            PyObject *p = PyObject_CallMethodNoArgs(a, s_data_ptr);
            if (p == NULL) { PyErr_Clear(); goto slow_nokey; }
            outs[nouts++] = p;  /* the address goes to Triton's launcher as an int */
            unsigned long long v = PyLong_AsUnsignedLongLong(p);
            if (v == (unsigned long long)-1 && PyErr_Occurred()) { PyErr_Clear(); goto slow_nokey; }
            PyObject *dt = PyObject_GetAttr(a, s_dtype);
            if (dt == NULL) { PyErr_Clear(); goto slow_nokey; }
            PyTuple_SET_ITEM(key, j++, dt);
            PyObject *al = (v & 15) == 0 ? Py_True : Py_False;
            Py_INCREF(al);
            PyTuple_SET_ITEM(key, j++, al);
            break;
        }
        case 'N':
            if (a != Py_None) goto slow_nokey;
            break;
        case 'i': {
            if (!PyLong_CheckExact(a)) goto slow_nokey;
            int overflow = 0;
            long long v = PyLong_AsLongLongAndOverflow(a, &overflow);
            if (overflow || v < 0 || v > 2147483647LL) { PyErr_Clear(); goto slow_nokey; }
            PyObject *part = v == 1 ? PyLong_FromLong(2) : ((v & 15) == 0 ? Py_True : Py_False);
            if (v != 1) Py_INCREF(part);
            if (part == NULL) goto error;
            PyTuple_SET_ITEM(key, j++, part);
            break;
        }
        case 'f':
            if (!PyFloat_CheckExact(a)) goto slow_nokey;
            break;
        case 'b':
            if (!PyBool_Check(a)) goto slow_nokey;
            Py_INCREF(a);
            PyTuple_SET_ITEM(key, j++, a);
            break;
        case 'D': {
            int ok = PyObject_IsInstance(a, g_desc);
            if (ok != 1) { PyErr_Clear(); goto slow_nokey; }
            PyObject *part = PyObject_CallOneArg(g_spec, a);
            if (part == NULL) { PyErr_Clear(); goto slow_nokey; }
            PyTuple_SET_ITEM(key, j++, part);
            break;
        }
        default:
            goto slow_nokey;
        }
    }
    PyObject *dev = PyObject_CallNoArgs(g_dev);
    if (dev == NULL) goto error;
    PyTuple_SET_ITEM(key, 0, dev);
    PyObject *names = kwnames ? kwnames : Py_None;
    Py_INCREF(names);
    PyTuple_SET_ITEM(key, j++, names);
    for (i = 0; i < nkw; i++) { Py_INCREF(kwv[i]); PyTuple_SET_ITEM(key, j++, kwv[i]); }

    PyObject *entry = PyDict_GetItemWithError(compiled, key);  /* borrowed */
    if (entry == NULL || !PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 5 || PyTuple_GET_ITEM(entry, 0) == Py_None) {
        if (PyErr_Occurred()) goto error;
        goto slow;  /* not compiled for this key yet: the Python path files it */
    }
    if (!PyTuple_Check(grid) || PyTuple_GET_SIZE(grid) < 1 || PyTuple_GET_SIZE(grid) > 3) goto slow;
    Py_ssize_t nparams = PyBytes_GET_SIZE(layout);
    const char *lay = PyBytes_AS_STRING(layout);
    PyObject *call = PyTuple_New(13 + nparams);
    if (call == NULL) goto error;
    PyObject *one = PyLong_FromLong(1);
    for (i = 0; i < 3; i++) {
        PyObject *g = i < PyTuple_GET_SIZE(grid) ? PyTuple_GET_ITEM(grid, i) : one;
        Py_INCREF(g);
        PyTuple_SET_ITEM(call, i, g);
    }
    Py_DECREF(one);
    PyObject *stream = PyObject_CallOneArg(g_stream, dev);
    if (stream == NULL) { Py_DECREF(call); goto error; }
    PyTuple_SET_ITEM(call, 3, stream);
    PyObject *fixed[9] = {PyTuple_GET_ITEM(entry, 3), PyTuple_GET_ITEM(entry, 1), PyTuple_GET_ITEM(entry, 2),
                          Py_None, Py_None, PyTuple_GET_ITEM(entry, 4), Py_None, Py_None, Py_None};
    for (i = 0; i < 9; i++) { Py_INCREF(fixed[i]); PyTuple_SET_ITEM(call, 4 + i, fixed[i]); }
    Py_ssize_t a = 0, t = 0;
    for (i = 0; i < nparams; i++) {
        PyObject *v = Py_None;
        if (lay[i] == 'a') {
            if (a >= npos) { Py_DECREF(call); goto slow; }
            v = kinds[a] == 'T' ? outs[t++] : pos[a];
            a++;
        }
        Py_INCREF(v);
        PyTuple_SET_ITEM(call, 13 + i, v);
    }
    PyObject *r = PyObject_Call(PyTuple_GET_ITEM(entry, 0), call, NULL);
    Py_DECREF(call);
    for (i = 0; i < nouts; i++) Py_DECREF(outs[i]);
    Py_DECREF(key);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;

slow_nokey:
    Py_CLEAR(key);
slow:
    for (i = 0; i < nouts; i++) Py_DECREF(outs[i]);
    {
        PyObject *r = slow_path(kernel, grid, pos, npos, kwv, kwnames, key);
        Py_XDECREF(key);
        return r;
    }
error:
    for (i = 0; i < nouts; i++) Py_DECREF(outs[i]);
    Py_XDECREF(key);
    return NULL;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *specs, *slow, *flags, *knobs, *tensor, *param, *desc, *dev, *stream, *spec;
    if (!PyArg_ParseTuple(args, "O!OO!OOOOOOO", &PyDict_Type, &specs, &slow, &PyDict_Type, &flags, &knobs, &tensor,
                          &param, &desc, &dev, &stream, &spec))
        return NULL;
    PyObject **slots[] = {&g_specs, &g_slow, &g_flags, &g_knobs, &g_tensor, &g_param, &g_desc, &g_dev, &g_stream,
                          &g_spec};
    PyObject *vals[] = {specs, slow, flags, knobs, tensor, param, desc, dev, stream, spec};
    for (int i = 0; i < 10; i++) { Py_INCREF(vals[i]); Py_XSETREF(*slots[i], vals[i]); }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"launch", (PyCFunction)(void (*)(void))launch, METH_FASTCALL | METH_KEYWORDS,
     "launch(kernel, grid, *args, **meta): tritonic's launch, its hot path in C"},
    {"configure", configure, METH_VARARGS, "configure(specs, slow, flags, knobs, Tensor, Parameter, "
     "TensorDescriptor, device_fn, stream_fn, spec_fn)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tritonic_fastlaunch", NULL, -1, methods};

PyMODINIT_FUNC PyInit_tritonic_fastlaunch(void) {
    s_data_ptr = PyUnicode_InternFromString("data_ptr");
    s_dtype = PyUnicode_InternFromString("dtype");
    s_FAST = PyUnicode_InternFromString("FAST");
    s_hook = PyUnicode_InternFromString("launch_enter_hook");
    s_calls = PyUnicode_InternFromString("calls");
    return PyModule_Create(&module);
}
