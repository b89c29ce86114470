"""Import zsbench from the checkout named by ZSBENCH_TREE instead of the editable install's.

`pip install -e .` maps `zsbench.methods`, `zsbench.datamodules` and `zsbench.configs` to the
folders of the checkout it was run in, whatever PYTHONPATH says, so a sweep started in a second
clone would run that clone's core with the first checkout's methods. `make grid` puts this
folder on PYTHONPATH (Python imports `sitecustomize` at start-up, in every worker the sweep
launches) and sets ZSBENCH_TREE to a clean clone: every package of the editable mapping then
comes from the clone, so a result's `provenance.git` names the one commit that produced it.
"""

import os
import sys

_tree = os.environ.get("ZSBENCH_TREE")
_finder = next(
    (m for name, m in sys.modules.items() if name.startswith("__editable___zsbench")), None
)
if _tree and _finder is not None:
    _tree = os.path.abspath(_tree)
    _old = os.path.dirname(_finder.MAPPING["zsbench"])
    if _old != _tree:
        for _name, _path in list(_finder.MAPPING.items()):
            _finder.MAPPING[_name] = _tree + _path[len(_old) :]
        for _name, _paths in _finder.NAMESPACES.items():
            _finder.NAMESPACES[_name] = [_tree + p[len(_old) :] for p in _paths]
