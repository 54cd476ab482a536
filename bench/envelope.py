"""Benchmark: the envelope against raw libsodium secretstream, file to file, both ways.

Run from the repository root:

    .venv/bin/python bench/envelope.py [--size-mib 1024] [--rounds 3] [--dir /tmp]

It writes one random input file, then for each round runs four phases, each
in a fresh child process so that its peak RSS is its own:

* envelope-encrypt  crypto.envelope.encrypt_stream, input file -> body file
* envelope-decrypt  crypto.envelope.decrypt_stream, body file -> output file
* raw-encrypt       crypto_secretstream_xchacha20poly1305 push, 64 KiB chunks, last FINAL
* raw-decrypt       crypto_secretstream_xchacha20poly1305 pull, checking the FINAL tag

With --key-blocks it measures the key block instead, and nothing else:
sealing and opening time per recipient entry, classical (X25519 sealed box,
key block version 1) against hybrid (X-Wing, version 2), and key block sizes.

Every decrypted file is compared with the input. Throughput is plaintext MB
(10^6 bytes) per second of the timed loop (interpreter start-up and imports
excluded; no fsync, so the page cache absorbs the writes for both contenders
alike). The order of envelope and raw alternates between rounds, and ratios
and targets use each phase's best round (least disturbed by other load; the
medians are printed too). Exit status 1 if a target is missed or a round trip
does not give back the input; all temporary files are removed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHUNK = 64 * 1024
MB = 1_000_000
MIB = 1024 * 1024

TARGET_RATIO = 0.85
TARGET_RSS_MIB = 64.0

PHASES = ("envelope-encrypt", "raw-encrypt", "envelope-decrypt", "raw-decrypt")
OUTPUTS = {
    "envelope-encrypt": "envelope.body",
    "raw-encrypt": "raw.body",
    "envelope-decrypt": "envelope.out",
    "raw-decrypt": "raw.out",
}


# --- child side: one phase per process --------------------------------------------------------


def _peak_rss_kib() -> tuple[int, int]:
    """(ru_maxrss, VmHWM) in KiB for this process.

    ru_maxrss after exec also remembers the parent's RSS at the moment of the
    fork, so the parent keeps itself small (no nacl import, 1 MiB buffers);
    VmHWM belongs to this process's own address space only and is printed as
    a cross-check.
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm = 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return maxrss, hwm


def _envelope_encrypt(work: Path) -> None:
    from nacl.public import PrivateKey

    from crypto import envelope

    office = PrivateKey((work / "office.key").read_bytes())
    ctx = envelope.context("bench-report", "bench-item")
    with (work / "input").open("rb") as source, (work / "envelope.body").open("wb") as sink:
        key_block = envelope.encrypt_stream(
            source, sink, [office.public_key], ctx, name="input.bin", content_type="x/bench"
        )
    (work / "envelope.keyblock").write_bytes(key_block)


def _envelope_decrypt(work: Path) -> None:
    from nacl.public import PrivateKey

    from crypto import envelope

    office = PrivateKey((work / "office.key").read_bytes())
    ctx = envelope.context("bench-report", "bench-item")
    key_block = (work / "envelope.keyblock").read_bytes()
    with (work / "envelope.body").open("rb") as body, (work / "envelope.out").open("w+b") as sink:
        envelope.decrypt_stream(key_block, body, sink, office, ctx)


def _raw_encrypt(work: Path) -> None:
    from nacl.bindings import (
        crypto_secretstream_xchacha20poly1305_init_push,
        crypto_secretstream_xchacha20poly1305_push,
        crypto_secretstream_xchacha20poly1305_state,
        crypto_secretstream_xchacha20poly1305_TAG_FINAL,
        crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
    )

    key = (work / "raw.key").read_bytes()
    state = crypto_secretstream_xchacha20poly1305_state()
    with (work / "input").open("rb") as source, (work / "raw.body").open("wb") as sink:
        sink.write(crypto_secretstream_xchacha20poly1305_init_push(state, key))
        chunk = source.read(CHUNK)
        while True:
            following = source.read(CHUNK)
            tag = (
                crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
                if following
                else crypto_secretstream_xchacha20poly1305_TAG_FINAL
            )
            sink.write(crypto_secretstream_xchacha20poly1305_push(state, chunk, None, tag))
            if not following:
                break
            chunk = following


def _raw_decrypt(work: Path) -> None:
    from nacl.bindings import (
        crypto_secretstream_xchacha20poly1305_ABYTES,
        crypto_secretstream_xchacha20poly1305_HEADERBYTES,
        crypto_secretstream_xchacha20poly1305_init_pull,
        crypto_secretstream_xchacha20poly1305_pull,
        crypto_secretstream_xchacha20poly1305_state,
        crypto_secretstream_xchacha20poly1305_TAG_FINAL,
    )

    key = (work / "raw.key").read_bytes()
    state = crypto_secretstream_xchacha20poly1305_state()
    with (work / "raw.body").open("rb") as body, (work / "raw.out").open("wb") as sink:
        header = body.read(crypto_secretstream_xchacha20poly1305_HEADERBYTES)
        crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
        while True:
            sealed = body.read(CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES)
            chunk, tag = crypto_secretstream_xchacha20poly1305_pull(state, sealed)
            sink.write(chunk)
            if tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL:
                break
        if body.read(1):
            raise SystemExit("raw-decrypt: trailing bytes after the final chunk")


_PHASE_FUNCTIONS = {
    "envelope-encrypt": _envelope_encrypt,
    "envelope-decrypt": _envelope_decrypt,
    "raw-encrypt": _raw_encrypt,
    "raw-decrypt": _raw_decrypt,
}


def _run_phase(name: str, work: Path) -> None:
    sys.path.insert(0, str(REPO))
    function = _PHASE_FUNCTIONS[name]
    # Import what the phase needs before the clock starts.
    import nacl.bindings  # noqa: F401

    import crypto.envelope  # noqa: F401

    start, cpu_start = time.perf_counter(), time.process_time()
    function(work)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    maxrss, hwm = _peak_rss_kib()
    figures = {"seconds": seconds, "cpu_seconds": cpu_seconds}
    figures.update(maxrss_kib=maxrss, vmhwm_kib=hwm)
    print(json.dumps(figures))


# --- parent side --------------------------------------------------------------------------


def _digest(path: Path) -> bytes:
    h = hashlib.blake2b()
    with path.open("rb") as f:
        while block := f.read(MIB):
            h.update(block)
    return h.digest()


def _write_input(path: Path, size: int) -> bytes:
    """Write `size` random bytes (1 MiB at a time) and return their digest."""
    h = hashlib.blake2b()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(MIB, left))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.digest()


def _spawn(name: str, work: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--dir", str(work)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{result.stderr}")
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def _main_parent(size_mib: int, rounds: int, directory: str | None) -> int:
    size = size_mib * MIB
    ok = True
    with tempfile.TemporaryDirectory(prefix="envelope-bench-", dir=directory) as tmp:
        work = Path(tmp)
        for name in ("office.key", "raw.key"):
            (work / name).write_bytes(os.urandom(32))
            (work / name).chmod(0o600)
        print(f"input: {size_mib} MiB of os.urandom in {work}", flush=True)
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        expected = _write_input(work / "input", size)

        results: dict[str, list[dict[str, float]]] = {name: [] for name in PHASES}
        for round_number in range(1, rounds + 1):
            # Alternate who goes first, so that neither always meets the other's writeback.
            order = ("envelope", "raw") if round_number % 2 else ("raw", "envelope")
            for name in [f"{kind}-{way}" for way in ("encrypt", "decrypt") for kind in order]:
                output = work / OUTPUTS[name]
                # Start every phase alike: no old output to truncate, no dirty pages pending.
                output.unlink(missing_ok=True)
                os.sync()
                figures = _spawn(name, work)
                results[name].append(figures)
                if name.endswith("decrypt"):
                    if _digest(output) != expected:
                        print(f"FAIL: {name} did not give back the input", flush=True)
                        ok = False
                    output.unlink()
                print(
                    f"round {round_number} {name:17s} {size / MB / figures['seconds']:8.1f} MB/s"
                    f" ({size / MB / figures['cpu_seconds']:6.1f} per CPU second)"
                    f"  peak RSS {figures['maxrss_kib'] / 1024:5.1f} MiB"
                    f" (VmHWM {figures['vmhwm_kib'] / 1024:5.1f} MiB)",
                    flush=True,
                )
            body = work / "envelope.body"
            if body.stat().st_size <= size:
                print("FAIL: the envelope body is not larger than the input", flush=True)
                ok = False
        parent_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    speeds = {name: max(size / MB / r["seconds"] for r in results[name]) for name in PHASES}
    medians = {
        name: statistics.median(size / MB / r["seconds"] for r in results[name]) for name in PHASES
    }
    encrypt_ratio = speeds["envelope-encrypt"] / speeds["raw-encrypt"]
    decrypt_ratio = speeds["envelope-decrypt"] / speeds["raw-decrypt"]
    peak_rss = max(r["maxrss_kib"] for rs in results.values() for r in rs) / 1024
    peak_hwm = max(r["vmhwm_kib"] for rs in results.values() for r in rs) / 1024

    def verdict(passed: bool) -> str:
        return "ok" if passed else "MISSED"

    print()
    print(f"size {size_mib} MiB, chunk 64 KiB, best of {rounds} round(s), MB = 10^6 bytes")
    for name in PHASES:
        print(f"  {name:17s} {speeds[name]:8.1f} MB/s  (median {medians[name]:8.1f} MB/s)")
    per_cpu = {name: max(size / MB / r["cpu_seconds"] for r in results[name]) for name in PHASES}
    print(
        "  for information: median ratios encrypt"
        f" {medians['envelope-encrypt'] / medians['raw-encrypt']:.3f},"
        f" decrypt {medians['envelope-decrypt'] / medians['raw-decrypt']:.3f};"
        " per CPU second (best) encrypt"
        f" {per_cpu['envelope-encrypt'] / per_cpu['raw-encrypt']:.3f},"
        f" decrypt {per_cpu['envelope-decrypt'] / per_cpu['raw-decrypt']:.3f}"
    )
    print(
        f"  ratio envelope/raw encrypt {encrypt_ratio:.3f}"
        f"  (target >= {TARGET_RATIO})  {verdict(encrypt_ratio >= TARGET_RATIO)}"
    )
    print(
        f"  ratio envelope/raw decrypt {decrypt_ratio:.3f}"
        f"  (target >= {TARGET_RATIO})  {verdict(decrypt_ratio >= TARGET_RATIO)}"
    )
    print(
        f"  peak RSS of any phase {peak_rss:.1f} MiB (ru_maxrss; VmHWM {peak_hwm:.1f} MiB)"
        f"  (target <= {TARGET_RSS_MIB:.0f} MiB)  {verdict(peak_rss <= TARGET_RSS_MIB)}"
    )
    lowest_phase = min(r["maxrss_kib"] for rs in results.values() for r in rs) / 1024
    if parent_rss < lowest_phase:
        print(f"  (parent peak RSS {parent_rss:.1f} MiB: below every phase, none is inflated)")
    else:
        print(f"  (parent peak RSS {parent_rss:.1f} MiB may inflate ru_maxrss: trust VmHWM)")
    ok = ok and encrypt_ratio >= TARGET_RATIO and decrypt_ratio >= TARGET_RATIO
    ok = ok and peak_rss <= TARGET_RSS_MIB
    return 0 if ok else 1


def _key_blocks(rounds: int) -> int:
    """Seal and open time per key-block entry, classical against hybrid, and block sizes."""
    from nacl.public import PrivateKey

    from crypto import envelope
    from crypto.xwing import XWingSecretKey

    entries = 20
    classical_keys = [PrivateKey.generate() for _ in range(entries)]
    hybrid_keys = [XWingSecretKey.generate() for _ in range(entries)]
    kinds: dict[str, list[envelope.SecretKey]] = {
        "classical (X25519)": list(classical_keys),
        "hybrid (X-Wing)": list(hybrid_keys),
    }
    file_key, size = os.urandom(32), 12345
    print(f"key block: {entries} entries per block, best of {rounds} round(s)")
    ok = True
    for name, keys in kinds.items():
        publics: list[envelope.Recipient] = [k.public_key for k in keys]
        seal, opened = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            block = envelope._build_key_block(file_key, size, publics)
            seal.append((time.perf_counter() - start) / entries)
            start = time.perf_counter()
            for key in keys:
                ok = ok and envelope._open_key_block(block, key) == (file_key, size)
            opened.append((time.perf_counter() - start) / entries)
        print(
            f"  {name:19s} seal {min(seal) * 1e3:7.3f} ms/entry   open {min(opened) * 1e3:7.3f} "
            f"ms/entry   (medians {statistics.median(seal) * 1e3:.3f}, "
            f"{statistics.median(opened) * 1e3:.3f})"
        )
    source = PrivateKey.generate().public_key
    offices: list[envelope.Recipient] = [k.public_key for k in hybrid_keys]
    classical: list[envelope.Recipient] = [k.public_key for k in classical_keys]
    print("key block sizes in bytes (version 1: 2 + 96 per entry; version 2: 2 + 97 per X25519")
    print("entry + 1185 per X-Wing entry):")
    for n in (1, 2, 3):
        v1 = len(envelope._build_key_block(file_key, size, classical[:n]))
        v2 = len(envelope._build_key_block(file_key, size, offices[:n]))
        mixed = len(envelope._build_key_block(file_key, size, [source, *offices[:n]]))
        print(
            f"  {n} office(s): classical {v1:5d}   hybrid {v2:5d}   "
            f"source X25519 + hybrid office(s) {mixed:5d}"
        )
    if not ok:
        print("FAIL: a key block did not open to its file key", flush=True)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="input size (default 1024)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of four phases (default 5)")
    parser.add_argument("--dir", default=None, help="where to put the temporary files")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument(
        "--key-blocks",
        action="store_true",
        help="measure key-block entries (classical and hybrid) and sizes only",
    )
    args = parser.parse_args()
    if args.key_blocks:
        return _key_blocks(args.rounds)
    if args.phase:
        _run_phase(args.phase, Path(args.dir))
        return 0
    if args.size_mib < 1 or args.rounds < 1:
        parser.error("--size-mib and --rounds must be at least 1")
    return _main_parent(args.size_mib, args.rounds, args.dir)


if __name__ == "__main__":
    sys.exit(main())
