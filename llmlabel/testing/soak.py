"""A bounded soak of the openai backend, and the check that its throughput stayed steady and its memory flat.

`soak` scores distinct prompts against a server for a fixed time and records, per window: requests, wall and CPU
seconds, and (after a garbage collection) RSS, the malloc heap in use and the live Python blocks. `check_soak` turns
those windows into a list of problems (empty when stable). Used by tests/reliability and benchmarks/reliability.py.
"""

from __future__ import annotations

import gc
import sys
import time

def heap_mib() -> float | None:
    """Bytes malloc has handed out and not got back (glibc `mallinfo2`), in MiB; None off glibc.

    Unlike RSS, this counts a leak at once: freed memory that the allocator keeps and reuses hides a leak from RSS
    until the free space runs out (a 1 KB-per-request leak moved RSS by only 4 MiB in 9,000 requests here)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                        "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


#: most heap growth per request tolerated after warm-up (bytes): a leak of 1 KB per request is 5x over
MAX_HEAP_BYTES_PER_REQUEST = 200
#: most growth in live Python objects (pymalloc blocks) per request after warm-up: a leaked object is 1 or more
MAX_BLOCKS_PER_REQUEST = 0.25
#: most RSS growth tolerated after warm-up (MiB): RSS is lumpy (arenas), so this only catches gross growth
MAX_RSS_GROWTH_MIB = 8.0


def check_soak(windows: list[dict]) -> list[str]:
    """Problems in soak windows; [] when stable. A window has `requests`, `wall` and `cpu` seconds, and at its end
    (after a garbage collection) `rss` and `heap` MiB (`heap`: malloc'd bytes in use, None where unknown) and
    `blocks` (`sys.getallocatedblocks()`: live small Python objects, which the heap does not see).

    The first third of the windows is warm-up (connections, tokenizer caches, allocator arenas). After it: CPU time
    per request must not rise (growing per-request work shows there, while wall time also moves with other load on
    the machine), no window may stall, the heap and the Python blocks may grow by at most
    `MAX_HEAP_BYTES_PER_REQUEST` and `MAX_BLOCKS_PER_REQUEST` per request (least-squares slopes over the windows),
    and RSS by at most `MAX_RSS_GROWTH_MIB`. Measured here without faults in the client: ~40 bytes and ~0.04 blocks
    per request; leaking 400 bytes per request gave 2 blocks, 1 KB gave 1,100 bytes.
    """
    steady = windows[max(1, len(windows) // 3):]
    problems = []
    cpu = [w["cpu"] / w["requests"] for w in steady]
    third = max(1, len(cpu) // 3)
    first, last = sorted(cpu[:third])[third // 2], sorted(cpu[-third:])[third // 2]
    if last > 1.5 * first:
        problems.append(f"CPU per request rose from {first * 1e3:.2f} to {last * 1e3:.2f} ms")
    rates = sorted(w["requests"] / w["wall"] for w in steady)
    if rates[0] < 0.25 * rates[len(rates) // 2]:
        problems.append(f"a window stalled: {rates[0]:.0f} requests/s against a median of "
                        f"{rates[len(rates) // 2]:.0f}")
    done, sent = [], 0
    for w in steady:
        sent += w["requests"]
        done.append(sent)
    if all(w.get("heap") is not None for w in steady):
        heap = slope(done, [w["heap"] * 2**20 for w in steady])
        if heap > MAX_HEAP_BYTES_PER_REQUEST:
            problems.append(f"heap grows {heap:.0f} bytes per request")
    blocks = slope(done, [w["blocks"] for w in steady])
    if blocks > MAX_BLOCKS_PER_REQUEST:
        problems.append(f"live Python objects grow {blocks:.2f} blocks per request")
    rss = [w["rss"] for w in steady]
    if max(rss) - rss[0] > MAX_RSS_GROWTH_MIB:
        problems.append(f"RSS grew {max(rss) - rss[0]:.1f} MiB after warm-up")
    return problems


def soak(url: str, tokenizer: str, seconds: float, window: float = 2.5, concurrency: int = 64,
         batch: int = 192) -> list[dict]:
    """Score distinct prompts against `url` with the openai backend for `seconds` (at least one window), `batch`
    prompts per `score` call (192: under the progress bar's threshold); one record per window (see `check_soak`).
    """
    from llmlabel.backends import openai

    backend = openai.OpenAIBackend(base_url=url, served_model="fault-model", tokenizer=tokenizer,
                                   concurrency=concurrency, timeout=10, backoff=0.01, max_retries=8)
    windows, sent, end = [], 0, time.perf_counter() + seconds
    cands = ["negative", "positive"]
    while time.perf_counter() < end:
        wall, cpu, done = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - wall < window:
            # 2,048 distinct prompts, cycled: new requests every time, bounded tokenizer caches
            prompts = [f"soak review {(sent + k) % 2048}: a fine film, {k % 13} stars" for k in range(batch)]
            scores = backend.score(prompts, [cands] * batch)
            if len(scores) != batch or any(len(s) != 2 for s in scores):
                raise RuntimeError("the backend returned the wrong number of scores")
            sent += batch
            done += batch
        elapsed, used = time.perf_counter() - wall, time.process_time() - cpu
        gc.collect()  # count what is still referenced, not garbage awaiting a collection
        windows.append({"requests": done, "wall": elapsed, "cpu": used, "rss": rss_mib(), "heap": heap_mib(),
                        "blocks": sys.getallocatedblocks()})
    return windows
