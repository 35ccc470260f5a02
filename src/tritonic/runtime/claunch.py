"""A small C launcher for compiled Triton kernels (CUDA), used by the fast launch path.

Triton's own C launcher is generated per signature and does more per call than a relaunch
needs: it parses ~13 fixed arguments plus the kernel's through a format string, asks the
driver about every pointer, releases the GIL and launches with ``cuLaunchKernelEx``. This
one takes the kernel's arguments as a tuple with a *kinds* string made once per compiled
kernel from its signature (``P`` pointer given as an integer, ``i``/``l``/``I``/``L``
32/64-bit signed/unsigned integers, ``b`` 8-bit, ``f``/``d`` float32/float64, ``-`` a
constexpr the kernel does not take), packs them and calls ``cuLaunchKernel``.

It applies to kernels without clusters, cooperative grids, programmatic dependent launch,
scratch buffers or tensor-descriptor arguments; :func:`kinds_for` returns None for the
others, which keep Triton's launcher. It is built with Triton's own build helper (the C
compiler Triton uses for its launchers) the first time it is needed and cached by
Triton's cache; if that fails, one warning, and Triton's launcher serves every kernel.
``TRITONIC_C_LAUNCHER=0`` turns it off.
"""

from __future__ import annotations

import os

from tritonic.runtime.checks import warn_once

_SRC = r"""
#include "cuda.h"
#include <stdint.h>
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_ARGS 96

static int ensure_context(int device) {
  CUcontext ctx = NULL;
  if (cuCtxGetCurrent(&ctx) != CUDA_SUCCESS) return 0;
  if (ctx) return 1;
  CUdevice dev;
  if (cuDeviceGet(&dev, device) != CUDA_SUCCESS) return 0;
  if (cuDevicePrimaryCtxRetain(&ctx, dev) != CUDA_SUCCESS) return 0;
  return cuCtxSetCurrent(ctx) == CUDA_SUCCESS;
}

static int as_u64(PyObject *o, uint64_t *out) {
  if (o == Py_None) { *out = 0; return 1; }
  if (PyLong_Check(o)) { *out = PyLong_AsUnsignedLongLong(o); return !PyErr_Occurred(); }
  PyObject *p = PyObject_CallMethod(o, "data_ptr", NULL);  /* a tensor: its address */
  if (!p) return 0;
  *out = PyLong_AsUnsignedLongLong(p);
  Py_DECREF(p);
  return !PyErr_Occurred();
}

/* launch(function, gx, gy, gz, threads, shared, stream, device, kinds, args) */
static PyObject *launch(PyObject *self, PyObject *const *a, Py_ssize_t n) {
  if (n != 10 || !PyBytes_Check(a[8]) || !PyTuple_Check(a[9])) {
    PyErr_SetString(PyExc_TypeError, "launch(function, gx, gy, gz, threads, shared, stream, device, kinds, args)");
    return NULL;
  }
  CUfunction function = (CUfunction)(uintptr_t)PyLong_AsUnsignedLongLong(a[0]);
  unsigned gx = (unsigned)PyLong_AsUnsignedLong(a[1]);
  unsigned gy = (unsigned)PyLong_AsUnsignedLong(a[2]);
  unsigned gz = (unsigned)PyLong_AsUnsignedLong(a[3]);
  unsigned threads = (unsigned)PyLong_AsUnsignedLong(a[4]);
  unsigned shared = (unsigned)PyLong_AsUnsignedLong(a[5]);
  CUstream stream = (CUstream)(uintptr_t)PyLong_AsUnsignedLongLong(a[6]);
  int device = (int)PyLong_AsLong(a[7]);
  if (PyErr_Occurred()) return NULL;
  const char *kinds = PyBytes_AS_STRING(a[8]);
  Py_ssize_t nk = PyBytes_GET_SIZE(a[8]);
  PyObject *args = a[9];
  if (PyTuple_GET_SIZE(args) != nk || nk > MAX_ARGS) {
    PyErr_Format(PyExc_TypeError, "launch: %zd arguments for %zd kinds", PyTuple_GET_SIZE(args), nk);
    return NULL;
  }
  union { uint64_t u; int64_t l; double d; float f; uint32_t ui; int32_t i; uint8_t b; } store[MAX_ARGS + 2];
  void *params[MAX_ARGS + 2];
  int np = 0;
  for (Py_ssize_t k = 0; k < nk; ++k) {
    PyObject *o = PyTuple_GET_ITEM(args, k);
    switch (kinds[k]) {
      case '-': continue;
      case 'P': case 'L': if (!as_u64(o, &store[np].u)) return NULL; break;
      case 'l': store[np].l = PyLong_AsLongLong(o); break;
      case 'i': store[np].i = (int32_t)PyLong_AsLong(o); break;
      case 'I': store[np].ui = (uint32_t)PyLong_AsUnsignedLong(o); break;
      case 'b': store[np].b = (uint8_t)PyObject_IsTrue(o); break;
      case 'f': store[np].f = (float)PyFloat_AsDouble(o); break;
      case 'd': store[np].d = PyFloat_AsDouble(o); break;
      default:
        PyErr_Format(PyExc_ValueError, "launch: unknown kind %c", kinds[k]);
        return NULL;
    }
    params[np] = &store[np];
    ++np;
  }
  if (PyErr_Occurred()) return NULL;
  store[np].u = 0; params[np] = &store[np]; ++np;  /* global scratch: none */
  store[np].u = 0; params[np] = &store[np]; ++np;  /* profile scratch: none */
  if ((uint64_t)gx * gy * gz == 0) Py_RETURN_NONE;
  if (!ensure_context(device)) {
    PyErr_SetString(PyExc_RuntimeError, "tritonic launcher: no CUDA context");
    return NULL;
  }
  CUresult r = cuLaunchKernel(function, gx, gy, gz, threads, 1, 1, shared, stream, params, NULL);
  if (r != CUDA_SUCCESS) {
    const char *msg = NULL;
    cuGetErrorString(r, &msg);
    PyErr_Format(PyExc_RuntimeError, "tritonic launcher: cuLaunchKernel failed: %s", msg ? msg : "?");
    return NULL;
  }
  Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
  {"launch", (PyCFunction)(void (*)(void))launch, METH_FASTCALL, "launch a compiled Triton kernel"},
  {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tritonic_claunch", NULL, -1, methods};

PyMODINIT_FUNC PyInit_tritonic_claunch(void) { return PyModule_Create(&module); }
"""

_KINDS = {"i1": "b", "i8": None, "i16": None, "i32": "i", "i64": "l", "u1": "b", "u8": None, "u16": None,
          "u32": "I", "u64": "L", "fp32": "f", "f32": "f", "fp64": "d", "constexpr": "-"}

_module = None  # the built module, False once building failed


def enabled() -> bool:
    return os.environ.get("TRITONIC_C_LAUNCHER", "1").strip() != "0"


def get():
    """The launch function, built on first use; None where it cannot be built."""
    global _module
    if _module is None:
        try:
            from triton.backends.nvidia.driver import include_dirs, libraries, library_dirs
            from triton.runtime.build import compile_module_from_src

            _module = compile_module_from_src(_SRC, "tritonic_claunch", library_dirs=library_dirs(),
                                              include_dirs=include_dirs, libraries=libraries)
        except Exception as e:  # no compiler, no CUDA headers, another Triton layout
            warn_once(("claunch", type(e).__name__),
                      f"tritonic: the C launcher could not be built ({type(e).__name__}: {e}); "
                      f"Triton's launcher serves every kernel")
            _module = False
    return _module.launch if _module else None


def kinds_for(compiled) -> bytes | None:
    """The kinds string of a compiled kernel's parameters, or None when this launcher does
    not apply to it (clusters, cooperative or PDL launches, scratch buffers, descriptors,
    16-bit scalars)."""
    meta = compiled.metadata
    if (getattr(meta, "num_ctas", 1) != 1 or getattr(meta, "launch_cooperative_grid", False)
            or getattr(meta, "launch_pdl", False) or getattr(meta, "global_scratch_size", 0)
            or getattr(meta, "profile_scratch_size", 0)):
        return None
    signature = getattr(getattr(compiled, "src", None), "signature", None)
    if not isinstance(signature, dict):
        return None
    out = []
    for ty in signature.values():
        kind = "P" if isinstance(ty, str) and ty.startswith("*") else _KINDS.get(ty)
        if kind is None:
            return None
        out.append(kind)
    return "".join(out).encode()
