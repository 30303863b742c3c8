"""Baseline (b): nginx ``proxy_pass`` to an aiohttp upstream (`bench.baselines.bare_http`).

What a mature C proxy costs on the same hop the gateway makes (client → proxy → upstream,
keep-alive on both sides): one nginx worker per gateway worker, upstream connections kept
alive (``keepalive``, HTTP/1.1, no ``Connection`` header passed on), no access log. nginx
runs in the foreground from a throw-away prefix directory and stops on SIGTERM.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness.cores import taskset
from bench.harness.mesh import stop_process, wait_port
from bench.harness.procfs import children
from mesh.harness import free_port

CONFIG = """\
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def installed() -> bool:
    return shutil.which("nginx") is not None


@dataclass
class Nginx:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def pids(self) -> list[int]:
        """The master and its workers."""
        return [self.process.pid, *children(self.process.pid)]


@contextlib.contextmanager
def nginx_proxy(
    upstream_port: int, workers: int, cpus: Sequence[int], prefix: Path
) -> Iterator[Nginx]:
    """nginx on a free port proxying to 127.0.0.1:`upstream_port`, on `cpus`."""
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = prefix / "nginx.conf"
    config.write_text(
        CONFIG.format(workers=workers, prefix=prefix, upstream=upstream_port, port=port)
    )
    argv = ["nginx", "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")]
    process = subprocess.Popen(
        taskset(cpus, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, 30, process)
        yield Nginx(f"http://127.0.0.1:{port}", process)
    finally:
        stop_process(process)
