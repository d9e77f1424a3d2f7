"""The CPU facts every benchmark reports beside its figures."""


def cpu_flags():
    """The SIMD flags of /proc/cpuinfo (avx*, fma, amx*), sorted; empty where it cannot be read."""
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
