"""Native CPU kernels (C, compiled at first use and loaded with ctypes; see ``native.py``)."""
