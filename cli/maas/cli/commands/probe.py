"""`maasctl probe [-o yaml|json]`: print this host's Node profile."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maas.cli import exitcodes

MODELINE = "# yaml-language-server: $schema=../schemas/node.schema.json\n"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "probe",
        help="print this host's Node profile",
        description="Probe this host (CPU cores and threads, NUMA nodes, RAM, NVIDIA GPUs through "
        "NVML, the model cache's disk) and print its Node document, ready to commit under a "
        "config repository's nodes/. "
        "Without a GPU, driver or NVML library the profile is CPU-only and a warning is printed.",
    )
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    parser.add_argument(
        "--measure-bandwidth",
        action="store_true",
        help="also measure CPU memory bandwidth (a second of array copies)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="PATH",
        type=Path,
        help="the model cache whose file system is the profile's disk (default: the agent's "
        "cache_dir, from its config file)",
    )
    parser.add_argument(
        "--readings",
        action="store_true",
        help="print the raw readings instead (for bug reports and test fixtures)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from maas.cli.nodes import agent_cache_dir
    from maas.cli.output import print_diagnostics
    from maas.host.probe import measure_memory_bandwidth, read_host, to_node

    readings = read_host(args.cache_dir or agent_cache_dir())
    if args.measure_bandwidth:
        readings["cpu_bandwidth"] = measure_memory_bandwidth()
    if args.readings:
        print(json.dumps(readings, indent=2))
        return exitcodes.OK
    node, warnings = to_node(readings)
    print_diagnostics(warnings)
    document = node.model_dump(mode="json", exclude_none=True)
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        from ruamel.yaml import YAML

        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
        sys.stdout.write(MODELINE)
        yaml.dump(document, sys.stdout)
    return exitcodes.OK
