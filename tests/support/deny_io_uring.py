#!/usr/bin/env python3
"""Runs a command under a seccomp filter that denies io_uring_setup, io_uring_enter and
io_uring_register with EPERM, as the default profiles of Docker >= 25, containerd >= 2.0 and
Fargate do. Usage: deny_io_uring.py PROGRAM ARGS... (python3-seccomp)."""
import errno, os, sys
import seccomp
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
    f.add_rule(seccomp.ERRNO(errno.EPERM), name)
f.load()
os.execv(sys.argv[1], sys.argv[1:])
