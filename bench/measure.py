#!/usr/bin/env python3
"""measure.py - runs a command and prints its wall seconds and the CPU seconds (user + system) of
the process and its children, as 'wall=S cpu=S', after the command's own output."""
import os, resource, subprocess, sys, time

t0 = time.monotonic()
r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
rc = subprocess.call(sys.argv[1:])
r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
wall = time.monotonic() - t0
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(f"process wall={wall:.3f} cpu={cpu:.3f}", flush=True)
sys.exit(rc)
