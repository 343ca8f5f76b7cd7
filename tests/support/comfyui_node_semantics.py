"""What ComfyUI's validation knows about each node class and /object_info does not say.

Runs with ComfyUI's own Python, from its directory (the real image or a checkout with its venv):

  cd ComfyUI && python /path/to/tests/support/comfyui_node_semantics.py > node-semantics.json

and prints, for every class in NODE_CLASS_MAPPINGS once the nodes have loaded as the server loads
them: its API (the classic one, `v1`, or `v3`) and its validation hook (qualified name, argument names,
**kwargs). tests/fixtures/comfyui/node-semantics-0.3.64.json is this output for 0.3.64 with the keys of
each class's /object_info entry added (tests/support/workflow_diff.py); tests/unit/test_workflow_replay.py
holds gpuhost's hook table and its V3 test to it.
"""

import asyncio
import importlib
import inspect
import json
import sys
from typing import Any


def main() -> None:
    sys.argv = ["main.py", "--cpu"]
    sys.path.insert(0, ".")
    options = importlib.import_module("comfy.options")
    options.enable_args_parsing()
    # imported before any node module, as main.py does
    importlib.import_module("utils.extra_config")
    importlib.import_module("utils.install_util")
    nodes = importlib.import_module("nodes")
    internal = importlib.import_module("comfy_api.internal")
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=True))
    out: dict[str, Any] = {}
    for name, cls in sorted(nodes.NODE_CLASS_MAPPINGS.items()):
        v3 = issubclass(cls, internal._ComfyNodeInternal)
        function = internal.first_real_override(cls, "validate_inputs") if v3 else getattr(cls, "VALIDATE_INPUTS", None)
        hook = None
        if function is not None:
            spec = inspect.getfullargspec(function)
            hook = {"name": function.__qualname__, "args": spec.args, "varkw": spec.varkw is not None}
        out[name] = {"api": "v3" if v3 else "v1", "hook": hook}
    json.dump(out, sys.stdout, indent=None, sort_keys=True, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
