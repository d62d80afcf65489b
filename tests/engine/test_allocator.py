"""The allocator setting: freed tensor memory is reused without page faults, unless the user opts out."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting applies to glibc only")

#: Allocates, fills and frees a 64 MiB tensor (while small Python objects come and go, as in a forward pass)
#: until glibc's heap settles, then counts the page faults of doing it five times more.
_PROBE = """
import json, resource, sys
import torch
from resbench.engine.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "call" else False
def fill():
    block = torch.empty(16 * 1024 * 1024, dtype=torch.float32)
    block.fill_(1.0)
    objects = [object() for _ in range(1000)]
    del block
    return objects
kept_objects = [fill() for _ in range(15)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
kept_objects += [fill() for _ in range(5)]
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"kept": kept, "faults": faults}))
"""
#: Pages of the 64 MiB block.
PAGES = 64 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")


def _probe(call: bool, **environment: str) -> dict[str, int]:
    env = {key: value for key, value in os.environ.items() if key not in ("RESBENCH_SYSTEM_MALLOC", "GLIBC_TUNABLES")}
    completed = subprocess.run([sys.executable, "-c", _PROBE, "call" if call else "skip"], capture_output=True,
                               text=True, check=True, env={**env, **environment})
    return json.loads(completed.stdout)


def test_a_freed_block_is_reused_without_faulting_its_pages_in_again() -> None:
    system, kept = _probe(call=False), _probe(call=True)
    assert system["faults"] > PAGES // 2  # glibc's default: the block is mapped afresh and faulted in page by page
    assert kept["kept"]
    assert kept["faults"] < PAGES // 20


def test_the_system_setting_is_kept_when_the_user_asks_for_it() -> None:
    for environment in ({"RESBENCH_SYSTEM_MALLOC": "1"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}):
        probe = _probe(call=True, **environment)
        assert not probe["kept"]
        assert probe["faults"] > PAGES // 2
