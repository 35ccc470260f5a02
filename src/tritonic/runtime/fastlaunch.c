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
 * A spec is a tuple (kernel, kinds, layout, compiled[, next]): next, where present and not None,
 * is the spec for calls whose arguments have other kinds (a chain, walked in order):
 *   kinds:  bytes, one per positional argument: T tensor, N None, i int, f float, b bool,
 *           D tensor descriptor (its key part comes from launcher._spec);
 *   layout: bytes, one per kernel parameter: a (the next positional argument) or c (a
 *           constexpr, which Triton's launcher takes and ignores: None is passed);
 *   compiled: dict key -> (C launcher, cooperative, pdl, function, packed metadata, ...).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifdef TRITONIC_HAVE_CUDA_H
/* The direct path (TRITONIC_C_LAUNCH=2): the compiled kernel's parameters packed here, as
 * Triton's generated launcher packs them, and cuLaunchKernelEx called without it. Only for
 * kernels with one CTA per cluster, no cooperative grid, no scratch buffers and
 * no tensor descriptors (launcher.py's _direct_spec decides; its entries carry the spec). */
#include "cuda.h"
#include <dlfcn.h>
typedef CUresult (*launch_ex_t)(const CUlaunchConfig *, CUfunction, void **, void **);
typedef CUresult (*ctx_get_t)(CUcontext *);
static launch_ex_t g_launch_ex = NULL;
static ctx_get_t g_ctx_get = NULL;
/* driver_floor(): the last direct launch, kept while recording (benchmarks/launch.py) */
static int g_record = 0, g_rec_np = 0;
static CUlaunchConfig g_rec_config;
static CUlaunchAttribute g_rec_attr;
static CUfunction g_rec_fn;
static uint64_t g_rec_slots[122];
#endif
#include <time.h>

static PyObject *g_specs = NULL;   /* dict: id(kernel) -> spec */
static PyObject *g_slow = NULL;    /* callable(kernel, grid, args, meta, key or None) */
static PyObject *g_flags = NULL;   /* launcher module's __dict__ (FAST) */
static PyObject *g_knobs = NULL;   /* object with launch_enter_hook, or None */
static PyObject *g_tensor = NULL, *g_param = NULL, *g_desc = NULL;
static PyObject *g_dev = NULL, *g_stream = NULL, *g_spec = NULL;
static PyObject *s_data_ptr, *s_dtype, *s_FAST, *s_hook, *s_calls;
static PyObject *g_meta_mark = NULL; /* the key's marker before a launch_meta dict's address */

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

/* Do the positional arguments have the kinds of a spec (see the top of this file)? */
static int kinds_match(PyObject *kinds_obj, PyObject *const *pos, Py_ssize_t npos) {
    if (PyBytes_GET_SIZE(kinds_obj) != npos) return 0;
    const char *kinds = PyBytes_AS_STRING(kinds_obj);
    for (Py_ssize_t i = 0; i < npos; i++) {
        PyObject *a = pos[i];
        int ok;
        switch (kinds[i]) {
        case 'T': ok = (PyObject *)Py_TYPE(a) == g_tensor || (PyObject *)Py_TYPE(a) == g_param; break;
        case 'N': ok = a == Py_None; break;
        case 'i': ok = PyLong_CheckExact(a); break;
        case 'f': ok = PyFloat_CheckExact(a); break;
        case 'b': ok = PyBool_Check(a); break;
        case 'D': ok = PyObject_IsInstance(a, g_desc) == 1; if (!ok) PyErr_Clear(); break;
        default: ok = 0;
        }
        if (!ok) return 0;
    }
    return 1;
}

static PyObject *slow_path(PyObject *kernel, PyObject *grid, PyObject *const *pos, Py_ssize_t npos,
                           PyObject *const *kwv, PyObject *kwnames, PyObject *mdict, PyObject *key) {
    /* g_slow(kernel, grid, args, meta, key or None, the caller's dict or None) */
    PyObject *args = PyTuple_New(npos), *meta = NULL, *r = NULL;
    if (args == NULL) return NULL;
    for (Py_ssize_t i = 0; i < npos; i++) { Py_INCREF(pos[i]); PyTuple_SET_ITEM(args, i, pos[i]); }
    meta = mdict ? PyDict_Copy(mdict) : PyDict_New();
    if (meta == NULL) goto done;
    if (!mdict && kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++)
            if (PyDict_SetItem(meta, PyTuple_GET_ITEM(kwnames, i), kwv[i]) < 0) goto done;
    }
    r = PyObject_CallFunctionObjArgs(g_slow, kernel, grid, args, meta, key ? key : Py_None,
                                     mdict ? mdict : Py_None, NULL);
done:
    Py_XDECREF(args);
    Py_XDECREF(meta);
    return r;
}

/* Pack the parameters by the spec's type codes (the direct path; see enable_direct). */
static int pack(PyObject *spec, const char *lay, Py_ssize_t nparams, const char *kinds, PyObject *const *pos,
                Py_ssize_t npos, PyObject **outs, uint64_t *slots) {
    /* The slots (8 bytes each, the value in the low bytes) of the kernel's parameters, then the
     * two scratch pointers; returns their number, 0 where the spec does not fit, -1 on error. */
    const char *codes = PyBytes_AS_STRING(PyTuple_GET_ITEM(spec, 0));
    if (PyBytes_GET_SIZE(PyTuple_GET_ITEM(spec, 0)) != nparams || nparams > 120) return 0;
    int np = 0;
    Py_ssize_t a = 0, t = 0;
    for (Py_ssize_t i = 0; i < nparams; i++) {
        PyObject *v = Py_None;
        if (lay[i] == 'a') {
            if (a >= npos) return 0;
            v = kinds[a] == 'T' ? outs[t++] : pos[a];
            a++;
        }
        char c = codes[i];
        if (c == 'c') continue;
        uint64_t slot = 0;
        if (c == 'P') {
            if (v != Py_None) slot = PyLong_AsUnsignedLongLong(v);
        } else if (c == 'f' || c == 'd' || c == 'e' || c == 'z') {  /* fp32, fp64, fp16, bf16 */
            double x = PyFloat_AsDouble(v);
            if (c == 'd') {
                memcpy(&slot, &x, 8);
            } else if (c == 'f') {
                float f = (float)x;
                memcpy(&slot, &f, 4);
            } else if (c == 'e') {
                uint16_t h;
#if PY_VERSION_HEX < 0x030B00A1
                if (_PyFloat_Pack2(x, (unsigned char *)&h, 1) < 0) return -1;
#else
                if (PyFloat_Pack2(x, (char *)&h, 1) < 0) return -1;
#endif
                memcpy(&slot, &h, 2);
            } else {  /* bf16: the top half of the float32, as Triton packs it */
                float f = (float)x;
                uint32_t u;
                memcpy(&u, &f, 4);
                uint16_t h = (uint16_t)(u >> 16);
                memcpy(&slot, &h, 2);
            }
        } else {  /* integers: b/B 8 bits, h/H 16, i/I 32, l/L 64 (signed / unsigned) */
            long long x = (c == 'L') ? (long long)PyLong_AsUnsignedLongLong(v) : PyLong_AsLongLong(v);
            int width = (c == 'b' || c == 'B') ? 1 : (c == 'h' || c == 'H') ? 2 : (c == 'i' || c == 'I') ? 4 : 8;
            memcpy(&slot, &x, width);  /* little-endian: the low bytes */
        }
        if (PyErr_Occurred()) return -1;
        slots[np++] = slot;
    }
    slots[np++] = 0;  /* global scratch */
    slots[np++] = 0;  /* profile scratch */
    return np;
}

#ifdef TRITONIC_HAVE_CUDA_H
/* Launch with cuLaunchKernelEx; 1 on success, 0 where the direct path does not apply after all
 * (the caller then uses Triton's launcher), -1 on an error. */
static int direct_launch(PyObject *spec, PyObject *grid, PyObject *stream, const char *lay, Py_ssize_t nparams,
                         const char *kinds, PyObject *const *pos, Py_ssize_t npos, PyObject **outs) {
    uint64_t slots[122];
    void *params[122];
    int np = pack(spec, lay, nparams, kinds, pos, npos, outs, slots);
    if (np <= 0) return np;
    for (int i = 0; i < np; i++) params[i] = &slots[i];
    CUcontext ctx = NULL;
    if (g_ctx_get(&ctx) != CUDA_SUCCESS || ctx == NULL) return 0;  /* Triton's launcher makes one */
    CUlaunchConfig config;
    memset(&config, 0, sizeof(config));
    Py_ssize_t ng = PyTuple_GET_SIZE(grid);
    config.gridDimX = (unsigned int)PyLong_AsLong(PyTuple_GET_ITEM(grid, 0));
    config.gridDimY = ng > 1 ? (unsigned int)PyLong_AsLong(PyTuple_GET_ITEM(grid, 1)) : 1;
    config.gridDimZ = ng > 2 ? (unsigned int)PyLong_AsLong(PyTuple_GET_ITEM(grid, 2)) : 1;
    config.blockDimX = (unsigned int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 2));
    config.blockDimY = config.blockDimZ = 1;
    config.sharedMemBytes = (unsigned int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 3));
    config.hStream = (CUstream)(uintptr_t)PyLong_AsUnsignedLongLong(stream);
    CUfunction fn = (CUfunction)(uintptr_t)PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(spec, 1));
    if (PyErr_Occurred()) return -1;
    if (config.gridDimX * config.gridDimY * config.gridDimZ == 0) return 1;  /* nothing to run */
    CUlaunchAttribute attr;  /* programmatic dependent launch, as Triton's launcher sets it */
    if (PyTuple_GET_SIZE(spec) > 4 && PyObject_IsTrue(PyTuple_GET_ITEM(spec, 4)) == 1) {
        memset(&attr, 0, sizeof(attr));
        attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        config.attrs = &attr;
        config.numAttrs = 1;
    }
    CUresult r = g_launch_ex(&config, fn, params, NULL);
    if (g_record && r == CUDA_SUCCESS) {
        g_rec_config = config;
        if (config.numAttrs) { g_rec_attr = attr; g_rec_config.attrs = &g_rec_attr; }
        g_rec_fn = fn;
        memcpy(g_rec_slots, slots, sizeof(uint64_t) * (size_t)np);
        g_rec_np = np;
    }
    if (r != CUDA_SUCCESS) {
        PyErr_Format(PyExc_RuntimeError, "tritonic: cuLaunchKernelEx failed with CUDA error %d", (int)r);
        return -1;
    }
    return 1;
}
#endif

/* The launch of launch() and launch_meta(): the keywords come as kwnames + values (kwv), or,
 * from launch_meta, as one dict (mdict) that the caller keeps and never changes; its identity
 * stands for its contents in the key (launcher.py keeps every such dict alive once a key
 * holding it is filed, so an address is never reused for other contents). */
static PyObject *launch_core(PyObject *kernel, PyObject *grid, PyObject *const *pos, Py_ssize_t npos,
                             PyObject *const *kwv, PyObject *kwnames, PyObject *mdict) {
    Py_ssize_t nkw = mdict ? 1 : (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
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
    if (PyTuple_GET_SIZE(spec) > 4 && PyTuple_GET_ITEM(spec, 4) != Py_None) {
        /* calls with other argument kinds (None for a tensor, ...) have specs of their own,
         * chained: the one these arguments match (a single spec skips this) */
        while (spec != Py_None && !kinds_match(PyTuple_GET_ITEM(spec, 1), pos, npos))
            spec = PyTuple_GET_SIZE(spec) > 4 ? PyTuple_GET_ITEM(spec, 4) : Py_None;
        if (spec == Py_None) goto slow;
    }
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
    if (mdict) {  /* the dict's identity: a marker (the C function) then its address */
        PyObject *mid = PyLong_FromVoidPtr(mdict);
        if (mid == NULL) goto error;
        Py_INCREF(g_meta_mark);
        PyTuple_SET_ITEM(key, j++, g_meta_mark);
        PyTuple_SET_ITEM(key, j++, mid);
    } else {
        PyObject *names = kwnames ? kwnames : Py_None;
        Py_INCREF(names);
        PyTuple_SET_ITEM(key, j++, names);
        for (i = 0; i < nkw; i++) { Py_INCREF(kwv[i]); PyTuple_SET_ITEM(key, j++, kwv[i]); }
    }

    PyObject *entry = PyDict_GetItemWithError(compiled, key);  /* borrowed */
    if (entry == NULL || !PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 5 || PyTuple_GET_ITEM(entry, 0) == Py_None) {
        if (PyErr_Occurred()) goto error;
        goto slow;  /* not compiled for this key yet: the Python path files it */
    }
    if (!PyTuple_Check(grid) || PyTuple_GET_SIZE(grid) < 1 || PyTuple_GET_SIZE(grid) > 3) goto slow;
    Py_ssize_t nparams = PyBytes_GET_SIZE(layout);
    const char *lay = PyBytes_AS_STRING(layout);
#ifdef TRITONIC_HAVE_CUDA_H
    if (g_launch_ex != NULL && PyTuple_GET_SIZE(entry) > 6 && PyTuple_Check(PyTuple_GET_ITEM(entry, 6))) {
        PyObject *st = PyObject_CallOneArg(g_stream, dev);
        if (st == NULL) goto error;
        int done = direct_launch(PyTuple_GET_ITEM(entry, 6), grid, st, lay, nparams, kinds, pos, npos, outs);
        Py_DECREF(st);
        if (done < 0) goto error;
        if (done > 0) {
            for (i = 0; i < nouts; i++) Py_DECREF(outs[i]);
            Py_DECREF(key);
            Py_RETURN_NONE;
        }
    }
#endif
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
        PyObject *r = slow_path(kernel, grid, pos, npos, kwv, kwnames, mdict, key);
        Py_XDECREF(key);
        return r;
    }
error:
    for (i = 0; i < nouts; i++) Py_DECREF(outs[i]);
    Py_XDECREF(key);
    return NULL;
}

static PyObject *launch(PyObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "launch(kernel, grid, *args, **meta)");
        return NULL;
    }
    return launch_core(args[0], args[1], args + 2, nargs - 2, args + nargs, kwnames, NULL);
}

static PyObject *launch_meta(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 3 || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "launch_meta(kernel, grid, meta: dict, *args)");
        return NULL;
    }
    return launch_core(args[0], args[1], args + 3, nargs - 3, NULL, NULL, args[2]);
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

static PyObject *pack_check(PyObject *self, PyObject *args) {
    /* pack_check(spec, layout, kinds, args, pointers): the packed slots as bytes (tests) */
    PyObject *spec, *layout, *kinds, *vals, *ptrs;
    if (!PyArg_ParseTuple(args, "O!SSO!O!", &PyTuple_Type, &spec, &layout, &kinds, &PyTuple_Type, &vals,
                          &PyTuple_Type, &ptrs))
        return NULL;
    uint64_t slots[122];
    PyObject *outs[64];
    Py_ssize_t n = PyTuple_GET_SIZE(ptrs) < 64 ? PyTuple_GET_SIZE(ptrs) : 64;
    for (Py_ssize_t i = 0; i < n; i++) outs[i] = PyTuple_GET_ITEM(ptrs, i);
    int np = pack(spec, PyBytes_AS_STRING(layout), PyBytes_GET_SIZE(layout), PyBytes_AS_STRING(kinds),
                  &PyTuple_GET_ITEM(vals, 0), PyTuple_GET_SIZE(vals), outs, slots);
    if (np < 0) return NULL;
    return PyBytes_FromStringAndSize((const char *)slots, 8 * (Py_ssize_t)np);
}

static PyObject *enable_direct(PyObject *self, PyObject *arg) {
#ifdef TRITONIC_HAVE_CUDA_H
    if (PyObject_IsTrue(arg)) {
        void *h = dlopen("libcuda.so.1", RTLD_LAZY);
        if (h == NULL) Py_RETURN_FALSE;
        g_launch_ex = (launch_ex_t)dlsym(h, "cuLaunchKernelEx");
        g_ctx_get = (ctx_get_t)dlsym(h, "cuCtxGetCurrent");
        if (g_launch_ex == NULL || g_ctx_get == NULL) { g_launch_ex = NULL; g_ctx_get = NULL; Py_RETURN_FALSE; }
        Py_RETURN_TRUE;
    }
    g_launch_ex = NULL;
    g_ctx_get = NULL;
#endif
    Py_RETURN_FALSE;
}

static PyObject *driver_floor(PyObject *self, PyObject *args) {
    /* driver_floor(-1): start recording the direct launches; driver_floor(0): stop;
     * driver_floor(n): repeat the last recorded launch n times from C (no Python, no key, no
     * packing) and return the seconds per launch: the driver's own cost, a launcher's floor. */
    long n;
    if (!PyArg_ParseTuple(args, "l", &n)) return NULL;
#ifdef TRITONIC_HAVE_CUDA_H
    if (n <= 0) { g_record = n < 0; Py_RETURN_NONE; }
    if (g_rec_np == 0 || g_launch_ex == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "driver_floor: no direct launch recorded");
        return NULL;
    }
    void *params[122];
    for (int i = 0; i < g_rec_np; i++) params[i] = &g_rec_slots[i];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        CUresult r = g_launch_ex(&g_rec_config, g_rec_fn, params, NULL);
        if (r != CUDA_SUCCESS) return PyErr_Format(PyExc_RuntimeError, "driver_floor: CUDA error %d", (int)r);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return PyFloat_FromDouble(((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)) / (double)n);
#else
    (void)n;
    PyErr_SetString(PyExc_RuntimeError, "driver_floor: built without cuda.h");
    return NULL;
#endif
}

static PyMethodDef methods[] = {
    {"driver_floor", driver_floor, METH_VARARGS, "driver_floor(n): -1 records direct launches, 0 stops, n > 0 "
     "repeats the last one n times in C and returns seconds per launch"},
    {"pack_check", pack_check, METH_VARARGS, "pack_check(spec, layout, kinds, args, pointers): packed slots"},
    {"enable_direct", enable_direct, METH_O, "enable_direct(on): launch with cuLaunchKernelEx where entries "
     "carry a spec (needs libcuda); returns whether it is on"},
    {"launch", (PyCFunction)(void (*)(void))launch, METH_FASTCALL | METH_KEYWORDS,
     "launch(kernel, grid, *args, **meta): tritonic's launch, its hot path in C"},
    {"launch_meta", (PyCFunction)(void (*)(void))launch_meta, METH_FASTCALL,
     "launch_meta(kernel, grid, meta, *args): launch(kernel, grid, *args, **meta) for a dict the caller keeps "
     "unchanged (a cached one): its identity is the key's, not its 17 values"},
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
    g_meta_mark = PyUnicode_InternFromString("tritonic.launch_meta");
    return PyModule_Create(&module);
}
