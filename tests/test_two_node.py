"""A real two-node Ray cluster: a head and a worker node in two network namespaces (tests/netns.py)."""

import json
import sys
from pathlib import Path

import pytest
from netns import TwoNodeCluster, listed_namespaces

from jobs.submit import _ray_cli

ROOT = Path(__file__).resolve().parents[1]

# Run inside namespace A (argv: GCS address, node A's address, node B's address); prints JSON.
DRIVER = r"""
import http.server, json, sys, threading, urllib.request
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

address, a_ip, b_ip = sys.argv[1:4]
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
alive = {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}

def on(ip):
    return NodeAffinitySchedulingStrategy(node_id=alive[ip], soft=False)

@ray.remote
def where():
    return ray.util.get_node_ip_address()

@ray.remote(num_cpus=0)
class Server:
    # A tiny HTTP server on its node's own address; records the address each request came from.
    def __init__(self):
        self.clients = []
        ip, clients = ray.util.get_node_ip_address(), self.clients

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                clients.append(self.client_address[0])
                body = f"hello from {ip}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((ip, 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self):
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def clients_seen(self):
        return list(self.clients)

@ray.remote
def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as reply:
        return ray.util.get_node_ip_address(), reply.read().decode()

server = Server.options(scheduling_strategy=on(a_ip)).remote()
url = ray.get(server.url.remote(), timeout=60)
fetched_from, body = ray.get(fetch.options(scheduling_strategy=on(b_ip)).remote(url), timeout=60)
print(json.dumps({
    "alive": sorted(alive),
    "where": {ip: ray.get(where.options(scheduling_strategy=on(ip)).remote(), timeout=60) for ip in (a_ip, b_ip)},
    "url": url, "fetched_from": fetched_from, "body": body,
    "clients_seen": ray.get(server.clients_seen.remote(), timeout=60),
}))
"""


@pytest.fixture
def cluster():
    """A two-node cluster of this test's own; afterwards no process, namespace or temp dir of it is left."""
    if reason := TwoNodeCluster.skip_reason():
        pytest.skip(f"network namespaces unavailable: {reason}")
    cluster = TwoNodeCluster(head_cpus=1, worker_cpus=1).start()
    try:
        yield cluster
    finally:
        left = cluster.stop()
    assert left == [], f"left behind by the two-node cluster: {left}"
    assert cluster.processes() == []
    assert not set(cluster.ns.values()) & listed_namespaces(), "the cluster's namespaces were not deleted"


@pytest.mark.ray
def test_tasks_reach_both_nodes_and_node_b_talks_to_node_a_through_the_veth(cluster):
    result = cluster.exec([sys.executable, "-c", DRIVER, cluster.head_address, cluster.head_ip, cluster.worker_ip],
                          ns="a", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:] + "\n" + cluster.logs()
    out = json.loads(result.stdout.strip().splitlines()[-1])
    a, b = cluster.head_ip, cluster.worker_ip
    assert out["alive"] == sorted([a, b])
    assert out["where"] == {a: a, b: b}  # each pinned task ran on its node, which knows its own address
    # node B fetched from a server bound to node A's address: across the veth, from B's address
    assert out["url"].startswith(f"http://{a}:")
    assert out["fetched_from"] == b
    assert out["body"] == f"hello from {a}"
    assert out["clients_seen"] == [b]

    # `ray job submit` from inside namespace A to the dashboard on A's address (--working-dir is
    # uploaded honouring .gitignore); the job sees both nodes.
    entrypoint = "import ray; ray.init(); print('nodes:', len([n for n in ray.nodes() if n['Alive']]))"
    job = cluster.exec([_ray_cli(), "job", "submit", "--address", cluster.dashboard_address, "--working-dir", str(ROOT),
                        "--", sys.executable, "-c", entrypoint], ns="a", capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    output = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in output.lower(), output[-4000:]
    assert "nodes: 2" in output


@pytest.fixture
def gpu_head_cluster():
    """Node A declares one (fake) GPU and one CPU: the server takes both, so every driver, the
    training and the corpus task must run on node B."""
    if reason := TwoNodeCluster.skip_reason():
        pytest.skip(f"network namespaces unavailable: {reason}")
    cluster = TwoNodeCluster(head_cpus=1, head_gpus=1, worker_cpus=2).start()
    try:
        yield cluster
    finally:
        left = cluster.stop()
    assert left == [], f"left behind by the two-node cluster: {left}"
    assert not set(cluster.ns.values()) & listed_namespaces(), "the cluster's namespaces were not deleted"


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.training
def test_smoke_sweep_with_the_server_on_one_node_and_its_drivers_on_the_other(gpu_head_cluster, tmp_path):
    import polars as pl

    from jobs.sweep_config import load_config, make_plan

    cluster = gpu_head_cluster
    config = tmp_path / "two-node.yaml"
    # The smoke sweep, with the server on the GPU node (a fake GPU: vLLM runs on its CPU).
    config.write_text((ROOT / "eval_configs" / "smoke.yaml").read_text()
                      .replace("recipes/", str(ROOT / "eval_configs" / "recipes") + "/")
                      .replace("train_gpus: 0, serve_gpus: 0", "train_gpus: 0, serve_gpus: 1"))
    out = tmp_path / "out"
    job = cluster.exec([_ray_cli(), "job", "submit", "--address", cluster.dashboard_address, "--working-dir", str(ROOT),
                        "--", sys.executable, "-m", "jobs.sweep", str(config), "--out", str(out)],
                       ns="a", capture_output=True, text=True, timeout=1500, cwd=ROOT)
    output = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in output.lower(), output[-6000:] + cluster.logs()
    assert "2 nodes see" in output

    run = out / "smoke"
    plan = make_plan(load_config(config))
    episodes = pl.read_parquet(run / "episodes.parquet")
    assert len(episodes) == plan.cells == episodes["cell_id"].n_unique()
    verdicts = pl.read_parquet(run / "verdicts.parquet")
    assert dict(verdicts.group_by("judge_label").len().iter_rows()) == {"det": plan.cells, "local": plan.cells}
    summary = json.loads((run / "run.json").read_text())
    assert summary["missing"] == [] and summary["failures"] == []
    assert summary["serving"]["bind"].startswith("node address")
    replicas = summary["stages"]["generation"]["replicas"]
    assert set(replicas) == {t.label for t in plan.targets}
    for target, shards in replicas.items():
        for shard, where in shards.items():
            # served from node A, driven from node B: every request crossed the veth, with the key
            assert where["server_node"] == cluster.head_ip and where["driver_node"] == cluster.worker_ip, (target, shard)
    assert sum(s["cells"] for shards in replicas.values() for s in shards.values()) == plan.cells
    # the per-sweep key reached no result file
    assert not [p for p in run.rglob("*") if p.is_file() and b"Bearer" in p.read_bytes()]
