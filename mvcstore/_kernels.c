/*
 * Fused byte-plane transforms for mvcstore's storage encodings.
 *
 * The same arithmetic as the NumPy code in mvcstore/encodings.py (which stays
 * the reference and the fallback when this module is not built), done in one
 * pass over memory and without the GIL, so that both cores work at once:
 *
 *   split(new, old, width, out, mode)   out <- byte planes of f(new, old)
 *   join(planes, width, out, mode)      out <- g(out, joined planes)
 *
 * Elements are little-endian unsigned integers of `width` bytes (1, 2, 4 or
 * 8). Plane k holds byte k of every element; `out` of split (and `planes` of
 * join) hold the planes one after another, `len(new) / width` bytes each.
 *
 * Modes of split: 0 the elements of new (old ignored), 1 new XOR old, 2 the
 * zigzag of the wrapping difference new - old (0, -1, 1, -2... become
 * 0, 1, 2, 3...). Modes of join: 0 out = joined, 1 out ^= joined, 2 out +=
 * the difference whose zigzag is joined (wrapping). docs/format.md section 5
 * gives the encodings these serve.
 *
 *   pack(data, bits, out)               bytes below 2**bits, 8/bits to a byte
 *   unpack(packed, bits, out)           and back
 *
 * And one system call that Python's os module lacks:
 *
 *   writeback(fd, offset, length)       start writing a file range to disk
 *
 * so that a pack's bytes go to the disk while the rest of the commit is
 * still being encoded, and the final fsync has little left to wait for.
 */

#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fcntl.h>
#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LE16(x) __builtin_bswap16(x)
#define LE32(x) __builtin_bswap32(x)
#define LE64(x) __builtin_bswap64(x)
#else
#define LE16(x) (x)
#define LE32(x) (x)
#define LE64(x) (x)
#endif
#define LE8(x) (x)

enum { MODE_PLAIN = 0, MODE_XOR = 1, MODE_DIFF = 2 };
enum { MAX_WIDTH = 8 };

/* One loop per element type and mode, so that each is a straight loop the
 * compiler vectorises: loads through memcpy (the buffers need not be
 * aligned), one store per plane. */
#define SPLIT_VALUE_PLAIN(T, BITS, a, b) (a)
#define SPLIT_VALUE_XOR(T, BITS, a, b) ((T)((a) ^ (b)))
#define SPLIT_VALUE_DIFF(T, BITS, a, b) zigzag_##BITS((T)((a) - (b)))
#define JOIN_VALUE_PLAIN(T, BITS, o, v) (v)
#define JOIN_VALUE_XOR(T, BITS, o, v) ((T)((o) ^ (v)))
#define JOIN_VALUE_DIFF(T, BITS, o, v) ((T)((o) + unzigzag_##BITS(v)))

#define DEFINE_ZIGZAG(T, BITS)                                                \
    static inline T zigzag_##BITS(T d)                                        \
    {                                                                         \
        return (T)((T)(d << 1) ^ (T)(0 - (T)(d >> (BITS - 1))));              \
    }                                                                         \
    static inline T unzigzag_##BITS(T z)                                      \
    {                                                                         \
        return (T)((T)(z >> 1) ^ (T)(0 - (T)(z & 1)));                        \
    }

#define DEFINE_SPLIT(T, BITS, LE, MODE)                                       \
    static void split_##BITS##_##MODE(const uint8_t *restrict new,           \
                                      const uint8_t *restrict old,           \
                                      uint8_t *restrict out,                 \
                                      Py_ssize_t count)                      \
    {                                                                         \
        const int width = BITS / 8;                                           \
        (void)old;                                                            \
        for (Py_ssize_t i = 0; i < count; i++) {                              \
            T a, b = 0, v;                                                    \
            memcpy(&a, new + i * width, sizeof(T));                           \
            if (MODE_##MODE != MODE_PLAIN)                                    \
                memcpy(&b, old + i * width, sizeof(T));                       \
            v = SPLIT_VALUE_##MODE(T, BITS, LE(a), LE(b));                    \
            for (int k = 0; k < width; k++)                                   \
                out[(Py_ssize_t)k * count + i] = (uint8_t)(v >> (8 * k));     \
        }                                                                     \
    }

#define DEFINE_JOIN(T, BITS, LE, MODE)                                        \
    static void join_##BITS##_##MODE(const uint8_t *const *planes,           \
                                     uint8_t *restrict out,                  \
                                     Py_ssize_t count)                       \
    {                                                                         \
        const int width = BITS / 8;                                           \
        const uint8_t *restrict p[MAX_WIDTH];                                 \
        for (int k = 0; k < width; k++)                                       \
            p[k] = planes[k];                                                 \
        for (Py_ssize_t i = 0; i < count; i++) {                              \
            T v = 0, o = 0;                                                   \
            for (int k = 0; k < width; k++)                                   \
                v |= (T)((T)p[k][i] << (8 * k));                              \
            if (MODE_##MODE != MODE_PLAIN) {                                  \
                memcpy(&o, out + i * width, sizeof(T));                       \
                o = LE(o);                                                    \
            }                                                                 \
            v = LE(JOIN_VALUE_##MODE(T, BITS, o, v));                         \
            memcpy(out + i * width, &v, sizeof(T));                           \
        }                                                                     \
    }

#define DEFINE_WIDTH(T, BITS, LE)                                             \
    DEFINE_ZIGZAG(T, BITS)                                                    \
    DEFINE_SPLIT(T, BITS, LE, PLAIN)                                          \
    DEFINE_SPLIT(T, BITS, LE, XOR)                                            \
    DEFINE_SPLIT(T, BITS, LE, DIFF)                                           \
    DEFINE_JOIN(T, BITS, LE, PLAIN)                                           \
    DEFINE_JOIN(T, BITS, LE, XOR)                                             \
    DEFINE_JOIN(T, BITS, LE, DIFF)                                            \
    static void (*const split_##BITS[3])(const uint8_t *, const uint8_t *,   \
                                         uint8_t *, Py_ssize_t) = {          \
        split_##BITS##_PLAIN, split_##BITS##_XOR, split_##BITS##_DIFF};       \
    static void (*const join_##BITS[3])(const uint8_t *const *, uint8_t *,   \
                                        Py_ssize_t) = {                      \
        join_##BITS##_PLAIN, join_##BITS##_XOR, join_##BITS##_DIFF};

DEFINE_WIDTH(uint8_t, 8, LE8)
DEFINE_WIDTH(uint16_t, 16, LE16)
DEFINE_WIDTH(uint32_t, 32, LE32)
DEFINE_WIDTH(uint64_t, 64, LE64)

static void
split_any(int width, const uint8_t *new, const uint8_t *old, uint8_t *out,
          Py_ssize_t count, int mode)
{
    switch (width) {
    case 1: split_8[mode](new, old, out, count); break;
    case 2: split_16[mode](new, old, out, count); break;
    case 4: split_32[mode](new, old, out, count); break;
    default: split_64[mode](new, old, out, count); break;
    }
}

static void
join_any(int width, const uint8_t *const *planes, uint8_t *out,
         Py_ssize_t count, int mode)
{
    switch (width) {
    case 1: join_8[mode](planes, out, count); break;
    case 2: join_16[mode](planes, out, count); break;
    case 4: join_32[mode](planes, out, count); break;
    default: join_64[mode](planes, out, count); break;
    }
}

/* Bytes below 2**BITS, PER = 8 / BITS to a byte, least significant first;
 * the last byte holds what is left, padded with zeros. */
#define DEFINE_PACK(BITS)                                                     \
    static void pack_##BITS(const uint8_t *restrict data, Py_ssize_t size,   \
                            uint8_t *restrict out)                           \
    {                                                                         \
        const int per = 8 / BITS;                                             \
        const uint8_t mask = (uint8_t)((1u << BITS) - 1);                     \
        Py_ssize_t whole = size / per;                                        \
        for (Py_ssize_t i = 0; i < whole; i++) {                              \
            unsigned byte = 0;                                                \
            for (int k = 0; k < per; k++)                                     \
                byte |= (unsigned)(data[i * per + k] & mask) << (BITS * k);   \
            out[i] = (uint8_t)byte;                                           \
        }                                                                     \
        if (whole * per < size) {                                             \
            unsigned byte = 0;                                                \
            for (Py_ssize_t k = 0; whole * per + k < size; k++)               \
                byte |= (unsigned)(data[whole * per + k] & mask)              \
                        << (BITS * k);                                        \
            out[whole] = (uint8_t)byte;                                       \
        }                                                                     \
    }                                                                         \
    static void unpack_##BITS(const uint8_t *restrict packed,                \
                              uint8_t *restrict out, Py_ssize_t size)        \
    {                                                                         \
        const int per = 8 / BITS;                                             \
        const unsigned mask = (1u << BITS) - 1;                               \
        Py_ssize_t whole = size / per;                                        \
        for (Py_ssize_t i = 0; i < whole; i++)                                \
            for (int k = 0; k < per; k++)                                     \
                out[i * per + k] = (uint8_t)((packed[i] >> (BITS * k)) & mask); \
        for (Py_ssize_t k = 0; whole * per + k < size; k++)                   \
            out[whole * per + k] =                                            \
                (uint8_t)((packed[whole] >> (BITS * k)) & mask);              \
    }

DEFINE_PACK(1)
DEFINE_PACK(2)
DEFINE_PACK(4)

static int
check_bits(int bits)
{
    if (bits != 1 && bits != 2 && bits != 4) {
        PyErr_Format(PyExc_ValueError, "bits %d is not 1, 2 or 4", bits);
        return -1;
    }
    return 0;
}

static int
check_shape(int width, int mode, Py_ssize_t size)
{
    if (width != 1 && width != 2 && width != 4 && width != 8) {
        PyErr_Format(PyExc_ValueError, "width %d is not 1, 2, 4 or 8", width);
        return -1;
    }
    if (mode < MODE_PLAIN || mode > MODE_DIFF) {
        PyErr_Format(PyExc_ValueError, "mode %d is not 0, 1 or 2", mode);
        return -1;
    }
    if (size % width != 0) {
        PyErr_Format(PyExc_ValueError,
                     "%zd bytes are not a whole number of %d-byte elements",
                     size, width);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(split_doc,
"split(new, old, width, out, mode)\n--\n\n"
"Write the byte planes of f(new, old) into out (at least len(new) bytes).\n"
"mode 0: new itself (old may be None); 1: new XOR old; 2: the zigzag of\n"
"the wrapping difference new - old, as integers of width bytes.");

static PyObject *
kernels_split(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer new = {0}, old = {0}, out = {0};
    PyObject *old_obj;
    int width, mode;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "y*Oiw*i", &new, &old_obj, &width, &out, &mode))
        return NULL;
    if (check_shape(width, mode, new.len) < 0)
        goto done;
    if (out.len < new.len) {
        PyErr_Format(PyExc_ValueError, "out holds %zd bytes, %zd are needed",
                     out.len, new.len);
        goto done;
    }
    if (mode != MODE_PLAIN) {
        if (PyObject_GetBuffer(old_obj, &old, PyBUF_SIMPLE) < 0)
            goto done;
        if (old.len != new.len) {
            PyErr_Format(PyExc_ValueError, "old holds %zd bytes, new %zd",
                         old.len, new.len);
            goto done;
        }
    }
    {
        const uint8_t *a = new.buf, *b = old.buf;
        uint8_t *o = out.buf;
        Py_ssize_t count = new.len / width;
        Py_BEGIN_ALLOW_THREADS
        split_any(width, a, b, o, count, mode);
        Py_END_ALLOW_THREADS
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&new);
    if (old.obj != NULL)
        PyBuffer_Release(&old);
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(join_doc,
"join(planes, width, out, mode)\n--\n\n"
"Join `width` byte planes (a sequence of buffers of len(out) / width bytes)\n"
"into out. mode 0: out = joined; 1: out ^= joined; 2: out += the wrapping\n"
"difference whose zigzag is joined.");

static PyObject *
kernels_join(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *planes_obj, *seq = NULL, *result = NULL;
    Py_buffer out = {0}, views[MAX_WIDTH];
    const uint8_t *planes[MAX_WIDTH];
    int width, mode, held = 0;

    if (!PyArg_ParseTuple(args, "Oiw*i", &planes_obj, &width, &out, &mode))
        return NULL;
    if (check_shape(width, mode, out.len) < 0)
        goto done;
    seq = PySequence_Fast(planes_obj, "planes must be a sequence of buffers");
    if (seq == NULL)
        goto done;
    if (PySequence_Fast_GET_SIZE(seq) != width) {
        PyErr_Format(PyExc_ValueError, "%zd planes given for width %d",
                     PySequence_Fast_GET_SIZE(seq), width);
        goto done;
    }
    Py_ssize_t count = out.len / width;
    for (; held < width; held++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, held);
        if (PyObject_GetBuffer(item, &views[held], PyBUF_SIMPLE) < 0)
            goto done;
        if (views[held].len != count) {
            PyErr_Format(PyExc_ValueError, "plane %d holds %zd bytes, not %zd",
                         held, views[held].len, count);
            held++;
            goto done;
        }
        planes[held] = views[held].buf;
    }
    {
        uint8_t *o = out.buf;
        Py_BEGIN_ALLOW_THREADS
        join_any(width, planes, o, count, mode);
        Py_END_ALLOW_THREADS
    }
    result = Py_NewRef(Py_None);
done:
    for (int k = 0; k < held; k++)
        PyBuffer_Release(&views[k]);
    Py_XDECREF(seq);
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(pack_doc,
"pack(data, bits, out)\n--\n\n"
"Pack bytes below 2**bits (bits 1, 2 or 4), 8 / bits to a byte, least\n"
"significant first, into out (exactly ceil(len(data) * bits / 8) bytes).");

PyDoc_STRVAR(unpack_doc,
"unpack(packed, bits, out)\n--\n\n"
"Undo pack: fill out with the values packed 8 / bits to a byte (packed\n"
"holds exactly ceil(len(out) * bits / 8) bytes).");

/* pack and unpack: `source` and `out` as parsed; the packed side must hold
 * exactly ceil(n * bits / 8) bytes for the n values of the other side. */
static PyObject *
pack_or_unpack(PyObject *args, int unpacking)
{
    Py_buffer source = {0}, out = {0};
    int bits;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*iw*", &source, &bits, &out))
        return NULL;
    if (check_bits(bits) < 0)
        goto done;
    Py_ssize_t per = 8 / bits;
    Py_ssize_t values = unpacking ? out.len : source.len;
    Py_ssize_t packed = unpacking ? source.len : out.len;
    Py_ssize_t needed = (values + per - 1) / per;
    if (packed != needed) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, %zd are needed",
                     unpacking ? "packed" : "out", packed, needed);
        goto done;
    }
    {
        const uint8_t *in = source.buf;
        uint8_t *o = out.buf;
        Py_BEGIN_ALLOW_THREADS
        if (unpacking) {
            if (bits == 1) unpack_1(in, o, values);
            else if (bits == 2) unpack_2(in, o, values);
            else unpack_4(in, o, values);
        } else {
            if (bits == 1) pack_1(in, values, o);
            else if (bits == 2) pack_2(in, values, o);
            else pack_4(in, values, o);
        }
        Py_END_ALLOW_THREADS
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&source);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *
kernels_pack(PyObject *self, PyObject *args)
{
    (void)self;
    return pack_or_unpack(args, 0);
}

static PyObject *
kernels_unpack(PyObject *self, PyObject *args)
{
    (void)self;
    return pack_or_unpack(args, 1);
}

PyDoc_STRVAR(writeback_doc,
"writeback(fd, offset, length) -> bool\n--\n\n"
"Start writing a range of a file to disk without waiting for it (Linux's\n"
"sync_file_range); return False where the system has no such call or\n"
"refuses it. A hint only: fsync is still what makes the range durable.");

static PyObject *
kernels_writeback(PyObject *self, PyObject *args)
{
    int fd;
    long long offset, length;
    (void)self;
    if (!PyArg_ParseTuple(args, "iLL", &fd, &offset, &length))
        return NULL;
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = sync_file_range(fd, (off_t)offset, (off_t)length,
                             SYNC_FILE_RANGE_WRITE);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(failed == 0);
#else
    (void)fd;
    (void)offset;
    (void)length;
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef kernels_methods[] = {
    {"split", kernels_split, METH_VARARGS, split_doc},
    {"join", kernels_join, METH_VARARGS, join_doc},
    {"pack", kernels_pack, METH_VARARGS, pack_doc},
    {"unpack", kernels_unpack, METH_VARARGS, unpack_doc},
    {"writeback", kernels_writeback, METH_VARARGS, writeback_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mvcstore._kernels",
    .m_doc = "Fused byte-plane transforms (see mvcstore/encodings.py).",
    .m_size = 0,
    .m_methods = kernels_methods,
};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModuleDef_Init(&kernels_module);
}
