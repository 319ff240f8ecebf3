"""Unit checks of what the placement goldens do not isolate: vLLM sizing, NUMA, speed model."""

from __future__ import annotations

from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Cpu, Gpu, Memory, Node, NodeBody, NumaNode
from maas.compiler.placement.common import cpu_pinning
from maas.compiler.placement.llama_memory import decode_tokens_per_s
from maas.compiler.placement.vllm import kv_bytes_per_token, needed_utilization, size_vllm

GIB = 1 << 30


def llama_70b(weight_bytes: int = 141 * 10**9) -> ModelMetadata:
    return ModelMetadata(
        format="safetensors", architecture="LlamaForCausalLM", block_count=80,
        context_length=131072, embedding_length=8192, head_count=64, head_count_kv=8,
        key_length=128, value_length=128, weight_bytes=weight_bytes, dtype_bytes=2.0,
    )  # fmt: skip


def gpu(index: int, free_gib: float, total_gib: float = 80) -> Gpu:
    return Gpu(
        index=index, uuid=f"GPU-{index}", name="H100", memory_total_bytes=int(total_gib * GIB),
        memory_free_bytes=int(free_gib * GIB),
    )  # fmt: skip


def test_kv_per_token_is_split_across_ranks_but_not_below_one_head() -> None:
    meta = llama_70b()
    assert kv_bytes_per_token(meta, 1) == 2 * 80 * 8 * 128 * 2
    assert kv_bytes_per_token(meta, 8) == 2 * 80 * 1 * 128 * 2
    assert kv_bytes_per_token(meta, 16) == kv_bytes_per_token(meta, 8)


def test_smallest_tensor_parallel_size_and_free_memory_bound() -> None:
    meta = llama_70b()
    choice = size_vllm(meta, [gpu(i, 79) for i in range(4)], spec_context=None, margin=GIB,
                       allow_cpu=False)  # fmt: skip
    assert choice is not None
    assert (choice.tensor_parallel_size, choice.max_model_len) == (2, 8192)
    # the fraction its weights, reserve and KV need (compile_plan hands it the rest later)
    assert choice.utilization == 0.87
    busy = size_vllm(meta, [gpu(i, 50) for i in range(4)], spec_context=None, margin=GIB,
                     allow_cpu=False)  # fmt: skip
    assert busy is not None and busy.tensor_parallel_size == 4
    assert busy.utilization == 0.45  # needs 35.8 GiB of 80; at most (50 - 1) / 80 = 0.61


def test_needed_utilization_never_exceeds_what_is_free() -> None:
    gpus = [gpu(0, 50)]
    assert needed_utilization(30 * GIB, gpus, cap=0.61) == 0.38  # 30 / 80 rounded up
    assert needed_utilization(60 * GIB, gpus, cap=0.61) == 0.61


def test_cpu_offload_only_when_allowed() -> None:
    meta = llama_70b()
    assert size_vllm(meta, [gpu(0, 79)], spec_context=4096, margin=GIB, allow_cpu=False) is None
    choice = size_vllm(meta, [gpu(0, 79)], spec_context=4096, margin=GIB, allow_cpu=True)
    assert choice is not None and 60 < choice.cpu_offload_gb < 70


def node(numa: list[NumaNode]) -> Node:
    body = NodeBody(cpu=Cpu(cores=128, threads=256, numa_nodes=numa),
                    memory=Memory(total_bytes=800 * GIB))  # fmt: skip
    return Node(apiVersion="maas/v1", kind="Node", metadata={"name": "n"}, spec=body)  # type: ignore[arg-type]


def test_numa_pinning_uses_one_node_and_its_physical_cores() -> None:
    two = [
        NumaNode(id=0, cpus="0-63,128-191", memory_bytes=400 * GIB),
        NumaNode(id=1, cpus="64-127,192-255", memory_bytes=400 * GIB),
    ]
    pin = cpu_pinning(node(two), 100 * GIB)
    assert (pin.cpuset, pin.mems, pin.threads) == ("0-63,128-191", "0", 64)
    too_big = cpu_pinning(node(two), 500 * GIB)
    assert too_big.cpuset is None and too_big.threads == 128
    single = cpu_pinning(node([NumaNode(id=0, cpus="0-255")]), 100 * GIB)
    assert single.cpuset is None and single.threads == 128


def test_two_bandwidth_speed_model() -> None:
    assert decode_tokens_per_s(10**9, 0, gpu_bandwidth=10**12, cpu_bandwidth=None) == 1000.0
    both = decode_tokens_per_s(10**9, 10**9, gpu_bandwidth=10**12, cpu_bandwidth=5 * 10**10)
    assert both == round(1 / (0.001 + 0.02), 1)
    assert decode_tokens_per_s(0, 10**9, gpu_bandwidth=None, cpu_bandwidth=None) is None


def test_one_replica_per_socket_where_each_node_holds_its_part() -> None:
    """The seed's rule, dual-socket only when the model fits twice, as an expert lays it out:
    each replica on a NUMA node of its own with all of its physical cores (the GPU's node first);
    more replicas than nodes go round and divide a node's cores; a node that would not hold its
    replicas' CPU parts sends them all to one node that does, else they are not pinned."""
    n0 = NumaNode(id=0, cpus="0-63,128-191", memory_bytes=400 * GIB)
    n1 = NumaNode(id=1, cpus="64-127,192-255", memory_bytes=400 * GIB)
    for part in (150 * GIB, 300 * GIB):  # the node holds it twice, or once
        spread = cpu_pinning(node([n0, n1]), part, replicas=2)
        assert (spread.cpuset, spread.mems, spread.threads) == (None, None, 64)
        assert spread.per_replica == (("0-63,128-191", "0"), ("64-127,192-255", "1"))
        assert spread.pinned and "replica 1 on NUMA node 1 (64 cores each" in spread.reason
    near_gpu = cpu_pinning(node([n0, n1]), 300 * GIB, [gpu_on(1)], replicas=2)
    assert [mems for _, mems in near_gpu.per_replica] == ["1", "0"]
    assert "replica 0 on NUMA node 1 (the GPU's)" in near_gpu.reason
    three = cpu_pinning(node([n0, n1]), 150 * GIB, replicas=3)
    assert [mems for _, mems in three.per_replica] == ["0", "1", "0"] and three.threads == 32
    big = NumaNode(id=0, cpus="0-63,128-191", memory_bytes=700 * GIB)
    small = NumaNode(id=1, cpus="64-127,192-255", memory_bytes=100 * GIB)
    shared = cpu_pinning(node([big, small]), 300 * GIB, replicas=2)
    assert (shared.cpuset, shared.mems, shared.threads, shared.per_replica) == (
        "0-63,128-191",
        "0",
        32,
        (),
    )
    too_big = cpu_pinning(node([n0, n1]), 500 * GIB, replicas=2)
    assert (too_big.cpuset, too_big.per_replica, too_big.threads) == (None, (), 64)
    assert not too_big.pinned and "exceeds one NUMA node" in too_big.reason
    alone = cpu_pinning(node([n0, n1]), 300 * GIB)
    assert (alone.cpuset, alone.threads, alone.per_replica) == ("0-63,128-191", 64, ())


def gpu_on(numa_node: int) -> Gpu:
    return gpu(0, 40).model_copy(update={"numa_node": numa_node})
